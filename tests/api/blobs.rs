//! The blob stores against one contract: local files, and a real S3-compatible server
//! (moto, started by scripts/test): whole objects or none, ranges, listing, deletion.

use bytes::Bytes;
use edgedesk::store::WorkspaceId;
use edgedesk::store::blobs::{AttachmentId, BlobError, BlobKey, BlobStore, ByteStream, Read, VersionId};
use futures::StreamExt;

/// The S3 server of this run, or `None` outside CI without one (said loudly).
pub(crate) fn s3_url() -> Option<String> {
    if let Ok(url) = std::env::var("EDGEDESK_TEST_S3_URL") {
        return Some(url);
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI must run the S3 tests, but EDGEDESK_TEST_S3_URL is not set (scripts/test starts moto)");
    }
    eprintln!("SKIPPED on S3: EDGEDESK_TEST_S3_URL is not set. Run scripts/test to include the S3 store.");
    None
}

/// A fresh bucket on `url`, and the settings that reach it.
pub(crate) async fn s3_bucket(url: &str) -> edgedesk::store::blobs::s3::S3Settings {
    let bucket = format!("edgedesk-test-{}", uuid::Uuid::new_v4().simple());
    edgedesk::crypto::install_tls_provider();
    let res = reqwest::Client::new().put(format!("{url}/{bucket}")).send().await.expect("moto answers");
    assert!(res.status().is_success(), "bucket created: {}", res.status());
    edgedesk::store::blobs::s3::S3Settings {
        bucket,
        endpoint: Some(url.to_string()),
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        prefix: "edgedesk".into(),
    }
}

fn body(chunks: Vec<Result<Vec<u8>, &'static str>>) -> ByteStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(|c| c.map(Bytes::from).map_err(std::io::Error::other)).collect::<Vec<_>>()))
}

async fn read_all(read: Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = read.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

async fn contract(store: &dyn BlobStore) {
    let ws = WorkspaceId::new();
    let key = BlobKey { workspace: ws, attachment: AttachmentId::new(), version: VersionId::new() };
    // 12 MiB in 1 MiB chunks: more than one multipart part on S3.
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let whole: Vec<u8> = chunk.iter().copied().cycle().take(12 * chunk.len()).collect();
    let written = store.put(&key, body(vec![Ok(chunk.clone()); 12]), 64 << 20).await.expect("put");
    assert_eq!(written.size, whole.len() as u64);
    assert_eq!(written.sha256, hex::encode(ring::digest::digest(&ring::digest::SHA256, &whole)));
    assert_eq!(&written.head[..], &whole[..8192]);
    let read = store.get(&key, None).await.expect("get");
    assert_eq!(read.total, whole.len() as u64);
    assert!(read_all(read).await == whole, "byte-identical");
    let ranged = store.get(&key, Some(5_000_000..5_000_100)).await.expect("range");
    assert_eq!(ranged.total, whole.len() as u64);
    assert_eq!(read_all(ranged).await, &whole[5_000_000..5_000_100]);
    assert!(matches!(store.get(&key, Some(0..whole.len() as u64 + 1)).await, Err(BlobError::BadRange)));

    // Over its limit, or cut off: no object, in any listing.
    let big = BlobKey { version: VersionId::new(), ..key };
    assert_eq!(store.put(&big, body(vec![Ok(chunk.clone()); 3]), 2 << 20).await, Err(BlobError::TooLarge { limit: 2 << 20 }));
    let cut = BlobKey { version: VersionId::new(), ..key };
    assert!(matches!(
        store.put(&cut, body(vec![Ok(chunk.clone()), Ok(chunk.clone()), Err("reset")]), 64 << 20).await,
        Err(BlobError::Cut(_))
    ));
    let listed = store.list(ws).await.expect("list");
    assert_eq!(listed.iter().map(|l| (l.key, l.size)).collect::<Vec<_>>(), vec![(key, whole.len() as u64)]);
    assert!(matches!(store.get(&big, None).await, Err(BlobError::NotFound)));
    assert!(matches!(store.get(&cut, None).await, Err(BlobError::NotFound)));
    // Another workspace lists nothing of this one's.
    assert!(store.list(WorkspaceId::new()).await.expect("list").is_empty());

    store.delete(&key).await.expect("delete");
    store.delete(&key).await.expect("deleting twice is fine");
    assert!(matches!(store.get(&key, None).await, Err(BlobError::NotFound)));
    assert!(store.list(ws).await.expect("list").is_empty());
}

#[tokio::test]
async fn local_files_keep_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&edgedesk::store::blobs::local::LocalBlobs::new(dir.path())).await;
}

#[tokio::test]
async fn an_s3_bucket_keeps_the_contract() {
    let Some(url) = s3_url() else { return };
    let settings = s3_bucket(&url).await;
    let shown = format!("{settings:?}");
    assert!(shown.contains("[redacted]") && !shown.contains("\"test\""), "secrets are redacted in Debug: {shown}");
    contract(&edgedesk::store::blobs::s3::S3Blobs::new(&settings).expect("settings")).await;
}
