//! Wakeups for the Postgres backend: one dedicated connection LISTENs on the channel the
//! `sync_actions` trigger notifies (schema/postgres/0002_notify.sql).
//!
//! A pooled connection would drop notifications, so the listener owns its connection and
//! reads them from `Connection::poll_message`. It never trusts a payload (there is none):
//! on a notification it asks which workspaces' heads moved, and wakes only those, so a
//! commit costs each instance work in proportion to what moved, not to how many
//! workspaces it follows.
//!
//! Which heads moved: every write transaction stamps its workspace's `log_heads` row with
//! its own transaction id. The listener keeps a *horizon*, the oldest transaction still
//! running when it last looked (`pg_snapshot_xmin`), and reads the rows stamped at or past
//! it (an index range). Everything older had finished and was seen then; anything newer
//! is read again next time, so a transaction that commits late is never missed. Rows read
//! again with an unchanged head wake nobody. The horizon survives reconnects, so catching
//! up after one is the same query; only the first connection of a process, which has no
//! horizon, sends [`Wakeup::Any`]. It reconnects after any failure with exponential backoff
//! and full jitter.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;

use crate::backoff::Backoff;
use crate::store::{Wakeup, WorkspaceId};

pub const CHANNEL: &str = "edgedesk_changes";
/// Wakeups buffered per receiver (see the SQLite feed).
pub const CAPACITY: usize = 1024;
/// The listener's `application_name`, so operators (and tests) can find its backend.
pub const APPLICATION_NAME: &str = "edgedesk-listener";

/// Reconnect delays: from 100 ms doubling to 30 s, with full jitter.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));

/// What the listener remembers across reconnects.
#[derive(Default)]
struct Seen {
    /// Rows stamped by transactions at or past this id may not have been seen yet.
    horizon: Option<i64>,
    /// The heads read at the last look (only rows at or past the horizon then).
    heads: HashMap<WorkspaceId, i64>,
}

/// Runs until aborted: listen, forward wakeups, reconnect on failure.
pub async fn listen(target: super::tls::PgTarget, wakeups: broadcast::Sender<Wakeup>) {
    let mut attempt = 0u32;
    let mut seen = Seen::default();
    loop {
        match listen_once(&target, &wakeups, &mut seen).await {
            Ok(()) => tracing::warn!("the change-feed connection closed; reconnecting"),
            Err(err) => tracing::warn!(error = %err, attempt, "the change-feed connection failed; reconnecting"),
        }
        let delay = BACKOFF.delay_now(attempt);
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay).await;
        // A connection that lived a while resets the backoff on its next failure.
        if delay >= BACKOFF.cap / 2 {
            attempt = attempt.min(8);
        }
    }
}

async fn listen_once(
    target: &super::tls::PgTarget,
    wakeups: &broadcast::Sender<Wakeup>,
    seen: &mut Seen,
) -> Result<(), tokio_postgres::Error> {
    let mut config = target.config.clone();
    config.application_name(APPLICATION_NAME);
    let (mut client, mut connection) = config.connect(target.tls.clone()).await?;
    let (notes, mut received) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled for anything to happen, including the LISTEN below.
    let pump = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notes.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Connected and listening: catch up on whatever happened while we were not.
    let first = seen.horizon.is_none();
    moved(&mut client, seen, wakeups).await?;
    if first {
        let _ = wakeups.send(Wakeup::Any);
    }
    while received.recv().await.is_some() {
        // Coalesce a burst into one look.
        while received.try_recv().is_ok() {}
        moved(&mut client, seen, wakeups).await?;
    }
    drop(client);
    match pump.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// Reads the heads that moved since the horizon, wakes their workspaces, and moves the
/// horizon on. One REPEATABLE READ transaction: the horizon and the rows are one snapshot.
async fn moved(
    client: &mut tokio_postgres::Client,
    seen: &mut Seen,
    wakeups: &broadcast::Sender<Wakeup>,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.build_transaction().read_only(true).isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
    // The look must be a range of the `changed` index, whatever the planner's statistics
    // say: a sequential scan would cost every look as much as there are workspaces.
    tx.batch_execute("SET LOCAL enable_seqscan = off").await?;
    let horizon: i64 = tx.query_one("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint", &[]).await?.try_get(0)?;
    let rows = match seen.horizon {
        Some(since) => tx.query("SELECT workspace_id, head FROM log_heads WHERE changed >= $1::text::xid8", &[&since.to_string()]).await?,
        None => Vec::new(),
    };
    tx.commit().await?;
    let mut heads = HashMap::with_capacity(rows.len());
    for row in rows {
        let (workspace, head): (WorkspaceId, i64) = (row.try_get(0)?, row.try_get(1)?);
        if seen.heads.get(&workspace) != Some(&head) {
            let _ = wakeups.send(Wakeup::Workspace(workspace));
        }
        heads.insert(workspace, head);
    }
    seen.horizon = Some(horizon);
    seen.heads = heads;
    Ok(())
}
