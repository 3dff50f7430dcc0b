//! Pure cryptographic helpers: random tokens, token hashing, the master key, keys derived
//! from it per purpose, and sealing secrets the server must store and later use.
//!
//! No I/O beyond reading/creating the master key file. Opaque bearer tokens are 32 random
//! bytes; only their SHA-256 is ever stored, so a copied database cannot be used to log in.
//! A secret the server must use again (a mail server's password) is sealed with
//! AES-256-GCM under a purpose's key, with a context that names what it belongs to bound in
//! as associated data: a sealed value copied into another row, workspace or field does not
//! open.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// Fills `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // SystemRandom only fails when the OS has no entropy source at all; nothing can proceed then.
    SystemRandom::new().fill(&mut buf).expect("operating system random source");
    buf
}

/// A new opaque token `<prefix>_<43 chars of base64url>` carrying 256 bits of randomness.
/// The prefix tells a reader (and a secret scanner) what kind of credential it is.
pub fn new_token(prefix: &str) -> String {
    format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// The stored form of a token: hex SHA-256. Tokens are high-entropy, so no salt or slow hash.
pub fn token_hash(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

/// HKDF refused to derive a key: fatal for whatever needed it.
#[derive(Debug, thiserror::Error)]
#[error("cannot derive the {0} key from the master key")]
pub struct KeyDerivationFailed(pub String);

/// A key for one purpose, derived from the master key with HKDF-SHA256, so that a key
/// used for one thing (say, signing stream tokens) never serves another.
pub fn derive_key(master: &[u8; 32], purpose: &str) -> Result<Zeroizing<[u8; 32]>, KeyDerivationFailed> {
    struct Len;
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            32
        }
    }
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"edgedesk key derivation v1");
    let prk = salt.extract(master);
    let info = [purpose.as_bytes()];
    let mut out = Zeroizing::new([0u8; 32]);
    // ring fails only for lengths beyond 255 hashes (32 bytes is one); should it ever fail,
    // the caller gets an error, never a key of zeros.
    prk.expand(&info, Len).and_then(|okm| okm.fill(out.as_mut_slice())).map_err(|_| KeyDerivationFailed(purpose.to_string()))?;
    Ok(out)
}

/// HMAC-SHA256 of `message` under `key`.
pub fn mac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time check of an HMAC-SHA256 tag.
pub fn mac_ok(key: &[u8; 32], message: &[u8], tag: &[u8]) -> bool {
    ring::hmac::verify(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), message, tag).is_ok()
}

/// Reads the 32-byte master key, creating it (mode 0600) when the file does not exist.
pub fn load_or_create_master_key(path: &Path) -> std::io::Result<Zeroizing<[u8; 32]>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} must hold exactly 32 bytes", path.display()))
            })?;
            Ok(Zeroizing::new(key))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let key = Zeroizing::new(random_bytes::<32>());
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            file.write_all(key.as_slice())?;
            file.sync_all()?;
            Ok(key)
        }
        Err(err) => Err(err),
    }
}

/// Sealed values start with this byte: the format (AES-256-GCM, 96-bit random nonce).
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// A sealed value did not open: another key (a different master key), another context,
/// or bytes that were altered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sealed value does not open with this key and context")]
pub struct OpenFailed;

/// Seals `plaintext` under `key` with `context` bound in as associated data: the version
/// byte, a random nonce, then the ciphertext and its tag.
pub fn seal(key: &[u8; 32], context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let nonce = random_bytes::<NONCE_LEN>();
    // A 32-byte key is what AES-256 takes, so this cannot fail.
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"));
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    out.push(SEALED_V1);
    out.extend_from_slice(&nonce);
    let mut body = Zeroizing::new(plaintext.to_vec());
    // Sealing fails only for inputs beyond GCM's 64 GiB limit.
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context), body.as_mut_slice())
        .expect("a value within AES-GCM's length limit");
    out.extend_from_slice(&body);
    out.extend_from_slice(tag.as_ref());
    out
}

/// Opens what [`seal`] made with the same key and context; the plaintext is zeroized when
/// dropped.
pub fn open(key: &[u8; 32], context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenFailed> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let (&version, rest) = sealed.split_first().ok_or(OpenFailed)?;
    if version != SEALED_V1 || rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(OpenFailed);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenFailed)?;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| OpenFailed)?);
    let mut body = Zeroizing::new(ciphertext.to_vec());
    let len = key.open_in_place(nonce, Aad::from(context), body.as_mut_slice()).map_err(|_| OpenFailed)?.len();
    body.truncate(len);
    Ok(body)
}

/// Makes ring the process's TLS provider (reqwest, and so the S3 client, are built without
/// one of their own: `rustls-no-provider` keeps aws-lc out of the build). Idempotent; call
/// it before building any HTTP client.
pub fn install_tls_provider() {
    // Err only when a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = derive_key(&[7u8; 32], "test").unwrap();
        let sealed = seal(&key, b"ws1/channel1/imap", b"hunter2");
        assert_eq!(open(&key, b"ws1/channel1/imap", &sealed).unwrap().as_slice(), b"hunter2");
        assert_ne!(seal(&key, b"ws1/channel1/imap", b"hunter2"), sealed, "a fresh nonce each time");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(open(&key, b"ws1/channel1/smtp", &sealed), Err(OpenFailed), "another context");
        let other = derive_key(&[8u8; 32], "test").unwrap();
        assert_eq!(open(&other, b"ws1/channel1/imap", &sealed), Err(OpenFailed), "another master key");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(open(&key, b"ws1/channel1/imap", &altered), Err(OpenFailed));
        for short in [&b""[..], &sealed[..1], &sealed[..20]] {
            assert_eq!(open(&key, b"ws1/channel1/imap", short), Err(OpenFailed));
        }
        assert_eq!(open(&key, b"c", &seal(&key, b"c", b"")).unwrap().as_slice(), b"", "empty secrets round-trip");
    }

    #[test]
    fn tokens_are_prefixed_unique_and_hash_stably() {
        let a = new_token("eds");
        let b = new_token("eds");
        assert!(a.starts_with("eds_") && a.len() == 4 + 43);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_macs_verify_only_unchanged() {
        let master = [7u8; 32];
        let a = derive_key(&master, "stream-token").unwrap();
        let b = derive_key(&master, "something else").unwrap();
        assert_ne!(*a, *b);
        assert_ne!(*a, [0u8; 32]);
        assert_eq!(*a, *derive_key(&master, "stream-token").unwrap());
        let tag = mac(&a, b"hello");
        assert!(mac_ok(&a, b"hello", &tag));
        assert!(!mac_ok(&a, b"hellO", &tag));
        assert!(!mac_ok(&b, b"hello", &tag));
    }

    #[test]
    fn master_key_is_created_once_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let first = load_or_create_master_key(&path).unwrap();
        let second = load_or_create_master_key(&path).unwrap();
        assert_eq!(*first, *second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
