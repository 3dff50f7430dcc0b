//! Load and speed harness for the foundation. Prints its figures; see docs/benchmarks.md.
//!
//! ```text
//! cargo bench --bench load -- [creates|get|bootstrap|tenants|sse|pg-creates|consumers|sqlite-fanin|pg-fanin|notes|attachments|mail|imap|search|console|all] [--secs S] [--clients C] [--threads T] [--eager-read] [--rows N] [--tenants N]
//! ```
//!
//! The server runs as its own process (the real `edgedesk serve` binary, release build)
//! so that its RSS can be read from /proc; the load client runs here. Every comparison is
//! made in the same run, on the same machine, with the same client:
//! - creates: POST tickets over HTTP (each commit durable in WAL, with its sync action)
//!   beside raw rusqlite doing the same two inserts per transaction;
//! - get: GET one ticket beside `/health` (a hello-world route on the same server and stack);
//! - bootstrap: streaming a workspace of N tickets beside a raw SELECT + serde_json loop
//!   over the same file, and the server's peak RSS growth while it streams;
//! - tenants: N workspaces created, the server restarted, then one request each: the p99
//!   latency of those first (cold) requests and the server's RSS afterwards;
//! - pg-creates: POST tickets over HTTP in Postgres mode beside raw tokio-postgres running
//!   the same statements per transaction (needs EDGEDESK_TEST_DATABASE_URL);
//! - consumers: events per second through the notifications consumer beside a raw loop
//!   doing its reads and writes, and COMMIT → notification visible through the API;
//! - sqlite-fanin / pg-fanin: what one commit costs the store with 10 to thousands of
//!   workspaces followed, and (SQLite) a restart with 10,000 workspaces, ten behind;
//! - notes: collaborative-note updates relayed per second and their latency at 10 and 100
//!   editors beside the reference Node y-websocket server, memory per document and per
//!   connection, and opening a note of 10,000 updates before and after compaction;
//! - attachments: upload/download MB/s for 1 MB and 100 MB files beside a raw copy to the
//!   same disk (local) and the `object_store` crate used directly (S3), and the server's
//!   RSS growth while 1 GB goes up and down;
//! - mail: messages per second from the outbox to a local SMTP sink beside lettre sending
//!   the same number of messages straight to it;
//! - imap: messages per second from a real dovecot mailbox to tickets beside a raw
//!   async-imap client fetching the same messages the same way;
//! - search and console: see their own files.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[path = "load/attachments.rs"]
mod attachments;
#[path = "../tests/api/browser.rs"]
#[allow(dead_code)]
mod browser;
#[path = "load/console.rs"]
mod console;
#[path = "load/consumers.rs"]
mod consumers;
#[path = "load/fleet.rs"]
mod fleet;
#[path = "load/hardening.rs"]
mod hardening;
#[path = "load/imap.rs"]
mod imap;
#[path = "load/mail.rs"]
mod mail;
#[path = "../tests/api/mailservers.rs"]
#[allow(dead_code)]
mod mailservers;
#[path = "load/notes.rs"]
mod notes;
#[path = "../tests/api/pgdb.rs"]
mod pgdb;
#[path = "load/search.rs"]
mod search;
#[path = "load/sse.rs"]
mod sse;

const TENANT_SCHEMA: &str = include_str!("../schema/sqlite/tenant/0001_init.sql");
const PASSWORD: &str = "correct horse battery";

struct Args {
    which: String,
    secs: u64,
    clients: usize,
    /// `--clients` given: the sse scenario runs that many instead of 1,000 and 10,000.
    clients_given: bool,
    /// Threads of the sse load client.
    threads: usize,
    /// `--eager-read`: the sse load client reads as frames arrive, on the server's cores,
    /// instead of holding off while each paced event fans out.
    eager_read: bool,
    rows: u64,
    tenants: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        which: "all".into(),
        secs: 5,
        clients: 32,
        clients_given: false,
        threads: 1,
        eager_read: false,
        rows: 1_000_000,
        tenants: 10_000,
    };
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = it.next() {
        let mut num = |name: &str| it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("{name} needs a number"));
        match arg.as_str() {
            "--secs" => args.secs = num("--secs"),
            "--clients" => {
                args.clients = num("--clients") as usize;
                args.clients_given = true;
            }
            "--threads" => args.threads = num("--threads").max(1) as usize,
            "--eager-read" => args.eager_read = true,
            "--rows" => args.rows = num("--rows"),
            "--tenants" => args.tenants = num("--tenants") as usize,
            other if !other.starts_with('-') => args.which = other.to_string(),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

struct ServerProc {
    child: Child,
    base: String,
    pid: u32,
}

impl ServerProc {
    async fn start(data: &Path) -> Self {
        Self::start_with(data, &[]).await
    }

    async fn start_with(data: &Path, env: &[(&str, &str)]) -> Self {
        // EDGEDESK_BENCH_SERVER_CPUS=0 (with the harness itself under `taskset -c 1`) keeps
        // the server and the load client off each other's cores.
        // EDGEDESK_BENCH_SERVER_BIN=target/profiling/edgedesk runs a build with symbols, for perf.
        let binary = std::env::var("EDGEDESK_BENCH_SERVER_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_edgedesk").to_string());
        let mut command = match std::env::var("EDGEDESK_BENCH_SERVER_CPUS") {
            Ok(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpus, &binary]);
                c
            }
            Err(_) => Command::new(&binary),
        };
        command
            .arg("serve")
            .env("EDGEDESK_DATA_DIR", data)
            .env("EDGEDESK_LISTEN", "127.0.0.1:0")
            .env("EDGEDESK_BCRYPT_COST", "4")
            .env("RUST_LOG", "warn");
        // The caller's settings win over the defaults above.
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn().expect("server starts");
        let pid = child.id().expect("pid");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = loop {
            let line = lines.next_line().await.expect("read").expect("server printed its address");
            if let Some(rest) = line.strip_prefix("edgedesk listening on ") {
                break rest.split_whitespace().next().expect("url").to_string();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, base, pid }
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.pid)
    }

    async fn stop(mut self) {
        // SIGTERM for a clean shutdown, so the next start reads a checkpointed WAL.
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.pid.to_string()).status();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn client(pool: usize) -> reqwest::Client {
    edgedesk::crypto::install_tls_provider();
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(pool).build().expect("client")
}

async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request");
    assert!(res.status().is_success(), "{}", res.status());
    res.json().await.expect("json")
}

/// The first admin's token and a new workspace's id.
async fn admin_and_workspace(http: &reqwest::Client, base: &str) -> (String, String) {
    post(http, format!("{base}/api/setup"), None, json!({ "email": "bench@example.com", "password": PASSWORD, "name": "Bench" })).await;
    let login = post(http, format!("{base}/api/auth/login"), None, json!({ "email": "bench@example.com", "password": PASSWORD })).await;
    let token = login["token"].as_str().expect("token").to_string();
    let ws = post(http, format!("{base}/api/workspaces"), Some(&token), json!({ "name": "Bench" })).await;
    (token, ws["id"].as_str().expect("id").to_string())
}

struct Stats {
    count: u64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `wrk` is a far lighter load client than anything in this process; it is used when
/// present (apt-get install wrk), so that the client is not what limits the figures.
fn have_wrk() -> bool {
    std::process::Command::new("wrk").arg("--version").output().is_ok()
}

fn ms(text: &str) -> f64 {
    let (num, unit) = text.trim().split_at(text.trim().find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.trim().len()));
    let value: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}

/// Runs wrk against `url` and reads its figures. Responses that are not 2xx fail the run.
fn wrk(url: &str, method: &str, token: Option<&str>, body: Option<&str>, secs: u64, clients: usize, dir: &Path) -> Stats {
    let script = dir.join("wrk.lua");
    let mut lua = format!("wrk.method = \"{method}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n");
    if let Some(t) = token {
        lua.push_str(&format!("wrk.headers[\"Authorization\"] = \"Bearer {t}\"\n"));
    }
    if let Some(b) = body {
        lua.push_str(&format!("wrk.body = '{b}'\n"));
    }
    std::fs::write(&script, lua).expect("wrk script");
    let out = std::process::Command::new("wrk")
        .args(["-t1", &format!("-c{clients}"), &format!("-d{secs}s"), "--latency", "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string())).unwrap_or_default();
    // "  123456 requests in 5.00s, 12.34MB read"
    let count = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Stats { count, per_sec: field("Requests/sec:").parse().unwrap_or(0.0), p50_ms: ms(&field("50%")), p99_ms: ms(&field("99%")) }
}

/// The index of percentile `p` in a sorted, non-empty list of `len` values.
fn rank(len: usize, p: f64) -> usize {
    ((len as f64 * p).ceil() as usize).clamp(1, len) - 1
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[rank(sorted.len(), p)].as_secs_f64() * 1000.0
}

/// Runs `clients` concurrent loops of `request` for `secs` seconds.
async fn load<F, Fut>(secs: u64, clients: usize, request: F) -> Stats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let counter = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (request, counter, stop) = (request.clone(), counter.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                assert!(request(n).await, "request failed");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    Stats { count: all.len() as u64, per_sec: all.len() as f64 / elapsed, p50_ms: percentile(&all, 0.50), p99_ms: percentile(&all, 0.99) }
}

#[derive(Serialize)]
struct RawTicket<'a> {
    id: &'a str,
    number: i64,
    title: &'a str,
    status: &'a str,
    priority: &'a str,
    requester_id: &'a str,
    assignee_id: Option<&'a str>,
    tags: Vec<String>,
    created_at: i64,
    updated_at: i64,
    version: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn raw_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
        .expect("pragmas");
    conn
}

/// Raw rusqlite, one transaction per ticket with the same two inserts the server makes.
fn raw_creates(dir: &Path, secs: u64) -> f64 {
    let path = dir.join("raw.db");
    let mut conn = raw_connection(&path);
    conn.execute_batch(TENANT_SCHEMA).expect("schema");
    let requester = uuid::Uuid::now_v7().to_string();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("begin");
        let id = uuid::Uuid::now_v7().to_string();
        let title = format!("raw {n}");
        let at = now_ms();
        tx.prepare_cached(
            "INSERT INTO tickets (id, title, status, priority, requester_id, assignee_id, tags, created_at, updated_at)
             VALUES (?1, ?2, 'open', 'normal', ?3, NULL, '[]', ?4, ?4)",
        )
        .and_then(|mut s| s.execute(params![id, title, requester, at]))
        .expect("insert ticket");
        let number = tx.last_insert_rowid();
        let data = serde_json::to_string(&RawTicket {
            id: &id,
            number,
            title: &title,
            status: "open",
            priority: "normal",
            requester_id: &requester,
            assignee_id: None,
            tags: vec![],
            created_at: at,
            updated_at: at,
            version: 1,
        })
        .expect("json");
        tx.prepare_cached(
            "INSERT INTO sync_actions (at, actor, kind, entity, entity_id, data, ticket_id, staff_only)
             VALUES (?1, ?2, 'ticket.created', 'ticket', ?3, ?4, ?3, 0)",
        )
        .and_then(|mut s| s.execute(params![at, requester, id, data]))
        .expect("insert action");
        tx.commit().expect("commit");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// POST tickets to `url` for the configured time: with wrk when present, else in-process.
async fn create_load(http: &reqwest::Client, url: String, token: &str, args: &Args, dir: &Path) -> Stats {
    if have_wrk() {
        return wrk(&url, "POST", Some(token), Some(r#"{"title":"bench ticket"}"#), args.secs, args.clients, dir);
    }
    let (h, t) = (http.clone(), token.to_string());
    load(args.secs, args.clients, move |n| {
        let req = h.post(url.clone()).bearer_auth(&t).json(&json!({ "title": format!("bench {n}") })).send();
        async move { req.await.map(|r| r.status() == 201).unwrap_or(false) }
    })
    .await
}

async fn bench_creates(args: &Args, dir: &Path) {
    let server = ServerProc::start(&dir.join("data")).await;
    let http = client(args.clients);
    let (token, ws) = admin_and_workspace(&http, &server.base).await;
    let url = format!("{}/api/workspaces/{ws}/tickets", server.base);
    let stats = create_load(&http, url, &token, args, dir).await;
    server.stop().await;
    let raw = tokio::task::spawn_blocking({
        let dir = dir.to_owned();
        let secs = args.secs;
        move || raw_creates(&dir, secs)
    })
    .await
    .expect("raw");
    println!(
        "creates: HTTP {:.0}/s ({} tickets, {} connections, p50 {:.2} ms, p99 {:.2} ms) | raw rusqlite, one transaction per ticket, {:.0}/s | ratio {:.0}% (target >= 50%)",
        stats.per_sec,
        stats.count,
        args.clients,
        stats.p50_ms,
        stats.p99_ms,
        raw,
        100.0 * stats.per_sec / raw
    );
}

/// GET figures with the in-process client (when wrk is missing).
async fn in_process_get(http: &reqwest::Client, url: String, token: &str, base: &str, args: &Args) -> (Stats, Stats) {
    let (h, t) = (http.clone(), token.to_string());
    let get = load(args.secs, args.clients, move |_| {
        let req = h.get(url.clone()).bearer_auth(&t).send();
        async move {
            match req.await {
                Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await;
    let health_url = format!("{base}/health");
    let h = http.clone();
    let hello = load(args.secs, args.clients, move |_| {
        let req = h.get(health_url.clone()).send();
        async move {
            match req.await {
                Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                _ => false,
            }
        }
    })
    .await;
    (get, hello)
}

async fn bench_get(args: &Args, dir: &Path) {
    let server = ServerProc::start(&dir.join("data")).await;
    let http = client(args.clients);
    let (token, ws) = admin_and_workspace(&http, &server.base).await;
    let ticket = post(&http, format!("{}/api/workspaces/{ws}/tickets", server.base), Some(&token), json!({ "title": "read me" })).await;
    let url = format!("{}/api/workspaces/{ws}/tickets/{}", server.base, ticket["id"].as_str().expect("id"));
    let (get, hello) = if have_wrk() {
        let health = format!("{}/health", server.base);
        (wrk(&url, "GET", Some(&token), None, args.secs, args.clients, dir), wrk(&health, "GET", None, None, args.secs, args.clients, dir))
    } else {
        in_process_get(&http, url, &token, &server.base, args).await
    };
    server.stop().await;
    println!(
        "get: ticket {:.0}/s (p50 {:.2} ms, p99 {:.2} ms) | hello-world /health {:.0}/s (p50 {:.2} ms, p99 {:.2} ms) | ratio {:.0}% (target >= 50%)",
        get.per_sec,
        get.p50_ms,
        get.p99_ms,
        hello.per_sec,
        hello.p50_ms,
        hello.p99_ms,
        100.0 * get.per_sec / hello.per_sec
    );
}

/// Writes `rows` tickets (and their `ticket.created` events) straight into a tenant file.
fn seed(path: &Path, requester: &str, rows: u64) {
    let mut conn = raw_connection(path);
    let batch = 20_000;
    let mut written = 0;
    while written < rows {
        let tx = conn.transaction().expect("begin");
        {
            let mut ticket = tx
                .prepare(
                    "INSERT INTO tickets (id, title, status, priority, requester_id, assignee_id, tags, created_at, updated_at)
                     VALUES (?1, ?2, ?3, 'normal', ?4, NULL, ?5, ?6, ?6)",
                )
                .expect("prepare");
            let mut action = tx
                .prepare(
                    "INSERT INTO sync_actions (at, actor, kind, entity, entity_id, data, ticket_id, staff_only)
                     VALUES (?1, ?2, 'ticket.created', 'ticket', ?3, '{}', ?3, 0)",
                )
                .expect("prepare");
            for i in written..(written + batch).min(rows) {
                let id = uuid::Uuid::now_v7().to_string();
                let at = now_ms();
                let tags = if i % 3 == 0 { r#"["billing","vip"]"# } else { "[]" };
                ticket
                    .execute(params![
                        id,
                        format!("Ticket number {i} about a printer"),
                        ["open", "pending"][(i % 2) as usize],
                        requester,
                        tags,
                        at
                    ])
                    .expect("ticket");
                action.execute(params![at, requester, id]).expect("action");
            }
        }
        tx.commit().expect("commit");
        written = (written + batch).min(rows);
    }
}

/// Raw SELECT + serde_json over the same rows: the floor any bootstrap pays.
fn raw_bootstrap(path: &Path) -> (u64, f64) {
    let conn = raw_connection(path);
    let mut stmt = conn
        .prepare(
            "SELECT id, number, title, status, priority, requester_id, assignee_id, tags, created_at, updated_at, version
             FROM tickets WHERE deleted_at IS NULL ORDER BY number",
        )
        .expect("prepare");
    let start = Instant::now();
    let mut rows = stmt.query([]).expect("query");
    let mut out = Vec::with_capacity(1 << 16);
    let mut n = 0u64;
    while let Some(row) = rows.next().expect("row") {
        let id: String = row.get(0).expect("id");
        let title: String = row.get(2).expect("title");
        let status: String = row.get(3).expect("status");
        let priority: String = row.get(4).expect("priority");
        let requester: String = row.get(5).expect("requester");
        let assignee: Option<String> = row.get(6).expect("assignee");
        let tags: String = row.get(7).expect("tags");
        let ticket = RawTicket {
            id: &id,
            number: row.get(1).expect("number"),
            title: &title,
            status: &status,
            priority: &priority,
            requester_id: &requester,
            assignee_id: assignee.as_deref(),
            tags: serde_json::from_str(&tags).expect("tags"),
            created_at: row.get(8).expect("created"),
            updated_at: row.get(9).expect("updated"),
            version: row.get(10).expect("version"),
        };
        serde_json::to_writer(&mut out, &ticket).expect("json");
        out.push(b'\n');
        if out.len() > 1 << 16 {
            out.clear();
        }
        n += 1;
    }
    (n, n as f64 / start.elapsed().as_secs_f64())
}

async fn bench_bootstrap(args: &Args, dir: &Path) {
    let data = dir.join("data");
    let server = ServerProc::start(&data).await;
    let http = client(4);
    let (token, ws) = admin_and_workspace(&http, &server.base).await;
    let me: Value = http.get(format!("{}/api/me", server.base)).bearer_auth(&token).send().await.expect("me").json().await.expect("json");
    let db = data.join("tenants").join(&ws).join("tenant.db");
    let seeded = Instant::now();
    tokio::task::spawn_blocking({
        let (db, requester, rows) = (db.clone(), me["id"].as_str().expect("id").to_string(), args.rows);
        move || seed(&db, &requester, rows)
    })
    .await
    .expect("seed");
    eprintln!("seeded {} tickets in {:.1} s", args.rows, seeded.elapsed().as_secs_f64());

    let before = server.rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), server.pid);
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let start = Instant::now();
    let res = http.get(format!("{}/api/workspaces/{ws}/sync/bootstrap", server.base)).bearer_auth(&token).send().await.expect("bootstrap");
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut lines = 0u64;
    let mut last = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        last = chunk.to_vec();
    }
    let elapsed = start.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let footer = String::from_utf8_lossy(&last).lines().last().unwrap_or_default().to_string();
    assert!(footer.contains("\"footer\""), "stream ended with its footer");
    let rows = lines - 2;
    let http_rate = rows as f64 / elapsed;
    let growth_mb = (peak.load(Ordering::Relaxed).saturating_sub(before)) as f64 / 1024.0;
    server.stop().await;
    let (raw_rows, raw_rate) = tokio::task::spawn_blocking(move || raw_bootstrap(&db)).await.expect("raw");
    println!(
        "bootstrap: {rows} rows in {elapsed:.2} s = {http_rate:.0} rows/s | raw SELECT + serde_json {raw_rate:.0} rows/s ({raw_rows} rows) | ratio {:.0}% (target >= 50%) | server RSS {:.1} MB before, peak growth {growth_mb:.1} MB while streaming (target <= 64 MB)",
        100.0 * http_rate / raw_rate,
        before as f64 / 1024.0
    );
}

async fn bench_tenants(args: &Args, dir: &Path) {
    let data = dir.join("data");
    let server = ServerProc::start(&data).await;
    let http = client(16);
    let (token, _) = admin_and_workspace(&http, &server.base).await;
    let created = Instant::now();
    let ids = consumers::workspaces(&http, &server.base, &token, args.tenants).await;
    let create_secs = created.elapsed().as_secs_f64();
    server.stop().await;

    // A fresh process: every workspace is cold.
    let server = ServerProc::start(&data).await;
    let http = client(1);
    let rss_start = server.rss_kib();
    let mut latencies = Vec::with_capacity(ids.len());
    for ws in &ids {
        let t = Instant::now();
        let res = http.get(format!("{}/api/workspaces/{ws}/tickets", server.base)).bearer_auth(&token).send().await.expect("request");
        assert_eq!(res.status(), 200);
        res.bytes().await.expect("body");
        latencies.push(t.elapsed());
    }
    let rss_after = server.rss_kib();
    latencies.sort();
    server.stop().await;
    println!(
        "tenants: {} workspaces created in {create_secs:.1} s ({:.0}/s) | first request to each cold workspace: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 10 ms) | server RSS {:.1} MB at start, {:.1} MB after (target <= 300 MB)",
        ids.len(),
        ids.len() as f64 / create_secs,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        rss_start as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
}

/// Raw tokio-postgres, one client, one transaction per ticket with exactly the statements
/// the server runs for a create: scope, head lock, ticket number, ticket, sync action.
async fn raw_pg_creates(app_url: &str, workspace: &str, requester: &str, secs: u64) -> f64 {
    let (mut client, connection) = tokio_postgres::connect(app_url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    let ws = uuid::Uuid::parse_str(workspace).expect("workspace id");
    let requester = uuid::Uuid::parse_str(requester).expect("user id");
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let tx = client.transaction().await.expect("begin");
        tx.execute("SELECT set_config('app.workspace_id', $1, true)", &[&workspace]).await.expect("scope");
        tx.execute("SELECT 1 FROM workspace_heads WHERE workspace_id = $1 FOR UPDATE", &[&ws]).await.expect("lock");
        let number: i64 = tx
            .query_one(
                "UPDATE workspace_heads SET ticket_number = ticket_number + 1 WHERE workspace_id = $1 RETURNING ticket_number",
                &[&ws],
            )
            .await
            .expect("number")
            .get(0);
        let id = uuid::Uuid::now_v7();
        let at = now_ms();
        let tags: Vec<String> = Vec::new();
        tx.execute(
            "INSERT INTO tickets (workspace_id, id, number, title, status, priority, requester_id, assignee_id, tags, created_at, updated_at)
             VALUES ($1, $2, $3, 'raw', 'open', 'normal', $4, NULL, $5, $6, $6)",
            &[&ws, &id, &number, &requester, &tags, &at],
        )
        .await
        .expect("ticket");
        let data = json!({ "id": id, "number": number, "title": "raw" });
        tx.execute(
            "WITH head AS (UPDATE workspace_heads SET sync_head = sync_head + 1 WHERE workspace_id = $1 RETURNING sync_head)
             INSERT INTO sync_actions (workspace_id, sync_id, at, actor, kind, entity, entity_id, data, ticket_id, staff_only)
             SELECT $1, head.sync_head, $2, $3, 'ticket.created', 'ticket', $4, $5, $6, false FROM head",
            &[&ws, &at, &requester, &id.to_string(), &data, &id],
        )
        .await
        .expect("action");
        tx.commit().await.expect("commit");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn bench_pg_creates(args: &Args, dir: &Path) {
    if std::env::var_os("EDGEDESK_TEST_DATABASE_URL").is_none() {
        println!("pg-creates: skipped: set EDGEDESK_TEST_DATABASE_URL to a Postgres superuser URL (see docs/benchmarks.md)");
        return;
    }
    let pg = pgdb::PgDatabase::create().await;
    let env = [("EDGEDESK_DATABASE_URL", pg.app_url.as_str()), ("EDGEDESK_ADMIN_DATABASE_URL", pg.admin_url.as_str())];
    let server = ServerProc::start_with(&dir.join("data"), &env).await;
    let http = client(args.clients);
    let (token, ws) = admin_and_workspace(&http, &server.base).await;
    let me: Value = http.get(format!("{}/api/me", server.base)).bearer_auth(&token).send().await.expect("me").json().await.expect("json");
    let url = format!("{}/api/workspaces/{ws}/tickets", server.base);
    let stats = create_load(&http, url, &token, args, dir).await;
    server.stop().await;
    let raw = raw_pg_creates(&pg.app_url, &ws, me["id"].as_str().expect("id"), args.secs).await;
    println!(
        "pg-creates: HTTP {:.0}/s ({} tickets, {} connections, p50 {:.2} ms, p99 {:.2} ms) | raw tokio-postgres, one client, the same statements per transaction, {:.0}/s | ratio {:.0}% (target >= 50%)",
        stats.per_sec,
        stats.count,
        args.clients,
        stats.p50_ms,
        stats.p99_ms,
        raw,
        100.0 * stats.per_sec / raw
    );
}

fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new().prefix(&format!("edgedesk-bench-{name}-")).tempdir().expect("temp dir");
    let path = dir.path().to_owned();
    (dir, path)
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if args.which == "raw-sse-server" {
        return sse::raw_server_main(args.threads);
    }
    let all = args.which == "all";
    println!(
        "edgedesk load harness: {} core(s), {} s per timed run, {} connections, load client: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.secs,
        args.clients,
        if have_wrk() { "wrk (1 thread)" } else { "in-process reqwest (wrk not found: apt-get install wrk)" }
    );
    if all || args.which == "creates" {
        let (_keep, dir) = scratch("creates");
        bench_creates(&args, &dir).await;
    }
    if all || args.which == "get" {
        let (_keep, dir) = scratch("get");
        bench_get(&args, &dir).await;
    }
    if all || args.which == "bootstrap" {
        let (_keep, dir) = scratch("bootstrap");
        bench_bootstrap(&args, &dir).await;
    }
    if all || args.which == "tenants" {
        let (_keep, dir) = scratch("tenants");
        bench_tenants(&args, &dir).await;
    }
    if all || args.which == "sse" {
        let (_keep, dir) = scratch("sse");
        let sizes = if args.clients_given { vec![args.clients] } else { vec![1_000, 10_000] };
        sse::bench_sse(&dir, &sizes, args.threads, args.eager_read).await;
    }
    if all || args.which == "pg-creates" {
        let (_keep, dir) = scratch("pg-creates");
        bench_pg_creates(&args, &dir).await;
    }
    if all || args.which == "consumers" {
        let (_keep, dir) = scratch("consumers");
        consumers::bench_consumers(&dir).await;
    }
    if all || args.which == "sqlite-fanin" {
        let (_keep, dir) = scratch("sqlite-fanin");
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        consumers::bench_sqlite_fanin(&dir, &[10, 100, 1000, 2000]).await;
    }
    if all || args.which == "slow-bootstraps" {
        let (_keep, dir) = scratch("slow-bootstraps");
        hardening::bench_slow_bootstraps(&dir, false).await;
        let (_keep_pg, dir) = scratch("slow-bootstraps-pg");
        hardening::bench_slow_bootstraps(&dir, true).await;
    }
    if all || args.which == "login-flood" {
        let (_keep, dir) = scratch("login-flood");
        hardening::bench_login_flood(&dir).await;
    }
    if all || args.which == "notes" {
        let (_keep, dir) = scratch("notes");
        notes::bench_notes(&dir, args.secs).await;
    }
    if all || args.which == "mail" {
        let (_keep, dir) = scratch("mail");
        mail::bench_mail(&dir).await;
    }
    if all || args.which == "imap" {
        let (_keep, dir) = scratch("imap");
        imap::bench_imap(&dir).await;
    }
    if all || args.which == "attachments" {
        let (_keep, dir) = scratch("attachments");
        attachments::bench_attachments(&dir).await;
    }
    if all || args.which == "console" {
        let (_keep, dir) = scratch("console");
        console::bench_console(&dir).await;
    }
    if all || args.which == "search" {
        let (_keep, dir) = scratch("search");
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        search::bench_search(&dir, args.rows, args.tenants).await;
    }
    if all || args.which == "pg-fanin" {
        let (_keep, dir) = scratch("pg-fanin");
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        consumers::bench_pg_fanin(&dir).await;
    }
}
