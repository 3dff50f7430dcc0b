//! Key bundles for client-side encryption: each user keeps their bundle here
//! (`GET|PUT /api/me/keys`, old versions under `/api/me/keys/{version}`), and a member of a
//! workspace reads another member's public keys (`GET /api/workspaces/{ws}/members/{user}/keys`)
//! to wrap a file key for them. The server stores what clients send and interprets none of
//! it; what it checks is shape (named, bounded base64 fields) and the version rule
//! (`store::keys`).
//!
//! Who may read whose public keys is [`may_read_keys`]: staff anyone's in the workspace, a
//! requester only staff members' and their own (another customer's presence is not theirs
//! to learn).

mod routes;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

pub use routes::routes;

use crate::error::{AppError, AppResult};
use crate::store::keys::KeyStore;
use crate::store::{Role, UserId};

/// What the key routes need beyond the caller: the users' bundles.
#[derive(Clone)]
pub struct KeysState {
    pub keys: Arc<dyn KeyStore>,
}

/// Longest opaque field accepted, in characters of base64 (a 16 KiB value, well above any
/// KEM ciphertext or key in use).
pub const MAX_OPAQUE_CHARS: usize = 22_000;

/// Checks a client's opaque value: non-empty base64 (standard or URL-safe, padded or not),
/// at most [`MAX_OPAQUE_CHARS`]. Only its shape is checked; what it holds is never read.
pub fn opaque(field: &str, value: &str) -> AppResult<()> {
    if value.is_empty() {
        return Err(AppError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_OPAQUE_CHARS {
        return Err(AppError::invalid(field, format!("at most {MAX_OPAQUE_CHARS} characters of base64")));
    }
    let bytes = value.as_bytes();
    let decodes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().any(|engine| engine.decode(bytes).is_ok());
    if !decodes {
        return Err(AppError::invalid(field, "must be base64"));
    }
    Ok(())
}

/// Whether a `viewer` with `viewer_role` in a workspace may read the public keys of
/// `target`, a member there with `target_role`. The one rule for key visibility.
pub fn may_read_keys(viewer: UserId, viewer_role: Role, target: UserId, target_role: Role) -> bool {
    viewer == target || viewer_role != Role::Requester || target_role != Role::Requester
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_values_are_bounded_base64_of_either_alphabet() {
        assert!(opaque("f", "AAEC").is_ok());
        assert!(opaque("f", "-_8").is_ok());
        assert!(opaque("f", "+/8=").is_ok());
        assert!(opaque("f", "").is_err());
        assert!(opaque("f", "not base64!").is_err());
        assert!(opaque("f", &"A".repeat(MAX_OPAQUE_CHARS + 4)).is_err());
    }

    #[test]
    fn requesters_read_only_staff_keys_and_their_own() {
        let (a, b) = (UserId::new(), UserId::new());
        assert!(may_read_keys(a, Role::Requester, a, Role::Requester));
        assert!(!may_read_keys(a, Role::Requester, b, Role::Requester));
        assert!(may_read_keys(a, Role::Requester, b, Role::Agent));
        assert!(may_read_keys(a, Role::Agent, b, Role::Requester));
    }
}
