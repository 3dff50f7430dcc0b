//! Collaborative notes: updates relayed per second and send-to-receipt latency at 10 and 100
//! editors on one document, beside the reference Node server (y-websocket 2.1.0's
//! `bin/server.cjs`, in memory) driven by the same load client; memory per open document
//! and per connection on both; the time to open a note of 10,000 updates before and after
//! compaction, beside yrs applying the same updates in-process.
//!
//! The load client is this process (Rust, yrs, tokio-tungstenite). Each editor owns a root
//! `Y.Text` of its own and a fixed client id, so its updates are real Yjs updates that need
//! nothing from the others; receivers never apply what they get, they read the (client,
//! clock) at the head of each update and look up when it was sent. Client and server CPU are
//! read from /proc during every run, so the figures say which side was the limit.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Options, ReadTxn, Text, Transact};

use super::sse::cpu_secs;
use super::{ServerProc, admin_and_workspace, client, post};

const EDITOR_BASE: u64 = 1_000;
/// Updates an editor may have in flight (sent, not yet seen by its observer) in the
/// throughput runs.
const WINDOW: u64 = 64;

/// A server under test: where its documents are, and how to authenticate.
#[derive(Clone)]
struct Target {
    label: &'static str,
    pid: u32,
    /// `ws://host/…/` + document name.
    url: Arc<dyn Fn(usize) -> String + Send + Sync>,
    bearer: Option<String>,
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

/// The (client, first clock) of a `sync update` frame, if it is one.
fn update_head(frame: &[u8]) -> Option<(u64, u64)> {
    let mut at = 0;
    if varint(frame, &mut at)? != 0 || varint(frame, &mut at)? != 2 {
        return None;
    }
    let _len = varint(frame, &mut at)?;
    let _clients = varint(frame, &mut at)?;
    let _structs = varint(frame, &mut at)?;
    let client = varint(frame, &mut at)?;
    let clock = varint(frame, &mut at)?;
    Some((client, clock))
}

fn sync_frame(sub: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8, sub];
    let mut n = payload.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(payload);
    out
}

/// One editor's own document: each update inserts one character at the end of its text.
struct Editor {
    doc: Doc,
    text: yrs::TextRef,
    clock: u64,
}

impl Editor {
    fn new(i: usize) -> Self {
        let doc = Doc::with_options(Options { client_id: yrs::block::ClientID::new(EDITOR_BASE + i as u64), ..Options::default() });
        let text = doc.get_or_insert_text(format!("e{i}"));
        Self { doc, text, clock: 0 }
    }

    fn next(&mut self) -> (u64, Vec<u8>) {
        let mut txn = self.doc.transact_mut();
        let len = self.text.len(&txn);
        self.text.insert(&mut txn, len, "x");
        let update = txn.encode_update_v1();
        drop(txn);
        let clock = self.clock;
        self.clock += 1;
        (clock, sync_frame(2, &update))
    }
}

struct Shared {
    start: Instant,
    /// Per editor, per clock: nanoseconds since `start` when it was sent (0: not yet).
    sent: Vec<Vec<AtomicU64>>,
    /// Per editor: the highest clock its observer has seen, plus one.
    seen: Vec<AtomicU64>,
    wake: Vec<Notify>,
    deliveries: AtomicU64,
    latencies: std::sync::Mutex<Vec<u64>>,
    record: AtomicBool,
    stop: AtomicBool,
}

type Sink =
    futures::stream::SplitSink<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>, Message>;

/// Opens `n` connections to document `doc` and completes each one's sync.
async fn connect_all(target: &Target, doc: usize, n: usize, shared: &Arc<Shared>) -> Vec<Sink> {
    let mut sinks = Vec::with_capacity(n);
    for i in 0..n {
        let mut request = (target.url)(doc).into_client_request().expect("request");
        if let Some(token) = &target.bearer {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
        }
        let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("connects");
        let (mut sink, mut stream) = ws.split();
        // Our state vector (empty), as WebsocketProvider does on open.
        sink.send(Message::Binary(sync_frame(0, &[0]).into())).await.expect("step1");
        let (synced_tx, mut synced) = mpsc::channel::<()>(1);
        let shared = shared.clone();
        let observer_of = (i + n - 1) % n;
        tokio::spawn(async move {
            let mut synced_tx = Some(synced_tx);
            while let Some(Ok(message)) = stream.next().await {
                let Message::Binary(frame) = message else { continue };
                if frame.len() >= 2 && frame[0] == 0 && frame[1] == 1 {
                    if let Some(tx) = synced_tx.take() {
                        let _ = tx.send(()).await;
                    }
                    continue;
                }
                let Some((client, clock)) = update_head(&frame) else { continue };
                let Some(editor) = client.checked_sub(EDITOR_BASE).map(|e| e as usize).filter(|e| *e < shared.sent.len()) else { continue };
                if editor == i {
                    continue;
                }
                let now = shared.start.elapsed().as_nanos() as u64;
                shared.deliveries.fetch_add(1, Ordering::Relaxed);
                if shared.record.load(Ordering::Relaxed) {
                    let sent = shared.sent[editor].get(clock as usize).map_or(0, |s| s.load(Ordering::Relaxed));
                    if sent > 0 {
                        shared.latencies.lock().unwrap().push(now.saturating_sub(sent));
                    }
                }
                if editor == observer_of {
                    shared.seen[editor].fetch_max(clock + 1, Ordering::AcqRel);
                    shared.wake[editor].notify_one();
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), synced.recv()).await.expect("synced in time");
        sinks.push(sink);
    }
    sinks
}

fn shared_for(n: usize, per_editor: usize) -> Arc<Shared> {
    Arc::new(Shared {
        start: Instant::now(),
        sent: (0..n).map(|_| (0..per_editor).map(|_| AtomicU64::new(0)).collect()).collect(),
        seen: (0..n).map(|_| AtomicU64::new(0)).collect(),
        wake: (0..n).map(|_| Notify::new()).collect(),
        deliveries: AtomicU64::new(0),
        latencies: std::sync::Mutex::new(Vec::new()),
        record: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    })
}

struct RunFigures {
    deliveries_per_sec: f64,
    updates_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu: f64,
    client_cpu: f64,
    secs: f64,
}

/// `n` editors on one document for `secs`: flat out with a window (`rate` = None), or each
/// at `rate` updates per second, recording latencies.
async fn run(target: &Target, doc: usize, n: usize, secs: f64, rate: Option<f64>) -> RunFigures {
    let per_editor = match rate {
        Some(r) => (r * secs * 1.5) as usize + 100,
        None => 400_000,
    };
    let shared = shared_for(n, per_editor);
    let sinks = connect_all(target, doc, n, &shared).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cpu_s0, cpu_c0) = (cpu_secs(target.pid), cpu_secs(std::process::id()));
    shared.record.store(rate.is_some(), Ordering::Relaxed);
    let deliveries0 = shared.deliveries.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut sink) in sinks.into_iter().enumerate() {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut editor = Editor::new(i);
            let begin = Instant::now() + Duration::from_millis((i as u64 * 37) % 100);
            let mut sent_updates = 0u64;
            while !shared.stop.load(Ordering::Relaxed) && (editor.clock as usize) < shared.sent[i].len() {
                match rate {
                    Some(r) => {
                        let due = begin + Duration::from_secs_f64(sent_updates as f64 / r);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    None => {
                        while editor.clock >= shared.seen[i].load(Ordering::Acquire) + WINDOW && !shared.stop.load(Ordering::Relaxed) {
                            let _ = tokio::time::timeout(Duration::from_millis(50), shared.wake[i].notified()).await;
                        }
                    }
                }
                let (clock, frame) = editor.next();
                shared.sent[i][clock as usize].store(shared.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
                sent_updates += 1;
            }
            sink
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let delivered = shared.deliveries.load(Ordering::Relaxed) - deliveries0;
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_s, cpu_c) = (cpu_secs(target.pid) - cpu_s0, cpu_secs(std::process::id()) - cpu_c0);
    shared.stop.store(true, Ordering::Relaxed);
    shared.record.store(false, Ordering::Relaxed);
    for t in tasks {
        if let Ok(mut sink) = t.await {
            let _ = sink.close().await;
        }
    }
    let mut lat = std::mem::take(&mut *shared.latencies.lock().unwrap());
    lat.sort_unstable();
    let pick = |p: f64| if lat.is_empty() { 0.0 } else { lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1e6 };
    RunFigures {
        deliveries_per_sec: delivered as f64 / elapsed,
        updates_per_sec: delivered as f64 / elapsed / (n - 1) as f64,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
        server_cpu: cpu_s / elapsed,
        client_cpu: cpu_c / elapsed,
        secs: elapsed,
    }
}

/// RSS growth per open document (each with one connection and one edit), then per further
/// connection to one document.
async fn memory(target: &Target, rss: &dyn Fn() -> u64, first_doc: usize) -> (f64, f64) {
    const DOCS: usize = 200;
    const CONNS: usize = 500;
    let shared = shared_for(1, 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss();
    let mut keep = Vec::new();
    for d in 0..DOCS {
        let mut sinks = connect_all(target, first_doc + d, 1, &shared).await;
        let mut editor = Editor::new(0);
        let (_, frame) = editor.next();
        sinks[0].send(Message::Binary(frame.into())).await.expect("edit");
        keep.extend(sinks);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_docs = rss();
    let per_doc = (with_docs.saturating_sub(base)) as f64 / DOCS as f64;
    let shared = shared_for(1, 10);
    let more = connect_all(target, first_doc, CONNS, &shared).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let per_conn = (rss().saturating_sub(with_docs)) as f64 / CONNS as f64;
    drop(more);
    drop(keep);
    (per_doc, per_conn)
}

fn reference_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/clients/y-websocket-2")
}

/// The reference Node server on a free port.
async fn start_reference() -> Option<(tokio::process::Child, u16)> {
    let dir = reference_dir();
    if !dir.join("node_modules/y-websocket").exists() {
        let ok = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("notes: the reference server could not be installed (npm ci in benches/clients/y-websocket-2)");
            return None;
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = tokio::process::Command::new("node")
        .arg("node_modules/y-websocket/bin/server.cjs")
        .current_dir(&dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some((child, port));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn tickets(http: &reqwest::Client, base: &str, token: &str, ws: &str, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = post(http, format!("{base}/api/workspaces/{ws}/tickets"), Some(token), json!({ "title": format!("note {i}") })).await;
        out.push(t["id"].as_str().expect("id").to_string());
    }
    out
}

/// Ours: a server with the per-connection rate cap lifted (a benchmark editor types far
/// faster than a person), or at its defaults.
const OURS_ENV: &[(&str, &str)] = &[
    ("EDGEDESK_NOTE_UPDATES_PER_SEC", "10000000"),
    ("EDGEDESK_NOTE_BURST", "10000000"),
    ("EDGEDESK_NOTE_MAX_PER_USER", "100000"),
    ("EDGEDESK_NOTE_MAX_PER_DOCUMENT", "100000"),
    ("EDGEDESK_NOTE_MAX_CONNECTIONS", "100000"),
];

/// Our server on `data`, a workspace with `docs` tickets, and the target for its notes.
async fn ours(data: &Path, http: &reqwest::Client, docs: usize) -> (ServerProc, Target) {
    let server = ServerProc::start_with(data, OURS_ENV).await;
    let (token, ws) = admin_and_workspace(http, &server.base).await;
    let ids = Arc::new(tickets(http, &server.base, &token, &ws, docs).await);
    let ws_base = server.base.replacen("http://", "ws://", 1);
    let target = Target {
        label: "edgedesk",
        pid: server.pid,
        url: Arc::new(move |d| format!("{ws_base}/api/workspaces/{ws}/tickets/{}/note", ids[d])),
        bearer: Some(token),
    };
    (server, target)
}

fn theirs(child: &tokio::process::Child, port: u16) -> Target {
    Target {
        label: "y-websocket 2.1.0 (node)",
        pid: child.id().unwrap_or(0),
        url: Arc::new(move |d| format!("ws://127.0.0.1:{port}/room-{d}")),
        bearer: None,
    }
}

pub async fn bench_notes(dir: &Path, secs: u64) {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let secs = secs as f64;
    let http = client(4);
    println!(
        "notes: {} s per run; every edgedesk update is committed (WAL) before it is relayed, the reference keeps them in memory",
        secs
    );

    // Memory first, each on a fresh process (RSS after a load run only shows the allocator's
    // high-water mark).
    let (server, target) = ours(&dir.join("memory"), &http, 201).await;
    let (per_doc, per_conn) = memory(&target, &|| super::rss_kib(server.pid), 0).await;
    println!(
        "notes memory, edgedesk: {per_doc:.1} KiB per open document (with its one connection), {per_conn:.1} KiB per further connection"
    );
    server.stop().await;
    if let Some((child, port)) = start_reference().await {
        let target = theirs(&child, port);
        let (per_doc, per_conn) = memory(&target, &|| super::rss_kib(target.pid), 0).await;
        println!(
            "notes memory, {}: {per_doc:.1} KiB per open document (with its one connection), {per_conn:.1} KiB per further connection",
            target.label
        );
    }

    let (server, ours) = ours(&dir.join("ours"), &http, 10).await;
    let reference = start_reference().await;
    let theirs = reference.as_ref().map(|(child, port)| theirs(child, *port));
    let mut doc = 0;
    for n in [10usize, 100] {
        for target in std::iter::once(&ours).chain(theirs.iter()) {
            let flat = run(target, doc, n, secs, None).await;
            let typing = if n == 10 { 20.0 } else { 5.0 };
            let paced = run(target, doc + 1, n, secs, Some(typing)).await;
            println!(
                "notes {n:>3} editors, {:<26} flat out: {:>9.0} deliveries/s ({:>7.0} updates/s relayed to {} others each) | server CPU {:.0}%, client CPU {:.0}% | \
                 paced at {typing} updates/s per editor: send→receipt p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms ({:.0} deliveries/s, server CPU {:.0}%, client CPU {:.0}%, {:.1} s)",
                target.label,
                flat.deliveries_per_sec,
                flat.updates_per_sec,
                n - 1,
                flat.server_cpu * 100.0,
                flat.client_cpu * 100.0,
                paced.p50_ms,
                paced.p99_ms,
                paced.max_ms,
                paced.deliveries_per_sec,
                paced.server_cpu * 100.0,
                paced.client_cpu * 100.0,
                paced.secs,
            );
        }
        doc += 2;
    }
    server.stop().await;
    drop(reference);
    open_times(dir, &http).await;
}

/// Connect → first sync step 2 on a note nobody has open.
async fn time_open(url: &str, token: &str) -> Duration {
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    let started = Instant::now();
    let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("connects");
    let (mut sink, mut stream) = ws.split();
    sink.send(Message::Binary(sync_frame(0, &[0]).into())).await.expect("step1");
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Binary(frame) = message
            && frame.len() > 2
            && frame[0] == 0
            && frame[1] == 1
        {
            break;
        }
    }
    let took = started.elapsed();
    let _ = sink.close().await;
    took
}

async fn open_times(dir: &Path, http: &reqwest::Client) {
    const UPDATES: usize = 10_000;
    let data = dir.join("open");
    let mut env: Vec<(&str, &str)> = OURS_ENV.to_vec();
    env.push(("EDGEDESK_NOTE_COMPACT_AFTER", "1000000000"));
    let server = ServerProc::start_with(&data, &env).await;
    let (token, ws) = admin_and_workspace(http, &server.base).await;
    let ticket = tickets(http, &server.base, &token, &ws, 1).await.remove(0);
    let url = format!("{}/api/workspaces/{ws}/tickets/{ticket}/note", server.base.replacen("http://", "ws://", 1));
    // One editor types 10,000 characters, one update each; a second client sees them all.
    let target = Target { label: "edgedesk", pid: server.pid, url: Arc::new(move |_| url.clone()), bearer: Some(token.clone()) };
    let shared = shared_for(2, UPDATES + 10);
    let mut sinks = connect_all(&target, 0, 2, &shared).await;
    let mut editor = Editor::new(0);
    let mut updates = Vec::with_capacity(UPDATES);
    for _ in 0..UPDATES {
        let (_, frame) = editor.next();
        updates.push(frame[2..].to_vec());
        sinks[0].send(Message::Binary(frame.into())).await.expect("edit");
        while editor.clock > shared.seen[0].load(Ordering::Acquire) + 256 {
            let _ = tokio::time::timeout(Duration::from_millis(50), shared.wake[0].notified()).await;
        }
    }
    while shared.seen[0].load(Ordering::Acquire) < UPDATES as u64 {
        let _ = tokio::time::timeout(Duration::from_millis(50), shared.wake[0].notified()).await;
    }
    drop(sinks);
    server.stop().await;
    // The engine alone: yrs applying the same 10,000 updates in one transaction.
    let raw = {
        let started = Instant::now();
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        for u in &updates {
            txn.apply_update(yrs::Update::decode_v1(&u[varint_len(u)..]).expect("update")).expect("apply");
        }
        drop(txn);
        let _ = doc.transact().state_vector();
        started.elapsed()
    };
    let mut cold = env.clone();
    cold.push(("EDGEDESK_NOTE_IDLE_MS", "0"));
    let url = format!("/api/workspaces/{ws}/tickets/{ticket}/note");
    let measure = |server: &ServerProc| format!("{}{url}", server.base.replacen("http://", "ws://", 1));
    let server = ServerProc::start_with(&data, &cold).await;
    let mut before = Vec::new();
    for _ in 0..5 {
        before.push(time_open(&measure(&server), &token).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
    let mut compacting = OURS_ENV.to_vec();
    compacting.extend([("EDGEDESK_NOTE_IDLE_MS", "0"), ("EDGEDESK_NOTE_COMPACT_AFTER", "100"), ("EDGEDESK_NOTE_COMPACT_EVERY_MS", "200")]);
    let server = ServerProc::start_with(&data, &compacting).await;
    time_open(&measure(&server), &token).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while super::consumers::metric(http, &server.base, "edgedesk_note_compactions_total").await == 0 {
        assert!(Instant::now() < deadline, "the note was not compacted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(time_open(&measure(&server), &token).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
    before.sort();
    after.sort();
    println!(
        "notes open, 10,000 updates: before compaction median {:.1} ms (min {:.1}), after compaction median {:.1} ms (min {:.1}); \
         yrs alone applying the same updates in one transaction: {:.1} ms",
        before[2].as_secs_f64() * 1e3,
        before[0].as_secs_f64() * 1e3,
        after[2].as_secs_f64() * 1e3,
        after[0].as_secs_f64() * 1e3,
        raw.as_secs_f64() * 1e3
    );
}

/// The length of the varint at the start of `bytes` (a frame's payload length).
fn varint_len(bytes: &[u8]) -> usize {
    let mut at = 0;
    let _ = varint(bytes, &mut at);
    at
}
