//! The stock npm clients (`yjs@13`, `y-websocket@3`'s `WebsocketProvider` over `ws`,
//! installed by scripts/test) against the note route, on both backends: two providers edit
//! one note concurrently, converge, and equal the server's text; a third joins later and
//! has it all; presence crosses between them.

use std::time::Duration;

use serde_json::Value;

use crate::common::both_backends;
use crate::notes::{note_token, setup, ws_base};

fn client_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/yjs")
}

/// Whether the npm client is installed (scripts/test installs it; in CI it must be).
fn installed() -> bool {
    if client_dir().join("node_modules/y-websocket").exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI must run the npm interop tests: tests/clients/yjs/node_modules is missing (scripts/test installs it)");
    }
    eprintln!("SKIPPED: the stock Yjs client is not installed (run scripts/test, or npm ci --prefix tests/clients/yjs)");
    false
}

both_backends! {
    async fn stock_yjs_providers_edit_one_note_together(b: Backend) {
        if !installed() {
            return;
        }
        let (s, admin, agent, ws, ticket) = setup(b).await;
        let tokens = [note_token(&s, &admin, &ws, &ticket).await, note_token(&s, &agent, &ws, &ticket).await, note_token(&s, &agent, &ws, &ticket).await];
        let server = format!("{}/api/workspaces/{ws}/tickets", ws_base(&s));
        let run = tokio::process::Command::new("node")
            .current_dir(client_dir())
            .arg("interop.mjs")
            .arg(&server)
            .arg(format!("{ticket}/note"))
            .args(&tokens)
            .arg("1000")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(120), run).await.expect("the npm clients finish").expect("node runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "node failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
        let result: Value = serde_json::from_str(stdout.lines().last().expect("a result line")).expect("json");
        assert_eq!(result["same_ab"], true, "{result}");
        assert_eq!(result["same_c"], true, "{result}");
        assert_eq!(result["xml_equal"], true, "{result}");
        assert_eq!(result["awareness"], true, "{result}");
        let text = result["text"].as_str().unwrap();
        assert!(!text.is_empty());
        // Every insert of both providers reached the server as its own stored update (a
        // delete of what the other side had just deleted changes nothing and is not kept).
        let (mut after, mut updates) = (0, 0);
        loop {
            let page = s.get(&format!("/api/workspaces/{ws}/sync/delta?after={after}&limit=1000"), &agent.token).await;
            let body = page.ok(200).clone();
            updates += body["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "note.updated").count();
            after = body["last_sync_id"].as_i64().unwrap();
            if !body["has_more"].as_bool().unwrap() {
                break;
            }
        }
        let inserts = result["inserts"].as_u64().unwrap() as usize;
        assert!(inserts > 1_000 && updates > inserts, "stored updates: {updates}, inserts: {inserts}");
        let read = s.get(&format!("/api/workspaces/{ws}/tickets/{ticket}/note"), &agent.token).await;
        assert_eq!(read.ok(200)["text"], text, "the server's projection is what the clients show");
        s.stop().await;
    }
}
