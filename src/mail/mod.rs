//! Email: a workspace's support address in and out.
//!
//! - Channels (`channels.rs`): owners and admins connect the workspace's mailbox, one
//!   channel per support address, with the IMAP server mail is read from and the SMTP
//!   server replies go out through. Passwords are sealed (`secrets.rs`) under a key derived
//!   from the master key for this purpose alone, bound to the workspace, the channel and
//!   the server they belong to; they are opened only to log in, zeroized after use, never
//!   returned (`password_set`) and never logged. `POST …/channels/{id}/test` logs in to
//!   both servers (`probe.rs`) and says in words what failed.
//! - Mail servers are reached through `net.rs`: at public addresses only unless the
//!   operator allows private ones (`http::outbound`), with TLS from the first byte,
//!   STARTTLS (refused when the server does not offer it: no silent downgrade) or, where
//!   the owner chose it, none; every step under a timeout.
//!
//! - The log is the outbox (ARCHITECTURE.md, "Mail"): the mail consumer (`outbox.rs`)
//!   turns committed public replies into mails (`compose.rs`: deterministic Message-ID,
//!   threading headers, text and HTML) in the same transaction as its watermark; delivery
//!   workers (`delivery.rs`) send them under leases with full-jitter retries, an expiry, and
//!   a circuit breaker per relay (`breaker.rs`). Staff see each mail's state on its ticket
//!   (`GET …/tickets/{id}/mail`, and `mail.*` events).
//! - Inbound: `ingest.rs` reads each channel's mailbox with one IMAP session (`imap.rs`;
//!   IDLE, a reader lease across instances, reconnects with backoff); `inbound.rs` parses a
//!   fetched message and judges it (loop protection, threading, dedupe key, the quoted
//!   history marked); `filing.rs` files it (sender as member, ticket or comment,
//!   attachments) before the session marks it seen.
//!
//! Features never call the mailer: they write to the log, and mail reacts.

pub mod breaker;
mod channels;
pub mod compose;
pub mod delivery;
pub mod filing;
pub mod imap;
pub mod inbound;
pub mod ingest;
pub mod net;
pub mod outbox;
pub mod probe;
mod routes;
pub mod secrets;

use std::sync::Arc;
use std::time::Duration;

pub use delivery::{Delivery, DeliveryConfig};
pub use outbox::MailConsumer;
pub use routes::routes;
use zeroize::Zeroizing;

use crate::http::outbound::Reach;

/// How the server talks to mail servers (settings `EDGEDESK_MAIL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailConfig {
    /// Which addresses a channel's servers may be at (`EDGEDESK_MAIL_ALLOW_PRIVATE_HOSTS`).
    pub reach: Reach,
    /// Each network step (resolve, connect, TLS, a command's answer) must finish within this.
    pub timeout: Duration,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self { reach: Reach::Public, timeout: Duration::from_secs(30) }
    }
}

/// What the mail routes need beyond a workspace: the key passwords are sealed under, and
/// how mail servers are reached.
#[derive(Clone)]
pub struct MailState {
    pub seal_key: Arc<Zeroizing<[u8; 32]>>,
    pub config: MailConfig,
}
