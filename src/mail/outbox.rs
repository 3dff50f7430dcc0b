//! The mail consumer: the log is the outbox. On the runner like every durable consumer, it
//! reads the events past its watermark and, for every public reply by staff, writes the
//! mail (composed by `compose.rs`) and its watermark in ONE transaction
//! (`MailStore::enqueue`): a committed reply yields its mail exactly once, across crashes,
//! restarts and instances, and an internal note never yields one. Notifications (the
//! notifications consumer's `notification.created` events) become mail too for recipients
//! whose preferences say so, through the same outbox. A reply's mail carries the files put
//! on it when it was written (read from the blob store before the transaction).
//!
//! Its wakes are the outbox's clock: before it queues mail it asks to be woken at once (so
//! a crash between the two leaves a wake that finds nothing, never mail nothing wakes), and
//! again after the commit (that first wake may have come too early); a
//! delivery worker asks for the next due time after each batch, and a wake hands the
//! workspace to the workers ([`Delivery::submit`]). While mail is pending, each wake also
//! asks for a later one as a safety net, so a crash between a wake and its delivery leaves
//! the mail late, never forgotten.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::compose;
use super::delivery::{CONSUMER, Delivery};
use crate::store::attachments::Attachment;
use crate::store::blobs::{BlobError, BlobKey, BlobStore};
use crate::store::mail::{Composer, MailChannel, MailFile, MailId, Mailboxes, Outgoing, Reply};
use crate::store::notifications::{Notification, NotificationKind};
use crate::store::{Advance, Audience, Comment, FeedEvent, Millis, NotificationPreferences, TenantStore, TicketId, UserId};
use crate::sync::runner::{Consumer, ConsumerError, Handled};

/// The most bytes of files one reply's mail carries (many receiving servers refuse more
/// than 10–25 MB once base64 has grown it by a third).
pub const MAIL_FILES_MAX_BYTES: u64 = 10 * 1024 * 1024;

pub struct MailConsumer {
    delivery: Arc<Delivery>,
    blobs: Arc<dyn BlobStore>,
    mailboxes: Arc<dyn Mailboxes>,
    preferences: Arc<dyn NotificationPreferences>,
    /// How long after a wake the safety-net wake comes (a worker's lease).
    safety: std::time::Duration,
}

impl MailConsumer {
    pub fn new(
        delivery: Arc<Delivery>,
        blobs: Arc<dyn BlobStore>,
        mailboxes: Arc<dyn Mailboxes>,
        preferences: Arc<dyn NotificationPreferences>,
        safety: std::time::Duration,
    ) -> Self {
        Self { delivery, blobs, mailboxes, preferences, safety }
    }

    /// The page's public replies and its notifications whose recipients want them by mail,
    /// with the sync_id each was recorded under.
    async fn items(&self, tenant: &Arc<dyn TenantStore>, page: &[FeedEvent]) -> Result<Vec<(i64, Outgoing)>, ConsumerError> {
        let unreadable =
            |e: &FeedEvent, err: serde_json::Error| ConsumerError::Failed(format!("event {} ({}): {err}", e.event.sync_id, e.event.kind));
        let mut out = Vec::new();
        let mut replies = Vec::new();
        let mut wanted: HashMap<UserId, Vec<(NotificationKind, bool)>> = HashMap::new();
        for e in page {
            match e.event.kind.as_str() {
                "comment.created" if !e.visibility.staff_only => {
                    let comment: Comment = serde_json::from_value(e.event.data.clone()).map_err(|err| unreadable(e, err))?;
                    if !comment.internal {
                        replies.push((e.event.sync_id, comment));
                    }
                }
                "notification.created" => {
                    let n: Notification = serde_json::from_value(e.event.data.clone()).map_err(|err| unreadable(e, err))?;
                    if let std::collections::hash_map::Entry::Vacant(slot) = wanted.entry(n.recipient_id) {
                        let preferences = self.preferences.preferences(n.recipient_id).await?;
                        slot.insert(preferences.iter().map(|p| (p.kind, p.email)).collect());
                    }
                    let by_mail = wanted.get(&n.recipient_id).is_some_and(|p| p.iter().any(|(kind, email)| *kind == n.kind && *email));
                    if by_mail {
                        out.push((e.event.sync_id, Outgoing::Notification(n)));
                    }
                }
                _ => {}
            }
        }
        for (sync_id, reply) in self.with_files(tenant, replies).await? {
            out.push((sync_id, Outgoing::Reply(reply)));
        }
        out.sort_by_key(|(sync_id, _)| *sync_id);
        Ok(out)
    }

    /// The replies with the files they carry, read from the blob store: those put on them
    /// when they were written, in upload order, up to [`MAIL_FILES_MAX_BYTES`] together;
    /// the rest, and files encrypted in the browser, are named instead.
    async fn with_files(&self, tenant: &Arc<dyn TenantStore>, replies: Vec<(i64, Comment)>) -> Result<Vec<(i64, Reply)>, ConsumerError> {
        let mut by_ticket: HashMap<TicketId, Vec<Attachment>> = HashMap::new();
        let mut out = Vec::new();
        for (sync_id, comment) in replies {
            if let std::collections::hash_map::Entry::Vacant(slot) = by_ticket.entry(comment.ticket_id) {
                slot.insert(tenant.attachments().list(Audience::Staff(comment.author_id), comment.ticket_id).await?);
            }
            let mut on_it: Vec<&Attachment> =
                by_ticket.get(&comment.ticket_id).into_iter().flatten().filter(|a| a.comment_id == Some(comment.id)).collect();
            on_it.sort_by_key(|a| (a.created_at, a.id));
            let (mut files, mut left_out, mut bytes) = (Vec::new(), Vec::new(), 0u64);
            for a in on_it {
                if a.latest.encryption.is_some() {
                    left_out.push(format!("{} (encrypted)", a.name));
                    continue;
                }
                if bytes + a.latest.size > MAIL_FILES_MAX_BYTES {
                    left_out.push(a.name.clone());
                    continue;
                }
                let key = BlobKey { workspace: tenant.workspace_id(), attachment: a.id, version: a.latest.id };
                match self.read(&key).await {
                    Ok(content) => {
                        bytes += a.latest.size;
                        files.push(MailFile { name: a.name.clone(), content_type: a.latest.content_type.clone(), bytes: content });
                    }
                    // Pruned or deleted since: the mail goes without it.
                    Err(BlobError::NotFound) => left_out.push(a.name.clone()),
                    Err(err) => return Err(ConsumerError::Failed(format!("reading {} for its reply's mail: {err}", a.name))),
                }
            }
            out.push((sync_id, Reply { comment, files, left_out }));
        }
        Ok(out)
    }

    async fn read(&self, key: &BlobKey) -> Result<bytes::Bytes, BlobError> {
        use futures::TryStreamExt;
        let read = self.blobs.get(key, None).await?;
        let mut content = bytes::BytesMut::with_capacity(read.total as usize);
        let mut body = read.body;
        while let Some(chunk) = body.try_next().await.map_err(|e| BlobError::Internal(e.to_string()))? {
            content.extend_from_slice(&chunk);
        }
        Ok(content.freeze())
    }
}

impl MailConsumer {
    /// Keeps the registry of mailboxes to read in step with the page's channel changes
    /// (before the watermark moves: a crash repeats it, and it is idempotent).
    async fn register_mailboxes(&self, tenant: &Arc<dyn TenantStore>, page: &[FeedEvent]) -> Result<(), ConsumerError> {
        for e in page {
            let readable = match e.event.kind.as_str() {
                "mail_channel.created" | "mail_channel.updated" => {
                    let channel: MailChannel = serde_json::from_value(e.event.data.clone())
                        .map_err(|err| ConsumerError::Failed(format!("event {} ({}): {err}", e.event.sync_id, e.event.kind)))?;
                    (channel.id, channel.enabled.then_some(channel.updated_at))
                }
                "mail_channel.deleted" => {
                    let id = e
                        .event
                        .entity_id
                        .parse()
                        .map_err(|_| ConsumerError::Failed(format!("event {}: not a channel id", e.event.sync_id)))?;
                    (id, None)
                }
                _ => continue,
            };
            self.mailboxes.set_readable(tenant.workspace_id(), readable.0, readable.1).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Consumer for MailConsumer {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    async fn handle(&self, tenant: &Arc<dyn TenantStore>, page: &[FeedEvent], advance: Advance) -> Result<Handled, ConsumerError> {
        self.register_mailboxes(tenant, page).await?;
        let items = self.items(tenant, page).await?;
        if items.is_empty() {
            tenant.consumers().advance(advance).await?;
            return Ok(Handled::default());
        }
        let workspace = tenant.workspace_id();
        // The wake is asked for before the mail is queued: a crash between the two leaves a
        // wake that finds nothing, never queued mail that nothing wakes. A workspace without
        // an enabled channel queues nothing, and gets no wake.
        if tenant.mail().channels().await?.iter().any(|c| c.settings.enabled) {
            self.delivery.schedule(workspace, Millis::now()).await?;
        }
        let compose: Composer = Box::new(move |context| compose::mail(workspace, MailId::new(), context));
        let queued = tenant.mail().enqueue(advance, items, compose).await?;
        // And again after the commit: the first wake may have found the mail not yet queued.
        Ok(Handled { wake_at: (queued > 0).then(Millis::now) })
    }

    async fn on_wake(&self, tenant: &Arc<dyn TenantStore>) -> Result<Handled, ConsumerError> {
        self.delivery.submit(tenant.workspace_id());
        let next = tenant.mail().next_due().await?;
        let safety = Millis::now().plus(self.safety);
        Ok(Handled { wake_at: next.map(|at| if at.0 > safety.0 { at } else { safety }) })
    }
}
