//! The live stream through a stock EventSource (npm `eventsource`, the WHATWG algorithm
//! for Node): connected as a browser tab is (stream token in the URL, no headers), and
//! reconnecting by itself with Last-Event-ID when the server restarts.
//!
//! Needs node and `tests/clients/eventsource/node_modules` (scripts/test installs both). Outside
//! CI a machine without them skips loudly; in CI (`CI` set) their absence fails the test.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::common::{TestServer, both_backends};

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/eventsource")
}

/// Whether the stock client can run here.
fn client_available() -> bool {
    let installed = client_dir().join("node_modules/eventsource").is_dir();
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if installed && node {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI must run the EventSource interop tests, but node or tests/clients/eventsource/node_modules is missing (scripts/test installs them)"
        );
    }
    eprintln!("SKIPPED: the stock EventSource client is not installed. Run scripts/test (it installs node and the npm client).");
    false
}

struct Follower {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Follower {
    fn start(url: &str, events: usize) -> Self {
        let mut child = Command::new("node")
            .arg(client_dir().join("follow.mjs"))
            .arg(url)
            .arg(events.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, lines }
    }

    /// The client's next report.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(15), self.lines.next_line())
            .await
            .expect("the client reports in time")
            .expect("read")
            .expect("the client is still running");
        serde_json::from_str(&line).expect("a JSON line")
    }

    async fn opened(&mut self) {
        loop {
            let report = self.next().await;
            if report["open"] == true {
                return;
            }
        }
    }

    /// The next `n` events, as (id, type), passing over connection reports.
    async fn events(&mut self, n: usize) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            let report = self.next().await;
            if let Some(id) = report["id"].as_str() {
                out.push((id.parse().expect("numeric id"), report["type"].as_str().unwrap_or_default().to_string()));
            }
        }
        out
    }
}

both_backends! {
async fn a_stock_eventsource_follows_the_stream_and_resumes_exactly_after_a_restart(b: Backend) {
    if !client_available() {
        return;
    }
    let s = TestServer::start(b).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Browser").await;
    let agent = s.user(&admin, "agent").await;
    s.add_member(&admin, &ws, &agent, "agent").await;
    let issued = s.post("/api/auth/stream-token", &agent.token, json!({ "workspace_id": ws })).await;
    let token = issued.ok(200)["token"].as_str().unwrap().to_string();
    let url = format!("{}/api/workspaces/{ws}/events?access_token={token}", s.base);

    let mut client = Follower::start(&url, 7);
    client.opened().await;
    for i in 0..3 {
        s.ticket(&agent, &ws, json!({ "title": format!("before {i}") })).await;
    }
    let before = client.events(3).await;
    assert!(before.iter().all(|(_, kind)| kind == "ticket.created"));
    let first = before[0].0;
    assert_eq!(before.iter().map(|e| e.0).collect::<Vec<_>>(), (first..first + 3).collect::<Vec<_>>());

    // The server goes away and comes back on the same address. Three writes land before
    // the client's retry delay (3 s) is over; it must get exactly those, then the live tail.
    let s = s.restart_in_place().await;
    for i in 0..3 {
        s.ticket(&agent, &ws, json!({ "title": format!("while away {i}") })).await;
    }
    client.opened().await;
    s.ticket(&agent, &ws, json!({ "title": "after" })).await;
    let after = client.events(4).await;
    assert_eq!(after.iter().map(|e| e.0).collect::<Vec<_>>(), (first + 3..first + 7).collect::<Vec<_>>(), "no gap, no duplicate");
    let status = tokio::time::timeout(Duration::from_secs(10), client.child.wait()).await.expect("the client exits").expect("status");
    assert!(status.success());
    s.stop().await;
}
}
