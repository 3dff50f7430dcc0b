//! kill -9 of the server during a burst of replies: after a restart every acknowledged
//! reply's mail reaches the relay at least once, and a mail that arrives twice (sent, then
//! the crash before its row said so) carries the same Message-ID both times.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::both_backends;
use crate::crash::{json_call, process_fixture, spawn_server_with};
use crate::mailservers::{self, Smtp};

const ENV: &[(&str, &str)] = &[
    ("EDGEDESK_MAIL_ALLOW_PRIVATE_HOSTS", "true"),
    ("EDGEDESK_MAIL_RETRY_BASE_MS", "20"),
    ("EDGEDESK_MAIL_RETRY_CAP_MS", "200"),
    ("EDGEDESK_MAIL_LEASE_MS", "1000"),
];

fn message_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_string();
    head.split("\r\n").find_map(|l| l.strip_prefix("Message-ID: ")).expect("a Message-ID").to_string()
}

both_backends! {
async fn every_acknowledged_reply_is_mailed_after_kill_9(b: Backend) {
    if !mailservers::available() {
        return;
    }
    let (pg, dir, http) = process_fixture(b).await;
    let data = dir.path().join("data");
    let smtp = Smtp::open_relay().await;
    let (mut child, base) = spawn_server_with(&data, pg.as_ref(), ENV).await;
    let password = "correct horse battery";
    let call = |method: Method, path: String, token: Option<String>, body: serde_json::Value| {
        let (http, base) = (http.clone(), base.clone());
        async move { json_call(&http, method, format!("{base}{path}"), token.as_deref(), Some(body)).await.expect("the server answers") }
    };
    call(Method::POST, "/api/setup".into(), None, json!({ "email": "a@example.com", "password": password, "name": "A" })).await;
    let (_, login) = call(Method::POST, "/api/auth/login".into(), None, json!({ "email": "a@example.com", "password": password })).await;
    let token = login["token"].as_str().unwrap().to_string();
    let (_, customer) = call(Method::POST, "/api/users".into(), Some(token.clone()),
        json!({ "email": "customer@example.test", "password": password, "name": "Customer" })).await;
    let (_, ws) = call(Method::POST, "/api/workspaces".into(), Some(token.clone()), json!({ "name": "Burst" })).await;
    let ws = ws["id"].as_str().unwrap().to_string();
    call(Method::POST, format!("/api/workspaces/{ws}/members"), Some(token.clone()), json!({ "user_id": customer["id"], "role": "requester" })).await;
    let server = |port: u16| json!({ "host": "127.0.0.1", "port": port, "security": "none", "user": "" });
    let (status, _) = call(Method::POST, format!("/api/workspaces/{ws}/mail/channels"), Some(token.clone()),
        json!({ "address": "help@burst.test", "imap": server(1), "smtp": server(smtp.port) })).await;
    assert_eq!(status, 201);
    let (_, ticket) = call(Method::POST, format!("/api/workspaces/{ws}/tickets"), Some(token.clone()),
        json!({ "title": "Burst", "requester_id": customer["id"] })).await;
    let comments = format!("{base}/api/workspaces/{ws}/tickets/{}/comments", ticket["id"].as_str().unwrap());

    // Four writers reply as fast as they can; the server dies while the mail flows.
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, comments, token, acked) = (http.clone(), comments.clone(), token.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                let body = json!({ "body": format!("reply {w}.{i}") });
                match json_call(&http, Method::POST, comments.clone(), Some(&token), Some(body)).await {
                    Some((201, _)) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while smtp.received().len() < 20 {
        assert!(std::time::Instant::now() < deadline, "no mail flowed before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.load(Ordering::SeqCst);
    let at_kill = smtp.received().len();
    assert!(acked > at_kill, "the kill came mid-burst ({acked} acknowledged, {at_kill} mailed)");

    let (_child, base) = spawn_server_with(&data, pg.as_ref(), ENV).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let distinct = loop {
        let ids: HashSet<String> = smtp.received().iter().map(|(_, raw)| message_id(raw)).collect();
        if ids.len() >= acked {
            break ids;
        }
        assert!(std::time::Instant::now() < deadline, "{} of {acked} acknowledged replies mailed after the restart", ids.len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = smtp.received();
    // Exactly the acknowledged replies' mails (an unacknowledged reply may have committed
    // too, and then it is mailed as well), every copy of one under its one Message-ID.
    let (_, mails) = json_call(&http, Method::GET, format!("{base}/api/workspaces/{ws}/tickets/{}/mail", ticket["id"].as_str().unwrap()),
        Some(&token), None).await.unwrap();
    let rows: HashSet<String> = mails.as_array().unwrap().iter().map(|m| format!("<{}>", m["message_id"].as_str().unwrap())).collect();
    assert!(rows.len() >= acked && rows.len() <= acked + 4, "{} rows for {acked} acknowledged replies", rows.len());
    let ids: HashSet<String> = received.iter().map(|(_, raw)| message_id(raw)).collect();
    assert_eq!(ids, rows, "every mail the relay got is an outbox row's, and every row's mail arrived");
    assert!(distinct.len() >= acked);
    eprintln!("kill -9 burst: {acked} replies acknowledged, {at_kill} mailed before the kill, {} handed over in all ({} duplicates)",
        received.len(), received.len() - ids.len());
}
}
