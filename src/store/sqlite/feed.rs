//! Wakeups for the SQLite backend: an in-process signal after each commit (sent by the
//! writer), and a file watcher on `tenants/`, so that a commit made by another process on
//! the same data directory (the CLI, a restored or copied-in workspace) wakes the same path.
//!
//! A commit appends to `tenant.db-wal` (or rewrites `tenant.db` at a checkpoint), so a
//! change to either file of `tenants/<id>/` is a wakeup for workspace `<id>`. The watcher
//! also sees this process's own commits; consumers coalesce wakeups, so that costs a read.
//!
//! The WAL write is reported as the frames land, a moment *before* the commit becomes
//! visible to readers (SQLite publishes it in the mmapped `-shm` index, which inotify does
//! not report). A reader woken at once can miss it, so every file wakeup is repeated once
//! [`TRAILING`] later, coalesced per workspace, on one small thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::broadcast;

use crate::store::{Wakeup, WorkspaceId};

/// How long after a file change its trailing wakeup follows.
pub const TRAILING: std::time::Duration = std::time::Duration::from_millis(50);

/// Wakeups buffered per receiver; a receiver that falls further behind sees `Lagged` and
/// must treat it as [`Wakeup::Any`].
pub const CAPACITY: usize = 1024;

/// The workspace a changed path belongs to, if it is one of a tenant's database files.
pub fn workspace_of(path: &Path) -> Option<WorkspaceId> {
    let name = path.file_name()?.to_str()?;
    if !matches!(name, "tenant.db" | "tenant.db-wal") {
        return None;
    }
    path.parent()?.file_name()?.to_str()?.parse().ok()
}

/// Whether a file event can mean a commit: data written to a database file, or a
/// database file appearing (a workspace copied in). Not the WAL file being created, its
/// metadata changing, or anything a reader does: opening a workspace creates its WAL, and a
/// wakeup for that would make a consumer open it again, round and round, once more
/// workspaces are busy than the store keeps open.
fn is_change(event: &notify::Event) -> bool {
    use notify::event::ModifyKind;
    match event.kind {
        EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => true,
        EventKind::Create(_) => event.paths.iter().any(|p| p.file_name().is_some_and(|n| n == "tenant.db")),
        _ => false,
    }
}

/// The file watcher: on `tenants/` itself (to see workspaces appear) and on each
/// workspace's folder, not below it: a recursive watch would take an inotify watch per
/// attachment folder under `blobs/` and an event per block of every file written there.
pub struct FileWatch {
    _watcher: Arc<Mutex<RecommendedWatcher>>,
}

fn add_watch(watcher: &Mutex<RecommendedWatcher>, dir: &Path) {
    let mut watcher = watcher.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %err, dir = %dir.display(), "cannot watch a workspace folder: changes made there by other processes will not be pushed live");
    }
}

/// Watches `tenants_dir` and every workspace folder in it, now and as they appear. `None`
/// when the platform refuses (e.g. out of inotify watches): then only this process's own
/// commits wake consumers, which is logged.
pub fn watch(tenants_dir: &Path, wakeups: broadcast::Sender<Wakeup>) -> Option<FileWatch> {
    let changed = trailing(wakeups.clone());
    let (folders, appeared) = std::sync::mpsc::channel::<PathBuf>();
    let root = tenants_dir.to_owned();
    let on_change = changed.clone();
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            if let EventKind::Create(_) = event.kind {
                for path in event.paths.iter().filter(|p| p.parent() == Some(root.as_path()) && p.is_dir()) {
                    let _ = folders.send(path.clone());
                }
            }
            if is_change(&event) {
                for ws in event.paths.iter().filter_map(|p| workspace_of(p)) {
                    let _ = on_change.send(ws);
                }
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "file watcher error; waking every follower");
            let _ = wakeups.send(Wakeup::Any);
        }
    };
    let started = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(tenants_dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    let watcher = match started {
        Ok(watcher) => Arc::new(Mutex::new(watcher)),
        Err(err) => {
            tracing::warn!(error = %err, dir = %tenants_dir.display(), "cannot watch the data directory: changes made by other processes will not be pushed live");
            return None;
        }
    };
    for entry in std::fs::read_dir(tenants_dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            add_watch(&watcher, &entry.path());
        }
    }
    // Folders that appear get their watch here (the handler cannot reach its own watcher).
    // The thread ends with the watcher: its handler holds the sending side.
    let weak = Arc::downgrade(&watcher);
    let spawned = std::thread::Builder::new().name("tenant-watch".into()).spawn(move || {
        while let Ok(dir) = appeared.recv() {
            let Some(watcher) = weak.upgrade() else { return };
            add_watch(&watcher, &dir);
            // Its database may have been written before the watch was there. Not yet made
            // (a workspace being created): the watch now reports it when it is, and a wakeup
            // before then would send consumers to a file that is not there, to back off.
            if let Some(ws) = dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok())
                && dir.join("tenant.db").exists()
            {
                let _ = changed.send(ws);
            }
        }
    });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the folder-watch thread; workspaces created by other processes are not watched");
    }
    Some(FileWatch { _watcher: watcher })
}

/// Forwards each changed workspace as a wakeup at once and again [`TRAILING`] later (one
/// trailing wakeup per workspace however many changes came meanwhile). The thread ends
/// when the watcher, which holds the sender, is dropped.
fn trailing(wakeups: broadcast::Sender<Wakeup>) -> std::sync::mpsc::Sender<WorkspaceId> {
    use std::collections::HashMap;
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::{Duration, Instant};

    let (changed, receiver) = std::sync::mpsc::channel::<WorkspaceId>();
    let spawned = std::thread::Builder::new().name("wal-watch".into()).spawn(move || {
        let mut due: HashMap<WorkspaceId, Instant> = HashMap::new();
        loop {
            let wait = due.values().min().map_or(Duration::from_secs(3600), |at| at.saturating_duration_since(Instant::now()));
            match receiver.recv_timeout(wait) {
                Ok(ws) => {
                    // No receivers is fine: nobody is following right now.
                    let _ = wakeups.send(Wakeup::Workspace(ws));
                    due.entry(ws).or_insert_with(|| Instant::now() + TRAILING);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            due.retain(|ws, at| {
                if *at > now {
                    return true;
                }
                let _ = wakeups.send(Wakeup::Workspace(*ws));
                false
            });
        }
    });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, "cannot start the file-wakeup thread");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tenant_database_files_name_a_workspace() {
        let ws = WorkspaceId::new();
        let dir = Path::new("/data/tenants").join(ws.to_string());
        assert_eq!(workspace_of(&dir.join("tenant.db-wal")), Some(ws));
        assert_eq!(workspace_of(&dir.join("tenant.db")), Some(ws));
        assert_eq!(workspace_of(&dir.join("tenant.db-shm")), None);
        assert_eq!(workspace_of(&dir.join("blobs/x")), None);
        assert_eq!(workspace_of(Path::new("/data/tenants/not-a-uuid/tenant.db")), None);
    }
}
