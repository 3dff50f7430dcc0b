//! The workspace log as clients consume it: bootstrap (a consistent snapshot as NDJSON),
//! delta (events after a watermark) and the audit view for administrators.
//!
//! Appending happens in the store, inside each write's transaction; this module only
//! reads. A client bootstraps once, remembers the header's `sync_id`, then asks for
//! `delta?after=<that id>` and applies the events in order: the result equals a fresh
//! bootstrap (tests/sync.rs checks exactly this under concurrent writers).

pub mod gate;
mod routes;
pub mod runner;

pub use routes::routes;

/// What the sync routes need from the application.
#[derive(Clone)]
pub struct SyncState {
    pub bootstraps: std::sync::Arc<gate::BootstrapGate>,
}
