//! Who is calling: passwords, sessions, API tokens, login throttling, and the `AuthUser`
//! extractor every authenticated route starts from.
//!
//! Tokens are opaque random strings (`eds_…` sessions, `edt_…` API tokens); only their
//! SHA-256 is stored. A session travels as a bearer token or as the HttpOnly,
//! SameSite=Strict cookie `edgedesk_session` (Strict keeps cross-site requests from
//! carrying it, which is the CSRF defence for cookie-authenticated calls).

mod extract;
pub mod password;
mod routes;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

pub use extract::{AuthUser, ClientAddr, PlatformAdmin};
pub use routes::{routes, validate_name, validate_text};

use crate::store::PlatformStore;
use password::Passwords;
use throttle::LoginThrottle;

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
}
