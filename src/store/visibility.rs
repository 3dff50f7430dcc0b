//! Who may see a log event: the one rule, as Rust (the live bus, the consumers) and as SQL
//! (each backend's delta), both generated here so they cannot drift apart.
//!
//! An event carries three facts about its audience, stored beside it in `sync_actions`:
//! the ticket it is about, whether it is for staff only, and, for events meant for one
//! person (a notification), its recipient. The rule:
//! - an event with a recipient is seen by that user alone, whatever their role;
//! - staff see every other event;
//! - a requester sees the events that are not staff-only and are about no ticket or about
//!   a ticket they requested.
//!
//! `tests/api/store.rs` writes the same events into both backends and checks each
//! backend's delta for several audiences against [`Visibility::admits`].

use super::{Audience, TicketId, UserId};

/// What the log stores about who may see an event, plus the requester of its ticket
/// (looked up when the event is read, so a ticket's later requester change applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Visibility {
    pub ticket_id: Option<TicketId>,
    pub staff_only: bool,
    pub recipient: Option<UserId>,
    /// The requester of `ticket_id`'s ticket, when there is one.
    pub requester: Option<UserId>,
}

impl Visibility {
    pub fn admits(&self, audience: Audience) -> bool {
        if self.recipient.is_some_and(|r| r != audience.user()) {
            return false;
        }
        match audience {
            Audience::Staff(_) => true,
            Audience::Requester(user) => !self.staff_only && (self.ticket_id.is_none() || self.requester == Some(user)),
        }
    }
}

/// How a backend's SQL spells what the rule needs.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// The stored `staff_only` value meaning "no".
    pub no: &'static str,
}

pub const SQLITE: Dialect = Dialect { no: "0" };
pub const POSTGRES: Dialect = Dialect { no: "false" };

/// A predicate over `sync_actions s` that admits exactly what [`Visibility::admits`] admits
/// for an audience of this kind; `user` is the placeholder bound to the audience's user.
/// `tickets` must be the tenant's ticket table as the backend names it in scope.
pub fn sql(dialect: Dialect, staff: bool, user: &str) -> String {
    let recipient = format!("(s.recipient_id IS NULL OR s.recipient_id = {user})");
    if staff {
        return recipient;
    }
    format!(
        "{recipient} AND s.staff_only = {no} AND (s.ticket_id IS NULL OR s.ticket_id IN \
         (SELECT rt.id FROM tickets rt WHERE rt.requester_id = {user}))",
        no = dialect.no
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_alone_see_their_events_and_requesters_only_their_tickets() {
        let (me, other) = (UserId::new(), UserId::new());
        let ticket = TicketId::new();
        let mine = Visibility { ticket_id: Some(ticket), requester: Some(me), ..Default::default() };
        assert!(mine.admits(Audience::Requester(me)));
        assert!(!mine.admits(Audience::Requester(other)));
        assert!(mine.admits(Audience::Staff(other)));
        let internal = Visibility { staff_only: true, ..mine };
        assert!(!internal.admits(Audience::Requester(me)));
        assert!(internal.admits(Audience::Staff(other)));
        let for_me = Visibility { recipient: Some(me), staff_only: true, ..mine };
        assert!(for_me.admits(Audience::Staff(me)));
        assert!(!for_me.admits(Audience::Staff(other)));
        let note_for_requester = Visibility { recipient: Some(me), ..mine };
        assert!(note_for_requester.admits(Audience::Requester(me)));
        assert!(!note_for_requester.admits(Audience::Requester(other)));
        let workspace_wide = Visibility::default();
        assert!(workspace_wide.admits(Audience::Requester(other)));
    }
}
