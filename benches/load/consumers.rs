//! Log-consumer benchmarks: throughput through the notifications consumer beside a raw
//! loop doing the same reads and writes, the latency from a write's COMMIT to its
//! notification being visible through the API, what one commit costs the store when many
//! workspaces are followed (SQLite and Postgres), and a restart with 10,000 workspaces of
//! which ten are behind.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use super::{PASSWORD, ServerProc, client, percentile, pgdb, post};

/// One counter or gauge from `/metrics` (0 when absent).
pub async fn metric(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    let text = http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

const EVENTS: &str = "edgedesk_consumer_events_total{consumer=\"notifications\"}";

struct Desk {
    token: String,
    ws: String,
    agents: Vec<(String, String)>,
    tickets: Vec<String>,
}

async fn login(http: &reqwest::Client, base: &str, email: &str) -> String {
    let body = post(http, format!("{base}/api/auth/login"), None, json!({ "email": email, "password": PASSWORD })).await;
    body["token"].as_str().expect("token").to_string()
}

/// An admin, a workspace, four agents and a requester with `tickets` tickets.
async fn desk(http: &reqwest::Client, base: &str, tickets: usize) -> Desk {
    let (token, ws) = super::admin_and_workspace(http, base).await;
    let mut agents = Vec::new();
    for name in ["a0", "a1", "a2", "a3", "customer"] {
        let email = format!("{name}@example.com");
        let user =
            post(http, format!("{base}/api/users"), Some(&token), json!({ "email": email, "password": PASSWORD, "name": name })).await;
        let id = user["id"].as_str().expect("id").to_string();
        let role = if name == "customer" { "requester" } else { "agent" };
        post(http, format!("{base}/api/workspaces/{ws}/members"), Some(&token), json!({ "user_id": id, "role": role })).await;
        agents.push((id, login(http, base, &email).await));
    }
    let customer = agents.pop().expect("customer");
    let mut ids = Vec::new();
    for i in 0..tickets {
        let t = post(http, format!("{base}/api/workspaces/{ws}/tickets"), Some(&customer.1), json!({ "title": format!("t{i}") })).await;
        ids.push(t["id"].as_str().expect("id").to_string());
    }
    agents.push(customer);
    Desk { token, ws, agents, tickets: ids }
}

/// `n` writes, 16 at a time: assignments, and replies by the customer and the agents.
async fn write_backlog(http: &reqwest::Client, base: &str, desk: &Desk, n: usize) {
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, ws) = (http.clone(), desk.ws.clone());
            let ticket = desk.tickets[(i * 7) % desk.tickets.len()].clone();
            let agent = desk.agents[i % 4].clone();
            let (admin, customer) = (desk.token.clone(), desk.agents[4].1.clone());
            let base = base.to_string();
            async move {
                let req = match i % 3 {
                    0 => http
                        .patch(format!("{base}/api/workspaces/{ws}/tickets/{ticket}"))
                        .bearer_auth(admin)
                        .json(&json!({ "assignee_id": agent.0 })),
                    1 => http
                        .post(format!("{base}/api/workspaces/{ws}/tickets/{ticket}/comments"))
                        .bearer_auth(customer)
                        .json(&json!({ "body": format!("still broken {i}") })),
                    _ => http
                        .post(format!("{base}/api/workspaces/{ws}/tickets/{ticket}/comments"))
                        .bearer_auth(agent.1)
                        .json(&json!({ "body": format!("on it {i}") })),
                };
                let res = req.send().await.expect("write");
                assert!(res.status().is_success(), "{}", res.status());
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// The notifications consumer's work done by hand on a copy of the workspace file: per page
/// of 256 events, one transaction that reads the page (with each event's ticket, as the
/// feed does), reads the page's tickets' views and followers and the members, writes the
/// notifications (each with its log event), the ticket views and followers, and moves the
/// watermark. The same rules, without the runner, the store traits or the async plumbing.
fn raw_consumer(path: &Path) -> (u64, f64) {
    let mut conn = super::raw_connection(path);
    let start = Instant::now();
    let mut events = 0u64;
    let mut position: i64 =
        conn.query_row("SELECT position FROM consumer_watermarks WHERE consumer = 'notifications'", [], |r| r.get(0)).expect("watermark");
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("begin");
        type Row = (i64, String, String, Option<String>, Option<String>);
        let page: Vec<Row> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT s.sync_id, s.kind, s.data, s.ticket_id, t.requester_id FROM sync_actions s
                     LEFT JOIN tickets t ON t.id = s.ticket_id WHERE s.sync_id > ?1 ORDER BY s.sync_id LIMIT 256",
                )
                .expect("page");
            stmt.query_map(params![position], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .and_then(|rows| rows.collect())
                .expect("rows")
        };
        let Some(last) = page.last().map(|e| e.0) else { break };
        let members: Vec<(String, String)> = tx
            .prepare_cached("SELECT user_id, role FROM members")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("members");
        for (sync_id, kind, data, ticket, _requester) in &page {
            let Some(ticket) = ticket else { continue };
            let data: Value = serde_json::from_str(data).expect("json");
            let view: Option<(i64, String, Option<String>)> = tx
                .prepare_cached("SELECT number, title, assignee_id FROM notification_tickets WHERE ticket_id = ?1")
                .and_then(|mut s| s.query_row(params![ticket], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
                .expect("view");
            let followers: Vec<(String, i64)> = tx
                .prepare_cached("SELECT user_id, since_sync_id FROM ticket_followers WHERE ticket_id = ?1")
                .and_then(|mut s| s.query_map(params![ticket], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .expect("followers");
            let mut recipients = Vec::new();
            match kind.as_str() {
                "ticket.created" | "ticket.updated" => {
                    let assignee = data["assignee_id"].as_str().map(str::to_string);
                    tx.prepare_cached(
                        "INSERT INTO notification_tickets (ticket_id, number, title, requester_id, assignee_id) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (ticket_id) DO UPDATE SET assignee_id = excluded.assignee_id, title = excluded.title",
                    )
                    .and_then(|mut s| {
                        s.execute(params![ticket, data["number"].as_i64(), data["title"].as_str(), data["requester_id"].as_str(), assignee])
                    })
                    .expect("view");
                    if let Some(new) = assignee.filter(|a| view.as_ref().and_then(|v| v.2.as_ref()) != Some(a)) {
                        tx.prepare_cached("INSERT OR IGNORE INTO ticket_followers (ticket_id, user_id, reason, since_sync_id) VALUES (?1, ?2, 'assignee', ?3)")
                            .and_then(|mut s| s.execute(params![ticket, new, sync_id]))
                            .expect("follow");
                        recipients.push((new, "assigned"));
                    }
                }
                "comment.created" => {
                    let author = data["author_id"].as_str().unwrap_or_default();
                    for (user, since) in followers {
                        if user != author && since < *sync_id && members.iter().any(|(m, _)| *m == user) {
                            recipients.push((user, "reply"));
                        }
                    }
                }
                _ => {}
            }
            for (recipient, what) in recipients {
                let id = uuid::Uuid::now_v7().to_string();
                let note = json!({ "id": id, "kind": what, "recipient_id": recipient, "ticket_id": ticket, "seq": sync_id,
                    "ticket_number": view.as_ref().map(|v| v.0), "ticket_title": view.as_ref().map(|v| v.1.clone()) })
                .to_string();
                tx.prepare_cached(
                    "INSERT INTO notifications (id, recipient_id, source_sync_id, kind, ticket_id, staff_only, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, 0)",
                )
                .and_then(|mut s| s.execute(params![id, recipient, sync_id, what, ticket, note]))
                .expect("notification");
                tx.prepare_cached(
                    "INSERT INTO sync_actions (at, actor, kind, entity, entity_id, data, ticket_id, staff_only, recipient_id)
                     VALUES (0, NULL, 'notification.created', 'notification', ?1, ?2, ?3, 0, ?4)",
                )
                .and_then(|mut s| s.execute(params![id, note, ticket, recipient]))
                .expect("event");
            }
        }
        tx.execute("UPDATE consumer_watermarks SET position = ?1 WHERE consumer = 'notifications'", params![last]).expect("advance");
        tx.commit().expect("commit");
        events += page.len() as u64;
        position = last;
    }
    (events, start.elapsed().as_secs_f64())
}

/// Throughput through the consumer on one busy workspace, and commit → visible latency.
pub async fn bench_consumers(dir: &Path) {
    let data = dir.join("data");
    let http = client(16);
    // A backlog written while no consumer runs.
    let server = ServerProc::start_with(&data, &[("EDGEDESK_RUN_CONSUMERS", "false")]).await;
    let desk = desk(&http, &server.base, 50).await;
    let writes = 24_000;
    write_backlog(&http, &server.base, &desk, writes).await;
    server.stop().await;
    let file = data.join("tenants").join(&desk.ws).join("tenant.db");
    let copy = dir.join("raw-consumer.db");
    std::fs::copy(&file, &copy).expect("copy the workspace");
    let _ = std::fs::copy(file.with_extension("db-wal"), copy.with_extension("db-wal"));

    // The server catches up: the rate over the whole backlog, its own events included.
    let server = ServerProc::start(&data).await;
    let started = Instant::now();
    let (mut last, mut last_at, mut first_at) = (0, started, None);
    loop {
        let n = metric(&http, &server.base, EVENTS).await;
        if n > last {
            first_at.get_or_insert(Instant::now());
            last = n;
            last_at = Instant::now();
        } else if last > 0 && last_at.elapsed() > Duration::from_millis(500) {
            break;
        }
        // Coarse enough to cost the server little, fine enough for a run of a second or more.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = last_at.duration_since(first_at.unwrap_or(started)).as_secs_f64().max(1e-6);
    let consumer_rate = last as f64 / secs;
    let (raw_events, raw_secs) = tokio::task::spawn_blocking(move || raw_consumer(&copy)).await.expect("raw");
    let raw_rate = raw_events as f64 / raw_secs;
    println!(
        "consumers: notifications consumer caught up {last} events (from {writes} writes) at {consumer_rate:.0} events/s | raw loop, same reads and writes, one transaction per page: {raw_events} events at {raw_rate:.0} events/s | ratio {:.0}% (target >= 50%)",
        100.0 * consumer_rate / raw_rate
    );

    // COMMIT → visible: paced assignments, each polled for until it shows in the assignee's
    // unread count. Bracketed: from the PATCH being sent (upper bound) and from its answer,
    // which came after the COMMIT (lower bound).
    let (mut upper, mut lower) = (Vec::new(), Vec::new());
    let ticket = &desk.tickets[0];
    for i in 0..200 {
        let agent = &desk.agents[i % 4];
        let unread = |token: String| {
            let (http, base) = (http.clone(), server.base.clone());
            async move {
                let v: Value = http
                    .get(format!("{base}/api/me/notifications"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("unread")
                    .json()
                    .await
                    .expect("json");
                v["total"].as_u64().unwrap_or(0)
            }
        };
        let before = unread(agent.1.clone()).await;
        let sent = Instant::now();
        let res = http
            .patch(format!("{}/api/workspaces/{}/tickets/{ticket}", server.base, desk.ws))
            .bearer_auth(&desk.token)
            .json(&json!({ "assignee_id": agent.0 }))
            .send()
            .await
            .expect("assign");
        assert!(res.status().is_success());
        let answered = Instant::now();
        while unread(agent.1.clone()).await <= before {}
        let visible = Instant::now();
        upper.push(visible - sent);
        lower.push(visible - answered);
    }
    upper.sort();
    lower.sort();
    server.stop().await;
    println!(
        "consumers: COMMIT -> notification visible through the API (200 paced assignments, polled): p50 {:.2} ms, p99 {:.2} ms from the PATCH sent; p50 {:.2} ms, p99 {:.2} ms from its answer",
        percentile(&upper, 0.5),
        percentile(&upper, 0.99),
        percentile(&lower, 0.5),
        percentile(&lower, 0.99)
    );
}

/// Opens `n` SSE streams (one per workspace in `workspaces`) and keeps them reading.
async fn follow(base: &str, token: &str, workspaces: &[String]) -> Vec<tokio::task::JoinHandle<()>> {
    let addr = base.trim_start_matches("http://").to_string();
    let mut out = Vec::new();
    for ws in workspaces {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let request = format!(
            "GET /api/workspaces/{ws}/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.expect("request");
        let mut first = [0u8; 12];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first).await.expect("answer");
        assert_eq!(&first, b"HTTP/1.1 200", "stream opened");
        out.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                if n == 0 {
                    break;
                }
            }
        }));
    }
    out
}

/// `n` workspaces, eight created at a time.
pub async fn workspaces(http: &reqwest::Client, base: &str, token: &str, n: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, base, token) = (http.clone(), base.to_string(), token.to_string());
            async move {
                post(&http, format!("{base}/api/workspaces"), Some(&token), json!({ "name": format!("ws {i}") })).await["id"]
                    .as_str()
                    .expect("id")
                    .to_string()
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// Waits until the consumers have worked off the backlog (nothing opened a workspace or read
/// a log for a second): what follows is measured on a quiet server.
async fn quiet(http: &reqwest::Client, base: &str) {
    let mut last = (u64::MAX, u64::MAX);
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let now = (metric(http, base, "edgedesk_tenant_opens_total").await, metric(http, base, "edgedesk_consumer_log_reads_total").await);
        if now == last {
            return;
        }
        last = now;
    }
}

/// SQLite: 10,000 workspaces, some followed live; writes in one: what each commit costs.
/// Then a restart with ten of them behind.
pub async fn bench_sqlite_fanin(dir: &Path, followed: &[usize]) {
    let data = dir.join("data");
    let env = [("EDGEDESK_SSE_MAX_PER_USER", "20000"), ("EDGEDESK_CONSUMER_IDLE_MS", "200")];
    let server = ServerProc::start_with(&data, &env).await;
    let http = client(16);
    let (token, first) = super::admin_and_workspace(&http, &server.base).await;
    let t = Instant::now();
    let mut all = vec![first];
    all.extend(workspaces(&http, &server.base, &token, 9_999).await);
    eprintln!("sqlite-fanin: 10,000 workspaces in {:.1} s", t.elapsed().as_secs_f64());
    quiet(&http, &server.base).await;
    for &n in followed {
        let streams = follow(&server.base, &token, &all[..n]).await;
        quiet(&http, &server.base).await;
        let (opens, reads) = (
            metric(&http, &server.base, "edgedesk_tenant_opens_total").await,
            metric(&http, &server.base, "edgedesk_consumer_log_reads_total").await,
        );
        let writes = 200;
        for i in 0..writes {
            post(&http, format!("{}/api/workspaces/{}/tickets", server.base, all[0]), Some(&token), json!({ "title": format!("w{i}") }))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let opens = metric(&http, &server.base, "edgedesk_tenant_opens_total").await - opens;
        let reads = metric(&http, &server.base, "edgedesk_consumer_log_reads_total").await - reads;
        println!(
            "sqlite-fanin: {n} of 10,000 workspaces followed live, {writes} writes in one: tenant files opened per commit {:.3}, workspace logs read per commit {:.2} (live topic and notifications consumer, wakeups from the writer and the file watcher)",
            opens as f64 / writes as f64,
            reads as f64 / writes as f64
        );
        streams.iter().for_each(|s| s.abort());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Let every lane retire (their hints dropped), then leave ten workspaces behind.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.stop().await;
    let server = ServerProc::start_with(&data, &[("EDGEDESK_RUN_CONSUMERS", "false")]).await;
    for ws in all.iter().skip(100).step_by(997).take(10) {
        post(&http, format!("{}/api/workspaces/{ws}/tickets", server.base), Some(&token), json!({ "title": "behind" })).await;
    }
    server.stop().await;
    let started = Instant::now();
    let server = ServerProc::start(&data).await;
    let boot = started.elapsed();
    while metric(&http, &server.base, EVENTS).await < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let caught = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opens = metric(&http, &server.base, "edgedesk_tenant_opens_total").await;
    server.stop().await;
    println!(
        "sqlite-fanin: restart with 10,000 workspaces, 10 behind: tenant files opened {opens} (the 10 hinted ones), caught up {:.0} ms after the process started (listening after {:.0} ms)",
        caught.as_secs_f64() * 1000.0,
        boot.as_secs_f64() * 1000.0
    );
}

/// Postgres: two instances, 1,000 workspaces, SSE followers on 10, 100 and 1,000 of them on
/// each instance, writes in one: the database's work per commit.
pub async fn bench_pg_fanin(dir: &Path) {
    if std::env::var_os("EDGEDESK_TEST_DATABASE_URL").is_none() {
        println!("pg-fanin: skipped: set EDGEDESK_TEST_DATABASE_URL to a Postgres superuser URL (see docs/benchmarks.md)");
        return;
    }
    let pg = pgdb::PgDatabase::create().await;
    let env = [
        ("EDGEDESK_DATABASE_URL", pg.app_url.as_str()),
        ("EDGEDESK_ADMIN_DATABASE_URL", pg.admin_url.as_str()),
        ("EDGEDESK_SSE_MAX_PER_USER", "20000"),
    ];
    let one = ServerProc::start_with(&dir.join("one"), &env).await;
    let two = ServerProc::start_with(&dir.join("two"), &env).await;
    let http = client(16);
    let (token, first) = super::admin_and_workspace(&http, &one.base).await;
    let mut all = vec![first];
    all.extend(workspaces(&http, &one.base, &token, 999).await);
    let (su, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.expect("superuser");
    tokio::spawn(connection);
    // Autovacuum's and autoanalyze's reads land in the same counters, whenever they happen
    // to run: off for the measurement (a throwaway cluster), back on after.
    su.execute("ALTER SYSTEM SET autovacuum = off", &[]).await.expect("autovacuum off");
    su.execute("SELECT pg_reload_conf()", &[]).await.expect("reload");
    let stats = || async {
        // A busy backend flushes its counters at most once a second, an idle one after ten
        // seconds (Postgres 15): wait for every backend's flush.
        tokio::time::sleep(Duration::from_millis(11_500)).await;
        su.execute("SELECT pg_stat_clear_snapshot()", &[]).await.expect("clear");
        let row = su
            .query_one("SELECT xact_commit, tup_returned, tup_fetched FROM pg_stat_database WHERE datname = current_database()", &[])
            .await
            .expect("stats");
        (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2))
    };
    for n in [10, 100, 1000] {
        let mut streams = follow(&one.base, &token, &all[..n]).await;
        streams.extend(follow(&two.base, &token, &all[..n]).await);
        let before = stats().await;
        let writes = 200;
        for i in 0..writes {
            post(&http, format!("{}/api/workspaces/{}/tickets", one.base, all[0]), Some(&token), json!({ "title": format!("w{i}") })).await;
        }
        let after = stats().await;
        let per = |a: i64, b: i64| (b - a) as f64 / writes as f64;
        println!(
            "pg-fanin: {n} workspaces followed on each of two instances, {writes} writes in one: per commit, xact_commit {:.2}, tup_returned {:.1}, tup_fetched {:.1}",
            per(before.0, after.0),
            per(before.1, after.1),
            per(before.2, after.2)
        );
        streams.iter().for_each(|s| s.abort());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    one.stop().await;
    two.stop().await;
    su.execute("ALTER SYSTEM RESET autovacuum", &[]).await.expect("autovacuum back on");
    su.execute("SELECT pg_reload_conf()", &[]).await.expect("reload");
}
