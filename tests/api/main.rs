//! HTTP integration tests: the real server on 127.0.0.1:0, a temporary data directory per
//! test, a real HTTP client.

mod access;
mod attachments;
mod attachments_crash;
mod auth;
mod bad_input;
mod blobs;
mod cli;
mod common;
mod crash;
mod eventsource;
mod exactly_once;
mod feed;
mod isolation;
mod keys;
mod live;
mod mail;
mod mail_crash;
mod mailservers;
mod notes;
mod notes_crash;
mod notes_npm;
mod notifications;
mod ops;
mod pgdb;
mod postgres;
mod postgres_tls;
mod runner;
mod store;
mod surface_lint;
mod sync;
mod sync_lint;
mod tickets;
mod transfer;
mod workspaces;
mod yclient;
