//! Incoming mail, parsed and judged before it touches a ticket. Pure: the IMAP session that
//! fetches messages and the store that files them are elsewhere; this is what they decide
//! with, tested on real messages (`fixtures/mail/*.eml`).
//!
//! - Parsing is `mail-parser`'s (MIME, encodings, charsets). A body that is HTML only
//!   becomes text through its HTML-to-text conversion, which drops scripts, styles and
//!   markup: nothing of the sender's HTML is ever stored or shown as HTML.
//! - The new text is split from the quoted history below it (`On … wrote:`, `-----Original
//!   Message-----`, a trailing run of `>` lines): the history is kept, marked as quoted.
//! - Loop protection ([`Kind`]): an auto-reply (RFC 3834 `Auto-Submitted` other than `no`,
//!   `X-Autoreply`, `Precedence: auto_reply|junk`), a bounce (a `multipart/report` of
//!   delivery status, or a message from `MAILER-DAEMON`/`postmaster`, naming the mail it
//!   returns) and a mailing-list message (`List-Id`, `List-Unsubscribe`, `Precedence:
//!   list|bulk`) never open a ticket, so two help desks cannot answer each other forever.
//! - Threading ([`thread`]): a message belongs to the ticket of any message it replies to
//!   or references (newest first), else to the ticket its subject tag (`[#42]`) names, else
//!   it opens a new ticket.
//! - Dedupe: its Message-ID, or for a message without one, a hash of its bytes, so ingest
//!   can be at-least-once (fetched again after a crash) and still file each message once.

use mail_parser::{MessageParser, MimeHeaders};

use crate::store::TicketId;

/// What kind of mail it is, for loop protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A person's message: it may open or continue a ticket.
    Message,
    /// An autoresponder's answer (out of office, vacation).
    AutoReply,
    /// A delivery failure report for a mail we sent: `original` is its Message-ID.
    Bounce { original: Option<String> },
    /// A mailing list's message.
    List,
}

/// A file that came with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundAttachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// One incoming message, as the ingest files it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMail {
    /// Without angle brackets.
    pub message_id: Option<String>,
    /// What makes it the same message when fetched again.
    pub dedupe_key: String,
    /// The sender's address (lower-cased) and name.
    pub from: Option<(String, Option<String>)>,
    pub subject: String,
    /// The messages it answers and references, without angle brackets.
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// What the sender wrote this time.
    pub text: String,
    /// The quoted history below it, kept but marked.
    pub quoted: Option<String>,
    pub attachments: Vec<InboundAttachment>,
    pub kind: Kind,
}

/// The bytes are not a mail message at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a mail message (no headers could be read)")]
pub struct NotAMessage;

fn ids(value: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    let list: Vec<String> = match value {
        mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
        mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    };
    list.into_iter().map(|id| id.trim().trim_matches(['<', '>']).to_string()).filter(|id| !id.is_empty()).collect()
}

fn header_text<'m>(message: &'m mail_parser::Message<'m>, name: &str) -> Option<String> {
    message.header_raw(name).map(|v| v.trim().to_ascii_lowercase())
}

fn kind(message: &mail_parser::Message<'_>, from: Option<&str>) -> Kind {
    let report = message.is_content_type("multipart", "report")
        && message.content_type().and_then(|ct| ct.attribute("report-type")).is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"));
    let daemon = from.is_some_and(|f| {
        let local = f.split('@').next().unwrap_or_default();
        local.eq_ignore_ascii_case("mailer-daemon") || local.eq_ignore_ascii_case("postmaster")
    });
    if report || daemon {
        return Kind::Bounce { original: returned_message_id(message) };
    }
    let precedence = header_text(message, "Precedence").unwrap_or_default();
    if message.header_raw("List-Id").is_some()
        || message.header_raw("List-Unsubscribe").is_some()
        || matches!(precedence.as_str(), "list" | "bulk")
    {
        return Kind::List;
    }
    let auto_submitted = header_text(message, "Auto-Submitted").is_some_and(|v| v != "no");
    let auto_flag = message.header_raw("X-Autoreply").is_some() || message.header_raw("X-Autorespond").is_some();
    if auto_submitted || auto_flag || matches!(precedence.as_str(), "auto_reply" | "junk") {
        return Kind::AutoReply;
    }
    Kind::Message
}

/// The Message-ID of the mail a bounce returns: from its attached message, or the headers
/// it quotes (`text/rfc822-headers`).
fn returned_message_id(message: &mail_parser::Message<'_>) -> Option<String> {
    for part in message.parts.iter() {
        if let Some(inner) = part.message()
            && let Some(id) = inner.message_id()
        {
            return Some(id.to_string());
        }
        if part.is_content_type("text", "rfc822-headers")
            && let Some(headers) = MessageParser::default().parse(part.contents())
            && let Some(id) = headers.message_id()
        {
            return Some(id.to_string());
        }
    }
    None
}

/// Splits what the sender wrote from the history quoted below it.
pub fn split_quoted(text: &str) -> (String, Option<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let intro = lines.iter().position(|l| {
        let l = l.trim();
        (l.starts_with("On ") && l.ends_with("wrote:")) || l.starts_with("-----Original Message-----")
    });
    let cut = intro.or_else(|| {
        // A trailing run of quoted lines (blank lines inside the run allowed).
        let mut start = None;
        for (i, l) in lines.iter().enumerate().rev() {
            if l.trim_start().starts_with('>') {
                start = Some(i);
            } else if !l.trim().is_empty() {
                break;
            }
        }
        start
    });
    match cut {
        Some(at) if at > 0 => {
            let new = lines[..at].join("\n").trim_end().to_string();
            let quoted = lines[at..].join("\n").trim_end().to_string();
            (new, (!quoted.is_empty()).then_some(quoted))
        }
        _ => (text.trim_end().to_string(), None),
    }
}

/// Parses a raw message (as fetched over IMAP).
pub fn parse(raw: &[u8]) -> Result<InboundMail, NotAMessage> {
    let message = MessageParser::default().parse(raw).ok_or(NotAMessage)?;
    let message_id = message.message_id().map(|id| id.trim_matches(['<', '>']).to_string()).filter(|id| !id.is_empty());
    let dedupe_key = match &message_id {
        Some(id) => format!("message-id:{id}"),
        None => format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, raw).as_ref())),
    };
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|addr| addr.address().map(|email| (email.to_ascii_lowercase(), addr.name().map(str::to_string))));
    let kind = kind(&message, from.as_ref().map(|(email, _)| email.as_str()));
    let body = message.body_text(0).map(|b| b.replace("\r\n", "\n")).unwrap_or_default();
    let (text, quoted) = split_quoted(&body);
    let attachments = message
        .attachments()
        .filter(|part| !part.is_message())
        .map(|part| InboundAttachment {
            name: part.attachment_name().unwrap_or("attachment").to_string(),
            content_type: part
                .content_type()
                .map(|ct| match &ct.c_subtype {
                    Some(sub) => format!("{}/{sub}", ct.c_type),
                    None => ct.c_type.to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_ascii_lowercase(),
            bytes: part.contents().to_vec(),
        })
        .collect();
    Ok(InboundMail {
        message_id,
        dedupe_key,
        from,
        subject: message.subject().unwrap_or_default().trim().to_string(),
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        text,
        quoted,
        attachments: if matches!(kind, Kind::Bounce { .. }) { Vec::new() } else { attachments },
        kind,
    })
}

/// What orders a message within a batch: its own Message-ID, the ones it answers or
/// references, and its sender (lower-cased), from its headers alone (cheap: read before the
/// message is parsed whole).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchKey {
    pub own: Option<String>,
    pub refs: Vec<String>,
    pub sender: Option<String>,
}

pub fn batch_key(raw: &[u8]) -> BatchKey {
    let Some(message) = MessageParser::default().parse_headers(raw) else { return BatchKey::default() };
    let own = message.message_id().map(|id| id.trim_matches(['<', '>']).to_string()).filter(|id| !id.is_empty());
    let mut refs = ids(message.in_reply_to());
    refs.extend(ids(message.references()));
    let sender = message.from().and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_ascii_lowercase);
    BatchKey { own, refs, sender }
}

/// Orders a batch of messages into waves that may each be filed concurrently: a message
/// comes in a later wave than any earlier one of the batch it answers or references (so it
/// finds its ticket) or that has its sender (so the sender is made a member once and the
/// flood limit counts each message). Returns indices, wave by wave.
pub fn waves(batch: &[BatchKey]) -> Vec<Vec<usize>> {
    let mut level = vec![0usize; batch.len()];
    for i in 0..batch.len() {
        let after = |j: &usize| {
            let (earlier, this) = (&batch[*j], &batch[i]);
            earlier.own.as_ref().is_some_and(|own| this.refs.contains(own)) || (earlier.sender.is_some() && earlier.sender == this.sender)
        };
        level[i] = (0..i).filter(after).map(|j| level[j] + 1).max().unwrap_or(0);
    }
    let mut out = vec![Vec::new(); level.iter().max().map_or(0, |m| m + 1)];
    for (i, l) in level.into_iter().enumerate() {
        out[l].push(i);
    }
    out
}

/// The ticket number a subject's tag names: `[#42]` anywhere in it.
pub fn subject_tag(subject: &str) -> Option<i64> {
    let mut rest = subject;
    while let Some(at) = rest.find("[#") {
        let digits: String = rest[at + 2..].chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() && rest[at + 2 + digits.len()..].starts_with(']') {
            return digits.parse().ok();
        }
        rest = &rest[at + 2..];
    }
    None
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threading {
    /// The ticket of a message it answers or references.
    Ticket(TicketId),
    /// The ticket its subject tag names (if that ticket exists).
    Number(i64),
    /// A new ticket.
    New,
}

/// Finds a message's ticket: through the messages it answers or references (the newest
/// first, `known` maps a Message-ID to its ticket), else its subject tag, else none.
pub fn thread(mail: &InboundMail, known: impl Fn(&str) -> Option<TicketId>) -> Threading {
    let mut ids: Vec<&String> = mail.in_reply_to.iter().collect();
    ids.extend(mail.references.iter().rev());
    if let Some(ticket) = ids.into_iter().find_map(|id| known(id)) {
        return Threading::Ticket(ticket);
    }
    match subject_tag(&mail.subject) {
        Some(number) => Threading::Number(number),
        None => Threading::New,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> InboundMail {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mail").join(name);
        parse(&std::fs::read(&path).unwrap()).unwrap()
    }

    #[test]
    fn a_customer_question_is_a_message_with_its_sender_and_text() {
        let mail = fixture("customer-question.eml");
        assert_eq!(mail.kind, Kind::Message);
        assert_eq!(mail.from, Some(("ada@customer.test".into(), Some("Ada Lovelace".into()))));
        assert_eq!(mail.subject, "Printer on fire");
        assert_eq!(mail.message_id.as_deref(), Some("20261201091403.4242@customer.test"));
        assert_eq!(mail.dedupe_key, "message-id:20261201091403.4242@customer.test");
        assert!(mail.text.starts_with("Hello,\n\nthe printer on the second floor is on fire again."), "{:?}", mail.text);
        assert_eq!(mail.quoted, None);
        assert_eq!(thread(&mail, |_| None), Threading::New);
    }

    #[test]
    fn a_reply_with_a_changed_subject_threads_by_its_headers_and_keeps_the_quote_apart() {
        let mail = fixture("customer-reply-changed-subject.eml");
        assert_eq!(mail.in_reply_to, ["0123456789abcdef0123456789abcdef@Example.test"]);
        assert_eq!(mail.references.len(), 2);
        assert_eq!(mail.text, "Thanks, the fire is out now.");
        let quoted = mail.quoted.as_deref().unwrap();
        assert!(quoted.starts_with("On Tue, 1 Dec 2026") && quoted.contains("> Stay calm."), "{quoted}");
        let ours = TicketId::new();
        let older = TicketId::new();
        assert_eq!(thread(&mail, |id| id.ends_with("@Example.test").then_some(ours)), Threading::Ticket(ours));
        // Only an older message of the thread is known: found through References.
        assert_eq!(thread(&mail, |id| (id == "20261201091403.4242@customer.test").then_some(older)), Threading::Ticket(older));
    }

    #[test]
    fn a_batch_files_answers_after_what_they_answer_and_a_sender_in_order() {
        let m = |own: &str, refs: &[&str], sender: &str| BatchKey {
            own: Some(own.to_string()),
            refs: refs.iter().map(|r| r.to_string()).collect(),
            sender: Some(sender.to_string()),
        };
        let batch =
            [m("a", &[], "x"), m("b", &["a"], "y"), m("c", &[], "z"), m("d", &["q", "b"], "w"), m("e", &["c"], "v"), m("f", &[], "x")];
        assert_eq!(waves(&batch), vec![vec![0, 2], vec![1, 4, 5], vec![3]]);
        assert_eq!(waves(&[]), Vec::<Vec<usize>>::new());
        let raw = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mail/customer-reply-changed-subject.eml"))
            .unwrap();
        let key = batch_key(&raw);
        assert_eq!(key.own.as_deref(), Some("20261201100211.77@customer.test"));
        assert_eq!(key.refs.len(), 3, "In-Reply-To and both References: {:?}", key.refs);
        assert_eq!(key.sender.as_deref(), Some("ada@customer.test"));
    }

    #[test]
    fn auto_replies_bounces_and_lists_are_told_apart() {
        let auto = fixture("auto-reply.eml");
        assert_eq!(auto.kind, Kind::AutoReply);
        let bounce = fixture("bounce.eml");
        assert_eq!(bounce.kind, Kind::Bounce { original: Some("0123456789abcdef0123456789abcdef@Example.test".into()) });
        assert!(bounce.attachments.is_empty(), "a bounce's returned message is not an attachment");
        assert_eq!(fixture("mailing-list.eml").kind, Kind::List);
    }

    #[test]
    fn an_html_only_body_becomes_plain_text_and_attachments_come_with_it() {
        let mail = fixture("html-with-attachment.eml");
        assert_eq!(mail.kind, Kind::Message);
        assert!(mail.text.contains("Here is a photo of the printer & the smoke."), "{:?}", mail.text);
        assert!(!mail.text.contains('<') && !mail.text.contains("alert") && !mail.text.contains("color:red"), "{:?}", mail.text);
        assert_eq!(mail.attachments.len(), 1);
        let png = &mail.attachments[0];
        assert_eq!((png.name.as_str(), png.content_type.as_str()), ("printer.png", "image/png"));
        assert!(png.bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(thread(&mail, |_| None), Threading::Number(42), "the subject tag");
    }

    #[test]
    fn tags_quotes_and_keys_in_edge_cases() {
        assert_eq!(subject_tag("Re: [#42] Printer"), Some(42));
        assert_eq!(subject_tag("[#x] then [#7]"), Some(7));
        assert_eq!(subject_tag("#42 [#] [#12"), None);
        assert_eq!(split_quoted("> only a quote"), ("> only a quote".into(), None));
        assert_eq!(split_quoted("new\n\n> old\n>\n> older\n"), ("new".into(), Some("> old\n>\n> older".into())));
        let without_id = parse(b"From: a@b.test\r\nSubject: hi\r\n\r\nbody\r\n").unwrap();
        assert!(without_id.dedupe_key.starts_with("sha256:") && without_id.message_id.is_none());
        assert_eq!(parse(b"From: a@b.test\r\nSubject: hi\r\n\r\nbody\r\n").unwrap().dedupe_key, without_id.dedupe_key);
    }
}
