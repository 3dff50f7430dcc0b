//! Live push: every change a client may see, within milliseconds, over Server-Sent Events.
//!
//! `GET /api/workspaces/{ws}/events` streams the workspace's log as SSE, each event's `id`
//! being its sync_id. A client that reconnects with `Last-Event-ID` receives exactly what it
//! missed (from the bus's ring buffer, or from the log when the ring no longer reaches
//! back), then the live tail, with no gap and no duplicate. Each subscriber sees only what
//! its user may see, optionally narrowed to one ticket. The bus (`bus.rs`) reads the log
//! once per workspace and fans out pre-rendered frames.

pub mod bus;
pub mod limits;
mod sse;

use std::sync::Arc;

pub use bus::{Bus, BusConfig};
pub use sse::routes;

/// What the live routes need from the application.
#[derive(Clone)]
pub struct LiveState {
    pub bus: Arc<Bus>,
    pub limits: Arc<limits::ConnectionLimits>,
    /// Ends streams whose access changed (see `auth::watch`).
    pub watch: Arc<crate::auth::watch::AccessWatch>,
}
