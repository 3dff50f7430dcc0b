//! kill -9 between an upload's object and its row: the server process is killed while the
//! row's write waits on a lock the test holds (the workspace's SQLite write lock, or its
//! Postgres quota row), after the object is whole on disk. After the kill there is an
//! object and no row; the sweep leaves it while it may still be an upload in flight, removes
//! it when told to, and the restarted server shows nothing of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::process::Command;

use crate::common::{PgDatabase, both_backends};
use crate::crash::{process_fixture, spawn_server};
use crate::notes_crash::seed;

const WAIT: Duration = Duration::from_secs(15);

/// The files under the workspace's blob folder: (whole objects, temporary ones).
fn objects(blobs: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut whole, mut temp) = (Vec::new(), Vec::new());
    for dir in std::fs::read_dir(blobs).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().to_string();
            if uuid::Uuid::parse_str(&name).is_ok() { whole.push(file.path()) } else { temp.push(file.path()) }
        }
    }
    (whole, temp)
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Holds what the row's write needs until dropped.
#[allow(dead_code, reason = "held for what its drop releases")]
enum Lock {
    Sqlite(std::sync::mpsc::Sender<()>),
    Postgres(tokio_postgres::Client),
}

async fn lock_the_row(data: &Path, ws: &str, pg: Option<&PgDatabase>) -> Lock {
    match pg {
        None => {
            let path = data.join("tenants").join(ws).join("tenant.db");
            let (release, released) = std::sync::mpsc::channel::<()>();
            let (locked, is_locked) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                let db = rusqlite::Connection::open(path).unwrap();
                db.busy_timeout(Duration::from_secs(10)).unwrap();
                db.execute_batch("BEGIN IMMEDIATE").unwrap();
                locked.send(()).unwrap();
                let _ = released.recv();
                let _ = db.execute_batch("ROLLBACK");
            });
            is_locked.await.unwrap();
            Lock::Sqlite(release)
        }
        Some(pg) => {
            let (su, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            su.batch_execute(&format!("BEGIN; SELECT 1 FROM storage_quota WHERE workspace_id = '{ws}' FOR UPDATE")).await.unwrap();
            Lock::Postgres(su)
        }
    }
}

async fn cli(data: &Path, pg: Option<&PgDatabase>, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgedesk"));
    if let Some(pg) = pg {
        command.env("EDGEDESK_DATABASE_URL", &pg.app_url).env("EDGEDESK_ADMIN_DATABASE_URL", &pg.admin_url);
    }
    let out = command.arg("attachments").args(args).env("EDGEDESK_DATA_DIR", data).env("RUST_LOG", "warn").output().await.unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

both_backends! {
    async fn a_kill_between_object_and_row_leaves_an_orphan_that_the_sweep_removes(b: Backend) {
        let (pg, dir, http) = process_fixture(b).await;
        let data = dir.path().join("data");
        let (mut child, base) = spawn_server(&data, pg.as_ref()).await;
        let (token, ws, ticket) = seed(&http, &base).await;
        let blobs = data.join("tenants").join(&ws).join("blobs");
        let url = format!("{base}/api/workspaces/{ws}/tickets/{ticket}/attachments?name=crash.bin");

        // The upload starts: its reservation is taken and its temporary file open.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let upload = tokio::spawn({
            let (http, token) = (http.clone(), token.clone());
            async move { http.post(url).bearer_auth(token).body(body).send().await }
        });
        tx.send(Ok(Bytes::from(vec![1u8; 64 * 1024]))).await.unwrap();
        until("the upload's temporary file", || !objects(&blobs).1.is_empty()).await;

        // The row's write will wait on the test; the rest of the body goes up.
        let lock = lock_the_row(&data, &ws, pg.as_ref()).await;
        tx.send(Ok(Bytes::from(vec![2u8; 64 * 1024]))).await.unwrap();
        drop(tx);
        until("the whole object", || objects(&blobs).0.len() == 1).await;
        child.start_kill().expect("SIGKILL");
        child.wait().await.unwrap();
        drop(lock);
        assert!(upload.await.unwrap().is_err(), "the upload was never answered");
        let (whole, temp) = objects(&blobs);
        assert_eq!((whole.len(), temp.len()), (1, 0), "an object without its row");
        assert_eq!(std::fs::metadata(&whole[0]).unwrap().len(), 128 * 1024);

        // The rows agree with the objects they name; the sweep keeps a young object (it
        // could be an upload in flight) and removes it when told no server runs.
        let recount = cli(&data, pg.as_ref(), &["recount", &ws]).await;
        assert!(recount.contains("used 0 bytes"), "{recount}");
        let kept = cli(&data, pg.as_ref(), &["sweep", &ws]).await;
        assert!(kept.contains("0 orphaned object(s) removed"), "{kept}");
        assert!(whole[0].exists());
        let swept = cli(&data, pg.as_ref(), &["sweep", &ws, "--min-age-secs", "0"]).await;
        assert!(swept.contains("1 orphaned object(s) removed"), "{swept}");
        assert!(!whole[0].exists(), "the orphan is gone");

        // The restarted server shows nothing of it and takes the upload again.
        let (_child, base) = spawn_server(&data, pg.as_ref()).await;
        let list = format!("{base}/api/workspaces/{ws}/tickets/{ticket}/attachments");
        let listed: serde_json::Value = http.get(&list).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        assert_eq!(listed, serde_json::json!([]));
        let again = http.post(format!("{list}?name=crash.bin")).bearer_auth(&token).body(vec![3u8; 1000]).send().await.unwrap();
        assert_eq!(again.status(), 201);
        let storage: serde_json::Value =
            http.get(format!("{base}/api/workspaces/{ws}/storage")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        assert_eq!(storage["used"], 1000);
    }
}
