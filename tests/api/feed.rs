//! The change feed: commits wake consumers, whichever process or instance made them.

use std::time::Duration;

use edgedesk::store::sqlite::SqliteOptions;
use edgedesk::store::{Millis, Store, UserId, Wakeup, Workspace, WorkspaceId};
use tokio::sync::broadcast;

use crate::common::{Backend, PgDatabase, both_backends, kill_listeners};
use crate::store::{fresh_store, new_ticket};

/// Waits for a wakeup that covers `ws`; `false` after `within`.
async fn woken(rx: &mut broadcast::Receiver<Wakeup>, ws: WorkspaceId, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return false,
            Ok(Ok(Wakeup::Workspace(w))) if w == ws => return true,
            Ok(Ok(Wakeup::Any)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => return true,
            Ok(Ok(Wakeup::Workspace(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => return false,
        }
    }
}

/// Waits until `count` change-feed listeners are connected and LISTENing on `pg`'s database.
async fn listening(pg: &PgDatabase, count: i64) {
    let (su, connection) = tokio_postgres::connect(&pg.superuser_url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..200 {
        let n: i64 = su
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'edgedesk-listener' AND datname = current_database()
                 AND state = 'idle' AND (query LIKE 'LISTEN%' OR query = 'COMMIT')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{count} listener(s) never connected");
}

/// Drops wakeups already delivered (setup writes), so the next one is the test's.
fn drain(rx: &mut broadcast::Receiver<Wakeup>) {
    while rx.try_recv().is_ok() {}
}

async fn new_workspace(store: &Store, actor: UserId) -> WorkspaceId {
    let ws = Workspace { id: WorkspaceId::new(), name: "Feed".into(), created_at: Millis::now() };
    store.tenants.create(&ws, actor).await.unwrap();
    ws.id
}

both_backends! {
async fn a_commit_wakes_this_process(b: Backend) {
    // SQLite: with the file watcher off, so that only the in-process signal can wake (with
    // it on, the watcher alone would pass this test).
    let (store, _dir, pg) = match b {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let options = SqliteOptions { watch_files: false, ..SqliteOptions::new(8, Duration::from_secs(60)) };
            (edgedesk::store::sqlite::open(dir.path(), options).unwrap(), dir, None)
        }
        Backend::Postgres => fresh_store(b).await,
    };
    let mut rx = store.tenants.wakeups();
    if let Some(pg) = &pg {
        listening(pg, 1).await;
    }
    let actor = UserId::new();
    let ws = new_workspace(&store, actor).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drain(&mut rx);
    store.tenants.open(ws).await.unwrap().create_ticket(actor, new_ticket("wake up", actor)).await.unwrap();
    assert!(woken(&mut rx, ws, Duration::from_secs(5)).await, "a commit wakes consumers");
}
}

#[tokio::test]
async fn a_commit_by_another_process_on_the_data_dir_wakes_this_one() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions::new(8, Duration::from_secs(60));
    let ours = edgedesk::store::sqlite::open(dir.path(), options).unwrap();
    let actor = UserId::new();
    let ws = new_workspace(&ours, actor).await;
    // Another opener of the same files: its own connections, its own in-process signals
    // (as the CLI would have). Only the file watcher links the two.
    let theirs = edgedesk::store::sqlite::open(dir.path(), options).unwrap();
    let mut rx = ours.tenants.wakeups();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drain(&mut rx);
    theirs.tenants.open(ws).await.unwrap().create_ticket(actor, new_ticket("from elsewhere", actor)).await.unwrap();
    assert!(woken(&mut rx, ws, Duration::from_secs(5)).await, "the file watcher turns another process's commit into a wakeup");
}

/// The inotify watches this process holds (from /proc; each test runs in its own process).
fn inotify_watches() -> usize {
    let fds = std::fs::read_dir("/proc/self/fdinfo").unwrap();
    fds.flatten()
        .map(|fd| std::fs::read_to_string(fd.path()).unwrap_or_default().lines().filter(|l| l.starts_with("inotify wd:")).count())
        .sum()
}

#[tokio::test]
async fn the_watcher_covers_new_workspaces_but_not_their_attachment_folders() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions::new(8, Duration::from_secs(60));
    let ours = edgedesk::store::sqlite::open(dir.path(), options).unwrap();
    let theirs = edgedesk::store::sqlite::open(dir.path(), options).unwrap();
    let actor = UserId::new();
    // Created by the other opener after ours started watching.
    let ws = new_workspace(&theirs, actor).await;
    let mut rx = ours.tenants.wakeups();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drain(&mut rx);
    theirs.tenants.open(ws).await.unwrap().create_ticket(actor, new_ticket("new here", actor)).await.unwrap();
    assert!(woken(&mut rx, ws, Duration::from_secs(5)).await, "a workspace another process made is watched too");
    // Files written under the workspace's blobs/ take no watches and wake nobody.
    let before = inotify_watches();
    for _ in 0..20 {
        let folder = dir.path().join("tenants").join(ws.to_string()).join("blobs").join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(uuid::Uuid::new_v4().to_string()), vec![1u8; 300_000]).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inotify_watches(), before, "no watch per attachment folder");
    drain(&mut rx);
    assert!(!woken(&mut rx, ws, Duration::from_millis(300)).await, "writing attachment files is not a commit");
}

#[tokio::test]
async fn another_instance_wakes_this_one_even_after_the_listener_is_killed() {
    if !Backend::postgres_available() {
        return;
    }
    let pg = PgDatabase::create().await;
    let options = edgedesk::store::postgres::PgOptions {
        database_url: pg.app_url.clone(),
        admin_database_url: Some(pg.admin_url.clone()),
        allow_privileged_role: false,
        pool_size: 4,
        ca_file: None,
    };
    let one = edgedesk::store::postgres::open(&options).await.unwrap();
    let two = edgedesk::store::postgres::open(&options).await.unwrap();
    let mut rx = one.tenants.wakeups();
    listening(&pg, 2).await;
    drain(&mut rx);
    let actor = UserId::new();
    let ws = new_workspace(&two, actor).await;
    assert!(woken(&mut rx, ws, Duration::from_secs(5)).await, "a commit through instance two wakes instance one");

    // Kill every listener's connection and commit at once, most likely before they are
    // back: on reconnect each catches up on the heads that moved since its horizon, and
    // wakes exactly those workspaces, not everyone.
    let killed = kill_listeners(&pg).await;
    assert!(killed >= 2, "both instances' listeners were found and killed");
    drain(&mut rx);
    two.tenants.open(ws).await.unwrap().create_ticket(actor, new_ticket("while the listener is down", actor)).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Ok(w)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        seen.push(w);
    }
    assert!(seen.contains(&Wakeup::Workspace(ws)), "the commit made while the listener was down wakes its workspace: {seen:?}");
    assert!(!seen.contains(&Wakeup::Any), "a reconnect wakes what moved, not everything: {seen:?}");
    listening(&pg, 2).await;
    drain(&mut rx);
    two.tenants.open(ws).await.unwrap().create_ticket(actor, new_ticket("after the kill", actor)).await.unwrap();
    assert!(woken(&mut rx, ws, Duration::from_secs(5)).await, "wakeups flow again after the reconnect");
}
