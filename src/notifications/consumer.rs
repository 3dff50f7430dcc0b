//! The notifications consumer: plans each page with the rules, drops what its recipients
//! switched off, and writes the notifications, its own state and its watermark in one
//! transaction.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::rules;
use crate::store::{Advance, FeedEvent, NotificationPreferences, TenantStore, UserId};
use crate::sync::runner::{Consumer, ConsumerError, Handled};

pub const NAME: &str = "notifications";

pub struct NotificationsConsumer {
    preferences: Arc<dyn NotificationPreferences>,
}

impl NotificationsConsumer {
    pub fn new(preferences: Arc<dyn NotificationPreferences>) -> Self {
        Self { preferences }
    }
}

#[async_trait]
impl Consumer for NotificationsConsumer {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, tenant: &Arc<dyn TenantStore>, page: &[FeedEvent], advance: Advance) -> Result<Handled, ConsumerError> {
        let (tickets, members) = rules::wants(page);
        if tickets.is_empty() {
            // Nothing here concerns notifications: just move on.
            tenant.consumers().advance(advance).await?;
            return Ok(Handled::default());
        }
        let context = tenant.notifications().context(tickets, members).await?;
        let unreadable = |e: rules::Unreadable| ConsumerError::Failed(e.to_string());
        let mut batch = rules::plan(page, context.clone(), &HashSet::new()).map_err(unreadable)?;
        if !batch.notifications.is_empty() {
            // Planned again knowing what the recipients switched off (a muted mention falls
            // back to the reply it also is); the rules are pure, so the rest is the same.
            let mut recipients: Vec<UserId> = batch.notifications.iter().map(|n| n.recipient_id).collect();
            recipients.sort();
            recipients.dedup();
            let muted: HashSet<_> = self.preferences.muted_in_app(&recipients).await?.into_iter().collect();
            if !muted.is_empty() {
                batch = rules::plan(page, context, &muted).map_err(unreadable)?;
            }
        }
        if batch.is_empty() {
            tenant.consumers().advance(advance).await?;
        } else {
            tenant.notifications().apply(advance, batch).await?;
        }
        Ok(Handled::default())
    }
}
