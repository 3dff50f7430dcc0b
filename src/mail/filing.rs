//! Filing one fetched message: judged (`inbound.rs`), given its sender as a member, put on
//! its ticket or a new one, and its attachments stored, before the IMAP session may mark it
//! seen. At-least-once and idempotent: the message's dedupe row is written with its ticket
//! or comment (`MailStore::file`), and its attachments are each their own upload after it,
//! so a message fetched again after a crash adds only what it had not added yet.
//!
//! Set aside (recorded, never answered): auto-replies, mailing lists, messages without a
//! sender, mail from the channel's own address, our own mail coming back, and a sender's
//! messages past the hourly flood limit. A bounce fails the outbox mail it returns.

use std::sync::Arc;

use crate::store::attachments::{Upload, UploadError, Uploads};
use crate::store::mail::{ChannelRecord, Filing, InboundMessage, InboundRecord};
use crate::store::{Audience, Millis, NewUser, PlatformStore, Role, StoreError, TenantStore, UserId};

use super::inbound::{self, InboundMail, Kind, Threading};

/// The limits on what a message may bring (`EDGEDESK_MAIL_MAX_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilingLimits {
    /// A larger message is not fetched whole: its headers are, and it is set aside.
    pub max_message_bytes: u64,
    /// Attachments kept per message; the rest are named in the comment, not stored.
    pub max_attachments: usize,
    /// Messages per sender and hour before the rest are set aside (a flood, a loop).
    pub per_sender_hourly: u64,
}

impl Default for FilingLimits {
    fn default() -> Self {
        Self { max_message_bytes: 30 * 1024 * 1024, max_attachments: 20, per_sender_hourly: 30 }
    }
}

/// Why a message could not be filed now (it stays unseen and is tried again).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FilingError(pub String);

impl From<StoreError> for FilingError {
    fn from(err: StoreError) -> Self {
        Self(err.to_string())
    }
}

impl From<crate::error::AppError> for FilingError {
    fn from(err: crate::error::AppError) -> Self {
        Self(err.to_string())
    }
}

/// What filing needs beyond the workspace: the platform (senders become users), and the
/// upload path attachments are stored through.
pub struct Filer {
    pub platform: Arc<dyn PlatformStore>,
    pub uploads: Arc<dyn Uploads>,
    pub limits: FilingLimits,
}

/// How long a message's flood window is.
const HOUR_MS: i64 = 3_600_000;

impl Filer {
    /// Files `raw`, fetched from `channel`'s mailbox. `Ok`: it may be marked seen.
    pub async fn file(&self, tenant: &Arc<dyn TenantStore>, channel: &ChannelRecord, raw: &[u8]) -> Result<InboundRecord, FilingError> {
        let Ok(mail) = inbound::parse(raw) else {
            let dedupe_key = format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, raw).as_ref()));
            let message = set_aside(channel, dedupe_key, None, String::new(), String::new(), "not a mail message".into());
            return Ok(tenant.mail().file(message).await?.record);
        };
        // Fetched again (a crash before it was marked seen): only what it had not added.
        if let Some(record) = tenant.mail().received(&mail.dedupe_key).await? {
            if !record.attachments_done {
                self.store_attachments(tenant, &record, &mail).await?;
            }
            return Ok(record);
        }
        let filing = self.judge(tenant, channel, &mail).await?;
        let message = |filing: Filing| InboundMessage {
            dedupe_key: mail.dedupe_key.clone(),
            channel_id: channel.id,
            message_id: mail.message_id.clone(),
            sender: mail.from.as_ref().map(|(email, _)| email.clone()).unwrap_or_default(),
            subject: mail.subject.clone(),
            has_attachments: !mail.attachments.is_empty() && matches!(filing, Filing::NewTicket { .. } | Filing::Comment { .. }),
            filing,
        };
        let filed = match (tenant.mail().file(message(filing.clone())).await, &filing) {
            // Its ticket was deleted since it was found: the message opens a new one.
            (Err(StoreError::NotFound), Filing::Comment { author, .. }) => {
                tenant.mail().file(message(new_ticket(*author, &mail, self.limits.max_attachments))).await?
            }
            (other, _) => other?,
        };
        let record = filed.record;
        if !record.attachments_done {
            self.store_attachments(tenant, &record, &mail).await?;
        }
        Ok(record)
    }

    /// Sets a message aside that is larger than the cap, from its headers alone.
    pub async fn set_aside_large(
        &self,
        tenant: &Arc<dyn TenantStore>,
        channel: &ChannelRecord,
        headers: &[u8],
        size: u64,
    ) -> Result<InboundRecord, FilingError> {
        let why = format!("{size} bytes, larger than the {} byte cap on incoming messages", self.limits.max_message_bytes);
        let message = match inbound::parse(headers) {
            Ok(mail) => set_aside(
                channel,
                mail.dedupe_key,
                mail.message_id,
                mail.from.map(|(email, _)| email).unwrap_or_default(),
                mail.subject,
                why,
            ),
            Err(_) => {
                let dedupe_key = format!("sha256:{}", hex::encode(ring::digest::digest(&ring::digest::SHA256, headers).as_ref()));
                set_aside(channel, dedupe_key, None, String::new(), String::new(), why)
            }
        };
        Ok(tenant.mail().file(message).await?.record)
    }

    /// Where the message goes: set aside, a bounce, or a sender's message for a ticket.
    async fn judge(&self, tenant: &Arc<dyn TenantStore>, channel: &ChannelRecord, mail: &InboundMail) -> Result<Filing, FilingError> {
        let ignored = |why: &str| Ok(Filing::Ignored { why: why.to_string() });
        match &mail.kind {
            Kind::Bounce { original } => {
                let answer = summary(&mail.text);
                return Ok(Filing::Bounce { returned: original.clone(), answer: format!("bounced: {answer}") });
            }
            Kind::AutoReply => return ignored("an automatic reply (Auto-Submitted, X-Autoreply or Precedence)"),
            Kind::List => return ignored("a mailing list's message (List-Id, List-Unsubscribe or Precedence)"),
            Kind::Message => {}
        }
        let Some((sender, name)) = &mail.from else { return ignored("no sender address") };
        if sender.eq_ignore_ascii_case(&channel.settings.address) {
            return ignored("sent from the channel's own address");
        }
        let ids: Vec<String> = mail.in_reply_to.iter().chain(mail.references.iter()).chain(mail.message_id.iter()).cloned().collect();
        let known = tenant.mail().threads(ids).await?;
        if let Some(own) = &mail.message_id
            && known.iter().any(|(id, _)| id == own)
        {
            // A new message (it has no dedupe row) whose Message-ID is on a thread already is
            // one we sent: it came back.
            return ignored("our own mail came back");
        }
        let since = Millis(Millis::now().0 - HOUR_MS);
        if tenant.mail().received_from(sender, since).await? >= self.limits.per_sender_hourly {
            return ignored("more messages from this sender within an hour than the flood limit");
        }
        let author = self.member(tenant, sender, name.as_deref()).await?;
        let ticket = match inbound::thread(mail, |id| known.iter().find(|(k, _)| k == id).map(|(_, t)| *t)) {
            Threading::Ticket(id) => tenant.ticket(Audience::Staff(author), id).await?,
            Threading::Number(number) => tenant.mail().ticket_by_number(number).await?,
            Threading::New => None,
        };
        Ok(match ticket {
            None => new_ticket(author, mail, self.limits.max_attachments),
            Some(ticket) => {
                let stranger = ticket.requester_id != author && !self.is_staff(tenant, author).await?;
                let note = stranger.then(|| format!("Sent by {sender}, who is not this ticket's requester."));
                Filing::Comment { ticket: ticket.id, author, body: body(mail, note.as_deref(), self.limits.max_attachments) }
            }
        })
    }

    async fn is_staff(&self, tenant: &Arc<dyn TenantStore>, user: UserId) -> Result<bool, FilingError> {
        Ok(self.platform.member_role(tenant.workspace_id(), user).await?.is_some_and(|role| role != Role::Requester))
    }

    /// The sender as a member of the workspace: a known user by address, or a new one
    /// without a password (who can be invited to set one), made a requester if they are
    /// not a member yet.
    async fn member(&self, tenant: &Arc<dyn TenantStore>, email: &str, name: Option<&str>) -> Result<UserId, FilingError> {
        let user = match self.platform.user_by_email(email).await? {
            Some((user, _)) => user,
            None => {
                let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or_else(|| email.split('@').next().unwrap_or(email));
                let new = NewUser {
                    email: email.to_string(),
                    name: name.chars().take(200).collect(),
                    password_hash: crate::auth::password::NO_PASSWORD.to_string(),
                    is_admin: false,
                };
                match self.platform.create_user(new).await {
                    Ok(user) => user,
                    // Another message from them was filed at the same moment.
                    Err(StoreError::Conflict(_)) => {
                        self.platform.user_by_email(email).await?.ok_or_else(|| FilingError(format!("the user {email} vanished")))?.0
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        };
        if self.platform.member_role(tenant.workspace_id(), user.id).await?.is_none() {
            crate::tenants::change_member(self.platform.as_ref(), tenant.as_ref(), user.id, Some(Role::Requester), None).await?;
        }
        Ok(user.id)
    }

    /// Stores the message's attachments on its comment, skipping any a crash left stored
    /// already (the same bytes on that comment), then records that they are all there. One the quota
    /// refuses is logged and left out: the message itself is not lost over it.
    async fn store_attachments(
        &self,
        tenant: &Arc<dyn TenantStore>,
        record: &InboundRecord,
        mail: &InboundMail,
    ) -> Result<(), FilingError> {
        let (Some(ticket), Some(comment)) = (record.ticket_id, record.comment_id) else { return Ok(()) };
        // The sender uploads them (the comment's author).
        let author = match self.platform.user_by_email(&record.sender).await? {
            Some((user, _)) => user.id,
            None => return Err(FilingError(format!("the sender {} is no longer a user", record.sender))),
        };
        let stored = tenant.attachments().list(Audience::Staff(author), ticket).await?;
        for file in mail.attachments.iter().take(self.limits.max_attachments) {
            let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &file.bytes).as_ref());
            if stored.iter().any(|a| a.comment_id == Some(comment) && a.latest.sha256 == sha256) {
                continue;
            }
            let upload = Upload {
                ticket,
                comment: Some(comment),
                existing: None,
                name: file.name.clone(),
                declared_type: Some(file.content_type.clone()),
                declared_length: Some(file.bytes.len() as u64),
                encryption: None,
            };
            let bytes = bytes::Bytes::copy_from_slice(&file.bytes);
            let body: crate::store::blobs::ByteStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
            match self.uploads.upload(tenant, author, upload, body).await {
                Ok(_) => {}
                Err(err @ UploadError::Refused(_)) => {
                    tracing::warn!(workspace = %tenant.workspace_id(), file = %file.name, error = %err, "an incoming attachment was not stored");
                }
                Err(UploadError::Failed(why)) => return Err(FilingError(why)),
            }
        }
        tenant.mail().attachments_filed(&record.dedupe_key).await?;
        Ok(())
    }
}

fn set_aside(
    channel: &ChannelRecord,
    dedupe_key: String,
    message_id: Option<String>,
    sender: String,
    subject: String,
    why: String,
) -> InboundMessage {
    InboundMessage {
        dedupe_key,
        channel_id: channel.id,
        message_id,
        sender,
        subject,
        filing: Filing::Ignored { why },
        has_attachments: false,
    }
}

fn new_ticket(requester: UserId, mail: &InboundMail, max_attachments: usize) -> Filing {
    let title = match mail.subject.trim() {
        "" => summary(&mail.text),
        subject => subject.chars().take(200).collect(),
    };
    let title = if title.is_empty() { "(no subject)".to_string() } else { title };
    Filing::NewTicket { requester, title, body: body(mail, None, max_attachments) }
}

/// The first line of `text`, at most 200 characters.
fn summary(text: &str) -> String {
    text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().chars().take(200).collect()
}

/// The comment a message becomes: an optional note about its sender, what they wrote, the
/// quoted history below it marked as a quote, and the attachments left out over the cap.
fn body(mail: &InboundMail, note: Option<&str>, max_attachments: usize) -> String {
    let mut out = String::new();
    if let Some(note) = note {
        out.push_str(&format!("_{note}_\n\n"));
    }
    out.push_str(mail.text.trim_end());
    if let Some(quoted) = &mail.quoted {
        out.push_str("\n\n");
        for line in quoted.lines() {
            match line.starts_with('>') {
                true => out.push_str(&format!(">{line}\n")),
                false => out.push_str(&format!("> {line}\n")),
            }
        }
    }
    let left_out: Vec<&str> = mail.attachments.iter().skip(max_attachments).map(|a| a.name.as_str()).collect();
    if !left_out.is_empty() {
        out.push_str(&format!("\n\n_Not stored (more than {max_attachments} attachments): {}_", left_out.join(", ")));
    }
    if out.trim().is_empty() { "(empty message)".to_string() } else { out }
}
