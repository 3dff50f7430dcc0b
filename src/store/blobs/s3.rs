//! Objects in one S3-compatible bucket that every instance shares, through Apache Arrow's
//! `object_store` crate: streaming multipart uploads (a part in memory at a time), ranged
//! reads, listing. Keys are `<prefix>/<ws>/<attachment>/<version>`.
//!
//! A write that fails or goes past its limit aborts its multipart upload: the object never
//! appears. (A crash mid-upload leaves an unfinished multipart upload, which the bucket's
//! own lifecycle rule for incomplete uploads removes; it is never an object.)

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};

use super::{BlobError, BlobKey, BlobResult, BlobStore, ByteStream, Listed, Meter, Read, Written, check_range};
use crate::store::{Millis, WorkspaceId};

/// Where the bucket is and how to sign for it. Secrets never appear in `Debug`.
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); none for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Keys start with this (`edgedesk` by default), so a bucket can be shared.
    pub prefix: String,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &"[redacted]")
            .field("secret_access_key", &"[redacted]")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Parts uploaded at once per object.
const CONCURRENT_PARTS: usize = 2;

pub struct S3Blobs {
    store: Arc<AmazonS3>,
    prefix: String,
}

fn error(err: object_store::Error) -> BlobError {
    match err {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        object_store::Error::Generic { source, .. } => BlobError::Unavailable(source.to_string()),
        other => BlobError::Internal(other.to_string()),
    }
}

impl S3Blobs {
    pub fn new(settings: &S3Settings) -> BlobResult<Self> {
        crate::crypto::install_tls_provider();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|e| BlobError::Internal(format!("S3 settings: {e}")))?;
        Ok(Self { store: Arc::new(store), prefix: settings.prefix.trim_matches('/').to_string() })
    }

    fn path(&self, key: &BlobKey) -> Path {
        Path::from(format!("{}/{}", self.prefix, key.relative()))
    }
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &BlobKey, mut body: ByteStream, limit: u64) -> BlobResult<Written> {
        let upload = self.store.put_multipart(&self.path(key)).await.map_err(error)?;
        let mut writer = WriteMultipart::new(upload);
        let mut meter = Meter::new(limit);
        let failed = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(BlobError::Cut(e.to_string())),
                Some(Ok(chunk)) => {
                    if let Err(e) = meter.take(&chunk) {
                        break Some(e);
                    }
                    if let Err(e) = writer.wait_for_capacity(CONCURRENT_PARTS).await {
                        break Some(error(e));
                    }
                    writer.write(&chunk);
                }
            }
        };
        if let Some(err) = failed {
            if let Err(e) = writer.abort().await {
                tracing::error!(key = %key.relative(), error = %e, "cannot abort a failed upload to the bucket");
            }
            return Err(err);
        }
        writer.finish().await.map_err(error)?;
        Ok(meter.finish())
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> BlobResult<Read> {
        let path = self.path(key);
        if range.is_some() {
            // The object's size first: a range must lie inside it, as for local files.
            let meta = self.store.head(&path).await.map_err(error)?;
            check_range(&range, meta.size)?;
        }
        let options = GetOptions { range: range.clone().map(GetRange::Bounded), ..GetOptions::default() };
        let result = self.store.get_opts(&path, options).await.map_err(error)?;
        let total = result.meta.size;
        check_range(&range, total)?;
        let body: ByteStream = Box::pin(result.into_stream().map_err(|e| std::io::Error::other(e.to_string())));
        Ok(Read { body, total })
    }

    async fn delete(&self, key: &BlobKey) -> BlobResult<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(error(e)),
        }
    }

    async fn list(&self, workspace: WorkspaceId) -> BlobResult<Vec<Listed>> {
        let prefix = Path::from(format!("{}/{workspace}", self.prefix));
        let strip = format!("{}/", self.prefix);
        let mut out = Vec::new();
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(error)?;
            let Some(key) = meta.location.as_ref().strip_prefix(&strip).and_then(BlobKey::parse) else { continue };
            out.push(Listed { key, size: meta.size, modified: Millis(meta.last_modified.timestamp_millis()) });
        }
        Ok(out)
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}
