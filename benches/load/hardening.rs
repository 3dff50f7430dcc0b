//! Hardening benchmarks: slow bootstrap readers beside ordinary traffic (both backends), and
//! a login flood beside `/health` and the real user's own login.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{PASSWORD, ServerProc, client, percentile, pgdb, post};

/// Every `/metrics` line's value by name (the first of each).
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    super::consumers::metric(http, base, name).await
}

/// Times `n` sequential GETs of `url`.
async fn latencies(http: &reqwest::Client, url: &str, token: Option<&str>, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req = http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let started = Instant::now();
        let res = req.send().await.expect("request");
        assert!(res.status().is_success(), "{url}: {}", res.status());
        let _ = res.bytes().await;
        out.push(started.elapsed());
    }
    out.sort();
    out
}

/// Opens a bootstrap and reads only its status line: the client then never reads again.
async fn stalled_bootstrap(addr: &str, ws: &str, token: &str) -> (u16, tokio::net::TcpStream) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // A small receive window, as a slow mobile client has.
    let request = format!("GET /api/workspaces/{ws}/sync/bootstrap HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.expect("status line");
    let status = std::str::from_utf8(&head[9..12]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, stream)
}

/// 50 clients start a bootstrap of a 100,000-ticket workspace and never read; meanwhile
/// `GET /api/me` and a ticket GET in another workspace are timed, and the stalled snapshots'
/// end is watched in `/metrics`.
pub async fn bench_slow_bootstraps(dir: &Path, postgres: bool) {
    let label = if postgres { "postgres" } else { "sqlite" };
    let pg = if postgres {
        if std::env::var_os("EDGEDESK_TEST_DATABASE_URL").is_none() {
            println!("slow-bootstraps ({label}): skipped: set EDGEDESK_TEST_DATABASE_URL (see docs/benchmarks.md)");
            return;
        }
        Some(pgdb::PgDatabase::create().await)
    } else {
        None
    };
    let max_secs = 10;
    let mut env = vec![("EDGEDESK_BOOTSTRAP_MAX_SECS".to_string(), max_secs.to_string())];
    if let Some(pg) = &pg {
        env.push(("EDGEDESK_DATABASE_URL".into(), pg.app_url.clone()));
        env.push(("EDGEDESK_ADMIN_DATABASE_URL".into(), pg.admin_url.clone()));
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = dir.join("data");
    let server = ServerProc::start_with(&data, &env_refs).await;
    let http = client(8);
    let (token, big) = super::admin_and_workspace(&http, &server.base).await;
    let me: Value = http.get(format!("{}/api/me", server.base)).bearer_auth(&token).send().await.expect("me").json().await.expect("json");
    let requester = me["id"].as_str().expect("id").to_string();
    let rows = 100_000;
    let seeded = Instant::now();
    match &pg {
        None => {
            let db = data.join("tenants").join(&big).join("tenant.db");
            tokio::task::spawn_blocking(move || super::seed(&db, &requester, rows)).await.expect("seed");
        }
        Some(pg) => seed_postgres(pg, &big, &requester, rows).await,
    }
    eprintln!("slow-bootstraps ({label}): seeded {rows} tickets in {:.1} s", seeded.elapsed().as_secs_f64());
    let small = post(&http, format!("{}/api/workspaces", server.base), Some(&token), json!({ "name": "Small" })).await;
    let small = small["id"].as_str().expect("id").to_string();
    let ticket =
        post(&http, format!("{}/api/workspaces/{small}/tickets", server.base), Some(&token), json!({ "title": "elsewhere" })).await;
    let ticket_url = format!("{}/api/workspaces/{small}/tickets/{}", server.base, ticket["id"].as_str().expect("id"));
    let me_url = format!("{}/api/me", server.base);

    // Baseline: the same requests with nothing else going on.
    let quiet_me = latencies(&http, &me_url, Some(&token), 500).await;
    let quiet_ticket = latencies(&http, &ticket_url, Some(&token), 500).await;

    let addr = server.base.trim_start_matches("http://").to_string();
    let opened = Instant::now();
    let mut stalled = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..50 {
        let (status, stream) = stalled_bootstrap(&addr, &big, &token).await;
        *statuses.entry(status).or_default() += 1;
        stalled.push(stream);
    }
    let open_now = metric(&http, &server.base, "edgedesk_bootstraps_open").await;
    let busy_me = latencies(&http, &me_url, Some(&token), 500).await;
    let busy_ticket = latencies(&http, &ticket_url, Some(&token), 500).await;
    // When do the stalled snapshots end?
    let mut closed_after = None;
    while opened.elapsed() < Duration::from_secs(max_secs * 3) {
        if metric(&http, &server.base, "edgedesk_bootstraps_open").await == 0 {
            closed_after = Some(opened.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stalled);
    server.stop().await;
    println!(
        "slow-bootstraps ({label}): 50 stalled bootstraps of a {rows}-ticket workspace answered {statuses:?}, {open_now} snapshots held open; \
         GET /api/me p50 {:.2} / p99 {:.2} ms (quiet: {:.2} / {:.2}); ticket GET in another workspace p50 {:.2} / p99 {:.2} ms (quiet: {:.2} / {:.2}); \
         stalled snapshots all closed {} after they opened (bound EDGEDESK_BOOTSTRAP_MAX_SECS={max_secs})",
        percentile(&busy_me, 0.5),
        percentile(&busy_me, 0.99),
        percentile(&quiet_me, 0.5),
        percentile(&quiet_me, 0.99),
        percentile(&busy_ticket, 0.5),
        percentile(&busy_ticket, 0.99),
        percentile(&quiet_ticket, 0.5),
        percentile(&quiet_ticket, 0.99),
        closed_after.map_or("NOT within 3x the bound".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
}

/// `rows` tickets straight into Postgres as its superuser (no log events: a snapshot reads
/// the tickets table).
async fn seed_postgres(pg: &pgdb::PgDatabase, ws: &str, requester: &str, rows: u64) {
    let (su, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.expect("superuser");
    tokio::spawn(connection);
    su.batch_execute(&format!(
        "INSERT INTO tickets (workspace_id, id, number, title, status, priority, requester_id, tags, created_at, updated_at)
         SELECT '{ws}', gen_random_uuid(), 1000 + n, 'Ticket number ' || n || ' about a printer',
                CASE WHEN n % 2 = 0 THEN 'open' ELSE 'pending' END, 'normal', '{requester}',
                CASE WHEN n % 3 = 0 THEN ARRAY['billing','vip'] ELSE '{{}}'::text[] END, 0, 0
         FROM generate_series(1, {rows}) AS n;
         UPDATE workspace_heads SET ticket_number = 1000 + {rows} WHERE workspace_id = '{ws}';
         ANALYZE tickets;"
    ))
    .await
    .expect("seed");
}

/// 2,000 wrong passwords from 20 addresses (through a trusted proxy header), while `/health`
/// is timed and the real user logs in from their own address.
pub async fn bench_login_flood(dir: &Path) {
    let env = [("EDGEDESK_TRUSTED_PROXIES", "127.0.0.1/32"), ("EDGEDESK_BCRYPT_COST", "12")];
    let server = ServerProc::start_with(&dir.join("data"), &env).await;
    let http = client(64);
    let (_token, _) = super::admin_and_workspace(&http, &server.base).await;
    let health_url = format!("{}/health", server.base);
    let quiet = latencies(&http, &health_url, None, 500).await;

    let flood = {
        let (http, base) = (http.clone(), server.base.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let statuses: Vec<u16> = futures::stream::iter(0..2_000)
                .map(|i| {
                    let (http, base) = (http.clone(), base.clone());
                    async move {
                        let res = http
                            .post(format!("{base}/api/auth/login"))
                            .header("x-forwarded-for", format!("203.0.113.{}", i % 20))
                            .json(&json!({ "email": "bench@example.com", "password": "not the password" }))
                            .send()
                            .await;
                        res.map(|r| r.status().as_u16()).unwrap_or(0)
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            (statuses, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = latencies(&http, &health_url, None, 500).await;
    // The real user, from their own address, in the middle of the flood: once while the
    // attackers' first tries (from 20 fresh addresses) are still queued, once after.
    let own_login = |from: &'static str| {
        let (http, base) = (http.clone(), server.base.clone());
        async move {
            let started = Instant::now();
            let res = http
                .post(format!("{base}/api/auth/login"))
                .header("x-forwarded-for", from)
                .json(&json!({ "email": "bench@example.com", "password": PASSWORD }))
                .send()
                .await
                .expect("login");
            (res.status().as_u16(), started.elapsed().as_secs_f64() * 1000.0)
        }
    };
    let (own_status, own_ms) = own_login("198.51.100.10").await;
    let (later_status, later_ms) = own_login("198.51.100.11").await;
    let (statuses, flood_time) = flood.await.expect("flood");
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    server.stop().await;
    println!(
        "login-flood: 2000 wrong passwords from 20 addresses (bcrypt cost 12) in {:.1} s answered {counts:?}; \
         GET /health p50 {:.2} / p99 {:.2} ms during it (quiet: {:.2} / {:.2}); the real user's login from their own address: {own_status} in {own_ms:.0} ms \
         behind the attackers' first tries, then {later_status} in {later_ms:.0} ms",
        flood_time.as_secs_f64(),
        percentile(&busy, 0.5),
        percentile(&busy, 0.99),
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
    );
}
