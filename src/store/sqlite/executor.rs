//! The threads that run SQLite work: a small fixed set draining one FIFO queue.
//!
//! Why not `spawn_blocking` for every call: under load each call then wakes a parked
//! thread and each result wakes an async worker, and the pool grows to dozens of threads
//! that mostly sleep and wake. Measured on two cores, the server spent 40% of its time in
//! the kernel's context-switch paths. Here a thread that finishes a job takes the next
//! one from the queue without sleeping; jobs from every workspace share the queue, so
//! no workspace waits behind another's backlog for longer than its turn.
//!
//! Only short jobs belong here (a statement or a transaction). A bootstrap stream, which
//! a slow client can hold open for as long as it likes, runs on `spawn_blocking`.

use std::panic::AssertUnwindSafe;

use crossbeam_channel::{Sender, TrySendError, bounded};
use tokio::sync::oneshot;

use crate::store::{StoreError, StoreResult};

type Job = Box<dyn FnOnce() + Send>;

/// Jobs waiting at most: past this the store is overloaded and says so (503) rather than
/// queueing without end.
pub const QUEUE: usize = 16_384;

pub struct Executor {
    queue: Sender<Job>,
    threads: usize,
}

impl Executor {
    /// Starts `threads` workers named `name-N`; they exit when the executor is dropped.
    pub fn new(name: &str, threads: usize) -> Self {
        let (queue, jobs) = bounded::<Job>(QUEUE);
        for i in 0..threads {
            let jobs = jobs.clone();
            let spawned = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                for job in jobs.iter() {
                    job();
                }
            });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a SQLite worker thread");
            }
        }
        Self { queue, threads }
    }

    /// Enough threads to keep every core busy while some wait on a lock held by another
    /// process (the CLI), and few enough that they rarely sleep.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get()).saturating_mul(2).max(4)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues `f` without waiting for it (it must deliver its own results).
    pub fn submit(&self, f: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(move || {
            if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
                tracing::error!("a queued SQLite job panicked");
            }
        });
        // Only write-queue drains come through here, at most one per workspace: waiting for
        // room (back-pressure) rather than dropping them, since their writes are promised.
        if self.queue.send(job).is_err() {
            tracing::error!("the SQLite workers have stopped; a job was dropped");
        }
    }

    /// Runs `f` on a worker and awaits its result. A panic in `f` becomes an error and
    /// the worker lives on.
    pub async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> StoreResult<T> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
            // The caller may have gone away; then nobody needs the result.
            let _ = done.send(outcome);
        });
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => StoreError::Unavailable(format!("{QUEUE} SQLite jobs are already waiting")),
            TrySendError::Disconnected(_) => StoreError::Unavailable("the SQLite workers have stopped".into()),
        })?;
        match result.await {
            Ok(Ok(value)) => value,
            Ok(Err(_panic)) => Err(StoreError::Internal("a SQLite job panicked".into())),
            Err(_) => Err(StoreError::Internal("a SQLite job was dropped".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_panics() {
        let exec = Executor::new("test", 2);
        assert_eq!(exec.run(|| Ok(41 + 1)).await.unwrap(), 42);
        let err = exec.run(|| -> StoreResult<()> { panic!("boom") }).await.unwrap_err();
        assert!(matches!(err, StoreError::Internal(_)));
        let sums = futures::future::join_all((0..100).map(|i| exec.run(move || Ok(i * 2)))).await;
        assert_eq!(sums.into_iter().map(Result::unwrap).sum::<i32>(), 9900);
    }
}
