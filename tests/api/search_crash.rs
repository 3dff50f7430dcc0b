//! kill -9 while the index is busy: after restart the index catches up, skipping nothing,
//! and finds exactly what a full rebuild (`edgedesk search rebuild`) finds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::both_backends;
use crate::crash::{json_call, process_fixture, spawn_server};

/// Tickets per writer at most: every hit of one query stays within search's deepest page.
const PER_WRITER: usize = 200;

/// Every ticket `q` finds, page by page.
async fn all_hits(http: &reqwest::Client, base: &str, token: &str, ws: &str, q: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/workspaces/{ws}/search?q={q}&limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = json_call(http, reqwest::Method::GET, url, Some(token), None).await.expect("the server answers");
        assert_eq!(status, 200, "{page}");
        found.extend(page["items"].as_array().unwrap().iter().map(|h| h["ticket"]["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return found,
        }
    }
}

async fn status(http: &reqwest::Client, base: &str, token: &str, ws: &str) -> Value {
    json_call(http, reqwest::Method::GET, format!("{base}/api/workspaces/{ws}/search/status"), Some(token), None).await.unwrap().1
}

both_backends! {
async fn after_kill_9_the_index_catches_up_to_what_a_rebuild_finds(b: Backend) {
    let (pg, dir, http) = process_fixture(b).await;
    let data = dir.path().join("data");
    let (mut child, base) = spawn_server(&data, pg.as_ref()).await;
    let password = "correct horse battery";
    let call = |method, url: String, token: Option<String>, body| {
        let http = http.clone();
        async move { json_call(&http, method, url, token.as_deref(), body).await }
    };
    call(reqwest::Method::POST, format!("{base}/api/setup"), None, Some(json!({ "email": "a@example.com", "password": password, "name": "A" }))).await.unwrap();
    let (_, login) =
        call(reqwest::Method::POST, format!("{base}/api/auth/login"), None, Some(json!({ "email": "a@example.com", "password": password }))).await.unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let (_, ws) = call(reqwest::Method::POST, format!("{base}/api/workspaces"), Some(token.clone()), Some(json!({ "name": "Load" }))).await.unwrap();
    let ws = ws["id"].as_str().unwrap().to_string();

    // Four writers: tickets, each with a reply, until the kill.
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, base, token, ws, acked) = (http.clone(), base.clone(), token.clone(), ws.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let url = format!("{base}/api/workspaces/{ws}/tickets");
                let Some((201, ticket)) = json_call(&http, reqwest::Method::POST, url, Some(&token), Some(json!({ "title": format!("walrus w{w}x{i}") }))).await else { break };
                let url = format!("{base}/api/workspaces/{ws}/tickets/{}/comments", ticket["id"].as_str().unwrap());
                let Some((201, _)) = json_call(&http, reqwest::Method::POST, url, Some(&token), Some(json!({ "body": format!("narwhal reply {w} {i}") }))).await else { break };
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Kill in the middle: once a few hundred are written (or after 1.5 s on a slow machine).
    let started = std::time::Instant::now();
    while acked.load(Ordering::Relaxed) < 300 && started.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let written = acked.load(Ordering::Relaxed);
    assert!(written > 20 && written < 4 * PER_WRITER, "the load ran until the kill ({written} tickets with replies)");

    // Restarted: the first searches bring the index up to the log.
    let (mut child, base) = spawn_server(&data, pg.as_ref()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(&http, &base, &token, &ws).await;
        if s["lag"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the index never caught up: {s}");
        all_hits(&http, &base, &token, &ws, "walrus").await;
    }
    let walrus = all_hits(&http, &base, &token, &ws, "walrus").await;
    let narwhal = all_hits(&http, &base, &token, &ws, "narwhal").await;
    let documents = status(&http, &base, &token, &ws).await["documents"].as_u64().unwrap();
    assert_eq!(walrus.len() as u64, documents, "every ticket is found by its title");
    eprintln!("{written} acknowledged, {documents} indexed after the restart");
    assert!(narwhal.is_subset(&walrus) && narwhal.len() + 4 >= walrus.len(), "replies are indexed: {} of {}", narwhal.len(), walrus.len());
    let mut after = 0i64;
    let mut created = BTreeSet::new();
    loop {
        let (_, page) = call(reqwest::Method::GET, format!("{base}/api/workspaces/{ws}/sync/delta?after={after}&limit=1000"), Some(token.clone()), None).await.unwrap();
        for e in page["events"].as_array().unwrap() {
            if e["kind"] == "ticket.created" {
                created.insert(e["entity_id"].as_str().unwrap().to_string());
            }
        }
        after = page["last_sync_id"].as_i64().unwrap();
        if page["has_more"] == false {
            break;
        }
    }
    assert_eq!(walrus, created, "no ticket the log holds is missing from the index, none is extra");
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    // A full rebuild from the log finds exactly the same.
    let mut rebuild = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgedesk"));
    if let Some(pg) = &pg {
        rebuild.env("EDGEDESK_DATABASE_URL", &pg.app_url).env("EDGEDESK_ADMIN_DATABASE_URL", &pg.admin_url);
    }
    let out = rebuild.args(["search", "rebuild", &ws]).env("EDGEDESK_DATA_DIR", &data).output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains(&format!("{documents} ticket(s)")), "{said}");
    let (_child, base) = spawn_server(&data, pg.as_ref()).await;
    assert_eq!(all_hits(&http, &base, &token, &ws, "walrus").await, walrus);
    assert_eq!(all_hits(&http, &base, &token, &ws, "narwhal").await, narwhal);
    assert_eq!(status(&http, &base, &token, &ws).await["lag"], 0);
}
}
