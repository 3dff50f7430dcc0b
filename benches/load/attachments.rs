//! attachments: upload and download throughput over HTTP for 1 MB and 100 MB files, beside
//! the floor of the same machine in the same run: a raw copy of the same bytes to the same
//! disk with the same durability (temp file, fsync, rename, directory fsync) and reading it
//! back (and, for downloads, the same files read and sent over a loopback socket), in local
//! mode; the same object written and read with the `object_store` crate
//! directly against the same S3 server, in S3 mode. Then the server's RSS growth while a
//! 1 GB file goes up and comes down again (target: under 32 MB).
//!
//! S3 mode runs when EDGEDESK_TEST_S3_URL names an S3 server (`source scripts/s3-server`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde_json::json;

use super::{ServerProc, admin_and_workspace, client, post, rss_kib};

const MB: usize = 1 << 20;

fn pattern(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

fn mbs(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / MB as f64 / took.as_secs_f64()
}

/// A body of `total` bytes made of `chunk` repeated, generated as it is sent.
fn generated(chunk: Bytes, total: u64) -> reqwest::Body {
    let parts = total / chunk.len() as u64;
    reqwest::Body::wrap_stream(futures::stream::iter((0..parts).map(move |_| Ok::<_, std::io::Error>(chunk.clone()))))
}

/// The server's peak RSS (KiB) while `work` runs, sampled every 10 ms.
async fn peak_rss<F: std::future::Future<Output = ()>>(pid: u32, work: F) -> u64 {
    let (done, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(rss_kib(pid))));
    let sampler = tokio::spawn({
        let (done, peak) = (done.clone(), peak.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    work.await;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
    peak.load(Ordering::Relaxed)
}

struct Api {
    http: reqwest::Client,
    token: String,
    files: String,
}

impl Api {
    async fn new(server: &ServerProc) -> Self {
        let http = client(4);
        let (token, ws) = admin_and_workspace(&http, &server.base).await;
        let ticket = post(&http, format!("{}/api/workspaces/{ws}/tickets", server.base), Some(&token), json!({ "title": "files" })).await;
        let files = format!("{}/api/workspaces/{ws}/tickets/{}/attachments", server.base, ticket["id"].as_str().expect("id"));
        Self { http, token, files }
    }

    /// Uploads `body` (`len` bytes); returns the download URL of what was stored.
    async fn upload(&self, body: reqwest::Body, len: u64) -> String {
        let res = self
            .http
            .post(format!("{}?name=bench.bin", self.files))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .header("content-length", len)
            .body(body)
            .send()
            .await
            .expect("upload");
        assert_eq!(res.status(), 201, "{:?}", res.text().await);
        let created: serde_json::Value = res.json().await.expect("json");
        assert_eq!(created["latest"]["size"], len);
        format!("{}/{}", self.files, created["id"].as_str().expect("id"))
    }

    /// Downloads `url` to nowhere; returns the bytes read.
    async fn download(&self, url: &str) -> u64 {
        let res = self.http.get(url).bearer_auth(&self.token).send().await.expect("download");
        assert_eq!(res.status(), 200);
        let mut body = res.bytes_stream();
        let mut read = 0;
        while let Some(chunk) = body.next().await {
            read += chunk.expect("chunk").len() as u64;
        }
        read
    }
}

/// HTTP and the floor, taking turns file by file so that both see the same disk (the page
/// cache's dirty pages, the device's moods): ((HTTP up, HTTP down), (floor write, floor
/// read)) in MB/s.
async fn interleaved<W, R>(api: &Api, bytes: &Bytes, reps: usize, mut write: W, mut read: R) -> ((f64, f64), (f64, f64))
where
    W: AsyncFnMut(usize, &Bytes),
    R: AsyncFnMut(usize, &Bytes),
{
    let (mut http_up, mut floor_up, mut urls) = (Duration::ZERO, Duration::ZERO, Vec::new());
    for i in 0..reps {
        let started = Instant::now();
        urls.push(api.upload(reqwest::Body::from(bytes.clone()), bytes.len() as u64).await);
        http_up += started.elapsed();
        let started = Instant::now();
        write(i, bytes).await;
        floor_up += started.elapsed();
    }
    let (mut http_down, mut floor_down) = (Duration::ZERO, Duration::ZERO);
    for (i, url) in urls.iter().enumerate() {
        let started = Instant::now();
        assert_eq!(api.download(url).await, bytes.len() as u64);
        http_down += started.elapsed();
        let started = Instant::now();
        read(i, bytes).await;
        floor_down += started.elapsed();
    }
    let total = (bytes.len() * reps) as u64;
    ((mbs(total, http_up), mbs(total, http_down)), (mbs(total, floor_up), mbs(total, floor_down)))
}

/// The disk's floor for one file: the same bytes written as the local store writes them
/// (temp file in 256 KiB writes, fsync, rename, directory fsync).
fn raw_write(dir: &Path, i: usize, bytes: &Bytes) {
    use std::io::Write;
    std::fs::create_dir_all(dir).expect("raw dir");
    let (temp, path) = (dir.join(format!(".tmp-{i}")), dir.join(format!("raw-{i}")));
    let mut file = std::fs::File::create(&temp).expect("create");
    for chunk in bytes.chunks(256 * 1024) {
        file.write_all(chunk).expect("write");
    }
    file.sync_all().expect("fsync");
    std::fs::rename(&temp, &path).expect("rename");
    std::fs::File::open(dir).and_then(|d| d.sync_all()).expect("dir fsync");
}

fn raw_read(dir: &Path, i: usize, bytes: &Bytes) {
    use std::io::Read;
    let mut file = std::fs::File::open(dir.join(format!("raw-{i}"))).expect("open");
    let (mut buf, mut read) = (vec![0u8; 256 * 1024], 0);
    loop {
        let n = file.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        read += n;
    }
    assert_eq!(read, bytes.len());
}

/// What the server must do to every uploaded byte, each alone at full speed on this
/// machine: take it off a loopback socket, hash it (SHA-256, ring), write it to disk. Done
/// one after the other, as one request's bytes are, they cost at least the sum: MB/s.
fn serial_floor(socket: f64, sha256: f64, disk: f64) -> f64 {
    1.0 / (1.0 / socket + 1.0 / sha256 + 1.0 / disk)
}

/// SHA-256 (ring, as the server hashes) over `bytes`, `reps` times: MB/s.
fn sha256_speed(bytes: &Bytes, reps: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, bytes));
    }
    mbs((bytes.len() * reps) as u64, started.elapsed())
}

/// The machine's floor for moving bytes to another process at all: `total` bytes over a
/// loopback TCP socket in 256 KiB writes, both ends in this process (MB/s).
async fn loopback(total: u64) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sender = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let chunk = vec![7u8; 256 * 1024];
        let mut sent = 0;
        while sent < total {
            socket.write_all(&chunk).await.expect("write");
            sent += chunk.len() as u64;
        }
    });
    let started = Instant::now();
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut buf, mut read) = (vec![0u8; 256 * 1024], 0u64);
    while read < total {
        let n = socket.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early");
        read += n as u64;
    }
    let took = started.elapsed();
    sender.await.expect("sender");
    mbs(read, took)
}

/// The machine's floor for serving a stored file without HTTP: each of the `reps` raw
/// files read in 256 KiB blocks and written to an open loopback connection, read off its
/// other end, both ends in this process (MB/s). A server that reads the file into memory
/// pays this copy too (sending a file from the kernel's cache without it needs `sendfile`,
/// which an HTTP body stream cannot use); the socket floor alone does not.
async fn read_and_send(dir: &Path, reps: usize, len: usize) -> f64 {
    use std::io::Read;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (connected, accepted) = tokio::join!(tokio::net::TcpStream::connect(listener.local_addr().expect("addr")), listener.accept());
    let (mut tx, mut rx) = (connected.expect("connect"), accepted.expect("accept").0);
    tx.set_nodelay(true).expect("nodelay");
    let (mut block, mut sink) = (vec![0u8; 256 * 1024], vec![0u8; 256 * 1024]);
    let started = Instant::now();
    for i in 0..reps {
        let send = async {
            let mut file = std::fs::File::open(dir.join(format!("raw-{i}"))).expect("open");
            loop {
                let n = file.read(&mut block).expect("read");
                if n == 0 {
                    break;
                }
                tx.write_all(&block[..n]).await.expect("send");
            }
        };
        let receive = async {
            let mut read = 0;
            while read < len {
                let n = rx.read(&mut sink).await.expect("receive");
                assert!(n > 0, "closed early");
                read += n;
            }
        };
        tokio::join!(send, receive);
    }
    mbs((len * reps) as u64, started.elapsed())
}

/// The same object written with `object_store` directly, as the S3 store writes it
/// (streaming multipart, two parts in flight).
async fn s3_write(store: &object_store::aws::AmazonS3, i: usize, bytes: &Bytes) {
    let path = object_store::path::Path::from(format!("raw/{i}"));
    let mut writer = WriteMultipart::new(store.put_multipart(&path).await.expect("multipart"));
    for chunk in bytes.chunks(64 * 1024) {
        writer.wait_for_capacity(2).await.expect("capacity");
        writer.write(chunk);
    }
    writer.finish().await.expect("finish");
}

async fn s3_read(store: &object_store::aws::AmazonS3, i: usize, bytes: &Bytes) {
    let mut body = store.get(&object_store::path::Path::from(format!("raw/{i}"))).await.expect("get").into_stream();
    let mut read = 0;
    while let Some(chunk) = body.next().await {
        read += chunk.expect("chunk").len();
    }
    assert_eq!(read, bytes.len());
}

/// The server's RSS before, and its peak growth while 1 GB goes up and while it comes down.
async fn rss_during_1gb(server: &ServerProc, api: &Api) -> (f64, f64, f64) {
    const GB: u64 = 1 << 30;
    let before = server.rss_kib();
    let url = tokio::sync::Mutex::new(String::new());
    let up = peak_rss(server.pid, async { *url.lock().await = api.upload(generated(pattern(MB), GB), GB).await }).await;
    let url = url.into_inner();
    let down = peak_rss(server.pid, async { assert_eq!(api.download(&url).await, GB) }).await;
    let mib = |kib: u64| kib as f64 / 1024.0;
    (mib(before), mib(up.saturating_sub(before)), mib(down.saturating_sub(before)))
}

fn report(mode: &str, label: &str, http: (f64, f64), floor: (f64, f64), floor_name: &str) {
    println!(
        "attachments {mode} {label}: upload {:.0} MB/s vs {floor_name} write {:.0} MB/s ({:.0}%), download {:.0} MB/s vs {floor_name} read {:.0} MB/s ({:.0}%) (target >= 50%)",
        http.0,
        floor.0,
        100.0 * http.0 / floor.0,
        http.1,
        floor.1,
        100.0 * http.1 / floor.1
    );
}

pub async fn bench_attachments(dir: &Path) {
    let limit = ("EDGEDESK_UPLOAD_LIMIT_BYTES", "2147483648");
    // 500 files of 1 MB: their downloads take about half a second in all, long enough that
    // one stray commit or checkpoint in the server does not move the figure.
    let sizes = [("1 MB", MB, 500), ("100 MB", 100 * MB, 8)];

    // Local: files in the workspace's folder, the floor on the same disk.
    let data = dir.join("local");
    let socket = loopback(1 << 30).await;
    println!(
        "attachments floor: loopback TCP {socket:.0} MB/s (1 GB, 256 KiB writes, both ends in one process): no HTTP transfer can pass it"
    );
    let server = ServerProc::start_with(&data, &[limit]).await;
    let api = Api::new(&server).await;
    let raw = data.join("raw");
    for (label, size, reps) in sizes {
        let bytes = pattern(size);
        let (http, floor) =
            interleaved(&api, &bytes, reps, async |i, b: &Bytes| raw_write(&raw, i, b), async |i, b: &Bytes| raw_read(&raw, i, b)).await;
        report("local", label, http, floor, "raw disk");
        let sha = sha256_speed(&bytes, reps);
        let serial = serial_floor(socket, sha, floor.0);
        let served = read_and_send(&raw, reps, size).await;
        println!(
            "attachments local {label}: upload {:.0} MB/s vs socket + SHA-256 ({sha:.0} MB/s) + disk one after the other {serial:.0} MB/s ({:.0}%); download vs the socket {:.0}%, vs the same files read and sent over loopback {served:.0} MB/s ({:.0}%)",
            http.0,
            100.0 * http.0 / serial,
            100.0 * http.1 / socket,
            100.0 * http.1 / served
        );
    }
    let (before, up, down) = rss_during_1gb(&server, &api).await;
    println!(
        "attachments local 1 GB: server RSS {before:.1} MiB before; peak growth {up:.1} MiB uploading, {down:.1} MiB downloading (target < 32 MiB)"
    );
    server.stop().await;

    // S3: the same server writing to an S3 bucket, the floor the same crate on the same server.
    let Ok(url) = std::env::var("EDGEDESK_TEST_S3_URL") else {
        println!("attachments s3: SKIPPED (EDGEDESK_TEST_S3_URL is not set; run under `source scripts/s3-server`)");
        return;
    };
    let bucket = format!("edgedesk-bench-{}", uuid::Uuid::new_v4().simple());
    let http = client(1);
    assert!(http.put(format!("{url}/{bucket}")).send().await.expect("s3 answers").status().is_success());
    let direct = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_access_key_id("bench")
        .with_secret_access_key("bench")
        .with_endpoint(&url)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("object_store");
    let env = [
        limit,
        ("EDGEDESK_BLOB_STORE", "s3"),
        ("EDGEDESK_S3_BUCKET", bucket.as_str()),
        ("EDGEDESK_S3_ENDPOINT", url.as_str()),
        ("EDGEDESK_S3_ACCESS_KEY_ID", "bench"),
        ("EDGEDESK_S3_SECRET_ACCESS_KEY", "bench"),
    ];
    let server = ServerProc::start_with(&dir.join("s3"), &env).await;
    let api = Api::new(&server).await;
    for (label, size, reps) in [("1 MB", MB, 20), ("100 MB", 100 * MB, 3)] {
        let bytes = pattern(size);
        let direct = &direct;
        let (http, floor) = interleaved(
            &api,
            &bytes,
            reps,
            async |i, b: &Bytes| s3_write(direct, i, b).await,
            async |i, b: &Bytes| s3_read(direct, i, b).await,
        )
        .await;
        report("s3", label, http, floor, "object_store direct");
    }
    let (before, up, down) = rss_during_1gb(&server, &api).await;
    println!(
        "attachments s3 1 GB: server RSS {before:.1} MiB before; peak growth {up:.1} MiB uploading, {down:.1} MiB downloading (target < 32 MiB)"
    );
    server.stop().await;
}
