//! Who is told what: the notification rules, as a pure function from a page of the log and
//! the consumer's state before it to what the page changes and whom it notifies.
//!
//! - Assignment: a ticket whose assignee becomes X notifies X (unless X did it).
//! - A public reply notifies the ticket's followers, the author excepted; an internal note
//!   notifies its staff followers only. The requester and the assignee follow a ticket
//!   automatically (a reassigned ticket drops the previous assignee's automatic follow);
//!   anyone who may see a ticket can follow or unfollow it (`PUT|DELETE …/follow`).
//! - `@mention`: `@` at the start of a word, followed by a member's email, or by their
//!   name written without spaces, their first name, or their email's local part, when
//!   exactly one member matches (an ambiguous mention notifies nobody rather than the wrong
//!   person). A member is told only if they may see the comment: internal notes mention
//!   staff only; a public reply, staff or the ticket's requester.
//! - One notification per (event, recipient): a mention outranks a reply or note; a kind the
//!   recipient switched off in the app gives way to the next one that applies.
//! - Recipients must still be members; nobody is told about their own action.
//!
//! Roles are read as they are when the page is planned, not as they were when the event
//! was written: someone demoted to requester in between is not told about an internal note.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use crate::store::notifications::*;
use crate::store::{Comment, FeedEvent, Ticket, TicketId, UserId};

/// Characters of a comment kept as a notification's excerpt.
const EXCERPT_CHARS: usize = 140;

/// The log events the rules read; every other kind passes by.
pub fn reads(kind: &str) -> bool {
    matches!(kind, "ticket.created" | "ticket.updated" | "comment.created")
}

/// A page's ticket ids (what [`NotificationContext`] must hold), and whether it needs the
/// members (a comment may mention or notify someone whose role matters).
pub fn wants(page: &[FeedEvent]) -> (Vec<TicketId>, bool) {
    let mut tickets: Vec<TicketId> = page.iter().filter(|e| reads(&e.event.kind)).filter_map(|e| e.ticket_id()).collect();
    tickets.sort();
    tickets.dedup();
    (tickets, page.iter().any(|e| e.event.kind == "comment.created"))
}

/// An event the rules cannot read: the consumer stops at it rather than guess.
#[derive(Debug, thiserror::Error)]
#[error("event {sync_id} ({kind}): {message}")]
pub struct Unreadable {
    pub sync_id: i64,
    pub kind: String,
    pub message: String,
}

struct State<'m> {
    muted: &'m HashSet<(UserId, NotificationKind)>,
    tickets: HashMap<TicketId, TicketView>,
    followers: HashMap<TicketId, BTreeMap<UserId, Follower>>,
    members: HashMap<UserId, MemberView>,
    out: NotificationBatch,
    /// Ticket views changed by the page, written once at the end.
    touched: Vec<TicketId>,
}

impl State<'_> {
    fn unfollow(&mut self, ticket_id: TicketId, user_id: UserId) {
        self.followers.entry(ticket_id).or_default().remove(&user_id);
        self.out.followers.push(FollowerChange::Remove { ticket_id, user_id });
    }

    /// Follows automatically from `event` on, unless already following for any reason.
    fn auto_follow(&mut self, event: &FeedEvent, ticket_id: TicketId, user_id: UserId, reason: FollowReason) {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.followers.entry(ticket_id).or_default().entry(user_id) {
            let follower = Follower { ticket_id, user_id, reason, since_sync_id: event.event.sync_id };
            slot.insert(follower);
            self.out.followers.push(FollowerChange::Set(follower));
        }
    }

    fn notify(&mut self, event: &FeedEvent, view: &TicketView, recipient: UserId, kind: NotificationKind, comment: Option<&Comment>) {
        if self.muted.contains(&(recipient, kind)) {
            return;
        }
        self.out.notifications.push(Notification {
            id: NotificationId::new(),
            kind,
            recipient_id: recipient,
            ticket_id: view.ticket_id,
            ticket_number: view.number,
            ticket_title: view.title.clone(),
            actor_id: event.event.actor,
            comment_id: comment.map(|c| c.id),
            excerpt: comment.map(|c| excerpt(&c.body)),
            internal: comment.is_some_and(|c| c.internal),
            seq: event.event.sync_id,
            created_at: event.event.at,
            read_at: None,
        });
    }

    fn ticket(&mut self, event: &FeedEvent, ticket: Ticket, created: bool) {
        let before = self.tickets.get(&ticket.id).and_then(|v| v.assignee_id);
        let view = TicketView {
            ticket_id: ticket.id,
            number: ticket.number,
            title: ticket.title.clone(),
            requester_id: ticket.requester_id,
            assignee_id: ticket.assignee_id,
        };
        if created {
            self.auto_follow(event, ticket.id, ticket.requester_id, FollowReason::Requester);
        }
        if ticket.assignee_id != before {
            if let Some(previous) = before
                && self.followers.get(&ticket.id).and_then(|f| f.get(&previous)).is_some_and(|f| f.reason == FollowReason::Assignee)
            {
                self.unfollow(ticket.id, previous);
            }
            if let Some(assignee) = ticket.assignee_id {
                self.auto_follow(event, ticket.id, assignee, FollowReason::Assignee);
                if event.event.actor != Some(assignee) {
                    self.notify(event, &view, assignee, NotificationKind::Assigned, None);
                }
            }
        }
        self.tickets.insert(ticket.id, view);
        self.touched.push(ticket.id);
    }

    fn comment(&mut self, event: &FeedEvent, comment: Comment) {
        let Some(view) = self.tickets.get(&comment.ticket_id).cloned() else {
            // A ticket the consumer never saw created (it predates a restored log): nothing
            // to word a notification with.
            tracing::debug!(ticket = %comment.ticket_id, "comment on a ticket unknown to the notifications consumer");
            return;
        };
        let may_see = |member: &MemberView| {
            if comment.internal { member.role.is_staff() } else { member.role.is_staff() || member.user_id == view.requester_id }
        };
        // Each recipient's kinds that apply, best first.
        let mut recipients: BTreeMap<UserId, Vec<NotificationKind>> = BTreeMap::new();
        for user in mentioned(&comment.body, &self.members) {
            if self.members.get(&user).is_some_and(may_see) {
                recipients.entry(user).or_default().push(NotificationKind::Mention);
            }
        }
        // Those who followed before this event; a follow made later (while the consumer
        // lagged) does not reach back.
        let at = event.event.sync_id;
        let followers: Vec<UserId> = self
            .followers
            .get(&comment.ticket_id)
            .map(|f| f.values().filter(|f| f.since_sync_id < at).map(|f| f.user_id).collect())
            .unwrap_or_default();
        for user in followers {
            if let Some(member) = self.members.get(&user).filter(|m| may_see(m)) {
                let kind = if comment.internal { NotificationKind::InternalNote } else { NotificationKind::Reply };
                recipients.entry(member.user_id).or_default().push(kind);
            }
        }
        recipients.remove(&comment.author_id);
        let muted = self.muted;
        let recipients: Vec<(UserId, NotificationKind)> = recipients
            .into_iter()
            .filter_map(|(user, kinds)| kinds.into_iter().find(|k| !muted.contains(&(user, *k))).map(|k| (user, k)))
            .collect();
        for (recipient, kind) in recipients {
            self.notify(event, &view, recipient, kind, Some(&comment));
        }
    }
}

/// What `page` changes and whom it notifies, given the state before it and the kinds
/// recipients switched off.
pub fn plan(
    page: &[FeedEvent],
    context: NotificationContext,
    muted: &HashSet<(UserId, NotificationKind)>,
) -> Result<NotificationBatch, Unreadable> {
    let mut state = State {
        muted,
        tickets: context.tickets.into_iter().map(|v| (v.ticket_id, v)).collect(),
        followers: HashMap::new(),
        members: context.members.into_iter().map(|m| (m.user_id, m)).collect(),
        out: NotificationBatch::default(),
        touched: Vec::new(),
    };
    for follower in context.followers {
        state.followers.entry(follower.ticket_id).or_default().insert(follower.user_id, follower);
    }
    for event in page {
        let unreadable =
            |e: serde_json::Error| Unreadable { sync_id: event.event.sync_id, kind: event.event.kind.clone(), message: e.to_string() };
        // Read in place: the event's JSON is not copied.
        let data = &event.event.data;
        match event.event.kind.as_str() {
            "ticket.created" => state.ticket(event, Ticket::deserialize(data).map_err(unreadable)?, true),
            "ticket.updated" => state.ticket(event, Ticket::deserialize(data).map_err(unreadable)?, false),
            "comment.created" => state.comment(event, Comment::deserialize(data).map_err(unreadable)?),
            _ => {}
        }
    }
    state.touched.sort();
    state.touched.dedup();
    let State { mut tickets, touched, mut out, .. } = state;
    out.tickets = touched.into_iter().filter_map(|id| tickets.remove(&id)).collect();
    Ok(out)
}

fn excerpt(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(EXCERPT_CHARS) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// The members a comment mentions (see the module's rules), each once.
pub fn mentioned(body: &str, members: &HashMap<UserId, MemberView>) -> Vec<UserId> {
    let mut out = Vec::new();
    let mut previous: Option<char> = None;
    let chars: Vec<(usize, char)> = body.char_indices().collect();
    for (i, &(at, c)) in chars.iter().enumerate() {
        let starts_word = previous.is_none_or(|p| !(p.is_alphanumeric() || p == '_' || p == '@' || p == '.'));
        previous = Some(c);
        if c != '@' || !starts_word {
            continue;
        }
        let start = at + 1;
        let end = chars[i + 1..]
            .iter()
            .find(|(_, ch)| !(ch.is_alphanumeric() || matches!(ch, '.' | '_' | '-' | '+' | '@' | '\'')))
            .map_or(body.len(), |(pos, _)| *pos);
        let token = body[start..end].trim_end_matches(['.', '-', '\'', '@']).to_lowercase();
        if token.is_empty() {
            continue;
        }
        if let Some(user) = match_member(&token, members)
            && !out.contains(&user)
        {
            out.push(user);
        }
    }
    out
}

fn match_member(token: &str, members: &HashMap<UserId, MemberView>) -> Option<UserId> {
    if token.contains('@') {
        return members.values().find(|m| m.email.to_lowercase() == token).map(|m| m.user_id);
    }
    let matches: Vec<UserId> = members
        .values()
        .filter(|m| {
            let name = m.name.to_lowercase();
            let joined: String = name.split_whitespace().collect();
            let first = name.split_whitespace().next().unwrap_or_default().to_string();
            let local = m.email.to_lowercase().split('@').next().unwrap_or_default().to_string();
            joined == token || first == token || local == token
        })
        .map(|m| m.user_id)
        .collect();
    match matches.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Role;

    fn members() -> (HashMap<UserId, MemberView>, UserId, UserId, UserId) {
        let (alice, bob, bobby) = (UserId::new(), UserId::new(), UserId::new());
        let m = |id, email: &str, name: &str| MemberView { user_id: id, email: email.into(), name: name.into(), role: Role::Agent };
        let all = [
            m(alice, "alice@example.com", "Alice Smith"),
            m(bob, "bob@example.com", "Bob Jones"),
            m(bobby, "bobby@example.org", "Bob Stone"),
        ];
        (all.into_iter().map(|m| (m.user_id, m)).collect(), alice, bob, bobby)
    }

    #[test]
    fn mentions_match_email_name_first_name_and_local_part_unless_ambiguous() {
        let (all, alice, bob, bobby) = members();
        assert_eq!(mentioned("ping @alice", &all), vec![alice]);
        assert_eq!(mentioned("@AliceSmith, please look", &all), vec![alice]);
        assert_eq!(mentioned("cc @bob@example.com.", &all), vec![bob]);
        assert_eq!(mentioned("@bobby and @alice and @alice again", &all), vec![bobby, alice]);
        // "Bob" is the first name of two members: ambiguous, nobody.
        assert_eq!(mentioned("@Bob?", &all), Vec::<UserId>::new());
        // An email address in running text is not a mention; nor is a lone @.
        assert_eq!(mentioned("write to alice@example.com or @ nobody", &all), Vec::<UserId>::new());
        assert_eq!(mentioned("(@alice)", &all), vec![alice]);
        assert_eq!(mentioned("@zoë", &all), Vec::<UserId>::new());
    }

    #[test]
    fn excerpts_are_flattened_and_cut_on_a_character_boundary() {
        assert_eq!(excerpt("a\n\n b   c"), "a b c");
        let long = "é".repeat(200);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
