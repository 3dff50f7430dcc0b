//! Live push over SSE, with a real streaming HTTP client parsing the frames.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::common::{Backend, TestServer, User, both_backends, kill_listeners, relaxed_limits};

#[derive(Debug, Clone, Default)]
pub(crate) struct Frame {
    pub id: Option<i64>,
    pub event: Option<String>,
    pub data: Option<Value>,
    pub comment: bool,
}

pub(crate) struct Sse {
    frames: mpsc::UnboundedReceiver<Frame>,
    reader: tokio::task::AbortHandle,
}

impl Drop for Sse {
    /// Hangs up, as a client going away does.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn parse(block: &str) -> Frame {
    let mut frame = Frame::default();
    for line in block.lines() {
        if line.starts_with(':') {
            frame.comment = true;
        } else if let Some(v) = line.strip_prefix("id: ") {
            frame.id = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            frame.event = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            frame.data = serde_json::from_str(v).ok();
        }
    }
    frame
}

pub(crate) async fn open(s: &TestServer, user: &User, ws: &str, last: Option<i64>, query: &str) -> Sse {
    let mut req = s.http.get(format!("{}/api/workspaces/{ws}/events{query}", s.base)).bearer_auth(&user.token);
    if let Some(last) = last {
        req = req.header("last-event-id", last.to_string());
    }
    let res = req.send().await.expect("events");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let (tx, frames) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut body = res.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                if tx.send(parse(&block)).is_err() {
                    return;
                }
            }
        }
    });
    Sse { frames, reader: reader.abort_handle() }
}

impl Sse {
    /// The next log event (skipping comments and the retry hint), if one comes in time.
    pub(crate) async fn event(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) if frame.event.is_some() => return Some(frame),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Every event until none arrives for `quiet`.
    pub(crate) async fn drain(&mut self, quiet: Duration) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = self.event(quiet).await {
            out.push(frame);
        }
        out
    }

    /// The events before the stream ends with `access-changed`, if it does within `within`.
    pub(crate) async fn until_access_changed(&mut self, within: Duration) -> Option<Vec<Frame>> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) if frame.event.as_deref() == Some("access-changed") => {
                    return self.ends(QUIET).await.then_some(seen);
                }
                Ok(Some(frame)) if frame.event.is_some() => seen.push(frame),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Whether the stream ends within `within`.
    pub(crate) async fn ends(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

const SOON: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(400);

pub(crate) async fn desk(s: &TestServer) -> (User, User, User, String) {
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Live").await;
    let agent = s.user(&admin, "agent").await;
    let customer = s.user(&admin, "customer").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    s.add_member(&admin, &ws, &customer, "requester").await;
    (admin, agent, customer, ws)
}

fn ids(frames: &[Frame]) -> Vec<i64> {
    frames.iter().map(|f| f.id.unwrap()).collect()
}

both_backends! {
async fn a_write_arrives_as_an_event_whose_id_is_its_sync_id(b: Backend) {
    let s = TestServer::start(b).await;
    let (admin, agent, _, ws) = desk(&s).await;
    let mut sse = open(&s, &agent, &ws, None, "").await;
    let t = s.ticket(&agent, &ws, json!({ "title": "live" })).await;
    let frame = sse.event(SOON).await.expect("the write arrives");
    assert_eq!(frame.event.as_deref(), Some("ticket.created"));
    let data = frame.data.unwrap();
    assert_eq!(data["entity_id"], t["id"]);
    assert_eq!(frame.id, data["sync_id"].as_i64());
    assert_eq!(frame.id, Some(s.head(&admin, &ws).await));
    s.stop().await;
}
}

both_backends! {
async fn reconnecting_yields_exactly_what_was_missed_from_the_ring_and_from_the_log(b: Backend) {
    let s = TestServer::start_with(b, relaxed_limits(), |c| c.sse_ring = 3).await;
    let (admin, agent, _, ws) = desk(&s).await;
    // Someone stays connected throughout, so the workspace's topic (and its ring) lives on.
    let mut keeper = open(&s, &admin, &ws, None, "").await;
    let mut client = open(&s, &agent, &ws, None, "").await;
    s.ticket(&agent, &ws, json!({ "title": "seen" })).await;
    let last = client.event(SOON).await.unwrap().id.unwrap();
    drop(client);
    // Two missed writes: the ring (3) still holds them.
    for i in 0..2 {
        s.ticket(&agent, &ws, json!({ "title": format!("missed {i}") })).await;
    }
    assert_eq!(keeper.drain(QUIET).await.len(), 3);
    let mut client = open(&s, &agent, &ws, Some(last), "").await;
    let replayed = client.drain(QUIET).await;
    assert_eq!(ids(&replayed), vec![last + 1, last + 2], "exactly the missed events, from memory");
    let last = last + 2;
    drop(client);
    // Ten missed writes: the ring no longer reaches back; the log does.
    for i in 0..10 {
        s.ticket(&agent, &ws, json!({ "title": format!("missed more {i}") })).await;
    }
    assert_eq!(keeper.drain(QUIET).await.len(), 10);
    let mut client = open(&s, &agent, &ws, Some(last), "").await;
    let replayed = client.drain(QUIET).await;
    assert_eq!(ids(&replayed), ((last + 1)..=(last + 10)).collect::<Vec<_>>(), "exactly the missed events, from the log");
    // …then the live tail, with no duplicate.
    s.ticket(&agent, &ws, json!({ "title": "live again" })).await;
    assert_eq!(ids(&client.drain(QUIET).await), vec![last + 11]);
    // Without the keeper, a reconnect still replays from the log.
    drop(keeper);
    drop(client);
    s.ticket(&agent, &ws, json!({ "title": "nobody listening" })).await;
    let mut client = open(&s, &agent, &ws, Some(last + 11), "").await;
    assert_eq!(ids(&client.drain(QUIET).await), vec![last + 12]);
    s.stop().await;
}
}

both_backends! {
async fn requesters_receive_only_what_is_theirs_and_streams_narrow_to_a_ticket(b: Backend) {
    let s = TestServer::start(b).await;
    let (admin, agent, customer, ws) = desk(&s).await;
    let other = s.user(&admin, "other").await;
    s.add_member(&admin, &ws, &other, "requester").await;
    let mut mine = open(&s, &customer, &ws, None, "").await;
    let theirs = s.ticket(&agent, &ws, json!({ "title": "theirs", "requester_id": other.id })).await;
    let own = s.ticket(&agent, &ws, json!({ "title": "mine", "requester_id": customer.id })).await;
    let own_id = own["id"].as_str().unwrap();
    let mut narrowed = open(&s, &agent, &ws, None, &format!("?ticket={own_id}")).await;
    let comments = format!("/api/workspaces/{ws}/tickets/{own_id}/comments");
    s.post(&comments, &agent.token, json!({ "body": "internal", "internal": true })).await.ok(201);
    s.post(&comments, &agent.token, json!({ "body": "public" })).await.ok(201);
    s.post(&format!("/api/workspaces/{ws}/tickets/{}/comments", theirs["id"].as_str().unwrap()), &agent.token, json!({ "body": "x" })).await.ok(201);
    let got = mine.drain(QUIET).await;
    let kinds: Vec<_> = got.iter().map(|f| f.event.clone().unwrap()).collect();
    // Their own ticket, its public reply, and their notification of that reply.
    assert_eq!(kinds, ["ticket.created", "comment.created", "notification.created"]);
    assert_eq!(got[2].data.as_ref().unwrap()["data"]["recipient_id"], customer.id.as_str());
    assert_eq!(got[0].data.as_ref().unwrap()["entity_id"], own_id);
    assert_eq!(got[1].data.as_ref().unwrap()["data"]["internal"], false);
    let narrow = narrowed.drain(QUIET).await;
    assert_eq!(narrow.len(), 2, "the internal note and the public reply on that ticket only");
    assert!(narrow.iter().all(|f| f.data.as_ref().unwrap()["data"]["ticket_id"] == own_id));
    s.stop().await;
}
}

both_backends! {
async fn idle_streams_get_heartbeats_and_end_cleanly_on_shutdown(b: Backend) {
    let s = TestServer::start_with(b, relaxed_limits(), |c| c.sse_heartbeat = Duration::from_millis(200)).await;
    let (_, agent, _, ws) = desk(&s).await;
    let mut sse = open(&s, &agent, &ws, None, "").await;
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, sse.frames.recv()).await {
        pings += usize::from(frame.comment);
        if pings >= 2 {
            break;
        }
    }
    assert!(pings >= 2, "heartbeat comments on an idle stream");
    let stopping = tokio::spawn(s.stop());
    assert!(sse.ends(Duration::from_secs(3)).await, "the stream ends promptly on shutdown");
    tokio::time::timeout(Duration::from_secs(5), stopping).await.expect("the server stops with streams open").unwrap();
}
}

both_backends! {
async fn a_busy_stream_carries_no_heartbeats_and_gets_them_again_once_idle(b: Backend) {
    let s = TestServer::start_with(b, relaxed_limits(), |c| c.sse_heartbeat = Duration::from_millis(250)).await;
    let (_, agent, _, ws) = desk(&s).await;
    let mut sse = open(&s, &agent, &ws, None, "").await;
    // Writes back to back for eight heartbeat periods.
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut written = 0;
    while tokio::time::Instant::now() < until {
        s.ticket(&agent, &ws, json!({ "title": "busy" })).await;
        written += 1;
    }
    let (mut events, mut pings) = (0, 0);
    while events < written {
        let frame = tokio::time::timeout(SOON, sse.frames.recv()).await.expect("every write arrives").expect("stream open");
        events += usize::from(frame.event.is_some());
        pings += usize::from(frame.comment);
    }
    // The period the stream opened in may have begun before its first event.
    assert!(pings <= 1, "{pings} heartbeats among {written} events: a stream carrying events needs none");
    let quiet = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if sse.frames.recv().await.expect("stream open").comment {
                return;
            }
        }
    });
    assert!(quiet.await.is_ok(), "heartbeats resume once the stream is idle");
    s.stop().await;
}
}

both_backends! {
async fn bad_and_impossible_last_event_ids(b: Backend) {
    let s = TestServer::start(b).await;
    let (admin, agent, _, ws) = desk(&s).await;
    let res = s.http.get(format!("{}/api/workspaces/{ws}/events", s.base)).bearer_auth(&agent.token).header("last-event-id", "abc").send().await.unwrap();
    assert_eq!(res.status(), 400);
    s.get(&format!("/api/workspaces/{ws}/events?ticket=nope"), &agent.token).await.problem(422);
    // An id this log never issued: the client is told to bootstrap again.
    let head = s.head(&admin, &ws).await;
    let mut sse = open(&s, &agent, &ws, Some(head + 1000), "").await;
    let frame = sse.event(SOON).await.expect("a reset");
    assert_eq!(frame.event.as_deref(), Some("reset"));
    assert!(sse.ends(SOON).await);
    s.stop().await;
}
}

#[tokio::test]
async fn a_write_by_another_process_on_the_data_dir_reaches_a_connected_client() {
    let s = TestServer::start(Backend::Sqlite).await;
    let (_, agent, _, ws) = desk(&s).await;
    let mut sse = open(&s, &agent, &ws, None, "").await;
    // Another opener of the same files (as the CLI is): only the file watcher links it.
    let options = edgedesk::store::sqlite::SqliteOptions::new(4, Duration::from_secs(60));
    let other = edgedesk::store::sqlite::open(&s.data_dir(), options).unwrap();
    let actor: edgedesk::store::UserId = agent.id.parse().unwrap();
    let tenant = other.tenants.open(ws.parse().unwrap()).await.unwrap();
    let new = edgedesk::store::NewTicket {
        title: "from another process".into(),
        status: edgedesk::store::Status::Open,
        priority: edgedesk::store::Priority::Normal,
        requester_id: actor,
        assignee_id: None,
        tags: vec![],
    };
    let t = tenant.create_ticket(actor, new).await.unwrap();
    let frame = sse.event(SOON).await.expect("the other process's write arrives");
    assert_eq!(frame.data.unwrap()["entity_id"], t.id.to_string());
    s.stop().await;
}

#[tokio::test]
async fn clients_on_one_instance_receive_writes_made_through_another() {
    let Some((one, two)) = TestServer::two_postgres_instances().await else { return };
    let (_, agent, _, ws) = desk(&one).await;
    let mut on_one = open(&one, &agent, &ws, None, "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = two.ticket(&agent, &ws, json!({ "title": "through two" })).await;
    let frame = on_one.event(SOON).await.expect("a write through instance two reaches instance one's client");
    assert_eq!(frame.data.unwrap()["entity_id"], t["id"]);
}

both_backends! {
async fn stream_tokens_open_streams_and_nothing_else(b: Backend) {
    let s = TestServer::start(b).await;
    let (admin, agent, _, ws) = desk(&s).await;
    let issued = s.post("/api/auth/stream-token", &agent.token, json!({ "workspace_id": ws })).await;
    let token = issued.ok(200)["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("edst_"));
    // No header at all, as a browser's EventSource connects.
    let res = s.http.get(format!("{}/api/workspaces/{ws}/events?access_token={token}", s.base)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    s.ticket(&agent, &ws, json!({ "title": "seen through a stream token" })).await;
    let mut text = String::new();
    while !text.contains("ticket.created") {
        let chunk = tokio::time::timeout(SOON, body.next()).await.expect("an event").unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Only the stream routes take it.
    let me = s.http.get(format!("{}/api/me?access_token={token}", s.base)).send().await.unwrap();
    assert_eq!(me.status(), 401);
    let forged = format!("{}x", &token[..token.len() - 1]);
    let res = s.http.get(format!("{}/api/workspaces/{ws}/events?access_token={forged}", s.base)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    // Bound to its workspace: another one refuses it, even for a member of both.
    let other = s.workspace(&admin, "Other").await;
    s.add_member(&admin, &other, &agent, "agent").await;
    let res = s.http.get(format!("{}/api/workspaces/{other}/events?access_token={token}", s.base)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    s.stop().await;
}
}

#[tokio::test]
async fn connections_beyond_the_per_user_cap_get_429_until_one_closes() {
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| c.sse_max_per_user = 2).await;
    let (_, agent, customer, ws) = desk(&s).await;
    let first = open(&s, &agent, &ws, None, "").await;
    let _second = open(&s, &agent, &ws, None, "").await;
    let third = s.http.get(format!("{}/api/workspaces/{ws}/events", s.base)).bearer_auth(&agent.token).send().await.unwrap();
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    // Another user is not affected.
    let _theirs = open(&s, &customer, &ws, None, "").await;
    drop(first);
    let mut ok = false;
    for _ in 0..50 {
        let res = s.http.get(format!("{}/api/workspaces/{ws}/events", s.base)).bearer_auth(&agent.token).send().await.unwrap();
        if res.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "a closed stream gives its slot back");
    s.stop().await;
}

#[tokio::test]
async fn every_subscriber_on_every_instance_gets_every_event_once_in_order_even_when_the_listener_dies() {
    let Some((one, two)) = TestServer::two_postgres_instances().await else { return };
    let (admin, agent, _, ws) = desk(&one).await;
    let start = one.head(&admin, &ws).await;
    let mut subscribers = Vec::new();
    for s in [&one, &two] {
        for _ in 0..3 {
            subscribers.push(open(s, &agent, &ws, None, "").await);
        }
    }
    let servers = std::sync::Arc::new([one, two]);
    let mut writers = Vec::new();
    for w in 0..8 {
        let (servers, token, ws) = (servers.clone(), agent.token.clone(), ws.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..15 {
                let s = &servers[w % 2];
                s.post(&format!("/api/workspaces/{ws}/tickets"), &token, json!({ "title": format!("w{w} #{i}") })).await.ok(201);
            }
        }));
    }
    // Mid-run: kill both instances' LISTEN connections.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pg = servers[0].pg.clone().unwrap();
    assert_eq!(kill_listeners(&pg).await, 2, "both listeners were killed mid-run");
    for w in writers {
        w.await.unwrap();
    }
    let head = servers[0].head(&admin, &ws).await;
    assert_eq!(head, start + 120);
    let expected: Vec<i64> = ((start + 1)..=head).collect();
    for (n, sub) in subscribers.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.last() != Some(&head) {
            match sub.event(Duration::from_secs(10)).await {
                Some(frame) => got.push(frame.id.unwrap()),
                None => break,
            }
        }
        assert_eq!(got, expected, "subscriber {n} (instance {}) got every event once, in order", n / 3 + 1);
        assert!(sub.event(QUIET).await.is_none(), "and nothing more");
    }
}

/// The stream asked for on a bare socket with a small receive buffer, which the test reads
/// (or not) as it likes. `headers` are extra request lines, each ending in CRLF.
async fn raw_stream(s: &TestServer, user: &User, ws: &str, headers: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let request =
        format!("GET /api/workspaces/{ws}/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n{headers}\r\n", user.token);
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

async fn sse_connections(s: &TestServer) -> usize {
    let metrics = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    metrics.lines().find_map(|l| l.strip_prefix("edgedesk_sse_connections ")).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_the_others_carry_on() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| c.write_timeout = Duration::from_secs(1)).await;
    let (_, agent, _, ws) = desk(&s).await;
    let mut healthy = open(&s, &agent, &ws, None, "").await;
    // A client that connects, asks for the stream, and never reads a byte.
    let mut stalled = raw_stream(&s, &agent, &ws, "").await;
    for _ in 0..50 {
        if sse_connections(&s).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sse_connections(&s).await, 2);
    // Far more than the kernel's buffers hold (up to 4 MB each way): 120 events of 60 KB.
    let ticket = s.ticket(&agent, &ws, json!({ "title": "big replies" })).await;
    assert_eq!(healthy.event(SOON).await.unwrap().event.as_deref(), Some("ticket.created"));
    let body = "x".repeat(60_000);
    let comments = format!("{}/api/workspaces/{ws}/tickets/{}/comments", s.base, ticket["id"].as_str().unwrap());
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, token, body) = (s.http.clone(), comments.clone(), agent.token.clone(), body.clone());
            tokio::spawn(async move {
                for _ in 0..30 {
                    let res = http.post(&url).bearer_auth(&token).json(&json!({ "body": body })).send().await.unwrap();
                    assert_eq!(res.status(), 201);
                }
            })
        })
        .collect();
    let mut received = 0;
    while received < 120 {
        match healthy.event(SOON).await {
            Some(_) => received += 1,
            None => break,
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(received, 120, "the reading client got everything while the other stalled");
    let mut dropped = false;
    for _ in 0..100 {
        if sse_connections(&s).await == 1 {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped, "the stalled client was let go");
    // Its socket is closed: reading now yields what was buffered, then the end.
    let mut buf = vec![0u8; 65536];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "the server closed the stalled connection");
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_falls_too_far_behind_is_closed_and_catches_up_by_reconnecting() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| c.sse_lag = 3).await;
    let (_, agent, _, ws) = desk(&s).await;
    let ticket = s.ticket(&agent, &ws, json!({ "title": "big replies" })).await;
    let first = workspace_head(&s, &agent, &ws).await;
    // A client that asks for the stream, then stops reading for a while.
    let mut slow = raw_stream(&s, &agent, &ws, &format!("Last-Event-ID: {first}\r\n")).await;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !String::from_utf8_lossy(&seen).contains("retry:") {
        let n = slow.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream opened");
        seen.extend_from_slice(&buf[..n]);
    }
    // Far more than the kernel's buffers hold while it is not reading: 100 events of 60 KB.
    let body = "x".repeat(60_000);
    let comments = format!("{}/api/workspaces/{ws}/tickets/{}/comments", s.base, ticket["id"].as_str().unwrap());
    for _ in 0..100 {
        let res = s.http.post(&comments).bearer_auth(&agent.token).json(&json!({ "body": body })).send().await.unwrap();
        assert_eq!(res.status(), 201);
    }
    let last = first + 100;
    // Reading again: what was in flight, then the end of the response (the last chunk).
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if seen.ends_with(b"\r\n0\r\n\r\n") {
                return true;
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(ended, "a client more than EDGEDESK_SSE_LAG events behind gets the end of its stream");
    let text = String::from_utf8_lossy(&seen);
    let got: Vec<i64> = text.lines().filter_map(|l| l.strip_prefix("id: ")).map(|v| v.parse().unwrap()).collect();
    assert!(!got.is_empty() && got.len() < 100, "it got some events, not all: {}", got.len());
    assert_eq!(got, ((first + 1)..=(first + got.len() as i64)).collect::<Vec<_>>(), "what it got has no gap");
    // Reconnecting with the last id it saw brings exactly the rest.
    let mut again = open(&s, &agent, &ws, got.last().copied(), "").await;
    let rest = ids(&again.drain(QUIET).await);
    assert_eq!(rest, ((got.last().unwrap() + 1)..=last).collect::<Vec<_>>());
    s.stop().await;
}

/// The workspace's current head, read through delta.
async fn workspace_head(s: &TestServer, user: &User, ws: &str) -> i64 {
    let delta: Value = s
        .http
        .get(format!("{}/api/workspaces/{ws}/sync/delta?after=0", s.base))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    delta["last_sync_id"].as_i64().unwrap()
}
