//! Key bundles for client-side encryption: each user keeps their bundle here
//! (`GET|PUT /api/me/keys`, old versions under `/api/me/keys/{version}`), and a member of a
//! workspace reads another member's public keys (`GET /api/workspaces/{ws}/members/{user}/keys`)
//! to wrap a file key for them. The server stores what clients send and interprets none of
//! it; what it checks is shape (named, bounded base64 fields, `http::opaque`) and the
//! version rule (`store::keys`).
//!
//! Who may read whose public keys is [`may_read_keys`]: staff anyone's in the workspace, a
//! requester only staff members' and their own (another customer's presence is not theirs
//! to learn).

mod routes;

use std::sync::Arc;

pub use routes::routes;

use crate::store::keys::KeyStore;
use crate::store::{Role, UserId};

/// What the key routes need beyond the caller: the users' bundles.
#[derive(Clone)]
pub struct KeysState {
    pub keys: Arc<dyn KeyStore>,
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
    fn requesters_read_only_staff_keys_and_their_own() {
        let (a, b) = (UserId::new(), UserId::new());
        assert!(may_read_keys(a, Role::Requester, a, Role::Requester));
        assert!(!may_read_keys(a, Role::Requester, b, Role::Requester));
        assert!(may_read_keys(a, Role::Requester, b, Role::Agent));
        assert!(may_read_keys(a, Role::Agent, b, Role::Requester));
    }
}
