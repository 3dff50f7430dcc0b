//! Turning a public staff reply into the mail the customer gets. Pure: no clock, no
//! randomness, no I/O, so the same reply always makes the same bytes and a replayed page
//! makes the same mail.
//!
//! - `Message-ID`: derived from (workspace, ticket, sync_id) and the channel's domain
//!   ([`message_id`]): every retry, every instance and every replay after a crash carries
//!   the same one, so a receiver drops a duplicate.
//! - Threading (RFC 5322 §3.6.4): `In-Reply-To` is the newest message already on the
//!   ticket's thread, `References` all of them, oldest first; the subject carries the
//!   ticket number (`Re: [#42] Printer on fire`), which also threads a reply whose
//!   headers were lost.
//! - A text part and an HTML part (the reply escaped, never interpreted as markup), and the
//!   files the reply carries as attachments (`multipart/mixed`), those left out named.
//! - A reply is a person's answer, so it carries no `Auto-Submitted`; a notification mail
//!   (`assigned to you`, `new reply`, …, to staff who want them by mail) is machine-made and
//!   says so (`Auto-Submitted: auto-generated`, RFC 3834), so an autoresponder does not
//!   answer it. Notification mails are not part of the customer's thread.

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use crate::store::WorkspaceId;
use crate::store::mail::{MailContext, MailId, NewMail, Outgoing};
use crate::store::notifications::{Notification, NotificationKind};

/// `Auto-Submitted` (RFC 3834), which lettre has no type for.
#[derive(Debug, Clone)]
struct AutoSubmitted(String);

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// The `Message-ID` (without angle brackets) of the mail for the event `sync_id` on
/// `ticket`, sent from an address at `domain`.
pub fn message_id(workspace: WorkspaceId, ticket: crate::store::TicketId, sync_id: i64, domain: &str) -> String {
    let input = format!("edgedesk message-id v1\0{workspace}\0{ticket}\0{sync_id}");
    let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    format!("{}@{domain}", hex::encode(&digest.as_ref()[..16]))
}

/// The subject of a reply on ticket `number` titled `title`.
pub fn subject(number: i64, title: &str) -> String {
    format!("Re: [#{number}] {title}")
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("<br>\n"),
            c => out.push(c),
        }
    }
    out
}

/// The mail for one item, or `None` (see [`reply`] and [`notification`]).
pub fn mail(workspace: WorkspaceId, id: MailId, context: &MailContext) -> Result<Option<NewMail>, String> {
    match &context.outgoing {
        Outgoing::Reply(_) => reply(workspace, id, context),
        Outgoing::Notification(n) => notification(workspace, id, context, n),
    }
}

/// The reply's mail, or `None` when it gets none: an internal note, a reply by the
/// requester themselves (or by someone no longer a member), a ticket whose requester has
/// no address to write to, or a workspace with no enabled channel.
pub fn reply(workspace: WorkspaceId, id: MailId, context: &MailContext) -> Result<Option<NewMail>, String> {
    let Outgoing::Reply(reply) = &context.outgoing else { return Ok(None) };
    let c = &reply.comment;
    let (Some(channel), Some(to), Some(author)) = (&context.channel, &context.recipient, &context.actor) else {
        return Ok(None);
    };
    if c.internal || !author.staff {
        return Ok(None);
    }
    let (to, to_name, author) = (&to.email, &to.name, &author.name);
    let s = &channel.settings;
    let domain = s.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("localhost");
    let message_id = message_id(workspace, c.ticket_id, context.sync_id, domain);
    let subject = subject(context.ticket_number, &context.ticket_title);
    let from_address = s.address.parse().map_err(|e| format!("the channel's address {:?}: {e}", s.address))?;
    let to_address = match to.parse() {
        Ok(address) => address,
        // A requester whose address no mail server takes gets no mail, not a stopped consumer.
        Err(_) => return Ok(None),
    };
    let signature = match &s.display_name {
        Some(team) => format!("{author}, {team}"),
        None => author.clone(),
    };
    let left_out = match reply.left_out.is_empty() {
        true => String::new(),
        false => format!("\n\n(Not attached, on the ticket: {}.)", reply.left_out.join(", ")),
    };
    let text = format!("{}{left_out}\n\n-- \n{signature}\n", c.body.trim_end());
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n<div>{}{}</div>\n<p style=\"color:#555\">-- <br>\n{}</p>\n</body></html>\n",
        html_escape(c.body.trim_end()),
        html_escape(&left_out),
        html_escape(&signature)
    );
    let mut builder = lettre::Message::builder()
        .from(Mailbox::new(s.display_name.clone(), from_address))
        .to(Mailbox::new(Some(to_name.clone()), to_address))
        .subject(&subject)
        .message_id(Some(format!("<{message_id}>")))
        .date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.created_at.0.max(0) as u64));
    if let Some(last) = context.thread.last() {
        builder = builder
            .in_reply_to(format!("<{last}>"))
            .references(context.thread.iter().map(|m| format!("<{m}>")).collect::<Vec<_>>().join(" "));
    }
    // The boundary comes from the Message-ID too, so the whole message is deterministic.
    let boundary = format!("=_edgedesk_{}", &message_id[..32]);
    let body = MultiPart::alternative().boundary(boundary).singlepart(SinglePart::plain(text)).singlepart(SinglePart::html(html));
    let body = match reply.files.is_empty() {
        true => body,
        false => {
            let mut mixed = MultiPart::mixed().boundary(format!("=_edgedesk_files_{}", &message_id[..32])).multipart(body);
            for file in &reply.files {
                let content_type = lettre::message::header::ContentType::parse(&file.content_type)
                    .unwrap_or_else(|_| lettre::message::header::ContentType::parse("application/octet-stream").expect("a valid type"));
                mixed = mixed.singlepart(lettre::message::Attachment::new(file.name.clone()).body(file.bytes.to_vec(), content_type));
            }
            mixed
        }
    };
    let message = builder.multipart(body).map_err(|e| format!("composing the reply's mail: {e}"))?;
    Ok(Some(NewMail {
        id,
        ticket_id: c.ticket_id,
        comment_id: Some(c.id),
        channel_id: channel.id,
        message_id,
        from: s.address.clone(),
        to: to.clone(),
        subject,
        message: message.formatted(),
        source_sync_id: context.sync_id,
    }))
}

/// What a notification mail says it is about.
fn label(kind: NotificationKind) -> (&'static str, &'static str) {
    match kind {
        NotificationKind::Assigned => ("Assigned to you", "assigned you"),
        NotificationKind::Reply => ("New reply", "replied on"),
        NotificationKind::InternalNote => ("New internal note", "added an internal note on"),
        NotificationKind::Mention => ("You were mentioned", "mentioned you on"),
    }
}

/// A notification's mail to its recipient, or `None`: nobody to write to, no channel, or a
/// requester's reply notification (the reply's own mail is what tells them).
pub fn notification(workspace: WorkspaceId, id: MailId, context: &MailContext, n: &Notification) -> Result<Option<NewMail>, String> {
    let (Some(channel), Some(to)) = (&context.channel, &context.recipient) else { return Ok(None) };
    if !to.staff && n.kind == NotificationKind::Reply {
        return Ok(None);
    }
    let s = &channel.settings;
    let domain = s.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("localhost");
    let message_id = message_id(workspace, n.ticket_id, context.sync_id, domain);
    let (what, verb) = label(n.kind);
    let subject = format!("[#{}] {what}: {}", context.ticket_number, context.ticket_title);
    let from_address = s.address.parse().map_err(|e| format!("the channel's address {:?}: {e}", s.address))?;
    let Ok(to_address) = to.email.parse() else { return Ok(None) };
    let actor = context.actor.as_ref().map_or("Someone", |a| a.name.as_str());
    let lead = format!("{actor} {verb} #{} \u{201c}{}\u{201d}.", context.ticket_number, context.ticket_title);
    let excerpt = n.excerpt.as_deref().unwrap_or_default();
    let footer = "You get this because of your notification preferences in edgedesk.";
    let text = format!("{lead}\n\n{excerpt}\n\n-- \n{footer}\n");
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n<p>{}</p>\n<blockquote>{}</blockquote>\n<p style=\"color:#555\">-- <br>\n{footer}</p>\n</body></html>\n",
        html_escape(&lead),
        html_escape(excerpt)
    );
    let boundary = format!("=_edgedesk_{}", &message_id[..32]);
    let body = MultiPart::alternative().boundary(boundary).singlepart(SinglePart::plain(text)).singlepart(SinglePart::html(html));
    let message = lettre::Message::builder()
        .from(Mailbox::new(s.display_name.clone(), from_address))
        .to(Mailbox::new(Some(to.name.clone()), to_address))
        .subject(&subject)
        .message_id(Some(format!("<{message_id}>")))
        .date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(n.created_at.0.max(0) as u64))
        .header(AutoSubmitted("auto-generated".into()))
        .multipart(body)
        .map_err(|e| format!("composing a notification's mail: {e}"))?;
    Ok(Some(NewMail {
        id,
        ticket_id: n.ticket_id,
        comment_id: None,
        channel_id: channel.id,
        message_id,
        from: s.address.clone(),
        to: to.email.clone(),
        subject,
        message: message.formatted(),
        source_sync_id: context.sync_id,
    }))
}
