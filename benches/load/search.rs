//! `cargo bench --bench load -- search [--rows N] [--tenants M]`: indexing N comments (default
//! 1,000,000, on N/10 tickets) from the log, rows/s and the server's RSS; query latency over
//! HTTP beside the same queries run directly on the index in this process; freshness under a
//! steady write load (time from a write's answer to the search that finds it); RSS with M
//! workspaces (default 10,000) each searched once.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::params;
use serde_json::json;

use super::{ServerProc, admin_and_workspace, client, percentile, post, raw_connection};

const QUERIES: [(&str, &str); 3] = [("one word", "printer"), ("two words, fuzzy", "printr tonr"), ("phrase", "\"toner cartridge\"")];

/// Writes `rows` comments on `rows / 10` tickets straight into the workspace's file, each
/// with its event, as the server would have (the server is stopped).
fn seed(db: &Path, requester: &str, rows: u64) {
    let mut conn = raw_connection(db);
    let requester: edgedesk::store::UserId = requester.parse().expect("user id");
    let tickets = (rows / 10).max(1);
    let words = ["printer", "toner", "cartridge", "paper", "jam", "network", "invoice", "login", "password", "screen"];
    let mut number = 0i64;
    let mut written = 0u64;
    while written < rows {
        let tx = conn.transaction().expect("begin");
        {
            let mut ticket_row = tx
                .prepare("INSERT INTO tickets (number, id, title, status, priority, requester_id, tags, created_at, updated_at) VALUES (?1, ?2, ?3, 'open', 'normal', ?4, '[]', ?5, ?5)")
                .expect("prepare");
            let mut comment_row = tx
                .prepare("INSERT INTO comments (id, ticket_id, author_id, body, internal, created_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)")
                .expect("prepare");
            let mut action = tx
                .prepare("INSERT INTO sync_actions (at, actor, kind, entity, entity_id, data, ticket_id, staff_only) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)")
                .expect("prepare");
            for _ in 0..2_000 {
                if written >= rows {
                    break;
                }
                number += 1;
                let at = edgedesk::store::Millis::now();
                let ticket = edgedesk::store::Ticket {
                    id: edgedesk::store::TicketId::new(),
                    number,
                    title: format!("Ticket {number}: {} {}", words[number as usize % 10], words[(number as usize / 10) % 10]),
                    status: edgedesk::store::Status::Open,
                    priority: edgedesk::store::Priority::Normal,
                    requester_id: requester,
                    assignee_id: None,
                    tags: Vec::new(),
                    created_at: at,
                    updated_at: at,
                    version: 1,
                };
                let id = ticket.id.to_string();
                ticket_row.execute(params![number, id, ticket.title, requester.to_string(), at.0]).expect("ticket");
                let data = serde_json::to_string(&ticket).expect("json");
                action.execute(params![at.0, requester.to_string(), "ticket.created", "ticket", id, data, id]).expect("action");
                for c in 0..(rows / tickets).max(1) {
                    let comment = edgedesk::store::Comment {
                        id: edgedesk::store::CommentId::new(),
                        ticket_id: ticket.id,
                        author_id: requester,
                        body: format!(
                            "Reply {c}: the {} {} still fails after the {} was replaced",
                            words[(c as usize + 3) % 10],
                            words[(c as usize + number as usize) % 10],
                            words[(c as usize * 7) % 10]
                        ),
                        internal: false,
                        created_at: at,
                    };
                    let cid = comment.id.to_string();
                    comment_row.execute(params![cid, id, requester.to_string(), comment.body, at.0]).expect("comment");
                    let data = serde_json::to_string(&comment).expect("json");
                    action.execute(params![at.0, requester.to_string(), "comment.created", "comment", cid, data, id]).expect("action");
                    written += 1;
                }
            }
        }
        tx.commit().expect("commit");
    }
}

async fn status(http: &reqwest::Client, base: &str, token: &str, ws: &str) -> serde_json::Value {
    http.get(format!("{base}/api/workspaces/{ws}/search/status"))
        .bearer_auth(token)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn bench_search(dir: &Path, rows: u64, tenants: usize) {
    let http = client(8);
    let data = dir.join("data");
    let server = ServerProc::start(&data).await;
    let (token, ws) = admin_and_workspace(&http, &server.base).await;
    let me: serde_json::Value =
        http.get(format!("{}/api/me", server.base)).bearer_auth(&token).send().await.expect("me").json().await.expect("json");
    server.stop().await;

    // 1. Indexing the log.
    let db = data.join("tenants").join(&ws).join("tenant.db");
    let seeding = Instant::now();
    let (seed_db, requester) = (db.clone(), me["id"].as_str().expect("id").to_string());
    tokio::task::spawn_blocking(move || seed(&seed_db, &requester, rows)).await.expect("seed");
    eprintln!("seeded {rows} comments in {:.1} s", seeding.elapsed().as_secs_f64());
    let server = ServerProc::start(&data).await;
    let started = Instant::now();
    let mut peak = 0;
    // A search wakes the indexer; the status says when it is done.
    let _ = http.get(format!("{}/api/workspaces/{ws}/search?q=printer", server.base)).bearer_auth(&token).send().await;
    loop {
        peak = peak.max(server.rss_kib());
        let s = status(&http, &server.base, &token, &ws).await;
        if s["lag"] == 0 && s["head"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    println!(
        "search index: {rows} comments on {} tickets indexed from the log in {:.1} s = {:.0} comments/s; server RSS peak {} MiB",
        rows / 10,
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64(),
        peak / 1024
    );

    // 2. Queries: over HTTP, then the same through the index in this process.
    let n = 300;
    let index_dir = data.join("tenants").join(&ws).join("search");
    let fields = edgedesk::search::schema::Fields::new();
    let direct = edgedesk::search::index::WorkspaceIndex::open(ws.parse().expect("ws"), &index_dir, &fields).expect("index opens");
    let audience = edgedesk::store::Audience::Staff(me["id"].as_str().expect("id").parse().expect("user"));
    for (what, q) in QUERIES {
        let url = format!("{}/api/workspaces/{ws}/search?q={}&limit=20", server.base, urlencode(q));
        let mut over_http = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let res = http.get(&url).bearer_auth(&token).send().await.expect("search");
            assert!(res.status().is_success());
            let _ = res.bytes().await;
            over_http.push(t.elapsed());
        }
        let mut in_process = Vec::with_capacity(n);
        for _ in 0..n {
            let request = edgedesk::search::find::Request {
                parsed: edgedesk::search::query::parse(q).expect("query"),
                audience,
                filter: Default::default(),
                offset: 0,
                limit: 20,
            };
            let t = Instant::now();
            let (hits, _) = edgedesk::search::find::find(&direct, &request).expect("find");
            std::hint::black_box(serde_json::to_vec(&hits).expect("json"));
            in_process.push(t.elapsed());
        }
        over_http.sort();
        in_process.sort();
        let (hp50, hp99) = (percentile(&over_http, 0.5), percentile(&over_http, 0.99));
        let (dp50, dp99) = (percentile(&in_process, 0.5), percentile(&in_process, 0.99));
        println!(
            "search {what} ({q}): HTTP p50 {hp50:.2} ms p99 {hp99:.2} ms; direct on the index p50 {dp50:.2} ms p99 {dp99:.2} ms; HTTP throughput at p50 is {:.0}% of direct",
            100.0 * dp50 / hp50
        );
    }
    drop(direct);

    // 3. Freshness under a steady write load: 20 writes a second, each looked for at once.
    let ticket = post(&http, format!("{}/api/workspaces/{ws}/tickets", server.base), Some(&token), json!({ "title": "freshness" })).await;
    let comments = format!("{}/api/workspaces/{ws}/tickets/{}/comments", server.base, ticket["id"].as_str().expect("id"));
    let mut lags = Vec::new();
    for i in 0..200 {
        let word = format!("fresh{i}x");
        let tick = Instant::now();
        post(&http, comments.clone(), Some(&token), json!({ "body": format!("steady {word}") })).await;
        let written = Instant::now();
        loop {
            let page: serde_json::Value = http
                .get(format!("{}/api/workspaces/{ws}/search?q={word}%20", server.base))
                .bearer_auth(&token)
                .send()
                .await
                .expect("search")
                .json()
                .await
                .expect("json");
            if page["items"].as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
        }
        lags.push(written.elapsed());
        if let Some(rest) = Duration::from_millis(50).checked_sub(tick.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    lags.sort();
    println!(
        "search freshness at 20 writes/s: a write is found {:.1} ms (p50) / {:.1} ms (p99) / {:.1} ms (max) after its answer",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        ms(*lags.last().expect("lags"))
    );
    server.stop().await;

    // 4. Many workspaces, each searched once.
    let server = ServerProc::start(&data).await;
    let before = server.rss_kib();
    let ids = super::consumers::workspaces(&http, &server.base, &token, tenants).await;
    let after_create = server.rss_kib();
    let searched = Instant::now();
    for id in &ids {
        let res =
            http.get(format!("{}/api/workspaces/{id}/search?q=printer", server.base)).bearer_auth(&token).send().await.expect("search");
        assert!(res.status().is_success());
    }
    println!(
        "search across {tenants} workspaces, each searched once: {:.1} s; server RSS {} MiB at start, {} MiB after creating them, {} MiB after searching each",
        searched.elapsed().as_secs_f64(),
        before / 1024,
        after_create / 1024,
        server.rss_kib() / 1024
    );
    server.stop().await;
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
