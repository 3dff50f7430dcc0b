//! Group commit: one workspace's writes, queued in-process and committed together.
//!
//! SQLite admits one writer per file, and a commit costs the same whether it carries one
//! write or fifty. So each workspace has a queue; whoever finds it idle starts a drain job
//! on the SQLite workers, which takes everything queued (up to [`MAX_BATCH`]) and runs each
//! write in its own SAVEPOINT inside one `BEGIN IMMEDIATE` … `COMMIT`:
//! - a write that fails (or forgets its sync action) is rolled back to its savepoint alone
//!   and answered at once; the others go on;
//! - the rest are answered only after the COMMIT, so a 2xx still means durable, and if the
//!   COMMIT fails they all get the error and none of them happened;
//! - sync ids are handed out in queue order inside the one transaction: commit order is
//!   still id order.
//!
//! After each batch the drain re-queues itself on the workers instead of looping, so a
//! workspace under constant load cannot keep a worker thread from everyone else.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use rusqlite::{Transaction, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use super::error;
use super::executor::Executor;
use super::hints::{LogHints, WorkspaceHint};
use super::log::WriteTx;
use super::pool::SqlitePool;
use crate::store::{StoreError, StoreResult, Wakeup, WorkspaceId};

/// Writes per transaction at most: bounds how long the first of them waits for its answer.
pub const MAX_BATCH: usize = 256;
/// Writes queued per workspace at most: beyond, a write is refused at once (503) instead of
/// waiting behind a backlog that only grows.
pub const MAX_QUEUED: usize = 4 * MAX_BATCH;

/// Delivers a successful write's answer once the batch's COMMIT has succeeded or failed.
type Finish = Box<dyn FnOnce(StoreResult<()>) + Send>;

/// A queued write, type-erased.
trait Pending: Send {
    /// Runs the write in a savepoint. `Some` when it succeeded (answer after COMMIT, and
    /// whether it recorded events), `None` when it failed and has been answered already.
    fn run(self: Box<Self>, tx: &mut Transaction<'_>) -> Option<(Finish, bool)>;
    /// The batch could not start (no connection, no write lock): answer with `err`.
    fn fail(self: Box<Self>, err: StoreError);
}

struct Job<T, F> {
    write: F,
    answer: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Pending for Job<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut WriteTx<'_>) -> StoreResult<T> + Send,
{
    fn run(self: Box<Self>, tx: &mut Transaction<'_>) -> Option<(Finish, bool)> {
        let Job { write, answer } = *self;
        let outcome = WriteTx::begin(tx).and_then(|mut w| {
            let value = write(&mut w)?;
            let recorded = w.recorded() > 0;
            w.release()?;
            Ok((value, recorded))
        });
        match outcome {
            Ok((value, recorded)) => {
                let finish: Finish = Box::new(move |committed: StoreResult<()>| {
                    // The caller may have gone away; the write stands regardless.
                    let _ = answer.send(committed.map(|()| value));
                });
                Some((finish, recorded))
            }
            Err(err) => {
                let _ = answer.send(Err(err));
                None
            }
        }
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.answer.send(Err(err));
    }
}

#[derive(Default)]
struct State {
    pending: VecDeque<Box<dyn Pending>>,
    /// A drain job is queued or running; pushers leave the work to it.
    draining: bool,
}

/// One workspace's write queue.
pub struct WriteQueue {
    /// A std mutex: held for queue operations only, never across an await or a statement.
    state: Mutex<State>,
    workspace: WorkspaceId,
    /// Told after every commit that recorded events: the in-process half of the change feed.
    wakeups: broadcast::Sender<Wakeup>,
    /// This workspace's hint in platform.db (see `hints.rs`).
    hint: WorkspaceHint,
}

impl WriteQueue {
    pub fn new(workspace: WorkspaceId, wakeups: broadcast::Sender<Wakeup>, hints: Arc<LogHints>) -> Self {
        Self { state: Mutex::default(), workspace, wakeups, hint: WorkspaceHint::new(workspace, hints) }
    }

    pub fn hint(&self) -> &WorkspaceHint {
        &self.hint
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `write` and awaits its answer, starting a drain if none is under way.
    pub async fn submit<T, F>(self: &Arc<Self>, exec: &Arc<Executor>, pool: &SqlitePool, write: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (answer, result) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            if state.pending.len() >= MAX_QUEUED {
                return Err(StoreError::Unavailable(format!("{MAX_QUEUED} writes are already waiting in this workspace")));
            }
            state.pending.push_back(Box::new(Job { write, answer }));
            !std::mem::replace(&mut state.draining, true)
        };
        if start {
            drain_later(self.clone(), exec.clone(), pool.clone());
        }
        result.await.map_err(|_| StoreError::Internal("a queued write was dropped".into()))?
    }

    /// The next batch; empty (and the queue marked idle) when nothing is waiting.
    fn take(&self) -> Vec<Box<dyn Pending>> {
        let mut state = self.lock();
        if state.pending.is_empty() {
            state.draining = false;
            return Vec::new();
        }
        let n = state.pending.len().min(MAX_BATCH);
        state.pending.drain(..n).collect()
    }
}

fn drain_later(queue: Arc<WriteQueue>, exec: Arc<Executor>, pool: SqlitePool) {
    let worker = exec.clone();
    worker.submit(move || {
        let batch = queue.take();
        if batch.is_empty() {
            return;
        }
        if commit_batch(&pool, batch, &queue.hint) {
            // No receivers is fine: nobody follows this workspace right now.
            let _ = queue.wakeups.send(Wakeup::Workspace(queue.workspace));
        }
        drain_later(queue, exec, pool);
    });
}

/// Runs and commits one batch; `true` when events were committed.
fn commit_batch(pool: &SqlitePool, batch: Vec<Box<dyn Pending>>, hint: &WorkspaceHint) -> bool {
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(err) => {
            batch.into_iter().for_each(|job| job.fail(StoreError::Unavailable(err.to_string())));
            return false;
        }
    };
    // Take the file's write lock up front, not at the first write: ids follow commit order.
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(err) => {
            let err = error(err);
            batch.into_iter().for_each(|job| job.fail(err.clone()));
            return false;
        }
    };
    let mut finishes = Vec::with_capacity(batch.len());
    let mut recorded = false;
    for job in batch {
        // A panicking write unwinds through its savepoint (rolled back on drop) and is
        // answered by its dropped channel; the batch goes on.
        if let Ok(Some((finish, events))) = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&mut tx))) {
            finishes.push(finish);
            recorded |= events;
        }
    }
    if recorded {
        // Under the write lock, before the COMMIT: a crash after it cannot lose the hint.
        hint.mark();
    }
    let committed = tx.commit().map_err(error);
    let ok = committed.is_ok();
    for finish in finishes {
        finish(committed.clone());
    }
    ok && recorded
}
