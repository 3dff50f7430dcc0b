//! The notifications consumer: plans each page with the rules, drops what its recipients
//! switched off, and writes the notifications, its own state and its watermark in one
//! transaction.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

use super::rules;
use crate::store::notifications::{ContextNeeds, Planner};
use crate::store::{Advance, FeedEvent, NotificationPreferences, StoreError, TenantStore};
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
        // Every kind the workspace's members switched off, read once for the page: a superset
        // of what its recipients switched off, known before planning (so the plan can run
        // inside the store's write).
        let muted: HashSet<_> = self.preferences.muted_in_app(tenant.workspace_id()).await?.into_iter().collect();
        // The plan outlives this borrow of the page: it takes the events the rules read.
        let events: Vec<FeedEvent> = page.iter().filter(|e| rules::reads(&e.event.kind)).cloned().collect();
        let plan: Planner =
            Box::new(move |context| rules::plan(&events, context, &muted).map_err(|e| StoreError::invalid("event", e.to_string())));
        tenant.notifications().plan_and_apply(advance, ContextNeeds { tickets, members }, plan).await?;
        Ok(Handled::default())
    }
}
