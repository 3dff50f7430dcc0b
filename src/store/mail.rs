//! What mail keeps in the workspace's store, behind its own trait ([`MailStore`], reached
//! through [`TenantStore::mail`](super::TenantStore::mail)): the workspace's mail channels
//! and its outbox.
//!
//! A channel is one support address with the IMAP server its mail is read from and the
//! SMTP server replies are sent through. The store keeps each password only as the sealed
//! bytes the mail feature hands it (`crypto::seal`, under a key the store never sees), so a
//! copied database or an export discloses no password. Channel changes are log events for
//! staff, carrying the channel as the API shows it (`password_set`, never the password), so
//! the audit trail says who pointed the workspace at which mailbox.
//!
//! Incoming mail leaves a row per message (`mail_inbound`), keyed by its dedupe key and
//! written in the same transaction as the ticket or comment it made ([`MailStore::file`]),
//! so a message fetched twice is filed once. Which mailboxes are read, and by whom, is the
//! one cross-workspace part ([`Mailboxes`]): a registry every instance reads, with a reader
//! lease per channel so that one IMAP session reads a mailbox.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::consumers::Advance;
use super::{Comment, CommentId, Event, Millis, StoreResult, Ticket, TicketId, UserId, WorkspaceId};

/// How many of a ticket's earlier mails a reply names in `References`: the thread's first
/// and the most recent ones (mail programs trim long threads the same way), so a ticket
/// with a thousand replies does not send a thousand Message-IDs with each.
pub const THREAD_REFERENCES: usize = 10;

/// Why a channel's write is refused when its address is another channel's (`Conflict`).
pub const ADDRESS_TAKEN: &str = "another mail channel of this workspace has this address";

crate::store::model::id_type!(/// A mail channel: one support address with its IMAP and SMTP servers.
    ChannelId);

/// How a connection to a mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// TLS from the first byte (IMAPS on 993, SMTPS on 465).
    Tls,
    /// Plain first, upgraded with STARTTLS before logging in (refused if the server cannot).
    Starttls,
    /// No encryption at all: only for a server on a network you trust.
    None,
}

/// One mail server of a channel, apart from its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The login name; empty for an SMTP relay that takes mail without logging in.
    pub user: String,
}

/// A channel's settings: everything but the passwords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelSettings {
    /// The support address: mail to it becomes tickets, replies are sent from it.
    pub address: String,
    /// The name replies are sent under (`Acme Support <support@acme.test>`).
    pub display_name: Option<String>,
    /// A disabled channel neither reads nor sends; its queued mail waits.
    pub enabled: bool,
    pub imap: Server,
    /// The IMAP folder that is read (`INBOX` unless set).
    pub mailbox: String,
    pub smtp: Server,
}

impl ChannelSettings {
    /// The address as the store keys it: one channel per address, whatever its case.
    pub fn address_key(&self) -> String {
        self.address.to_lowercase()
    }
}

/// A channel as stored: its settings, and each password sealed (`None`: not set). An
/// export carries it as it is, the passwords still sealed (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub id: ChannelId,
    pub settings: ChannelSettings,
    #[serde(with = "sealed")]
    pub imap_password: Option<Vec<u8>>,
    #[serde(with = "sealed")]
    pub smtp_password: Option<Vec<u8>>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Sealed bytes in an export: base64 in JSON.
mod sealed {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|text| STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)).transpose()
    }
}

/// A mail server as the API shows it: whether a password is stored, never the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerView {
    #[serde(flatten)]
    pub server: Server,
    pub password_set: bool,
}

/// A channel as the API and the log show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailChannel {
    pub id: ChannelId,
    pub address: String,
    pub display_name: Option<String>,
    pub enabled: bool,
    pub imap: ServerView,
    pub mailbox: String,
    pub smtp: ServerView,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl From<&ChannelRecord> for MailChannel {
    fn from(c: &ChannelRecord) -> Self {
        let s = &c.settings;
        Self {
            id: c.id,
            address: s.address.clone(),
            display_name: s.display_name.clone(),
            enabled: s.enabled,
            imap: ServerView { server: s.imap.clone(), password_set: c.imap_password.is_some() },
            mailbox: s.mailbox.clone(),
            smtp: ServerView { server: s.smtp.clone(), password_set: c.smtp_password.is_some() },
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// The `data` of a `mail_channel.deleted` event.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelRemoved {
    pub id: ChannelId,
    pub address: String,
}

impl<'a> Event<'a, MailChannel> {
    /// `mail_channel.created` / `mail_channel.updated`: staff only (a customer has no business
    /// knowing which servers the workspace uses).
    pub fn mail_channel(channel: &'a MailChannel, created: bool) -> Self {
        Event {
            kind: if created { "mail_channel.created" } else { "mail_channel.updated" },
            entity: "mail_channel",
            entity_id: channel.id.to_string(),
            data: channel,
            ticket: None,
            staff_only: true,
            recipient: None,
        }
    }
}

impl<'a> Event<'a, ChannelRemoved> {
    pub fn mail_channel_deleted(removed: &'a ChannelRemoved) -> Self {
        Event {
            kind: "mail_channel.deleted",
            entity: "mail_channel",
            entity_id: removed.id.to_string(),
            data: removed,
            ticket: None,
            staff_only: true,
            recipient: None,
        }
    }
}

crate::store::model::id_type!(/// A mail in the outbox.
    MailId);

/// Where an outgoing mail stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MailStatus {
    /// Waiting for its first try.
    Queued,
    /// A worker holds it under a lease and is handing it to the relay.
    Sending,
    /// The relay took it (`relay_answer` says what it said).
    Sent,
    /// The relay failed or refused for now; tried again at `next_attempt_at`.
    Retrying,
    /// Given up: the relay refused it for good, or it kept failing past the expiry.
    Failed,
}

crate::store::model::text_enum!(MailStatus {
    Queued = "queued",
    Sending = "sending",
    Sent = "sent",
    Retrying = "retrying",
    Failed = "failed",
});

/// One outgoing mail as staff see it on its ticket, and as the `data` of its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutboxMail {
    pub id: MailId,
    pub ticket_id: TicketId,
    /// The reply it carries.
    pub comment_id: Option<CommentId>,
    pub channel_id: ChannelId,
    /// Its `Message-ID` (without the angle brackets): the same on every try, so a receiver
    /// drops a duplicate.
    pub message_id: String,
    pub to: String,
    pub subject: String,
    pub status: MailStatus,
    /// Tries so far.
    pub attempts: u32,
    /// When it is tried next (queued and retrying mail).
    pub next_attempt_at: Option<Millis>,
    /// What the relay last answered (or why it could not be reached).
    pub relay_answer: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub sent_at: Option<Millis>,
}

/// An outbox row as stored (export/import only): the mail, and what sending it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub mail: OutboxMail,
    pub source_sync_id: i64,
    pub from: String,
    pub message: crate::store::notes::Base64Bytes,
    /// When it is due (or its lease ends); `None` once sent or failed.
    pub due_at: Option<Millis>,
}

/// A mail the consumer composed, for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub id: MailId,
    pub ticket_id: TicketId,
    pub comment_id: Option<CommentId>,
    pub channel_id: ChannelId,
    pub message_id: String,
    /// The envelope: the channel's address, and the recipient's.
    pub from: String,
    pub to: String,
    pub subject: String,
    /// The whole message as it will be sent, every try the same bytes.
    pub message: Vec<u8>,
    /// The log event it was made for: at most one mail per event.
    pub source_sync_id: i64,
}

/// A public reply as it is mailed: the comment and the files it carries.
#[derive(Debug, Clone)]
pub struct Reply {
    pub comment: Comment,
    /// Attached to the mail, in the order they were uploaded.
    pub files: Vec<MailFile>,
    /// The reply's files that are not attached (past the mail's size cap, or encrypted in
    /// the browser, which the customer's mail program could not open): named in the text.
    pub left_out: Vec<String>,
}

/// A file a mail carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFile {
    pub name: String,
    pub content_type: String,
    pub bytes: bytes::Bytes,
}

/// What the mail consumer turns into mail: a public reply (mailed to the ticket's
/// requester), or a notification (mailed to its recipient, when they want it by mail).
#[derive(Debug, Clone)]
pub enum Outgoing {
    Reply(Reply),
    Notification(crate::store::notifications::Notification),
}

impl Outgoing {
    pub fn ticket(&self) -> TicketId {
        match self {
            Self::Reply(r) => r.comment.ticket_id,
            Self::Notification(n) => n.ticket_id,
        }
    }

    /// Who the mail is for: the requester (a reply) or the recipient (a notification).
    pub fn recipient(&self, requester: UserId) -> UserId {
        match self {
            Self::Reply(_) => requester,
            Self::Notification(n) => n.recipient_id,
        }
    }

    /// Whose action it is about: the reply's author, the notification's actor.
    pub fn actor(&self) -> Option<UserId> {
        match self {
            Self::Reply(r) => Some(r.comment.author_id),
            Self::Notification(n) => n.actor_id,
        }
    }
}

/// A member a mail is to or about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailMember {
    pub email: String,
    pub name: String,
    pub staff: bool,
}

/// What the consumer knows about one thing to mail when composing it, read in the store's
/// write transaction.
#[derive(Debug, Clone)]
pub struct MailContext {
    pub sync_id: i64,
    pub outgoing: Outgoing,
    pub ticket_number: i64,
    pub ticket_title: String,
    /// Who it goes to (`None`: not a member any more, nobody to write to).
    pub recipient: Option<MailMember>,
    /// Whose action it is (`None`: nobody, or no longer a member).
    pub actor: Option<MailMember>,
    /// The channel mail goes out through: the workspace's first enabled one.
    pub channel: Option<ChannelRecord>,
    /// The `Message-ID`s already on the ticket's thread, oldest first: its first and the
    /// most recent, at most [`THREAD_REFERENCES`].
    pub thread: Vec<String>,
}

/// A thread from its first mail and its latest ones (newest first, as read), oldest first
/// and without the first twice.
pub fn trimmed_thread(first: Vec<String>, mut latest: Vec<String>) -> Vec<String> {
    latest.reverse();
    let mut thread = first;
    thread.extend(latest.into_iter().filter(|id| !thread.contains(id)).collect::<Vec<_>>());
    thread
}

/// Composes one item's mail, or decides there is none (an internal note, a requester's own
/// reply, nobody to write to, no channel, a notification its recipient does not want by
/// mail). Pure: it runs inside the store's write.
pub type Composer = Box<dyn FnMut(&MailContext) -> Result<Option<NewMail>, String> + Send>;

/// A claimed mail: the row and what to send.
#[derive(Debug, Clone)]
pub struct ClaimedMail {
    pub mail: OutboxMail,
    pub from: String,
    pub message: Vec<u8>,
}

/// How a try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Sent {
        answer: String,
    },
    /// Not now: tried (`attempted`) and failed, or held back (an open circuit breaker).
    Retry {
        at: Millis,
        answer: String,
        attempted: bool,
    },
    Failed {
        answer: String,
    },
}

/// How a try's outcome is written to its row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub status: MailStatus,
    /// The next attempt (retrying), else none.
    pub due_at: Option<Millis>,
    pub answer: String,
    /// Tries to add: 1, or 0 for a mail held back without being tried.
    pub tried: u32,
    pub sent_at: Option<Millis>,
}

impl Delivered {
    pub fn settled(self, now: Millis) -> Settled {
        match self {
            Self::Sent { answer } => Settled { status: MailStatus::Sent, due_at: None, answer, tried: 1, sent_at: Some(now) },
            Self::Retry { at, answer, attempted } => {
                Settled { status: MailStatus::Retrying, due_at: Some(at), answer, tried: u32::from(attempted), sent_at: None }
            }
            Self::Failed { answer } => Settled { status: MailStatus::Failed, due_at: None, answer, tried: 1, sent_at: None },
        }
    }
}

impl<'a> Event<'a, OutboxMail> {
    /// `mail.queued`, `mail.sending`, `mail.sent`, `mail.retrying`, `mail.failed`: staff see
    /// on the ticket whether the customer got the answer.
    pub fn mail(mail: &'a OutboxMail) -> Self {
        Event {
            kind: match mail.status {
                MailStatus::Queued => "mail.queued",
                MailStatus::Sending => "mail.sending",
                MailStatus::Sent => "mail.sent",
                MailStatus::Retrying => "mail.retrying",
                MailStatus::Failed => "mail.failed",
            },
            entity: "mail",
            entity_id: mail.id.to_string(),
            data: mail,
            ticket: Some(mail.ticket_id),
            staff_only: true,
            recipient: None,
        }
    }
}

/// What became of an incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboundOutcome {
    /// It opened a ticket.
    Ticket,
    /// It was added to a ticket as a comment.
    Comment,
    /// Set aside, not answered: an auto-reply, a list, our own mail, a flood (`detail` says).
    Ignored,
    /// A delivery status notification: the mail it returns is marked failed.
    Bounce,
}

crate::store::model::text_enum!(InboundOutcome {
    Ticket = "ticket",
    Comment = "comment",
    Ignored = "ignored",
    Bounce = "bounce",
});

/// An incoming message as the store keeps it: its dedupe row, and the `data` of its
/// `mail_inbound.*` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InboundRecord {
    pub dedupe_key: String,
    pub channel_id: ChannelId,
    pub message_id: Option<String>,
    /// The sender's address.
    pub sender: String,
    pub subject: String,
    pub outcome: InboundOutcome,
    /// Why it was set aside, or what a bounce said.
    pub detail: Option<String>,
    pub ticket_id: Option<TicketId>,
    pub comment_id: Option<CommentId>,
    /// Its attachments are stored (each is its own upload, after the comment).
    pub attachments_done: bool,
    pub received_at: Millis,
}

/// Where a message goes, decided by the mail feature before the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filing {
    /// A new ticket requested by `requester`, its first comment the message.
    NewTicket { requester: UserId, title: String, body: String },
    /// A public comment by `author` on `ticket` (`NotFound` if it is gone: file it anew).
    Comment { ticket: TicketId, author: UserId, body: String },
    /// Recorded, not answered.
    Ignored { why: String },
    /// A bounce: the outbox mail with the Message-ID `returned` (if any of ours) is failed
    /// with `answer`.
    Bounce { returned: Option<String>, answer: String },
}

/// A message to file, with its dedupe key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub dedupe_key: String,
    pub channel_id: ChannelId,
    pub message_id: Option<String>,
    pub sender: String,
    pub subject: String,
    pub filing: Filing,
    /// Attachments follow (the row says they are not stored yet).
    pub has_attachments: bool,
}

impl InboundMessage {
    /// Where the message goes, and the rest of it, which becomes its record once the store
    /// has filed it.
    pub fn split(self) -> (Filing, Unfiled) {
        let Self { dedupe_key, channel_id, message_id, sender, subject, filing, has_attachments } = self;
        (filing, Unfiled { dedupe_key, channel_id, message_id, sender, subject, has_attachments })
    }
}

/// A message apart from where it goes ([`InboundMessage::split`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfiled {
    pub dedupe_key: String,
    pub channel_id: ChannelId,
    pub message_id: Option<String>,
    pub sender: String,
    pub subject: String,
    pub has_attachments: bool,
}

impl Unfiled {
    /// Its record, filed at `now` as `outcome` (with `detail`) onto this ticket and comment.
    /// Its attachments are still to come only if it has some and made a comment.
    pub fn filed(
        self,
        outcome: InboundOutcome,
        detail: Option<String>,
        ticket_id: Option<TicketId>,
        comment_id: Option<CommentId>,
        now: Millis,
    ) -> InboundRecord {
        InboundRecord {
            dedupe_key: self.dedupe_key,
            channel_id: self.channel_id,
            message_id: self.message_id,
            sender: self.sender,
            subject: self.subject,
            outcome,
            detail,
            ticket_id,
            comment_id,
            attachments_done: !self.has_attachments || comment_id.is_none(),
            received_at: now,
        }
    }
}

/// What filing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filed {
    pub record: InboundRecord,
    /// False: the message was filed before (fetched again), nothing was written now.
    pub new: bool,
}

impl<'a> Event<'a, InboundRecord> {
    /// `mail_inbound.ignored` / `mail_inbound.bounce`: staff see mail that was set aside.
    /// (A filed message's events are its ticket's and comment's.)
    pub fn inbound(record: &'a InboundRecord) -> Self {
        Event {
            kind: match record.outcome {
                InboundOutcome::Bounce => "mail_inbound.bounce",
                _ => "mail_inbound.ignored",
            },
            entity: "mail_inbound",
            entity_id: record.dedupe_key.clone(),
            data: record,
            ticket: record.ticket_id,
            staff_only: true,
            recipient: None,
        }
    }
}

/// The mailboxes that are read, across workspaces, and who reads each (a reader lease):
/// the registry is written by the mail consumer from `mail_channel.*` events, so it
/// follows every channel change, and every instance reads it to find channels no session
/// holds.
#[async_trait]
pub trait Mailboxes: Send + Sync {
    /// Records that the channel is read, as changed at `changed_at` (its `updated_at`: a
    /// session started for an older version restarts), or with `None` that it is not (it
    /// was disabled or deleted).
    async fn set_readable(&self, workspace: WorkspaceId, channel: ChannelId, changed_at: Option<Millis>) -> StoreResult<()>;
    /// Every channel that is read, with its reader lease (holder, until) if any.
    async fn readable(&self) -> StoreResult<Vec<MailboxLease>>;
    /// Takes or renews the channel's reader lease for `holder` until `until`: false when
    /// another holder's lease has not ended at `now`, or the channel is no longer read.
    async fn hold(&self, workspace: WorkspaceId, channel: ChannelId, holder: &str, now: Millis, until: Millis) -> StoreResult<bool>;
    /// Gives the lease up (a session that ends), if `holder` has it.
    async fn release(&self, workspace: WorkspaceId, channel: ChannelId, holder: &str) -> StoreResult<()>;
}

/// A channel that is read, and who reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxLease {
    pub workspace: WorkspaceId,
    pub channel: ChannelId,
    pub changed_at: Option<Millis>,
    pub reader: Option<String>,
    pub reader_until: Option<Millis>,
}

/// One workspace's mail channels, outbox and inbound record.
#[async_trait]
pub trait MailStore: Send + Sync {
    /// Every channel, oldest first.
    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>>;
    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>>;
    /// Adds `channel` (`mail_channel.created`). `Conflict` when another channel of the
    /// workspace has its address.
    async fn create_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()>;
    /// Replaces the channel with `channel`'s id (`mail_channel.updated`); `NotFound` when
    /// there is none, `Conflict` when another channel has the address.
    async fn update_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()>;
    /// Removes the channel (`mail_channel.deleted`); `NotFound` when there is none.
    async fn delete_channel(&self, actor: UserId, id: ChannelId) -> StoreResult<()>;

    /// The mail consumer's page: for each item `(sync_id, outgoing)`, reads its
    /// [`MailContext`], lets `compose` decide its mail, and writes the mails (each with its
    /// `mail.queued` event) and `advance` in ONE transaction. An item that already has its
    /// mail (a replayed page) gets no second one. Returns how many were queued.
    async fn enqueue(&self, advance: Advance, items: Vec<(i64, Outgoing)>, compose: Composer) -> StoreResult<usize>;
    /// Claims up to `limit` mails that are due at `now` (queued, retrying, or sending under a
    /// lease that expired: a dead worker's) for `owner` until `lease_until`, so that no two
    /// workers, here or on another instance, send one at once.
    async fn claim(&self, owner: &str, now: Millis, lease_until: Millis, limit: usize) -> StoreResult<Vec<ClaimedMail>>;
    /// Records how `owner`'s tries ended, all in one transaction (each with its event). A
    /// mail whose lease is no longer theirs (it expired and another worker took it) is left
    /// as it is and not among the rows returned.
    async fn settle(&self, owner: &str, outcomes: Vec<(MailId, Delivered)>) -> StoreResult<Vec<OutboxMail>>;
    /// The earliest time a mail here is due (`None`: nothing left to send).
    async fn next_due(&self) -> StoreResult<Option<Millis>>;
    /// The ticket's mails, oldest first.
    async fn ticket_mail(&self, ticket: TicketId) -> StoreResult<Vec<OutboxMail>>;

    /// The tickets of the messages with these Message-IDs: mails we sent and messages filed
    /// earlier. Deleted tickets are not among them.
    async fn threads(&self, message_ids: Vec<String>) -> StoreResult<Vec<(String, TicketId)>>;
    /// The live ticket with this number.
    async fn ticket_by_number(&self, number: i64) -> StoreResult<Option<Ticket>>;
    /// The record of the message with this dedupe key, if it was filed or set aside.
    async fn received(&self, dedupe_key: &str) -> StoreResult<Option<InboundRecord>>;
    /// Files an incoming message: in ONE transaction, its dedupe row and what it makes (a
    /// ticket and its first comment, a comment, a failed outbox mail, or only the record).
    /// A message filed before is not filed again: its earlier row comes back, `new` false.
    async fn file(&self, message: InboundMessage) -> StoreResult<Filed>;
    /// Records that the message's attachments are stored.
    async fn attachments_filed(&self, dedupe_key: &str) -> StoreResult<()>;
    /// How many messages from `sender` were filed or set aside since `since` (flood control).
    async fn received_from(&self, sender: &str, since: Millis) -> StoreResult<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_thread_keeps_its_first_and_latest_mails_in_order() {
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(trimmed_thread(ids(&["a"]), ids(&["j", "i", "h"])), ids(&["a", "h", "i", "j"]));
        assert_eq!(trimmed_thread(ids(&["a"]), ids(&["b", "a"])), ids(&["a", "b"]), "a short thread, the first once");
        assert_eq!(trimmed_thread(Vec::new(), Vec::new()), Vec::<String>::new());
    }
}
