//! kill -9 during a write load: after restart every write that was acknowledged (2xx) is
//! there, and the log has no gaps.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::{Backend, PgDatabase, both_backends};

/// Starts the real binary on a free port over `data_dir` (and `pg`, in Postgres mode);
/// returns it and its base URL.
pub(crate) async fn spawn_server(data_dir: &std::path::Path, pg: Option<&PgDatabase>) -> (Child, String) {
    spawn_server_with(data_dir, pg, &[]).await
}

/// [`spawn_server`] with extra settings.
pub(crate) async fn spawn_server_with(data_dir: &std::path::Path, pg: Option<&PgDatabase>, envs: &[(&str, &str)]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgedesk"));
    command.envs(envs.iter().copied());
    if let Some(pg) = pg {
        command.env("EDGEDESK_DATABASE_URL", &pg.app_url).env("EDGEDESK_ADMIN_DATABASE_URL", &pg.admin_url);
    }
    let mut child = command
        .arg("serve")
        .env("EDGEDESK_DATA_DIR", data_dir)
        .env("EDGEDESK_LISTEN", "127.0.0.1:0")
        .env("EDGEDESK_BCRYPT_COST", "4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("server binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("server prints its address")
            .expect("read")
            .expect("line");
        if let Some(rest) = line.strip_prefix("edgedesk listening on ") {
            break rest.split_whitespace().next().expect("url").to_string();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base)
}

pub(crate) async fn json_call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.ok()?;
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    Some((status, body))
}

/// What a test of the server as a process needs: its database (Postgres), a data directory
/// and an HTTP client that gives up on a dead server.
pub(crate) async fn process_fixture(b: Backend) -> (Option<PgDatabase>, tempfile::TempDir, reqwest::Client) {
    let pg = match b {
        Backend::Postgres => Some(PgDatabase::create().await),
        Backend::Sqlite => None,
    };
    edgedesk::crypto::install_tls_provider();
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client");
    (pg, tempfile::tempdir().expect("temp dir"), http)
}

both_backends! {
async fn acknowledged_writes_survive_kill_9_and_the_log_has_no_gaps(b: Backend) {
    let (pg, dir, http) = process_fixture(b).await;
    let data = dir.path().join("data");
    let (mut child, base) = spawn_server(&data, pg.as_ref()).await;
    let password = "correct horse battery";
    json_call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/setup"),
        None,
        Some(json!({ "email": "a@example.com", "password": password, "name": "A" })),
    )
    .await
    .unwrap();
    let (_, login) = json_call(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/auth/login"),
        None,
        Some(json!({ "email": "a@example.com", "password": password })),
    )
    .await
    .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let (_, ws) = json_call(&http, reqwest::Method::POST, format!("{base}/api/workspaces"), Some(&token), Some(json!({ "name": "Load" })))
        .await
        .unwrap();
    let ws = ws["id"].as_str().unwrap().to_string();

    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, base, token, ws, acked) = (http.clone(), base.clone(), token.clone(), ws.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let url = format!("{base}/api/workspaces/{ws}/tickets");
                match json_call(&http, reqwest::Method::POST, url, Some(&token), Some(json!({ "title": format!("w{w} #{i}") }))).await {
                    Some((201, body)) => {
                        let id = body["id"].as_str().unwrap().to_string();
                        acked.lock().unwrap().push((id.clone(), body["version"].as_i64().unwrap()));
                        // Every other ticket also gets an update, so updates are tested too.
                        if i % 2 == 0 {
                            let url = format!("{base}/api/workspaces/{ws}/tickets/{id}");
                            if let Some((200, body)) =
                                json_call(&http, reqwest::Method::PATCH, url, Some(&token), Some(json!({ "status": "pending" }))).await
                            {
                                let mut acked = acked.lock().unwrap();
                                if let Some(entry) = acked.iter_mut().find(|(x, _)| *x == id) {
                                    entry.1 = body["version"].as_i64().unwrap();
                                }
                            }
                        }
                    }
                    _ => break, // the server is gone
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "the load ran ({} acknowledged)", acked.len());

    let (_child, base) = spawn_server(&data, pg.as_ref()).await;
    for (id, version) in &acked {
        let (status, body) =
            json_call(&http, reqwest::Method::GET, format!("{base}/api/workspaces/{ws}/tickets/{id}"), Some(&token), None).await.unwrap();
        assert_eq!(status, 200, "acknowledged ticket {id} is present after kill -9");
        assert!(body["version"].as_i64().unwrap() >= *version, "acknowledged update of {id} is present");
    }
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let (_, page) = json_call(
            &http,
            reqwest::Method::GET,
            format!("{base}/api/workspaces/{ws}/sync/delta?after={after}&limit=1000"),
            Some(&token),
            None,
        )
        .await
        .unwrap();
        ids.extend(page["events"].as_array().unwrap().iter().map(|e| e["sync_id"].as_i64().unwrap()));
        after = page["last_sync_id"].as_i64().unwrap();
        if page["has_more"] == false {
            break;
        }
    }
    let head = *ids.last().unwrap();
    assert_eq!(ids, (1..=head).collect::<Vec<_>>(), "the log has no gaps after the crash");
}
}
