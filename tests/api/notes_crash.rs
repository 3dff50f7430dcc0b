//! Notes survive SIGKILL: what one client saw reflected through another is there after the
//! server is killed and started again; on Postgres, two instances (real processes) edit one
//! note together, and a client of the survivor sees everything after the other is killed.

use std::time::Duration;

use serde_json::json;

use crate::common::{Backend, PgDatabase, both_backends};
use crate::crash::{json_call, process_fixture, spawn_server};
use crate::yclient::YClient;

const WAIT: Duration = Duration::from_secs(15);

/// An administrator, a workspace and a ticket on the server at `base`: (token, ws, ticket).
pub(crate) async fn seed(http: &reqwest::Client, base: &str) -> (String, String, String) {
    let post = |url: String, token: Option<String>, body: serde_json::Value| {
        let http = http.clone();
        async move { json_call(&http, reqwest::Method::POST, url, token.as_deref(), Some(body)).await.expect("answered").1 }
    };
    post(format!("{base}/api/setup"), None, json!({ "email": "a@example.com", "password": "correct horse battery", "name": "A" })).await;
    let login =
        post(format!("{base}/api/auth/login"), None, json!({ "email": "a@example.com", "password": "correct horse battery" })).await;
    let token = login["token"].as_str().expect("token").to_string();
    let ws =
        post(format!("{base}/api/workspaces"), Some(token.clone()), json!({ "name": "Notes" })).await["id"].as_str().unwrap().to_string();
    let ticket = post(format!("{base}/api/workspaces/{ws}/tickets"), Some(token.clone()), json!({ "title": "t" })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    (token, ws, ticket)
}

fn url(base: &str, ws: &str, ticket: &str) -> String {
    format!("{}/api/workspaces/{ws}/tickets/{ticket}/note", base.replacen("http://", "ws://", 1))
}

/// `n` edits through `a`, each a separate update, in one paragraph.
fn type_into(a: &YClient, n: usize) {
    for i in 0..n {
        a.insert(a.len(), &format!("{};", i));
    }
}

both_backends! {
    async fn edits_seen_by_another_client_survive_sigkill(b: Backend) {
        let (pg, dir, http) = process_fixture(b).await;
        let data = dir.path().join("data");
        let (mut child, base) = spawn_server(&data, pg.as_ref()).await;
        let (token, ws, ticket) = seed(&http, &base).await;
        let a = YClient::connect(&url(&base, &ws, &ticket), Some(&token)).await.unwrap();
        let watcher = YClient::connect(&url(&base, &ws, &ticket), Some(&token)).await.unwrap();
        type_into(&a, 500);
        watcher.wait_for("all 500 edits through the second client", WAIT, |w| w.xml() == a.xml()).await;
        let seen = watcher.text();
        child.start_kill().expect("SIGKILL");
        child.wait().await.unwrap();
        drop((a, watcher));
        let (_child, base) = spawn_server(&data, pg.as_ref()).await;
        let fresh = YClient::connect(&url(&base, &ws, &ticket), Some(&token)).await.expect("the note opens after kill -9");
        fresh.wait_text(&seen, WAIT).await;
        assert!(seen.ends_with("499;"), "{seen}");
    }
}

#[tokio::test]
async fn two_postgres_instances_edit_one_note_and_the_survivor_has_everything() {
    if !Backend::postgres_available() {
        return;
    }
    let (pg, dir, http) = process_fixture(Backend::Postgres).await;
    let pg: Option<PgDatabase> = pg;
    let (mut one, base_one) = spawn_server(&dir.path().join("one"), pg.as_ref()).await;
    let (_two, base_two) = spawn_server(&dir.path().join("two"), pg.as_ref()).await;
    let (token, ws, ticket) = seed(&http, &base_one).await;
    let a = YClient::connect(&url(&base_one, &ws, &ticket), Some(&token)).await.unwrap();
    let b = YClient::connect(&url(&base_two, &ws, &ticket), Some(&token)).await.unwrap();
    a.insert(0, "from one");
    b.wait_text("from one", WAIT).await;
    b.insert(8, ", from two");
    a.wait_text("from one, from two", WAIT).await;
    // Both at once.
    for i in 0..200 {
        a.insert(0, if i % 2 == 0 { "a" } else { "A" });
        b.insert(b.len(), if i % 2 == 0 { "b" } else { "B" });
    }
    a.wait_for("convergence across instances", WAIT, |a| a.xml() == b.xml() && a.len() == 18 + 400).await;
    let seen = a.text();
    one.start_kill().expect("SIGKILL");
    one.wait().await.unwrap();
    drop((a, b));
    let c = YClient::connect(&url(&base_two, &ws, &ticket), Some(&token)).await.unwrap();
    c.wait_text(&seen, WAIT).await;
}
