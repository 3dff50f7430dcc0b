//! edgedesk: a self-hosted help desk server.
//!
//! `store` holds platform and per-workspace data behind backend-neutral traits (SQLite file
//! per workspace, or Postgres with row-level security); `auth` and `tenants` turn requests
//! into authenticated, workspace-scoped handles; `sync` is the per-workspace log and its
//! routes (bootstrap, delta, audit); features such as `tickets` write through the store and
//! react to the log; `router` and `app` assemble the server.

pub mod app;
pub mod attachments;
pub mod auth;
pub mod backoff;
pub mod cache;
pub mod caps;
pub mod cli;
pub mod config;
pub mod console;
pub mod crypto;
pub mod error;
pub mod http;
pub mod keys;
pub mod live;
pub mod mail;
pub mod notes;
pub mod notifications;
pub mod router;
pub mod runtime;
pub mod search;
pub mod store;
pub mod sync;
pub mod tenants;
pub mod tickets;
