//! The command line, run as a second process on the data directory of a running server.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::common::{Backend, PASSWORD, TestServer, relaxed_limits};

async fn edgedesk(data: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgedesk"))
        .args(args)
        .env("EDGEDESK_DATA_DIR", data)
        .env("EDGEDESK_BCRYPT_COST", "4")
        .env_remove("EDGEDESK_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cli runs");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test]
async fn users_and_workspaces_made_on_the_command_line_work_over_http() {
    let s = TestServer::start_with(Backend::Sqlite, relaxed_limits(), |c| c.auth_cache_ttl = Duration::from_millis(300)).await;
    let data = s.data_dir();
    let (ok, out, err) =
        edgedesk(&data, &["user", "create", "--admin", "--email", "ops@example.com", "--name", "Ops"], Some(&format!("{PASSWORD}\n")))
            .await;
    assert!(ok, "{err}");
    assert!(out.contains("ops@example.com") && out.contains("administrator"));
    let (ok, _, err) = edgedesk(&data, &["user", "create", "--email", "weak@example.com", "--name", "Weak"], Some("short\n")).await;
    assert!(!ok && err.contains("password"), "{err}");

    let (ok, out, err) = edgedesk(&data, &["tenant", "create", "Night shift", "--owner", "ops@example.com"], None).await;
    assert!(ok, "{err}");
    let ws = out.split('\t').next().unwrap().trim().to_string();
    let (ok, listed, _) = edgedesk(&data, &["tenant", "list"], None).await;
    assert!(ok && listed.contains(&ws) && listed.contains("Night shift"));
    let (ok, _, err) = edgedesk(&data, &["tenant", "create", "X", "--owner", "nobody@example.com"], None).await;
    assert!(!ok && err.contains("nobody@example.com"));

    // The running server sees both at once.
    let token = s.login("ops@example.com", PASSWORD).await.ok(200)["token"].as_str().unwrap().to_string();
    let mine = s.get("/api/workspaces", &token).await;
    assert_eq!(mine.ok(200)[0]["id"], ws.as_str());
    s.ticket(
        &crate::common::User { id: String::new(), email: String::new(), token: token.clone() },
        &ws,
        json!({ "title": "from the CLI's workspace" }),
    )
    .await;

    // A password changed on the command line ends the sessions; the server notices within its cache lifetime.
    let (ok, _, err) = edgedesk(&data, &["user", "set-password", "--email", "ops@example.com"], Some("another long password\n")).await;
    assert!(ok, "{err}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.get("/api/me", &token).await.problem(401);
    s.login("ops@example.com", "another long password").await.ok(200);

    let (ok, out, err) = edgedesk(&data, &["migrate"], None).await;
    assert!(ok && out.contains("1 workspace"), "{out}{err}");
    s.stop().await;
}

#[tokio::test]
async fn settings_come_from_a_toml_file_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edgedesk.toml");
    std::fs::write(&file, format!("EDGEDESK_DATA_DIR = \"{}\"\n", dir.path().join("from-file").display())).unwrap();
    let (ok, _, err) = edgedesk(&dir.path().join("unused"), &["--config", file.to_str().unwrap(), "tenant", "list"], None).await;
    // EDGEDESK_DATA_DIR from the environment wins over the file.
    assert!(ok, "{err}");
    assert!(dir.path().join("unused").join("platform.db").exists());
    let out = Command::new(env!("CARGO_BIN_EXE_edgedesk"))
        .args(["--config", file.to_str().unwrap(), "tenant", "list"])
        .env_remove("EDGEDESK_DATA_DIR")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("from-file").join("platform.db").exists());
    let out = Command::new(env!("CARGO_BIN_EXE_edgedesk")).args(["serve"]).env("EDGEDESK_LISTEN", "not an address").output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("EDGEDESK_LISTEN"));
}

#[tokio::test]
async fn attachment_usage_is_recounted_against_the_objects_and_orphans_swept_from_the_command_line() {
    let s = crate::common::TestServer::start(crate::common::Backend::Sqlite).await;
    let admin = s.admin().await;
    let ws = s.workspace(&admin, "Files").await;
    let ticket = s.ticket(&admin, &ws, serde_json::json!({ "title": "t" })).await["id"].as_str().unwrap().to_string();
    let path = format!("/api/workspaces/{ws}/tickets/{ticket}/attachments?name=a.png");
    let res = crate::attachments::upload(&s, &admin.token, &path, "image/png", crate::attachments::png(1_234)).await;
    assert_eq!(res.status(), 201);
    let data = s.data_dir();
    let (ok, out, err) = edgedesk(&data, &["attachments", "recount", &ws], None).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("{ws}\tused 1234 bytes\tobjects with rows 1234 bytes"));
    let (ok, out, err) = edgedesk(&data, &["attachments", "sweep"], None).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("{ws}\t0 orphaned object(s) removed"));
    // An object lost behind the server's back: the recount says so, and fails.
    let blobs = data.join("tenants").join(&ws).join("blobs");
    let att = std::fs::read_dir(&blobs).unwrap().next().unwrap().unwrap().path();
    for version in std::fs::read_dir(&att).unwrap() {
        std::fs::remove_file(version.unwrap().path()).unwrap();
    }
    let (ok, _, err) = edgedesk(&data, &["attachments", "recount"], None).await;
    assert!(!ok && err.contains("objects do not match"), "{err}");
    s.stop().await;
}
