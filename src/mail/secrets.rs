//! Mail server passwords at rest: sealed with AES-256-GCM (`crypto::seal`) under the key
//! derived from the master key for [`PURPOSE`], with the workspace, the channel and which
//! of its servers the password is for bound in as associated data. A sealed password moved
//! to another channel, workspace or server (by hand in the database, or by an import into
//! another server, whose master key differs) does not open: the channel then reports that
//! its password must be set again.

use zeroize::Zeroizing;

use crate::crypto::{self, OpenFailed};
use crate::store::WorkspaceId;
use crate::store::mail::ChannelId;

/// The HKDF purpose of the key mail passwords are sealed under.
pub const PURPOSE: &str = "mail channel passwords";

/// Which of a channel's servers a password is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Imap,
    Smtp,
}

impl Which {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Imap => "imap",
            Self::Smtp => "smtp",
        }
    }
}

/// Where a sealed password belongs: the associated data it is sealed with.
fn context(workspace: WorkspaceId, channel: ChannelId, which: Which) -> Vec<u8> {
    format!("edgedesk mail password v1\0{workspace}\0{channel}\0{}", which.as_str()).into_bytes()
}

pub fn seal(key: &[u8; 32], workspace: WorkspaceId, channel: ChannelId, which: Which, password: &str) -> Vec<u8> {
    crypto::seal(key, &context(workspace, channel, which), password.as_bytes())
}

/// The password, zeroized when dropped. `Err` when it was sealed for another place or under
/// another master key.
pub fn open(
    key: &[u8; 32],
    workspace: WorkspaceId,
    channel: ChannelId,
    which: Which,
    sealed: &[u8],
) -> Result<Zeroizing<String>, OpenFailed> {
    let bytes = crypto::open(key, &context(workspace, channel, which), sealed)?;
    // Sealed from a `&str`, so UTF-8 unless altered, which the tag would have caught.
    std::str::from_utf8(&bytes).map(|s| Zeroizing::new(s.to_string())).map_err(|_| OpenFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_opens_only_where_it_was_sealed() {
        let key = crypto::derive_key(&[3u8; 32], PURPOSE).unwrap();
        let (ws, channel) = (WorkspaceId::new(), ChannelId::new());
        let sealed = seal(&key, ws, channel, Which::Imap, "s3cret pässword");
        assert_eq!(open(&key, ws, channel, Which::Imap, &sealed).unwrap().as_str(), "s3cret pässword");
        assert!(open(&key, ws, channel, Which::Smtp, &sealed).is_err(), "the SMTP slot");
        assert!(open(&key, ws, ChannelId::new(), Which::Imap, &sealed).is_err(), "another channel");
        assert!(open(&key, WorkspaceId::new(), channel, Which::Imap, &sealed).is_err(), "another workspace");
        let other = crypto::derive_key(&[3u8; 32], "stream-token").unwrap();
        assert!(open(&other, ws, channel, Which::Imap, &sealed).is_err(), "another purpose's key");
    }
}
