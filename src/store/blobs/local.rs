//! Objects as files beside each workspace's database: `<data>/tenants/<ws>/blobs/<att>/<ver>`.
//!
//! A write goes to a temporary name in the same directory, is fsynced, renamed into place,
//! and the directory is fsynced (as is the parent of any directory it had to create): after
//! a crash an object is either whole or absent (a temporary file left behind is not an
//! object, and the orphan sweep removes it). All file work runs on tokio's blocking threads.

use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

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

fn millis(time: std::io::Result<std::time::SystemTime>) -> Millis {
    let ms = time.ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_millis() as i64);
    Millis(ms)
}

/// One half of the work on an upload's bytes (hashing, or writing them to the file), owned
/// by whichever side holds it: the upload's task, or the blocking thread on a batch.
enum Stage<T> {
    Idle(T),
    Busy(tokio::task::JoinHandle<(T, BlobResult<()>)>),
}

impl<T: Send + 'static> Stage<T> {
    /// `part` at work on `bytes` on a blocking thread.
    fn start(mut part: T, bytes: Bytes, work: fn(&mut T, &[u8]) -> BlobResult<()>) -> Self {
        Self::Busy(tokio::task::spawn_blocking(move || {
            let done = work(&mut part, &bytes);
            (part, done)
        }))
    }

    /// The part, once the batch in flight (if any) is done.
    async fn ready(self) -> BlobResult<T> {
        match self {
            Self::Idle(part) => Ok(part),
            Self::Busy(batch) => {
                let (part, done) = batch.await.map_err(|e| BlobError::Internal(e.to_string()))?;
                done.map(|()| part)
            }
        }
    }
}

fn hash(meter: &mut Meter, bytes: &[u8]) -> BlobResult<()> {
    meter.take(bytes)
}

fn write(file: &mut std::fs::File, bytes: &[u8]) -> BlobResult<()> {
    use std::io::Write;
    file.write_all(bytes).map_err(io)
}

/// Writes the whole body into `file` and syncs it. The body is gathered into batches of
/// [`IO_CHUNK`]; each batch is hashed on one blocking thread and written on another while
/// the next one arrives, so receiving, hashing and writing overlap, the file's sync overlaps
/// the last batch's hash, and no thread is held between batches (a slow client costs no
/// thread). Past `limit` it stops at once.
async fn write_all(file: std::fs::File, mut body: ByteStream, limit: u64) -> BlobResult<Written> {
    let (mut meter, mut file) = (Stage::Idle(Meter::new(limit)), Stage::Idle(file));
    let (mut batch, mut received) = (BytesMut::with_capacity(IO_CHUNK), 0u64);
    loop {
        let next = body.next().await.transpose().map_err(|e| BlobError::Cut(e.to_string()))?;
        if let Some(chunk) = &next {
            received += chunk.len() as u64;
            if received > limit {
                return Err(BlobError::TooLarge { limit });
            }
            batch.extend_from_slice(chunk);
        }
        if batch.len() >= IO_CHUNK || (next.is_none() && !batch.is_empty()) {
            let bytes = std::mem::replace(&mut batch, BytesMut::with_capacity(IO_CHUNK)).freeze();
            let (hasher, writer) = (meter.ready().await?, file.ready().await?);
            meter = Stage::start(hasher, bytes.clone(), hash);
            file = Stage::start(writer, bytes, write);
        }
        if next.is_none() {
            break;
        }
    }
    let file = file.ready().await?;
    let synced = tokio::task::spawn_blocking(move || file.sync_all());
    let meter = meter.ready().await?;
    synced.await.map_err(|e| BlobError::Internal(e.to_string()))?.map_err(io)?;
    Ok(meter.finish())
}

/// Creates `dir` and any parents it lacks so that they survive a crash: each new directory's
/// entry is made durable by syncing the directory that holds it.
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().ok_or_else(|| std::io::Error::other("a directory without a parent"))?;
    create_dir_durably(parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => std::fs::File::open(parent)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs file work on a blocking thread.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> BlobResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| BlobError::Internal(e.to_string()))?.map_err(io)
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &BlobKey, body: ByteStream, limit: u64) -> BlobResult<Written> {
        let path = self.path(key);
        let dir = path.parent().ok_or_else(|| BlobError::Internal("object path has no parent".into()))?.to_owned();
        let temp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4()));
        let file = blocking({
            let (dir, temp) = (dir.clone(), temp.clone());
            move || {
                create_dir_durably(&dir)?;
                std::fs::File::create(&temp)
            }
        })
        .await?;
        let written = match write_all(file, body, limit).await {
            Ok(written) => written,
            Err(err) => {
                if let Err(e) = tokio::fs::remove_file(&temp).await {
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
        let (file, total) = blocking(move || {
            let file = std::fs::File::open(path)?;
            let total = file.metadata()?.len();
            Ok((file, total))
        })
        .await?;
        check_range(&range, total)?;
        let mut file = tokio::fs::File::from_std(file);
        let body: ByteStream = match range {
            Some(r) => {
                file.seek(std::io::SeekFrom::Start(r.start)).await.map_err(io)?;
                Box::pin(tokio_util::io::ReaderStream::with_capacity(file.take(r.end - r.start), IO_CHUNK))
            }
            None => Box::pin(tokio_util::io::ReaderStream::with_capacity(file, IO_CHUNK)),
        };
        Ok(Read { body, total })
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
}
