//! Password hashing with bcrypt, and equal work on every failed login path.
//!
//! A login for an unknown email verifies against a dummy hash of the same cost, computed
//! once at start (prewarmed), so response time does not tell which emails exist, and the
//! first real login is no slower than the rest. Passwords are 8 to 72 characters (what the
//! API schema says). bcrypt reads at most 72 bytes, so a password longer than that in bytes
//! (72 characters of accented or other non-ASCII text) is hashed through SHA-256 first
//! ([`bcrypt_input`]): never silently truncated, and no password that could be set before
//! (those were at most 72 bytes) is read differently.
//!
//! Hashing is CPU-bound and slow on purpose, so only so many run at once (one fewer than
//! the cores, at least one): a login flood queues here instead of taking every core and
//! every blocking thread, and a check that cannot start within [`QUEUE_WAIT`] answers 503.
//! Checks for clients that failed recently ("suspects") share a single place in that
//! queue, so however many of them wait, anyone else waits behind at most one of them.

use crate::error::{AppError, AppResult, FieldError};

pub const MIN_LEN: usize = 8;
/// Characters at most.
pub const MAX_LEN: usize = 72;
/// bcrypt's input limit in bytes.
const BCRYPT_BYTES: usize = 72;

/// What bcrypt is given for `password`: itself when bcrypt reads all of it, else the
/// base64 of its SHA-256 (44 bytes).
pub fn bcrypt_input(password: &str) -> String {
    use base64::Engine;
    if password.len() <= BCRYPT_BYTES {
        return password.to_string();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The stored "hash" of a user who has no password yet (someone whose mail made them a
/// requester): no password matches it, and it is not a bcrypt hash that could be cracked.
pub const NO_PASSWORD: &str = "!none";

/// How long a password check may wait for its turn before the request answers 503.
pub const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Passwords {
    cost: u32,
    dummy_hash: String,
    running: tokio::sync::Semaphore,
    /// The one place in `running`'s queue that suspects share.
    suspects: tokio::sync::Semaphore,
}

/// Password checks at once: leave a core to everything else.
fn concurrent() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)).max(1)
}

impl Passwords {
    /// Computes the dummy hash on a blocking thread; call once at start.
    pub async fn prewarm(cost: u32) -> AppResult<Self> {
        let dummy_hash = tokio::task::spawn_blocking(move || {
            let secret = hex::encode(crate::crypto::random_bytes::<16>());
            bcrypt::hash(secret, cost)
        })
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?;
        Ok(Self { cost, dummy_hash, running: tokio::sync::Semaphore::new(concurrent()), suspects: tokio::sync::Semaphore::new(1) })
    }

    /// The password rules, checked before any hashing: 8 characters to 72 bytes.
    pub fn validate(field: &str, password: &str) -> Result<(), FieldError> {
        if password.chars().count() < MIN_LEN {
            return Err(FieldError::new(field, format!("must be at least {MIN_LEN} characters")));
        }
        if password.chars().count() > MAX_LEN {
            return Err(FieldError::new(field, format!("must be at most {MAX_LEN} characters")));
        }
        Ok(())
    }

    pub async fn hash(&self, password: String) -> AppResult<String> {
        let _turn = self.turn().await?;
        hash_with_cost(password, self.cost).await
    }

    async fn turn(&self) -> AppResult<tokio::sync::SemaphorePermit<'_>> {
        match tokio::time::timeout(QUEUE_WAIT, self.running.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(AppError::Unavailable),
        }
    }

    /// Verifies against `hash`, or against the dummy when there is no user: same cost either way.
    /// A malformed stored hash counts as a mismatch (and is logged), never as a panic.
    /// 503 when the check could not get its turn within [`QUEUE_WAIT`]. A `suspect` (a
    /// client that failed recently) first waits for the suspects' single place.
    pub async fn verify(&self, password: String, hash: Option<String>, suspect: bool) -> AppResult<bool> {
        // A user without a password is checked against the dummy hash (the same time as
        // anyone's) and never matches.
        let settable = hash.as_deref() != Some(NO_PASSWORD);
        let hash = hash.filter(|_| settable).unwrap_or_else(|| self.dummy_hash.clone());
        let _place = match suspect {
            true => match tokio::time::timeout(QUEUE_WAIT, self.suspects.acquire()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => return Err(AppError::Unavailable),
            },
            false => None,
        };
        let _turn = self.turn().await?;
        Ok(match tokio::task::spawn_blocking(move || bcrypt::verify(bcrypt_input(&password), &hash)).await {
            Ok(Ok(matches)) => matches && settable,
            Ok(Err(err)) => {
                tracing::error!(error = %err, "stored password hash is unreadable");
                false
            }
            Err(err) => {
                tracing::error!(error = %err, "password verification task failed");
                false
            }
        })
    }
}

/// Hashes on a blocking thread at `cost` (also what the CLI uses, with no dummy to prewarm).
pub async fn hash_with_cost(password: String, cost: u32) -> AppResult<String> {
    tokio::task::spawn_blocking(move || bcrypt::hash(bcrypt_input(&password), cost))
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_rules_count_characters_and_bytes() {
        assert!(Passwords::validate("password", "short").is_err());
        assert!(Passwords::validate("password", "long enough").is_ok());
        assert!(Passwords::validate("password", &"a".repeat(72)).is_ok());
        assert!(Passwords::validate("password", &"a".repeat(73)).is_err());
        // 72 three-byte characters: 216 bytes, past bcrypt's 72, and still a valid password.
        assert!(Passwords::validate("password", &"€".repeat(72)).is_ok());
        assert!(Passwords::validate("password", &"€".repeat(73)).is_err());
        // bcrypt would see only the first 72 bytes of these two: through SHA-256 they differ.
        let (a, b) = ("€".repeat(30) + "a", "€".repeat(30) + "b");
        assert_ne!(bcrypt_input(&a), bcrypt_input(&b));
        assert_eq!(bcrypt_input("short enough"), "short enough", "passwords that fit are given as they are");
    }

    #[tokio::test]
    async fn verify_accepts_the_right_password_only() {
        let passwords = Passwords::prewarm(4).await.unwrap();
        let hash = passwords.hash("correct horse".into()).await.unwrap();
        assert!(passwords.verify("correct horse".into(), Some(hash.clone()), false).await.unwrap());
        assert!(!passwords.verify("wrong horse".into(), Some(hash.clone()), true).await.unwrap());
        assert!(!passwords.verify("correct horse".into(), None, false).await.unwrap());
        assert!(!passwords.verify("x".into(), Some("not a bcrypt hash".into()), false).await.unwrap());
        assert!(passwords.verify("correct horse".into(), Some(hash), true).await.unwrap(), "a suspect with the right password passes");
    }
}
