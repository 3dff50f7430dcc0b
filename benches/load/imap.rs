//! imap: messages per second from an IMAP mailbox to tickets. 1,000 messages (from 50
//! senders, each with a few lines of text) are put into a real dovecot's INBOX; then, in
//! the same run, a raw async-imap client fetches every one of them the way the server's
//! session does (UID SEARCH, then `UID FETCH BODY.PEEK[]` fifty at a time, nothing marked; and one
//! message per command, for comparison),
//! and the server, given a channel on that mailbox, files them all (parse, thread, sender as
//! member, ticket and first comment in one transaction, `\Seen` after the commit). The
//! server's figure is from the channel's creation to the last ticket, read from
//! `edgedesk_mail_inbound_total`. The floor beside them: the same server creating the same
//! number of tickets, each with its first comment, over HTTP eight at a time.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde_json::json;

use super::mailservers::Imap;
use super::{ServerProc, admin_and_workspace, client, post};

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: Customer {s} <customer{s}@bench.test>\r\nTo: help@bench.test\r\nSubject: Question {i}\r\n\
         Message-ID: <q{i}@bench.test>\r\nDate: Tue, 1 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\nquestion number {i}: the printer on floor {s} \
         does not print, and the screen says nothing useful.\r\n\r\nThanks,\r\nCustomer {s}\r\n",
        s = i % 50
    )
    .into_bytes()
}

/// A raw client fetching every message, nothing marked: messages per second. With
/// `batch` 1, one `UID FETCH BODY.PEEK[]` per message; with 50, fifty per command, as the
/// server's session fetches.
async fn raw_fetch(imap: &Imap, n: usize, batch: usize) -> f64 {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", imap.port)).await.expect("connect");
    let mut client = async_imap::Client::new(stream);
    client.read_response().await.expect("greeting");
    let mut session = client.login(&imap.user, &imap.password).await.map_err(|(e, _)| e).expect("login");
    session.select("INBOX").await.expect("select");
    let started = Instant::now();
    let mut uids: Vec<u32> = session.uid_search("UNSEEN").await.expect("search").into_iter().collect();
    uids.sort_unstable();
    assert_eq!(uids.len(), n, "every message is unseen");
    let mut fetched = 0;
    for chunk in uids.chunks(batch) {
        let set = chunk.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let fetches: Vec<_> = session.uid_fetch(set, "BODY.PEEK[]").await.expect("fetch").try_collect().await.expect("fetch");
        fetched += fetches.iter().filter(|f| f.body().is_some_and(|b| !b.is_empty())).count();
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(fetched, n);
    let _ = session.logout().await;
    rate
}

async fn filed(http: &reqwest::Client, base: &str) -> u64 {
    let text = http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("metrics");
    text.lines().find_map(|l| l.strip_prefix("edgedesk_mail_inbound_total{outcome=\"ticket\"} ")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub async fn bench_imap(dir: &std::path::Path) {
    let n = 1000;
    let imap = Imap::start().await;
    for i in 0..n {
        imap.deliver(&message(i));
    }
    let one_by_one = raw_fetch(&imap, n, 1).await;
    let raw = raw_fetch(&imap, n, 50).await;

    let data = dir.join("data");
    let server =
        ServerProc::start_with(&data, &[("EDGEDESK_MAIL_ALLOW_PRIVATE_HOSTS", "true"), ("EDGEDESK_MAIL_IMAP_SCAN_MS", "50")]).await;
    let http = client(4);
    let base = server.base.clone();
    let (token, ws) = admin_and_workspace(&http, &base).await;
    let started = Instant::now();
    post(
        &http,
        format!("{base}/api/workspaces/{ws}/mail/channels"),
        Some(&token),
        json!({
            "address": "help@bench.test",
            "imap": { "host": "127.0.0.1", "port": imap.port, "security": "none", "user": imap.user, "password": imap.password },
            "smtp": { "host": "127.0.0.1", "port": 1, "security": "none", "user": "" },
        }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while filed(&http, &base).await < n as u64 {
        assert!(Instant::now() < deadline, "the server did not file every message within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingest = n as f64 / started.elapsed().as_secs_f64();
    // The floor: the same writes (a ticket, then its first comment) over HTTP, eight at a
    // time, as the mailbox session files eight at a time.
    let customer = post(
        &http,
        format!("{base}/api/users"),
        Some(&token),
        json!({ "email": "floor@bench.test", "password": super::PASSWORD, "name": "Floor" }),
    )
    .await;
    post(&http, format!("{base}/api/workspaces/{ws}/members"), Some(&token), json!({ "user_id": customer["id"], "role": "requester" }))
        .await;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let floor_started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (http, base, token, ws, next, requester) =
            (http.clone(), base.clone(), token.clone(), ws.clone(), next.clone(), customer["id"].clone());
        writers.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let ticket = post(
                    &http,
                    format!("{base}/api/workspaces/{ws}/tickets"),
                    Some(&token),
                    json!({ "title": "Question", "requester_id": requester }),
                )
                .await;
                let comments = format!("{base}/api/workspaces/{ws}/tickets/{}/comments", ticket["id"].as_str().expect("id"));
                post(&http, comments, Some(&token), json!({ "body": "question: the printer does not print." })).await;
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let floor = n as f64 / floor_started.elapsed().as_secs_f64();
    server.stop().await;
    println!("imap: {n} messages from a dovecot INBOX (50 senders)");
    println!("  raw async-imap fetch, one UID FETCH per message:  {one_by_one:>8.0} msg/s");
    println!("  raw async-imap fetch, 50 per UID FETCH:           {raw:>8.0} msg/s");
    println!(
        "  server, mailbox to tickets:                       {ingest:>8.0} msg/s  ({:.0}% of raw; target >= 50%)",
        100.0 * ingest / raw
    );
    println!(
        "  floor: the same tickets with their first comment over HTTP, 8 at a time: {floor:>8.0} /s  (mailbox to tickets at {:.0}% of it)",
        100.0 * ingest / floor
    );
}
