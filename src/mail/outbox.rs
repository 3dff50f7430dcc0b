//! The mail consumer: the log is the outbox. On the runner like every durable consumer, it
//! reads the events past its watermark and, for every public reply by staff, writes the
//! mail (composed by `compose.rs`) and its watermark in ONE transaction
//! (`MailStore::enqueue`): a committed reply yields its mail exactly once, across crashes,
//! restarts and instances, and an internal note never yields one. Notifications (the
//! notifications consumer's `notification.created` events) become mail too for recipients
//! whose preferences say so, through the same outbox.
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
use crate::store::mail::{Composer, MailChannel, MailId, Mailboxes, Outgoing};
use crate::store::notifications::{Notification, NotificationKind};
use crate::store::{Advance, Comment, FeedEvent, Millis, NotificationPreferences, TenantStore, UserId};
use crate::sync::runner::{Consumer, ConsumerError, Handled};

pub struct MailConsumer {
    delivery: Arc<Delivery>,
    mailboxes: Arc<dyn Mailboxes>,
    preferences: Arc<dyn NotificationPreferences>,
    /// How long after a wake the safety-net wake comes (a worker's lease).
    safety: std::time::Duration,
}

impl MailConsumer {
    pub fn new(
        delivery: Arc<Delivery>,
        mailboxes: Arc<dyn Mailboxes>,
        preferences: Arc<dyn NotificationPreferences>,
        safety: std::time::Duration,
    ) -> Self {
        Self { delivery, mailboxes, preferences, safety }
    }

    /// The page's public replies and its notifications whose recipients want them by mail,
    /// with the sync_id each was recorded under.
    async fn items(&self, page: &[FeedEvent]) -> Result<Vec<(i64, Outgoing)>, ConsumerError> {
        let unreadable =
            |e: &FeedEvent, err: serde_json::Error| ConsumerError::Failed(format!("event {} ({}): {err}", e.event.sync_id, e.event.kind));
        let mut out = Vec::new();
        let mut wanted: HashMap<UserId, Vec<(NotificationKind, bool)>> = HashMap::new();
        for e in page {
            match e.event.kind.as_str() {
                "comment.created" if !e.visibility.staff_only => {
                    let comment: Comment = serde_json::from_value(e.event.data.clone()).map_err(|err| unreadable(e, err))?;
                    if !comment.internal {
                        out.push((e.event.sync_id, Outgoing::Reply(comment)));
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
        Ok(out)
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
        let items = self.items(page).await?;
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
