//! The mail consumer: the log is the outbox. On the runner like every durable consumer, it
//! reads the events past its watermark and, for every public reply by staff, writes the
//! mail (composed by `compose.rs`) and its watermark in ONE transaction
//! (`MailStore::enqueue`): a committed reply yields its mail exactly once, across crashes,
//! restarts and instances, and an internal note never yields one.
//!
//! Its wakes are the outbox's clock: when it queues mail it asks to be woken at once, a
//! delivery worker asks for the next due time after each batch, and a wake hands the
//! workspace to the workers ([`Delivery::submit`]). While mail is pending, each wake also
//! asks for a later one as a safety net, so a crash between a wake and its delivery leaves
//! the mail late, never forgotten.

use std::sync::Arc;

use async_trait::async_trait;

use super::compose;
use super::delivery::{CONSUMER, Delivery};
use crate::store::mail::{Composer, MailId};
use crate::store::{Advance, Comment, FeedEvent, Millis, TenantStore};
use crate::sync::runner::{Consumer, ConsumerError, Handled};

pub struct MailConsumer {
    delivery: Arc<Delivery>,
    /// How long after a wake the safety-net wake comes (a worker's lease).
    safety: std::time::Duration,
}

impl MailConsumer {
    pub fn new(delivery: Arc<Delivery>, safety: std::time::Duration) -> Self {
        Self { delivery, safety }
    }
}

/// The page's public replies, with the sync_id each was recorded under.
fn replies(page: &[FeedEvent]) -> Result<Vec<(i64, Comment)>, ConsumerError> {
    let mut out = Vec::new();
    for e in page.iter().filter(|e| e.event.kind == "comment.created" && !e.visibility.staff_only) {
        let comment: Comment = serde_json::from_value(e.event.data.clone())
            .map_err(|err| ConsumerError::Failed(format!("event {} (comment.created): {err}", e.event.sync_id)))?;
        if !comment.internal {
            out.push((e.event.sync_id, comment));
        }
    }
    Ok(out)
}

#[async_trait]
impl Consumer for MailConsumer {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    async fn handle(&self, tenant: &Arc<dyn TenantStore>, page: &[FeedEvent], advance: Advance) -> Result<Handled, ConsumerError> {
        let replies = replies(page)?;
        if replies.is_empty() {
            tenant.consumers().advance(advance).await?;
            return Ok(Handled::default());
        }
        let workspace = tenant.workspace_id();
        let compose: Composer = Box::new(move |context| compose::reply(workspace, MailId::new(), context));
        let queued = tenant.mail().enqueue(advance, replies, compose).await?;
        Ok(Handled { wake_at: (queued > 0).then(Millis::now) })
    }

    async fn on_wake(&self, tenant: &Arc<dyn TenantStore>) -> Result<Handled, ConsumerError> {
        self.delivery.submit(tenant.workspace_id());
        let next = tenant.mail().next_due().await?;
        let safety = Millis::now().plus(self.safety);
        Ok(Handled { wake_at: next.map(|at| if at.0 > safety.0 { at } else { safety }) })
    }
}
