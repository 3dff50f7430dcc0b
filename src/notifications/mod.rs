//! Notifications: an agent is told when a ticket is assigned to them, when a ticket they
//! follow gets a reply or an internal note, and when someone `@mentions` them; a requester
//! when their ticket gets a public reply.
//!
//! The first durable log consumer (`consumer.rs`, on the runner in `sync::runner`): it
//! reads the log, applies the rules (`rules.rs`, pure), and writes each page's
//! notifications with its watermark in one transaction, so a notification exists exactly
//! once across crashes, restarts and instances. Each notification is itself a log event
//! visible to its recipient alone, so it reaches that user's live streams and delta and
//! nobody else's. Routes (`routes.rs`) list and mark them, count unread ones per
//! workspace, set preferences per kind, and follow tickets.

pub mod consumer;
mod routes;
pub mod rules;

use std::sync::Arc;

pub use consumer::NotificationsConsumer;
pub use routes::routes;

use crate::store::NotificationPreferences;

/// What the notification routes need beyond a workspace: the users' preferences.
#[derive(Clone)]
pub struct NotificationsState {
    pub preferences: Arc<dyn NotificationPreferences>,
}
