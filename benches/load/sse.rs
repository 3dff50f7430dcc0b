//! The `sse` scenario: commit-to-receipt latency and fan-out of live events to N clients.
//!
//! One server, one workspace, N clients following its event stream (see `fleet.rs`), all on
//! this machine's cores. Three phases:
//! - paced: events from one writer, one at a time, each timed to each client's receipt of
//!   its frame: 25 events, then 50 with one more client connected that never reads a byte (a
//!   stalled tab), then 25 after it has gone. The COMMIT is bracketed: it came after the POST
//!   was sent and after the event's own `at` (taken in its transaction, in milliseconds), and
//!   before the POST was answered;
//! - burst: events from four writers as fast as they go, until every client has the last.
//!
//! In the paced phases the load client is held (see `fleet.rs`) from just before each POST
//! until 100 ms + 10 µs per client after it, then reads everything; the next event follows
//! once every client has read this one. The report counts arrivals stamped after the client
//! began reading, which the client's own work could have delayed. `--eager-read` instead
//! reads throughout, with the events 100 ms apart, as a real but co-located client would.
//!
//! `EDGEDESK_BENCH_PER_EVENT=1` also prints each paced event's answer time and the spread
//! of its arrivals.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::fleet::{Fleet, Seen, realtime_ns};
use super::{ServerProc, admin_and_workspace, client, post, rank};

/// What the server's clients receive per `ticket.created` event (the frame in its HTTP chunk),
/// as the scenario reports it: the raw floor writes frames of this size.
const FRAME_BYTES: usize = 525;

/// CPU seconds (user + system) a process has used so far, from /proc.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Milliseconds at percentile `p` of `values` (nanoseconds), sorting them.
fn pct(values: &mut [i64], p: f64) -> f64 {
    values.sort_unstable();
    if values.is_empty() {
        return 0.0;
    }
    values[rank(values.len(), p)] as f64 / 1e6
}

struct Phase {
    /// sync_id → when its POST was sent.
    sent: std::collections::HashMap<i64, i64>,
    /// sync_id → when its POST was answered (after its COMMIT).
    answered: std::collections::HashMap<i64, i64>,
    /// sync_id → when a held client began reading it.
    released: std::collections::HashMap<i64, i64>,
}

impl Phase {
    /// This phase's arrivals whose kernel stamp is their own (see `Seen::exact`).
    fn exact<'s>(&self, seen: &'s [Seen]) -> impl Iterator<Item = &'s Seen> {
        seen.iter().filter(|s| s.exact && self.sent.contains_key(&s.id))
    }

    /// This phase's arrivals that shared a read with a later frame: their stamp is that
    /// frame's, so they are left out of the figures.
    fn inexact(&self, seen: &[Seen]) -> usize {
        seen.iter().filter(|s| !s.exact && self.sent.contains_key(&s.id)).count()
    }

    /// (kernel receipt − sent, read − sent) for every exactly stamped arrival of this
    /// phase's events.
    fn latencies(&self, seen: &[Seen]) -> (Vec<i64>, Vec<i64>) {
        self.exact(seen).map(|s| (s.kernel_ns - self.sent[&s.id], s.read_ns - self.sent[&s.id])).unzip()
    }

    fn and(mut self, other: Phase) -> Phase {
        self.sent.extend(other.sent);
        self.answered.extend(other.answered);
        self.released.extend(other.released);
        self
    }

    /// Kernel receipt − `at[id]` for every exactly stamped arrival of this phase's events.
    /// From the POST's answer (after its COMMIT) that is a lower bound of commit-to-receipt,
    /// as `latencies` gives an upper one; from the event's own `at` (taken in its
    /// transaction, before the COMMIT) a tighter upper one.
    fn since(&self, seen: &[Seen], at: &std::collections::HashMap<i64, i64>) -> Vec<i64> {
        self.exact(seen).filter_map(|s| at.get(&s.id).map(|t| s.kernel_ns - t)).collect()
    }

    /// Arrivals stamped after a held client began reading their event.
    fn late(&self, seen: &[Seen]) -> usize {
        self.exact(seen).filter(|s| self.released.get(&s.id).is_some_and(|r| s.kernel_ns > *r)).count()
    }
}

/// When the paced phases' load client reads: held while each event fans out, or eagerly.
struct Pacing<'a> {
    fleet: &'a Fleet,
    clients: usize,
    held: bool,
}

impl Pacing<'_> {
    /// Before an event is sent: holds the fleet if so paced; returns the frames read so far.
    fn before(&self) -> usize {
        if self.held {
            self.fleet.hold();
        }
        self.fleet.frames()
    }

    /// After an event was sent at `sent` with `frames` read before it: waits out its fan-out.
    /// Held, returns when the client began reading, once every client has read it.
    fn after(&self, sent: std::time::Instant, frames: usize) -> Option<i64> {
        if !self.held {
            std::thread::sleep(Duration::from_millis(100));
            return None;
        }
        let window = Duration::from_millis(100) + Duration::from_micros(10 * self.clients as u64);
        std::thread::sleep(window.saturating_sub(sent.elapsed()));
        let released = realtime_ns();
        self.fleet.release_until(frames + self.clients);
        // Let the box settle before the next event.
        std::thread::sleep(Duration::from_millis(20));
        Some(released)
    }
}

/// Paced events from one writer; event i gets sync_id `first + i`.
async fn paced(http: &reqwest::Client, url: &str, token: &str, first: i64, count: i64, title: &str, pacing: &Pacing<'_>) -> Phase {
    let mut phase = Phase { sent: Default::default(), answered: Default::default(), released: Default::default() };
    for id in first..first + count {
        let frames = tokio::task::block_in_place(|| pacing.before());
        let sent = std::time::Instant::now();
        phase.sent.insert(id, realtime_ns());
        post(http, url.to_string(), Some(token), json!({ "title": title })).await;
        phase.answered.insert(id, realtime_ns());
        if let Some(released) = tokio::task::block_in_place(|| pacing.after(sent, frames)) {
            phase.released.insert(id, released);
        }
    }
    phase
}

pub async fn bench_sse(dir: &Path, sizes: &[usize], threads: usize, eager_read: bool) {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    for &clients in sizes {
        for writers in [1, 2] {
            let (p50, p99, cpu, late) = tokio::task::block_in_place(|| raw_fanout(clients, threads, writers, !eager_read));
            println!(
                "raw fan-out, {clients} clients, {writers} writer thread(s): arrival p50 {p50:.2} ms, p99 {p99:.2} ms; raw server CPU per delivery {cpu:.1} µs; \
                 {late} arrivals after the client began reading"
            );
        }
        let data = dir.join(format!("data-{clients}"));
        let env = [("EDGEDESK_SSE_MAX_PER_USER", "1000000"), ("EDGEDESK_SSE_MAX_CONNECTIONS", "1000000")];
        let server = ServerProc::start_with(&data, &env).await;
        let http = client(8);
        let (token, ws) = admin_and_workspace(&http, &server.base).await;
        let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().expect("address");
        let path = format!("/api/workspaces/{ws}/events");
        let rss_before = server.rss_kib();
        let mut fleet = Fleet::new(threads);
        tokio::task::block_in_place(|| fleet.open_many(clients, addr, &path, &token));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let per_client_kib = server.rss_kib().saturating_sub(rss_before) as f64 / clients as f64;

        let head = delta(&http, &server.base, &ws, &token, 0).await["last_sync_id"].as_i64().expect("head");
        let url = format!("{}/api/workspaces/{ws}/tickets", server.base);
        let (cpu_client0, cpu_server0) = (cpu_secs(std::process::id()), cpu_secs(server.pid));
        // Without, with, and again without a stalled client: the two halves without it
        // bracket the one with it, so the box's drift during the run weighs on both sides.
        let count = 25i64;
        let pacing = Pacing { fleet: &fleet, clients, held: !eager_read };
        let before = paced(&http, &url, &token, head + 1, count, "latency", &pacing).await;
        let paced_cpu_us = |now: f64, then: f64| (now - then) * 1e6 / (count as f64 * clients as f64);
        let (server_per_delivery, client_per_delivery) =
            (paced_cpu_us(cpu_secs(server.pid), cpu_server0), paced_cpu_us(cpu_secs(std::process::id()), cpu_client0));
        // One client connected that never reads a byte.
        let stalled = {
            use tokio::io::AsyncWriteExt;
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            let _ = socket.set_recv_buffer_size(4096);
            let mut stream = socket.connect(addr).await.expect("connect");
            let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("request");
            stream
        };
        let with_stalled = paced(&http, &url, &token, head + count + 1, 2 * count, "latency, one client stalled", &pacing).await;
        drop(stalled);
        let after = paced(&http, &url, &token, head + 3 * count + 1, count, "latency", &pacing).await;
        let plain = before.and(after);
        let count = 4 * count;

        // Throughput: four writers as fast as they go.
        let burst = 200i64;
        let burst_start_ns = realtime_ns();
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                tokio::spawn(async move {
                    for _ in 0..burst / 4 {
                        post(&http, url.clone(), Some(&token), json!({ "title": "burst" })).await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let last = head + count + burst;
        // Every client should have the last event well within this.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu_client, cpu_server) = (cpu_secs(std::process::id()) - cpu_client0, cpu_secs(server.pid) - cpu_server0);
        let event_at = event_times(&http, &server.base, &ws, &token, head).await;
        let (seen, lasts, bytes) = fleet.finish();
        server.stop().await;

        let complete = lasts.iter().filter(|l| **l == last).count();
        let burst_done_ns = seen.iter().filter(|s| s.id > head + count).map(|s| s.kernel_ns).max().unwrap_or(burst_start_ns);
        let delivered = burst as f64 * clients as f64 / ((burst_done_ns - burst_start_ns) as f64 / 1e9);
        let (mut kernel, mut read) = plain.latencies(&seen);
        let (mut kernel_stalled, mut read_stalled) = with_stalled.latencies(&seen);
        let mut after_answer = plain.since(&seen, &plain.answered);
        // The COMMIT came after both the POST was sent and the event's `at` was taken.
        let not_before: std::collections::HashMap<i64, i64> =
            plain.sent.iter().map(|(id, sent)| (*id, event_at.get(id).map_or(*sent, |at| (*at).max(*sent)))).collect();
        let mut after_at = plain.since(&seen, &not_before);
        let late = plain.late(&seen) + with_stalled.late(&seen);
        let inexact = plain.inexact(&seen) + with_stalled.inexact(&seen);
        if std::env::var_os("EDGEDESK_BENCH_PER_EVENT").is_some() {
            let mut ids: Vec<_> = plain.sent.keys().chain(with_stalled.sent.keys()).copied().collect();
            ids.sort_unstable();
            for id in ids {
                let t0 = plain.sent.get(&id).or(with_stalled.sent.get(&id)).copied().unwrap_or(0);
                let t1 = plain.answered.get(&id).or(with_stalled.answered.get(&id)).copied().unwrap_or(0);
                let mut l: Vec<i64> = seen.iter().filter(|s| s.id == id && s.exact).map(|s| s.kernel_ns - t0).collect();
                eprintln!(
                    "event {id}: answered {:.2} ms; arrivals min {:.2} p50 {:.2} max {:.2} ms",
                    (t1 - t0) as f64 / 1e6,
                    pct(&mut l, 0.0),
                    pct(&mut l, 0.5),
                    pct(&mut l, 1.0)
                );
            }
        }
        let reading = if eager_read { "reading eagerly" } else { "held while each event fans out" };
        let client_delay: Vec<i64> = seen.iter().map(|s| s.read_ns - s.kernel_ns).collect();
        let mut client_delay = client_delay;
        println!(
            "sse {clients} clients ({threads} client thread(s), {reading}): commit-to-receipt (POST sent → frame in the client's socket) p50 {:.2} ms, p99 {:.2} ms over {} deliveries \
             ({late} of all paced arrivals stamped after the client began reading; {inexact} left out, sharing a read with a later frame) \
             (from the later of that and the event's own `at`, taken in its transaction before the COMMIT: p50 {:.2} ms, p99 {:.2} ms; \
             from the POST's answer: p50 {:.2} ms, p99 {:.2} ms); to the client's read p50 {:.2} ms, p99 {:.2} ms (client's own delay p50 {:.3} ms, p99 {:.3} ms) | \
             with one stalled client connected (between the halves without it): p50 {:.2} ms, p99 {:.2} ms, {:+.0} % (read: p99 {:.2} ms) | \
             full fan-out {:.0} events delivered/s ({burst} events × {clients} clients) | {complete}/{clients} clients had every event, {:.0} bytes per delivery | \
             server RSS {:.1} KiB per connected client | CPU during the run: server {cpu_server:.1} s, load client {cpu_client:.1} s; \
             per paced delivery: server {server_per_delivery:.1} µs, load client {client_per_delivery:.1} µs",
            pct(&mut kernel, 0.50),
            pct(&mut kernel, 0.99),
            kernel.len(),
            pct(&mut after_at, 0.50),
            pct(&mut after_at, 0.99),
            pct(&mut after_answer, 0.50),
            pct(&mut after_answer, 0.99),
            pct(&mut read, 0.50),
            pct(&mut read, 0.99),
            pct(&mut client_delay, 0.50),
            pct(&mut client_delay, 0.99),
            pct(&mut kernel_stalled, 0.50),
            pct(&mut kernel_stalled, 0.99),
            (pct(&mut kernel_stalled, 0.99) / pct(&mut kernel, 0.99) - 1.0) * 100.0,
            pct(&mut read_stalled, 0.99),
            delivered,
            bytes as f64 / seen.len().max(1) as f64,
            per_client_kib,
        );
    }
}

/// One page (up to 1,000 events) of the workspace's delta after `after`.
async fn delta(http: &reqwest::Client, base: &str, ws: &str, token: &str, after: i64) -> Value {
    http.get(format!("{base}/api/workspaces/{ws}/sync/delta?after={after}&limit=1000"))
        .bearer_auth(token)
        .send()
        .await
        .expect("delta")
        .json()
        .await
        .expect("json")
}

/// sync_id → the event's `at` (set in its write transaction, before the COMMIT) in Unix
/// nanoseconds, for the events after `head`.
async fn event_times(http: &reqwest::Client, base: &str, ws: &str, token: &str, head: i64) -> std::collections::HashMap<i64, i64> {
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    delta(http, base, ws, token, head).await["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| {
            let at = time::OffsetDateTime::parse(e["at"].as_str()?, rfc3339).ok()?;
            Some((e["sync_id"].as_i64()?, at.unix_timestamp_nanos() as i64))
        })
        .collect()
}

/// The floor this machine sets: a plain program (this harness, run again as
/// `raw-sse-server`) with the same fleet of clients, where `writers` threads each write one
/// pre-rendered frame of the same size straight to their share of the sockets: no HTTP
/// server, no runtime, no log. (p50, p99) of socket arrival in ms over 50 paced events (paced
/// as the server's), the raw server's CPU µs per delivery, and the arrivals stamped after a
/// held client began reading.
pub fn raw_fanout(clients: usize, client_threads: usize, writers: usize, held: bool) -> (f64, f64, f64, usize) {
    use std::io::{BufRead, Write};
    let mut child = std::process::Command::new(std::env::current_exe().expect("harness path"))
        .args(["raw-sse-server", "--threads", &writers.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("raw server");
    let mut commands = child.stdin.take().expect("stdin");
    let mut replies = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr: std::net::SocketAddr = replies.next().and_then(|l| l.ok()).and_then(|l| l.parse().ok()).expect("raw server address");
    let mut fleet = Fleet::new(client_threads);
    fleet.open_many(clients, addr, "/raw", "raw");
    let pacing = Pacing { fleet: &fleet, clients, held };
    let count = 50i64;
    let cpu0 = cpu_secs(child.id());
    let mut phase = Phase { sent: Default::default(), answered: Default::default(), released: Default::default() };
    for id in 1..=count {
        let frames = pacing.before();
        let sent = std::time::Instant::now();
        phase.sent.insert(id, realtime_ns());
        writeln!(commands, "{id}").expect("command");
        let _ = replies.next();
        if let Some(released) = pacing.after(sent, frames) {
            phase.released.insert(id, released);
        }
    }
    let cpu = (cpu_secs(child.id()) - cpu0) * 1e6 / (count as f64 * clients as f64);
    drop(commands);
    let _ = child.wait();
    let (seen, _, _) = fleet.finish();
    let (mut kernel, _) = phase.latencies(&seen);
    (pct(&mut kernel, 0.50), pct(&mut kernel, 0.99), cpu, phase.late(&seen))
}

/// `raw-sse-server`: accepts connections (answering each with SSE headers and a `retry:`),
/// prints its address, then for every id read from stdin writes one frame of [`FRAME_BYTES`]
/// to every socket from `writers` threads and prints `done`.
pub fn raw_server_main(writers: usize) {
    use std::io::{BufRead, Write};
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("{}", listener.local_addr().expect("addr"));
    let sockets = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let sockets = sockets.clone();
        std::thread::spawn(move || {
            for mut socket in listener.incoming().flatten() {
                let _ = socket.set_nodelay(true);
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nretry: 3000\n\n");
                sockets.lock().unwrap_or_else(|p| p.into_inner()).push(socket);
            }
        });
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(id) = line else { break };
        let head = format!("id: {id}\nevent: ticket.created\ndata: ");
        let frame = format!("{head}{}\n\n", "x".repeat(FRAME_BYTES.saturating_sub(head.len() + 2)));
        let mut sockets = sockets.lock().unwrap_or_else(|p| p.into_inner());
        let per = sockets.len().div_ceil(writers).max(1);
        std::thread::scope(|scope| {
            for shard in sockets.chunks_mut(per) {
                let frame = frame.as_bytes();
                scope.spawn(move || {
                    for socket in shard {
                        let _ = socket.write_all(frame);
                    }
                });
            }
        });
        println!("done");
    }
}
