//! Where attachment bytes live. A [`BlobStore`] holds one object per attachment version,
//! under a key the server makes ([`BlobKey`]: workspace, attachment, version; never a
//! client's file name), in one of two places:
//! - local files beside the workspace's database (`data/tenants/<ws>/blobs/<att>/<ver>`, so
//!   copying a workspace's folder copies its files): written to a temporary name, fsynced,
//!   renamed, the directory fsynced ([`local`]);
//! - one S3-compatible bucket that every instance shares (Postgres deployments), through
//!   the `object_store` crate ([`s3`]).
//!
//! Versioning is ours (one object per version), so any bucket works, versioned or not.
//! Objects are written from a stream and read back as one (whole or a byte range), never
//! held whole in memory. A write either completes, with exactly the bytes it counted, or
//! leaves nothing: a body cut off or over its limit removes what had been written.
//!
//! Who may see an attachment, which ticket it belongs to and how much of the quota it uses
//! are not here: they are metadata, in the workspace's own store.

use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Millis, WorkspaceId};

pub mod local;
pub mod s3;

crate::store::model::id_type!(/// An attachment: one file on a ticket or a comment, in one or more versions.
    AttachmentId);
crate::store::model::id_type!(/// One version of an attachment: one stored object.
    VersionId);

/// An object's name, made by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobKey {
    pub workspace: WorkspaceId,
    pub attachment: AttachmentId,
    pub version: VersionId,
}

impl BlobKey {
    /// The key below the store's root: `<ws>/<attachment>/<version>`, ids only.
    pub fn relative(&self) -> String {
        format!("{}/{}/{}", self.workspace, self.attachment, self.version)
    }

    /// Parses [`relative`](Self::relative) back (listing); `None` for anything else.
    pub fn parse(relative: &str) -> Option<Self> {
        let mut parts = relative.split('/');
        let key = Self {
            workspace: WorkspaceId(parts.next()?.parse().ok()?),
            attachment: AttachmentId(parts.next()?.parse().ok()?),
            version: VersionId(parts.next()?.parse().ok()?),
        };
        parts.next().is_none().then_some(key)
    }
}

/// A stream of bytes in or out of a store. An `Err` item ends it: a client that went away
/// mid-upload, a disk that failed mid-read.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// How many bytes of an object are kept for identifying its type by its magic bytes.
pub const HEAD_BYTES: usize = 8 * 1024;

/// What a completed write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    /// SHA-256 of the bytes, lower-case hex.
    pub sha256: String,
    /// The first [`HEAD_BYTES`] (or fewer): what the content type is checked against.
    pub head: Bytes,
}

/// An object read back: its bytes (the range asked for) and its whole size.
pub struct Read {
    pub body: ByteStream,
    pub total: u64,
}

/// An object as a listing shows it (for the orphan sweep and the usage recount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: BlobKey,
    pub size: u64,
    pub modified: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("no such object")]
    NotFound,
    /// The body went past the limit it was written under: nothing was kept.
    #[error("more than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body ended with an error (the client went away): nothing was kept.
    #[error("the upload was cut off: {0}")]
    Cut(String),
    /// A range outside the object.
    #[error("range not satisfiable")]
    BadRange,
    /// The store could not be reached; try again later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Internal(String),
}

pub type BlobResult<T> = Result<T, BlobError>;

/// Objects, one per attachment version.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Writes `body` as the object `key`. Past `limit` bytes it stops with `TooLarge`, and a
    /// body that ends with an error gives `Cut`: in both cases nothing is left behind.
    async fn put(&self, key: &BlobKey, body: ByteStream, limit: u64) -> BlobResult<Written>;

    /// The object's bytes, all of them or `range` (end exclusive, within the object).
    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> BlobResult<Read>;

    /// Removes the object; removing one that is not there is not an error.
    async fn delete(&self, key: &BlobKey) -> BlobResult<()>;

    /// Every object of `workspace`.
    async fn list(&self, workspace: WorkspaceId) -> BlobResult<Vec<Listed>>;

    /// What it is, for logs and `/metrics` (`local`, `s3`).
    fn kind(&self) -> &'static str;
}

/// Counts, hashes and keeps the head of the bytes that pass through a write, and refuses
/// the byte past `limit`. Both stores feed every chunk through one of these.
pub struct Meter {
    limit: u64,
    size: u64,
    hasher: ring::digest::Context,
    head: Vec<u8>,
}

impl Meter {
    pub fn new(limit: u64) -> Self {
        Self { limit, size: 0, hasher: ring::digest::Context::new(&ring::digest::SHA256), head: Vec::new() }
    }

    /// Takes the next chunk; `TooLarge` once the total passes the limit.
    pub fn take(&mut self, chunk: &[u8]) -> BlobResult<()> {
        self.size += chunk.len() as u64;
        if self.size > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        if self.head.len() < HEAD_BYTES {
            let room = HEAD_BYTES - self.head.len();
            self.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        }
        Ok(())
    }

    pub fn finish(self) -> Written {
        Written { size: self.size, sha256: hex::encode(self.hasher.finish().as_ref()), head: Bytes::from(self.head) }
    }
}

/// Checks `range` against an object of `total` bytes.
pub fn check_range(range: &Option<Range<u64>>, total: u64) -> BlobResult<()> {
    match range {
        Some(r) if r.start >= r.end || r.end > total => Err(BlobError::BadRange),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_ids_only_and_parse_back() {
        let key = BlobKey { workspace: WorkspaceId::new(), attachment: AttachmentId::new(), version: VersionId::new() };
        assert_eq!(BlobKey::parse(&key.relative()), Some(key));
        assert_eq!(BlobKey::parse("../../etc/passwd"), None);
        assert_eq!(BlobKey::parse(&format!("{}/extra", key.relative())), None);
    }

    #[test]
    fn the_meter_counts_hashes_keeps_the_head_and_stops_at_the_limit() {
        let mut meter = Meter::new(10);
        meter.take(b"hello").unwrap();
        meter.take(b"world").unwrap();
        assert_eq!(meter.take(b"!"), Err(BlobError::TooLarge { limit: 10 }));
        let written = Meter::new(100).tap(b"abc");
        assert_eq!(written.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(written.size, 3);
        assert_eq!(&written.head[..], b"abc");
    }

    impl Meter {
        fn tap(mut self, bytes: &[u8]) -> Written {
            self.take(bytes).unwrap();
            self.finish()
        }
    }
}
