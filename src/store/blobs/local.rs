//! Objects as files beside each workspace's database: `<data>/tenants/<ws>/blobs/<att>/<ver>`.
//!
//! A write goes to a temporary name in the same directory, is fsynced (with the parent of
//! any directory it had to create), renamed into place, and the directory is fsynced: after
//! a crash an object is either whole or absent (a temporary file left behind is not an
//! object, and the orphan sweep removes it). All file work runs on tokio's blocking threads;
//! a read keeps the next chunk coming while the one before is sent.

use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{BlobError, BlobKey, BlobResult, BlobStore, ByteStream, Listed, Meter, Read, Written, check_range};
use crate::store::{Millis, WorkspaceId};

/// Bytes per read and per write to the file: the HTTP body arrives in frames of a few KiB,
/// and each file operation is a trip to a blocking thread, so both are batched this large.
const IO_CHUNK: usize = 256 * 1024;

/// Temporary files start with this (never a valid id, so never listed as an object).
const TEMP_PREFIX: &str = ".upload-";

pub struct LocalBlobs {
    data_dir: PathBuf,
}

impl LocalBlobs {
    /// Objects under `<data_dir>/tenants/<ws>/blobs/`.
    pub fn new(data_dir: &Path) -> Self {
        Self { data_dir: data_dir.to_owned() }
    }

    fn root(&self, workspace: WorkspaceId) -> PathBuf {
        crate::store::workspace_folder(&self.data_dir, workspace).join("blobs")
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.root(key.workspace).join(key.attachment.to_string()).join(key.version.to_string())
    }
}

fn io(err: std::io::Error) -> BlobError {
    if err.kind() == std::io::ErrorKind::NotFound { BlobError::NotFound } else { BlobError::Internal(err.to_string()) }
}

/// A blocking task that panicked or was cancelled.
fn unjoined(err: tokio::task::JoinError) -> BlobError {
    BlobError::Internal(err.to_string())
}

fn millis(time: std::io::Result<std::time::SystemTime>) -> Millis {
    let ms = time.ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as i64);
    Millis(ms)
}

/// One part of the work on an upload's bytes (hashing them, or the file they are written
/// to), owned by whichever side holds it: the upload's task, or a blocking thread at work on
/// it.
enum Stage<T> {
    Idle(T),
    Busy(tokio::task::JoinHandle<BlobResult<T>>),
    /// Its work failed (or it was taken for good).
    Gone,
}

impl<T: Send + 'static> Stage<T> {
    /// A part that is still being made (the file, while its directory is created).
    fn making(make: impl FnOnce() -> BlobResult<T> + Send + 'static) -> Self {
        Self::Busy(tokio::task::spawn_blocking(make))
    }

    /// Once the work in flight is done, `work` on `bytes` on a blocking thread.
    async fn feed(&mut self, bytes: Bytes, work: fn(&mut T, &[u8]) -> BlobResult<()>) -> BlobResult<()> {
        let mut part = self.settle().await?;
        *self = Self::Busy(tokio::task::spawn_blocking(move || work(&mut part, &bytes).map(|()| part)));
        Ok(())
    }

    /// The part, once the work in flight (if any) is done.
    async fn settle(&mut self) -> BlobResult<T> {
        match std::mem::replace(self, Self::Gone) {
            Self::Idle(part) => Ok(part),
            Self::Busy(work) => work.await.map_err(unjoined)?,
            Self::Gone => Err(BlobError::Internal("an upload's earlier step failed".into())),
        }
    }
}

fn hash(meter: &mut Meter, bytes: &[u8]) -> BlobResult<()> {
    meter.take(bytes)
}

fn write(temp: &mut Temp, bytes: &[u8]) -> BlobResult<()> {
    use std::io::Write;
    temp.file.write_all(bytes).map_err(io)
}

/// An upload's temporary file, and the directories made for it whose new entries are not
/// durable yet: they are synced with the file, so that making them costs no sync before
/// the first byte is written.
struct Temp {
    file: std::fs::File,
    new_entries: Vec<PathBuf>,
}

impl Temp {
    /// Creates `path`, and the directories above it that it lacks.
    fn create(path: &Path) -> std::io::Result<Self> {
        let mut new_entries = Vec::new();
        create_dirs(path.parent().ok_or_else(|| std::io::Error::other("a file without a directory"))?, &mut new_entries)?;
        Ok(Self { file: std::fs::File::create(path)?, new_entries })
    }

    /// Makes the bytes durable, and (beside them, on another blocking thread) every
    /// directory entry made for them; done when both are.
    async fn sync(self) -> BlobResult<()> {
        let Self { file, new_entries } = self;
        let file = tokio::task::spawn_blocking(move || file.sync_all());
        if !new_entries.is_empty() {
            blocking(move || new_entries.into_iter().try_for_each(|holder| std::fs::File::open(holder)?.sync_all())).await?;
        }
        file.await.map_err(unjoined)?.map_err(io)
    }
}

/// Writes the whole body into a new file at `temp`, and syncs it (with the directories made
/// for it). The file is made while the first bytes arrive; the body is gathered into batches
/// of at least [`IO_CHUNK`] (a frame that large is a batch as it is, uncopied); each batch is
/// hashed on one blocking thread and written on another while the next one arrives, so
/// receiving, hashing and writing overlap, the file's sync overlaps the last batch's hash,
/// and no thread is held between batches (a slow client costs no thread). Past `limit` it
/// stops at once. When it fails, making the file has finished (it exists or never will)
/// before it returns.
async fn write_all(temp: PathBuf, mut body: ByteStream, limit: u64) -> BlobResult<Written> {
    let (mut meter, mut file) = (Stage::Idle(Meter::new(limit)), Stage::making(move || Temp::create(&temp).map_err(io)));
    if let Err(err) = receive(&mut body, limit, &mut meter, &mut file).await {
        let _ = file.settle().await;
        return Err(err);
    }
    let temp = file.settle().await?;
    let (synced, meter) = tokio::join!(temp.sync(), meter.settle());
    synced?;
    Ok(meter?.finish())
}

/// The body's bytes, batch by batch, to the hash and the file.
async fn receive(body: &mut ByteStream, limit: u64, meter: &mut Stage<Meter>, file: &mut Stage<Temp>) -> BlobResult<()> {
    let (mut batch, mut received) = (BytesMut::new(), 0u64);
    loop {
        let next = body.next().await.transpose().map_err(|e| BlobError::Cut(e.to_string()))?;
        let last = next.is_none();
        let ready = match next {
            Some(chunk) => {
                received += chunk.len() as u64;
                if received > limit {
                    return Err(BlobError::TooLarge { limit });
                }
                if batch.is_empty() && chunk.len() >= IO_CHUNK {
                    Some(chunk)
                } else {
                    if batch.is_empty() {
                        batch.reserve(IO_CHUNK);
                    }
                    batch.extend_from_slice(&chunk);
                    (batch.len() >= IO_CHUNK).then(|| batch.split().freeze())
                }
            }
            None => (!batch.is_empty()).then(|| batch.split().freeze()),
        };
        if let Some(bytes) = ready {
            meter.feed(bytes.clone(), hash).await?;
            file.feed(bytes, write).await?;
        }
        if last {
            return Ok(());
        }
    }
}

/// Creates `dir` and any parents it lacks, adding each directory that gained an entry to
/// `holders` (outermost first): syncing those makes the new directories survive a crash.
fn create_dirs(dir: &Path, holders: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().ok_or_else(|| std::io::Error::other("a directory without a parent"))?;
    create_dirs(parent, holders)?;
    match std::fs::create_dir(dir) {
        Ok(()) => {
            holders.push(parent.to_owned());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// What is left of an object being read.
struct Reading {
    file: std::fs::File,
    left: u64,
}

impl Reading {
    /// The next [`IO_CHUNK`] (or what is left): empty at the end. A file that ends before
    /// its size said is an error, not a short object.
    fn chunk(mut self) -> std::io::Result<(Self, Bytes)> {
        use std::io::Read;
        let want = self.left.min(IO_CHUNK as u64);
        // Read into the buffer's spare capacity (a file reads into it as it is, unzeroed).
        let mut buf = Vec::with_capacity(want as usize);
        (&mut self.file).take(want).read_to_end(&mut buf)?;
        if buf.len() as u64 != want {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= want;
        Ok((self, Bytes::from(buf)))
    }
}

/// The object's bytes from its first chunk on, each next chunk read on a blocking thread
/// while the one before is being sent: reading and sending overlap, and at most two chunks
/// of an object are in memory.
fn read_ahead(first: (Reading, Bytes)) -> ByteStream {
    type Next = Option<tokio::task::JoinHandle<std::io::Result<(Reading, Bytes)>>>;
    fn next(reading: Reading) -> Next {
        (reading.left > 0).then(|| tokio::task::spawn_blocking(move || reading.chunk()))
    }
    let (reading, bytes) = first;
    let rest = futures::stream::unfold(next(reading), |pending: Next| async move {
        let read = match pending?.await {
            Ok(read) => read,
            Err(join) => Err(std::io::Error::other(join)),
        };
        Some(match read {
            Ok((reading, bytes)) => (Ok(bytes), next(reading)),
            Err(err) => (Err(err), None),
        })
    });
    let first = (!bytes.is_empty()).then_some(Ok(bytes));
    Box::pin(futures::stream::iter(first).chain(rest))
}

/// Runs file work on a blocking thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> BlobResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(unjoined)?.map_err(io)
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &BlobKey, body: ByteStream, limit: u64) -> BlobResult<Written> {
        let path = self.path(key);
        let dir = path.parent().ok_or_else(|| BlobError::Internal("object path has no parent".into()))?.to_owned();
        let temp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4()));
        let written = match write_all(temp.clone(), body, limit).await {
            Ok(written) => written,
            Err(err) => {
                // Absent when the file could not be made.
                if let Err(e) = tokio::fs::remove_file(&temp).await
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::error!(path = %temp.display(), error = %e, "cannot remove a failed upload's temporary file");
                }
                return Err(err);
            }
        };
        blocking(move || {
            if let Err(err) = std::fs::rename(&temp, &path) {
                let _ = std::fs::remove_file(&temp);
                return Err(err);
            }
            // The rename itself is durable once the directory is.
            std::fs::File::open(&dir)?.sync_all()
        })
        .await?;
        Ok(written)
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> BlobResult<Read> {
        let path = self.path(key);
        let (first, total) = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(path).map_err(io)?;
            let total = file.metadata().map_err(io)?.len();
            check_range(&range, total)?;
            let span = range.unwrap_or(0..total);
            if span.start > 0 {
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(span.start)).map_err(io)?;
            }
            Ok::<_, BlobError>((Reading { file, left: span.end - span.start }.chunk().map_err(io)?, total))
        })
        .await
        .map_err(unjoined)??;
        Ok(Read { body: read_ahead(first), total })
    }

    async fn delete(&self, key: &BlobKey) -> BlobResult<()> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        // An attachment directory with no versions left goes too (fails harmlessly if not empty).
        let _ = tokio::fs::remove_dir(self.root(key.workspace).join(key.attachment.to_string())).await;
        Ok(())
    }

    async fn list(&self, workspace: WorkspaceId) -> BlobResult<Vec<Listed>> {
        let root = self.root(workspace);
        let mut out = Vec::new();
        let mut attachments = match tokio::fs::read_dir(&root).await {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(e)),
        };
        while let Some(att) = attachments.next_entry().await.map_err(io)? {
            let Some(att_name) = att.file_name().to_str().map(str::to_string) else { continue };
            let Ok(mut versions) = tokio::fs::read_dir(att.path()).await else { continue };
            while let Some(ver) = versions.next_entry().await.map_err(io)? {
                let Some(ver_name) = ver.file_name().to_str().map(str::to_string) else { continue };
                let meta = ver.metadata().await.map_err(io)?;
                let relative = format!("{workspace}/{att_name}/{ver_name}");
                if let Some(key) = BlobKey::parse(&relative) {
                    out.push(Listed { key, size: meta.len(), modified: millis(meta.modified()) });
                } else if ver_name.starts_with(TEMP_PREFIX) {
                    // A temporary file a crash left: listed as nothing, removed when old.
                    let age = millis(meta.modified());
                    if Millis::now().0 - age.0 > 3_600_000 {
                        let _ = tokio::fs::remove_file(ver.path()).await;
                    }
                }
            }
        }
        Ok(out)
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::blobs::{AttachmentId, VersionId};

    fn body(chunks: Vec<Result<&'static [u8], &'static str>>) -> ByteStream {
        Box::pin(futures::stream::iter(
            chunks.into_iter().map(|c| c.map(Bytes::from_static).map_err(std::io::Error::other)).collect::<Vec<_>>(),
        ))
    }

    async fn read_all(read: Read) -> Vec<u8> {
        let mut out = Vec::new();
        let mut body = read.body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn objects_are_whole_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::new(dir.path());
        let key = BlobKey { workspace: WorkspaceId::new(), attachment: AttachmentId::new(), version: VersionId::new() };
        let written = blobs.put(&key, body(vec![Ok(b"hello "), Ok(b"world")]), 100).await.unwrap();
        assert_eq!(written.size, 11);
        let read = blobs.get(&key, None).await.unwrap();
        assert_eq!(read.total, 11);
        assert_eq!(read_all(read).await, b"hello world");
        assert_eq!(read_all(blobs.get(&key, Some(6..11)).await.unwrap()).await, b"world");
        assert!(matches!(blobs.get(&key, Some(6..12)).await, Err(BlobError::BadRange)));
        let listed = blobs.list(key.workspace).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key, listed[0].size), (key, 11));

        // Over the limit, or cut off: nothing stays, not even a temporary file.
        let big = BlobKey { version: VersionId::new(), ..key };
        assert_eq!(blobs.put(&big, body(vec![Ok(b"0123456789"), Ok(b"x")]), 10).await, Err(BlobError::TooLarge { limit: 10 }));
        let cut = BlobKey { version: VersionId::new(), ..key };
        assert!(matches!(blobs.put(&cut, body(vec![Ok(b"part"), Err("reset")]), 100).await, Err(BlobError::Cut(_))));
        let files: Vec<_> = std::fs::read_dir(blobs.root(key.workspace).join(key.attachment.to_string())).unwrap().collect();
        assert_eq!(files.len(), 1, "only the one whole object");

        blobs.delete(&key).await.unwrap();
        blobs.delete(&key).await.unwrap();
        assert!(matches!(blobs.get(&key, None).await, Err(BlobError::NotFound)));
        assert!(blobs.list(key.workspace).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn objects_of_several_chunks_read_back_whole_and_in_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = LocalBlobs::new(dir.path());
        let key = BlobKey { workspace: WorkspaceId::new(), attachment: AttachmentId::new(), version: VersionId::new() };
        let bytes: Vec<u8> = (0..IO_CHUNK * 2 + 12_345).map(|i| (i % 251) as u8).collect();
        // A frame larger than a batch, then small ones.
        let (big, rest) = bytes.split_at(IO_CHUNK + 7);
        let frames: Vec<Result<Bytes, std::io::Error>> =
            std::iter::once(Ok(Bytes::copy_from_slice(big))).chain(rest.chunks(5000).map(|c| Ok(Bytes::copy_from_slice(c)))).collect();
        let written = blobs.put(&key, Box::pin(futures::stream::iter(frames)), u64::MAX).await.unwrap();
        assert_eq!(written.size, bytes.len() as u64);
        assert_eq!(written.sha256, hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes)));
        assert_eq!(read_all(blobs.get(&key, None).await.unwrap()).await, bytes);
        let across = (IO_CHUNK as u64 - 3)..(2 * IO_CHUNK as u64 + 10);
        let part = read_all(blobs.get(&key, Some(across.clone())).await.unwrap()).await;
        assert_eq!(part, &bytes[across.start as usize..across.end as usize]);

        // A file cut short under the reader is an error, not a short object.
        let read = blobs.get(&key, None).await.unwrap();
        std::fs::OpenOptions::new().write(true).open(blobs.path(&key)).unwrap().set_len(IO_CHUNK as u64 + 1).unwrap();
        let mut body = read.body;
        let mut failed = false;
        while let Some(chunk) = body.next().await {
            failed |= chunk.is_err();
        }
        assert!(failed);

        // An empty object is an empty stream.
        let empty = BlobKey { version: VersionId::new(), ..key };
        blobs.put(&empty, body_of(vec![]), 10).await.unwrap();
        assert!(read_all(blobs.get(&empty, None).await.unwrap()).await.is_empty());
    }

    fn body_of(chunks: Vec<&'static [u8]>) -> ByteStream {
        body(chunks.into_iter().map(Ok).collect())
    }
}
