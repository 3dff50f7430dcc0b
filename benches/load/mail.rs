//! mail: messages per second from the outbox to a local SMTP sink (2,000 public staff
//! replies committed while the consumers are off; then the server starts with them on, the
//! mail consumer queues the replies' mail from the log and the delivery workers send it),
//! beside
//! lettre handing the same number of messages of the same size straight to the same sink
//! in the same run: once with a new connection per message (what a worker does) and once
//! over one connection kept open (the floor for a client at all).
//!
//! The sink is a minimal SMTP server in this process (it answers every command at once and
//! counts the messages), so what is measured is the sender, not a mail server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{ServerProc, admin_and_workspace, client, post};

/// A local SMTP sink: accepts everything, counts whole messages.
struct Sink {
    port: u16,
    received: Arc<AtomicU64>,
}

async fn sink() -> Sink {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let counter = counter.clone();
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                if write.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                    return;
                }
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    let reply: &[u8] = if in_data {
                        if line != "." {
                            continue;
                        }
                        in_data = false;
                        counter.fetch_add(1, Ordering::Relaxed);
                        b"250 2.0.0 queued\r\n"
                    } else {
                        match line.get(..4).map(|c| c.to_ascii_uppercase()).as_deref() {
                            Some("EHLO") => b"250-sink\r\n250 8BITMIME\r\n",
                            Some("DATA") => {
                                in_data = true;
                                b"354 go ahead\r\n"
                            }
                            Some("QUIT") => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"250 ok\r\n",
                        }
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Sink { port, received }
}

async fn wait_for(sink: &Sink, count: u64, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    while sink.received.load(Ordering::Relaxed) < count {
        assert!(Instant::now() < deadline, "{} of {count} messages arrived", sink.received.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

/// A message like a reply's mail: text and HTML parts of a short answer.
fn message(i: usize) -> (lettre::address::Envelope, Vec<u8>) {
    use lettre::message::{Mailbox, MultiPart};
    let from: lettre::Address = "help@bench.test".parse().expect("address");
    let to: lettre::Address = "customer@example.test".parse().expect("address");
    let email = lettre::Message::builder()
        .from(Mailbox::new(Some("Bench Support".into()), from.clone()))
        .to(Mailbox::new(Some("Customer".into()), to.clone()))
        .subject(format!("Re: [#1] Bench {i}"))
        .message_id(Some(format!("<{i}.bench@bench.test>")))
        .multipart(MultiPart::alternative_plain_html(format!("Answer {i}\n\n-- \nBench\n"), format!("<div>Answer {i}</div>")))
        .expect("message");
    (lettre::address::Envelope::new(Some(from), vec![to]).expect("envelope"), email.formatted())
}

/// lettre straight to the sink: `n` messages, a connection each or all on one. Messages/s.
async fn lettre_direct(sink: &Sink, n: usize, reuse: bool) -> f64 {
    use lettre::transport::smtp::client::AsyncSmtpConnection;
    use lettre::transport::smtp::extension::ClientId;
    let messages: Vec<_> = (0..n).map(message).collect();
    let before = sink.received.load(Ordering::Relaxed);
    let hello = ClientId::Domain("bench".into());
    // Over a socket with Nagle off, as the server's own connections are: with it on, the
    // message's last small write waits for the sink's delayed ACK (~40 ms a message).
    let port = sink.port;
    let hello = &hello;
    let connect = move || async move {
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        socket.set_nodelay(true)?;
        AsyncSmtpConnection::connect_with_transport(Box::new(socket), hello).await.map_err(std::io::Error::other)
    };
    let started = Instant::now();
    if reuse {
        let mut conn = connect().await.expect("connect");
        for (envelope, raw) in &messages {
            conn.send(envelope, raw).await.expect("send");
        }
        let _ = conn.quit().await;
    } else {
        for (envelope, raw) in &messages {
            let mut conn = connect().await.expect("connect");
            conn.send(envelope, raw).await.expect("send");
            let _ = conn.quit().await;
        }
    }
    let done = wait_for(sink, before + n as u64, Duration::from_secs(60)).await;
    n as f64 / (done - started).as_secs_f64()
}

pub async fn bench_mail(dir: &std::path::Path) {
    let n = 2000;
    let sink = sink().await;
    let data = dir.join("data");
    // First without the log consumers: the replies are committed, nothing is mailed yet.
    let quiet = [("EDGEDESK_MAIL_ALLOW_PRIVATE_HOSTS", "true"), ("EDGEDESK_RUN_CONSUMERS", "false")];
    let server = ServerProc::start_with(&data, &quiet).await;
    let http = client(16);
    let base = server.base.clone();
    let (token, ws) = admin_and_workspace(&http, &base).await;
    let customer = post(
        &http,
        format!("{base}/api/users"),
        Some(&token),
        json!({ "email": "customer@example.test", "password": super::PASSWORD, "name": "Customer" }),
    )
    .await;
    post(&http, format!("{base}/api/workspaces/{ws}/members"), Some(&token), json!({ "user_id": customer["id"], "role": "requester" }))
        .await;
    let smtp = json!({ "host": "127.0.0.1", "port": sink.port, "security": "none", "user": "" });
    let imap = json!({ "host": "127.0.0.1", "port": 1, "security": "none", "user": "" });
    post(
        &http,
        format!("{base}/api/workspaces/{ws}/mail/channels"),
        Some(&token),
        json!({ "address": "help@bench.test", "imap": imap, "smtp": smtp }),
    )
    .await;
    let ticket = post(
        &http,
        format!("{base}/api/workspaces/{ws}/tickets"),
        Some(&token),
        json!({ "title": "Bench", "requester_id": customer["id"] }),
    )
    .await;
    let comments = format!("{base}/api/workspaces/{ws}/tickets/{}/comments", ticket["id"].as_str().expect("id"));
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut posters = Vec::new();
    for _ in 0..8 {
        let (http, comments, token, next) = (http.clone(), comments.clone(), token.clone(), next.clone());
        posters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return;
                }
                post(&http, comments.clone(), Some(&token), json!({ "body": format!("Answer {i}") })).await;
            }
        }));
    }
    for p in posters {
        p.await.expect("poster");
    }
    let posted = started.elapsed();
    server.stop().await;

    // Then with them: the mail consumer finds 2,000 replies in the log, queues their mail
    // and the workers send it, with the machine to themselves.
    let server = ServerProc::start_with(&data, &[("EDGEDESK_MAIL_ALLOW_PRIVATE_HOSTS", "true")]).await;
    let drained_from = Instant::now();
    let done = wait_for(&sink, n as u64, Duration::from_secs(600)).await;
    let drain = n as f64 / (done - drained_from).as_secs_f64();
    server.stop().await;

    let per_connection = lettre_direct(&sink, n, false).await;
    let one_connection = lettre_direct(&sink, n, true).await;
    println!(
        "mail: {n} replies posted over HTTP (consumers off) in {:.2} s ({:.0}/s)",
        posted.as_secs_f64(),
        n as f64 / posted.as_secs_f64()
    );
    println!(
        "mail: outbox -> SMTP sink (queue from the log + deliver) {drain:.0} msg/s; lettre directly to the same sink: {per_connection:.0} msg/s with a connection per message ({:.0}%), {one_connection:.0} msg/s over one connection ({:.0}%) (target >= 50%)",
        100.0 * drain / per_connection,
        100.0 * drain / one_connection
    );
}
