//! Who is calling: passwords, sessions, API tokens, login throttling, and the `AuthUser`
//! extractor every authenticated route starts from.
//!
//! Tokens are opaque random strings (`eds_…` sessions, `edt_…` API tokens); only their
//! SHA-256 is stored. A session travels as a bearer token or as the HttpOnly,
//! SameSite=Strict cookie `edgedesk_session` (Strict keeps cross-site requests from
//! carrying it); on top of that, `csrf` refuses a cookie-authenticated write that the
//! browser reports as coming from another origin.

pub mod csrf;
mod extract;
pub mod password;
mod routes;
pub mod stream;
pub mod throttle;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

pub use extract::{AuthUser, PlatformAdmin};
pub use routes::{routes, validate_email, validate_name, validate_text};
pub use stream::StreamToken;

use crate::cache::TtlCache;
use crate::store::access::AccessChecks;
use crate::store::{Credential, PlatformStore, UserId};
use password::Passwords;
use throttle::LoginThrottle;
use watch::AccessWatch;

pub const SESSION_COOKIE: &str = "edgedesk_session";
pub const SESSION_PREFIX: &str = "eds";
pub const API_TOKEN_PREFIX: &str = "edt";

/// What the auth routes and extractors need from the application.
#[derive(Clone)]
pub struct AuthState {
    pub platform: Arc<dyn PlatformStore>,
    pub passwords: Arc<Passwords>,
    pub throttle: Arc<LoginThrottle>,
    pub session_ttl: Duration,
    pub cookie_secure: bool,
    /// Token hash → caller, so most requests skip the credential lookup.
    pub credentials: Arc<TtlCache<String, AuthUser>>,
    /// Signs stream tokens (derived from the master key for that purpose only).
    pub stream_key: Arc<zeroize::Zeroizing<[u8; 32]>>,
    /// Uncached: does a stream token's parent credential still live?
    pub access: Arc<dyn AccessChecks>,
    /// Open long-lived connections, told of every change of access made here.
    pub watch: Arc<AccessWatch>,
}

impl AuthState {
    /// Drops cached answers for a credential that was just revoked here.
    pub fn forget_credential(&self, credential: Credential) {
        self.credentials.remove_where(move |_, caller| caller.credential == credential);
        self.watch.changed();
    }

    /// Drops cached answers for a user whose standing just changed here.
    pub fn forget_user(&self, user: UserId) {
        self.credentials.remove_where(move |_, caller| caller.user.id == user);
        self.watch.changed();
    }
}
