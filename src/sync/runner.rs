//! The consumer runner: the one drain loop for every subsystem that reacts to the log.
//!
//! A [`Consumer`] has a name and a handler over a page of events. The runner owns one
//! *lane* per (consumer, workspace) that has work: the lane reads the log past the
//! consumer's watermark a page at a time and hands each page to the handler with the
//! [`Advance`] it stands for.
//! - A durable consumer's watermark lives in the store; its handler writes its output and
//!   the advance in ONE transaction (through its own store trait), so its effects inside
//!   the database happen exactly once, across crashes and across instances (the advance
//!   is compare-and-set: a loser's transaction rolls back and its lane re-reads).
//! - An in-memory consumer (the live bus) follows the workspaces it asks for, from the
//!   position it gives; its watermark lives in the lane.
//!
//! Lanes wake on the store's payload-free wakeups for their workspace. A durable lane that
//! has been caught up for a while retires; a wakeup for its workspace starts it again. At
//! start, on [`Wakeup::Any`] and every [`SWEEP_EVERY`], the runner asks the store which
//! workspaces may be behind ([`ConsumerIndex::maybe_behind`]: hints or a heads-versus-
//! watermarks join, never a walk over every workspace) and starts their lanes; the same
//! tick also checks a bounded slice of all workspaces, the safety net for changes made
//! behind the server's back.
//!
//! Failures back off per lane with full jitter ([`crate::backoff`]). A store that is
//! unavailable is retried for as long as it takes. Any other error shrinks the page to the
//! single event at the watermark; if that one event fails [`MAX_ATTEMPTS`] times the
//! consumer stops in that workspace only (recorded in the store, shown in `/metrics` and
//! the log) instead of looping, and other workspaces go on. Consumers may ask to be woken
//! at a time; those requests are durable ([`ConsumerIndex::schedule`]). Everything stops
//! with the one shutdown token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::store::{Advance, ConsumerIndex, FeedEvent, Millis, StoreError, TenantStore, TenantStores, Wake, Wakeup, WorkspaceId};

/// Events read from the log per page.
pub const PAGE: usize = 256;
/// Tries of one event before its consumer stops in that workspace.
pub const MAX_ATTEMPTS: u32 = 8;
/// How often the runner looks for workspaces that may be behind and sweeps a slice of all
/// workspaces.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Workspaces checked per sweep tick beyond the ones that may be behind: the safety net for
/// changes made behind the server's back while it was down (a restored folder), which the
/// file watcher cannot have seen. Never on the start-up path; 10,000 workspaces take about
/// three hours to go round.
pub const SWEEP_SLICE: usize = 50;
/// A caught-up durable lane retires after this long without work (and the store may then
/// forget the workspace until it moves: see `ConsumerIndex::caught_up`).
pub const IDLE: Duration = Duration::from_secs(10);

/// How the runner paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Pauses between retries of a failing page.
    pub retry: Backoff,
    /// How long a caught-up durable lane waits for work before it retires.
    pub idle: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self { retry: RETRY, idle: IDLE }
    }
}
/// Durable lanes draining at once: a restart with many workspaces behind opens them a few
/// at a time instead of all at once.
pub const CONCURRENT_DRAINS: usize = 8;
/// Retry delays for a failing page: 50 ms doubling to 30 s (`EDGEDESK_CONSUMER_RETRY_CAP_MS`),
/// full jitter.
pub const RETRY: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(30));

/// Why a handler failed, and so what the runner does next.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The store: `Conflict` means the watermark moved elsewhere (re-read it), `Unavailable`
    /// is retried without end, anything else counts towards stopping.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The handler's own failure (a malformed event, a refused request): counts towards
    /// stopping.
    #[error("{0}")]
    Failed(String),
}

/// What a handler asks for after a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handled {
    /// Wake this consumer in this workspace at this time (durable).
    pub wake_at: Option<Millis>,
}

/// Where a durable consumer keeps its watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// In the store, advanced in the same transaction as the consumer's output.
    Store,
    /// With the consumer's own output outside the database (the search index keeps it in
    /// its commit), read through [`Consumer::position`]. The store knows nothing of it: its
    /// workspace hints and the sweep look at the other consumers only (such a consumer
    /// catches up when woken or asked), and an event that keeps failing never stops it: its
    /// output is a cache it can always rebuild, so it is retried at the capped backoff.
    Own,
}

/// A subsystem that reacts to the log.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// Unique among consumers; the key of its watermarks.
    fn name(&self) -> &'static str;
    /// Where its watermark lives (the store, unless it says otherwise).
    fn watermark(&self) -> Watermark {
        Watermark::Store
    }
    /// A [`Watermark::Own`] consumer's position in `tenant`'s workspace: every event up to
    /// it has been handled. A handler given an `advance.from` other than this answers
    /// `StoreError::Conflict`, and the lane asks again.
    async fn position(&self, _tenant: &Arc<dyn TenantStore>) -> Result<i64, ConsumerError> {
        Err(ConsumerError::Failed(format!("the watermark of {} is in the store", self.name())))
    }
    /// Handles `page` (the events after `advance.from`, in order, up to `advance.to`). A
    /// durable consumer writes its output and `advance` in one transaction (or calls
    /// `tenant.consumers().advance(advance)` when the page produced nothing); returning
    /// `Ok` means its watermark now stands at `advance.to`.
    async fn handle(&self, tenant: &Arc<dyn TenantStore>, page: &[FeedEvent], advance: Advance) -> Result<Handled, ConsumerError>;
    /// A wake it asked for came due.
    async fn on_wake(&self, _tenant: &Arc<dyn TenantStore>) -> Result<Handled, ConsumerError> {
        Ok(Handled::default())
    }
}

/// Counters per consumer, for `/metrics`.
#[derive(Default)]
pub struct ConsumerMetrics {
    pub events: AtomicU64,
    pub pages: AtomicU64,
    pub failures: AtomicU64,
    pub conflicts: AtomicU64,
}

/// A consumer stopped in one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    pub consumer: &'static str,
    pub workspace: WorkspaceId,
    pub at: i64,
    pub error: String,
}

/// One (consumer, workspace)'s shared state: how to wake it and whether it still runs.
struct LaneShared {
    consumer: Arc<dyn Consumer>,
    workspace: WorkspaceId,
    wake: Notify,
    stop: CancellationToken,
    /// In-memory lanes: the watermark (durable lanes read theirs from the store).
    memory: Option<AtomicI64>,
    running: AtomicBool,
    /// Set by [`Runner::reposition`]: read the watermark again before the next page.
    reread: AtomicBool,
}

type LaneKey = (&'static str, WorkspaceId);

/// The running lanes, by workspace first: a wakeup names a workspace, and finding its few
/// lanes must not cost in proportion to how many workspaces are followed.
#[derive(Default)]
struct Lanes(HashMap<WorkspaceId, Vec<Arc<LaneShared>>>);

impl Lanes {
    fn get(&self, (name, workspace): LaneKey) -> Option<&Arc<LaneShared>> {
        self.0.get(&workspace)?.iter().find(|l| l.consumer.name() == name)
    }

    /// Adds `lane`, replacing a retired one of the same key.
    fn insert(&mut self, lane: Arc<LaneShared>) {
        let lanes = self.0.entry(lane.workspace).or_default();
        lanes.retain(|l| l.consumer.name() != lane.consumer.name());
        lanes.push(lane);
    }

    /// Removes `lane` itself (not a newer lane of the same key).
    fn remove(&mut self, lane: &Arc<LaneShared>) {
        if let Some(lanes) = self.0.get_mut(&lane.workspace) {
            lanes.retain(|l| !Arc::ptr_eq(l, lane));
            if lanes.is_empty() {
                self.0.remove(&lane.workspace);
            }
        }
    }

    fn of(&self, workspace: WorkspaceId) -> impl Iterator<Item = &Arc<LaneShared>> {
        self.0.get(&workspace).into_iter().flatten()
    }

    fn all(&self) -> impl Iterator<Item = &Arc<LaneShared>> {
        self.0.values().flatten()
    }
}

/// A lane of an in-memory consumer; dropping it stops the lane.
pub struct Following {
    lane: Arc<LaneShared>,
    runner: Weak<Runner>,
}

impl Following {
    /// The watermark: every event up to it has been handed to the consumer.
    pub fn position(&self) -> i64 {
        self.lane.memory.as_ref().map_or(0, |m| m.load(Ordering::Acquire))
    }

    /// Drains now (as a wakeup for this workspace would).
    pub fn poke(&self) {
        self.lane.wake.notify_one();
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.lane.stop.cancel();
        if let Some(runner) = self.runner.upgrade() {
            runner.forget(&self.lane);
        }
    }
}

pub struct Runner {
    tenants: Arc<dyn TenantStores>,
    index: Arc<dyn ConsumerIndex>,
    durable: Vec<Arc<dyn Consumer>>,
    lanes: Mutex<Lanes>,
    metrics: HashMap<&'static str, Arc<ConsumerMetrics>>,
    stopped: Mutex<HashMap<LaneKey, Stopped>>,
    drains: Arc<Semaphore>,
    /// Reads of a workspace's log by any lane (the live bus's included): what a commit costs
    /// this instance, in the unit the store pays.
    reads: AtomicU64,
    pacing: Pacing,
    /// Told when this instance adds a schedule, so the sleep until the next one is redone.
    schedules: Notify,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    me: Weak<Runner>,
}

impl Runner {
    /// Starts the runner with its durable consumers; in-memory consumers join with
    /// [`follow`](Self::follow). Runs until `shutdown`; its tasks are tracked by `tasks`.
    pub fn start(
        tenants: Arc<dyn TenantStores>,
        index: Arc<dyn ConsumerIndex>,
        durable: Vec<Arc<dyn Consumer>>,
        pacing: Pacing,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        let metrics = durable.iter().map(|c| (c.name(), Arc::new(ConsumerMetrics::default()))).collect();
        let runner = Arc::new_cyclic(|me| Self {
            tenants,
            index,
            durable,
            lanes: Mutex::default(),
            metrics,
            stopped: Mutex::default(),
            drains: Arc::new(Semaphore::new(CONCURRENT_DRAINS)),
            reads: AtomicU64::new(0),
            pacing,
            schedules: Notify::new(),
            shutdown,
            tasks,
            me: me.clone(),
        });
        let wakeups = runner.tenants.wakeups();
        runner.tasks.spawn(runner.clone().route(wakeups));
        runner.tasks.spawn(runner.clone().sweep());
        runner.tasks.spawn(runner.clone().schedule_loop());
        runner
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn metrics(&self, consumer: &str) -> Option<Arc<ConsumerMetrics>> {
        self.metrics.get(consumer).cloned()
    }

    pub fn durable_names(&self) -> Vec<&'static str> {
        self.durable.iter().map(|c| c.name()).collect()
    }

    /// The names of the durable consumers whose watermarks the store keeps.
    pub fn stored_names(&self) -> Vec<&'static str> {
        self.stored().map(|c| c.name()).collect()
    }

    /// The durable consumers whose watermarks the store keeps (what its hints are about).
    fn stored(&self) -> impl Iterator<Item = &Arc<dyn Consumer>> {
        self.durable.iter().filter(|c| c.watermark() == Watermark::Store)
    }

    /// Consumers stopped in a workspace on this instance, for `/metrics`.
    pub fn stopped(&self) -> Vec<Stopped> {
        let mut out: Vec<Stopped> = self.stopped.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        out.sort_by_key(|s| (s.consumer, s.workspace));
        out
    }

    /// Lanes running now.
    pub fn lane_count(&self) -> usize {
        self.lanes().all().count()
    }

    /// The runner's Prometheus lines: per consumer, what went through and what failed, and
    /// one gauge per (consumer, workspace) stopped on this instance.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        type Counter = (&'static str, &'static str, fn(&ConsumerMetrics) -> u64);
        let counters: [Counter; 4] = [
            ("events", "Log events handled", |m| m.events.load(Ordering::Relaxed)),
            ("pages", "Pages of the log handled", |m| m.pages.load(Ordering::Relaxed)),
            ("failures", "Pages or events whose handler failed (each retry counts)", |m| m.failures.load(Ordering::Relaxed)),
            ("conflicts", "Pages another instance had handled first", |m| m.conflicts.load(Ordering::Relaxed)),
        ];
        let mut names = self.durable_names();
        names.sort();
        for (what, help, read) in counters {
            let _ = writeln!(out, "# HELP edgedesk_consumer_{what}_total {help}, per durable log consumer.");
            let _ = writeln!(out, "# TYPE edgedesk_consumer_{what}_total counter");
            for name in &names {
                if let Some(m) = self.metrics.get(name) {
                    let _ = writeln!(out, "edgedesk_consumer_{what}_total{{consumer=\"{name}\"}} {}", read(m));
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP edgedesk_consumer_log_reads_total Reads of a workspace's log by any consumer lane, live topics included."
        );
        let _ = writeln!(out, "# TYPE edgedesk_consumer_log_reads_total counter");
        let _ = writeln!(out, "edgedesk_consumer_log_reads_total {}", self.reads.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP edgedesk_consumer_lanes Log-consumer lanes (consumer, workspace) running on this instance.");
        let _ = writeln!(out, "# TYPE edgedesk_consumer_lanes gauge");
        let _ = writeln!(out, "edgedesk_consumer_lanes {}", self.lane_count());
        let _ = writeln!(out, "# HELP edgedesk_consumer_stopped A durable consumer stopped in a workspace at an event that kept failing.");
        let _ = writeln!(out, "# TYPE edgedesk_consumer_stopped gauge");
        for s in self.stopped() {
            let _ = writeln!(
                out,
                "edgedesk_consumer_stopped{{consumer=\"{}\",workspace=\"{}\",sync_id=\"{}\"}} 1",
                s.consumer, s.workspace, s.at
            );
        }
        out
    }

    /// Follows `tenant`'s workspace with an in-memory consumer from `from` (exclusive),
    /// until the returned handle is dropped.
    pub fn follow(&self, consumer: Arc<dyn Consumer>, tenant: Arc<dyn TenantStore>, from: i64) -> Following {
        let lane = Arc::new(LaneShared {
            workspace: tenant.workspace_id(),
            consumer,
            wake: Notify::new(),
            stop: self.shutdown.child_token(),
            memory: Some(AtomicI64::new(from)),
            running: AtomicBool::new(true),
            reread: AtomicBool::new(false),
        });
        // In-memory lanes are keyed apart from durable ones by their consumer's name.
        self.lanes().insert(lane.clone());
        // Catch up at once on anything committed since `from`.
        lane.wake.notify_one();
        self.tasks.spawn(drain(lane.clone(), Some(tenant), self.me.clone(), self.pacing));
        Following { lane, runner: self.me.clone() }
    }

    fn forget(&self, lane: &Arc<LaneShared>) {
        self.lanes().remove(lane);
    }

    /// Wakes (starting if needed) every durable lane of `workspace`, and its in-memory ones.
    pub fn wake(&self, workspace: WorkspaceId) {
        for consumer in &self.durable {
            self.wake_durable(consumer, workspace);
        }
        let lanes = self.lanes();
        for lane in lanes.of(workspace).filter(|l| l.memory.is_some()) {
            lane.wake.notify_one();
        }
    }

    fn wake_durable(&self, consumer: &Arc<dyn Consumer>, workspace: WorkspaceId) {
        let key = (consumer.name(), workspace);
        if self.stopped.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&key) {
            return;
        }
        let mut lanes = self.lanes();
        if let Some(lane) = lanes.get(key).filter(|l| l.running.load(Ordering::Acquire)) {
            lane.wake.notify_one();
            return;
        }
        let lane = Arc::new(LaneShared {
            consumer: consumer.clone(),
            workspace,
            wake: Notify::new(),
            stop: self.shutdown.child_token(),
            memory: None,
            running: AtomicBool::new(true),
            reread: AtomicBool::new(false),
        });
        lane.wake.notify_one();
        lanes.insert(lane.clone());
        drop(lanes);
        // The lane opens its workspace once it may drain (see CONCURRENT_DRAINS).
        self.tasks.spawn(drain(lane, None, self.me.clone(), self.pacing));
    }

    /// Starts the lanes of every workspace that may be behind.
    async fn catch_up(&self) {
        let names = self.stored_names();
        if names.is_empty() {
            return;
        }
        let mut after = None;
        loop {
            let page = match self.index.maybe_behind(&names, after, 500).await {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot list the workspaces that may be behind; the next sweep retries");
                    return;
                }
            };
            for ws in &page {
                self.wake(*ws);
            }
            match page.last() {
                Some(last) if page.len() == 500 => after = Some(*last),
                _ => return,
            }
        }
    }

    /// Routes the store's wakeups to lanes.
    async fn route(self: Arc<Self>, mut wakeups: broadcast::Receiver<Wakeup>) {
        loop {
            let wakeup = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                w = wakeups.recv() => w,
            };
            match wakeup {
                Ok(Wakeup::Workspace(ws)) => self.wake(ws),
                // Anything may have been missed: every in-memory lane drains, and the durable
                // ones of every workspace that may be behind start.
                Ok(Wakeup::Any) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    let all: Vec<Arc<LaneShared>> = self.lanes().all().filter(|l| l.memory.is_some()).cloned().collect();
                    all.iter().for_each(|l| l.wake.notify_one());
                    let me = self.clone();
                    self.tasks.spawn(async move { me.catch_up().await });
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// At start and every [`SWEEP_EVERY`]: the workspaces that may be behind; after each
    /// wait, a slice of all workspaces in turn.
    async fn sweep(self: Arc<Self>) {
        let mut cursor: Option<WorkspaceId> = None;
        loop {
            self.catch_up().await;
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            if !self.durable.is_empty() {
                match self.index.workspaces(cursor, SWEEP_SLICE).await {
                    Ok(slice) => {
                        cursor = if slice.len() == SWEEP_SLICE { slice.last().copied() } else { None };
                        for ws in slice {
                            self.check(ws).await;
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "the consumer sweep cannot list workspaces"),
                }
            }
        }
    }

    /// Starts the durable lanes of `workspace` if any is behind its head (the sweep's check
    /// of a workspace nothing pointed at).
    async fn check(&self, workspace: WorkspaceId) {
        let behind = async {
            let tenant = self.tenants.open(workspace).await?;
            let head = tenant.head().await?;
            for consumer in self.stored() {
                let state = tenant.consumers().state(consumer.name()).await?;
                if state.stopped.is_none() && state.position < head {
                    return Ok::<bool, StoreError>(true);
                }
            }
            Ok(false)
        };
        match behind.await {
            Ok(true) => {
                tracing::info!(%workspace, "the consumer sweep found a workspace behind that nothing pointed at");
                self.wake(workspace);
            }
            Ok(false) => {}
            Err(err) => tracing::debug!(%workspace, error = %err, "the consumer sweep could not check a workspace"),
        }
    }

    /// Called by a durable lane that found itself at the head: once every durable consumer
    /// stands there, the store may forget the workspace until it moves again.
    async fn report_caught_up(&self, tenant: &Arc<dyn TenantStore>, head: i64) {
        for consumer in self.stored() {
            match tenant.consumers().state(consumer.name()).await {
                Ok(state) if state.position >= head && state.stopped.is_none() => {}
                _ => return,
            }
        }
        if let Err(err) = self.index.caught_up(tenant.workspace_id(), head).await {
            tracing::debug!(workspace = %tenant.workspace_id(), error = %err, "cannot drop the workspace's log hint");
        }
    }

    /// Asks for `consumer` to be woken in `workspace` at `at` (durable).
    pub async fn schedule(&self, workspace: WorkspaceId, consumer: &str, at: Millis) -> Result<(), StoreError> {
        self.index.schedule(workspace, consumer, at).await?;
        self.schedules.notify_one();
        Ok(())
    }

    /// Sleeps until the next durable wake (or 30 s, for ones other instances add), then
    /// runs what is due.
    async fn schedule_loop(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            let wait = match self.index.next_wake().await {
                Ok(Some(at)) => Duration::from_millis((at.0 - Millis::now().0).clamp(0, 30_000) as u64),
                Ok(None) => Duration::from_secs(30),
                Err(err) => {
                    failures += 1;
                    tracing::warn!(error = %err, "cannot read the consumers' schedules");
                    self.pacing.retry.delay_now(failures)
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.schedules.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            let due = match self.index.due(Millis::now(), 100).await {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the due schedules");
                    continue;
                }
            };
            failures = 0;
            for wake in due {
                self.run_wake(wake).await;
            }
        }
    }

    async fn run_wake(&self, wake: Wake) {
        let Some(consumer) = self.durable.iter().find(|c| c.name() == wake.consumer).cloned() else {
            // A consumer this build does not have (removed, or a newer instance's).
            return;
        };
        if let Err(err) = self.index.unschedule(&wake).await {
            tracing::warn!(error = %err, "cannot clear a due schedule; it will run again");
            return;
        }
        let outcome = match self.tenants.open(wake.workspace).await {
            Ok(tenant) => consumer.on_wake(&tenant).await,
            Err(err) => Err(err.into()),
        };
        let again = match outcome {
            Ok(handled) => handled.wake_at,
            Err(err) => {
                tracing::warn!(consumer = consumer.name(), workspace = %wake.workspace, error = %err, "a scheduled wake failed; retrying later");
                Some(Millis::now().plus(self.pacing.retry.delay_now(4)))
            }
        };
        if let Some(at) = again
            && let Err(err) = self.schedule(wake.workspace, consumer.name(), at).await
        {
            tracing::warn!(consumer = consumer.name(), workspace = %wake.workspace, error = %err, "cannot schedule the next wake");
        }
    }

    fn mark_stopped(&self, lane: &LaneShared, at: i64, error: String) {
        let key = (lane.consumer.name(), lane.workspace);
        let stopped = Stopped { consumer: lane.consumer.name(), workspace: lane.workspace, at, error };
        self.stopped.lock().unwrap_or_else(|p| p.into_inner()).insert(key, stopped);
    }

    /// Makes `consumer`'s lane in `workspace` read its watermark again before its next page,
    /// and wakes it (starting it if needed): for a [`Watermark::Own`] consumer whose output
    /// was lost (its index deleted), so that it starts again from where that output stands.
    pub fn reposition(&self, workspace: WorkspaceId, consumer: &str) {
        if let Some(lane) = self.lanes().0.get(&workspace).and_then(|ls| ls.iter().find(|l| l.consumer.name() == consumer)) {
            lane.reread.store(true, Ordering::Release);
        }
        if let Some(c) = self.durable.iter().find(|c| c.name() == consumer) {
            self.wake_durable(c, workspace);
        }
    }

    /// Lets a stopped consumer go again in `workspace` (it retries the event it stopped at).
    pub async fn resume(&self, workspace: WorkspaceId, consumer: &str) -> Result<bool, StoreError> {
        let tenant = self.tenants.open(workspace).await?;
        let resumed = tenant.consumers().resume(consumer).await?;
        self.stopped.lock().unwrap_or_else(|p| p.into_inner()).retain(|(name, ws), _| !(*name == consumer && *ws == workspace));
        if let Some(c) = self.durable.iter().find(|c| c.name() == consumer) {
            self.wake_durable(c, workspace);
        }
        Ok(resumed)
    }
}

/// Where a lane's watermark stands, and how it moves.
enum Position {
    Memory,
    Durable,
}

/// One lane's drain loop: read past the watermark a page at a time, hand each page to the
/// consumer, back off on failure, stop on an event that keeps failing.
///
/// A durable lane holds its workspace open only while it drains: one that waits holds just
/// the workspace's id, so lanes of thousands of quiet workspaces keep no files open beyond
/// the store's own cap. An in-memory lane is given its workspace (its topic holds it anyway).
async fn drain(lane: Arc<LaneShared>, given: Option<Arc<dyn TenantStore>>, runner: Weak<Runner>, pacing: Pacing) {
    let mut held = given;
    let retry = pacing.retry;
    let name = lane.consumer.name();
    let kind = if lane.memory.is_some() { Position::Memory } else { Position::Durable };
    let metrics = runner.upgrade().and_then(|r| r.metrics(name));
    let mut position: Option<i64> = lane.memory.as_ref().map(|m| m.load(Ordering::Acquire));
    let mut limit = PAGE;
    let mut attempts = 0u32;
    // Held while draining (see CONCURRENT_DRAINS); released when the lane waits.
    let mut _permit = None;
    // Known to have work: go on without waiting for a wakeup.
    let mut busy = false;
    loop {
        if !busy {
            _permit = None;
            if matches!(kind, Position::Durable) {
                held = None;
            }
            let woken = tokio::select! {
                _ = lane.stop.cancelled() => break,
                _ = lane.wake.notified() => true,
                _ = tokio::time::sleep(pacing.idle), if matches!(kind, Position::Durable) => false,
            };
            if !woken {
                // Caught up and idle: retire. A wakeup from now on starts a new lane.
                let Some(r) = runner.upgrade() else { break };
                {
                    let mut lanes = r.lanes();
                    lane.running.store(false, Ordering::Release);
                    lanes.remove(&lane);
                }
                if let Some(at) = position
                    && let Ok(tenant) = r.tenants.open(lane.workspace).await
                {
                    r.report_caught_up(&tenant, at).await;
                }
                break;
            }
            busy = true;
            if matches!(kind, Position::Durable) {
                let Some(r) = runner.upgrade() else { break };
                _permit = r.drains.clone().acquire_owned().await.ok();
            }
        }
        let tenant = match &held {
            Some(tenant) => tenant.clone(),
            None => {
                let Some(r) = runner.upgrade() else { break };
                match r.tenants.open(lane.workspace).await {
                    Ok(tenant) => {
                        held = Some(tenant.clone());
                        tenant
                    }
                    Err(err) => {
                        attempts += 1;
                        tracing::warn!(consumer = name, workspace = %lane.workspace, error = %err, "a log consumer cannot open its workspace; backing off");
                        if attempts >= MAX_ATTEMPTS || !pause(&lane, &retry, attempts).await {
                            // Gone or unreadable: the next wakeup or sweep starts a new lane.
                            break;
                        }
                        continue;
                    }
                }
            }
        };
        if lane.reread.swap(false, Ordering::AcqRel) && matches!(kind, Position::Durable) {
            position = None;
        }
        // Durable lanes read their watermark from the store or the consumer (again after a
        // conflict).
        let from = match position {
            Some(at) => at,
            None => match watermark_of(lane.consumer.as_ref(), &tenant).await {
                Ok(state) => {
                    if let Some((at, error)) = state.stopped {
                        tracing::warn!(consumer = name, workspace = %lane.workspace, at, %error, "log consumer is stopped in this workspace");
                        if let Some(r) = runner.upgrade() {
                            r.mark_stopped(&lane, at, error);
                        }
                        break;
                    }
                    position = Some(state.position);
                    state.position
                }
                Err(err) => {
                    attempts += 1;
                    tracing::warn!(consumer = name, workspace = %lane.workspace, error = %err, "cannot read a consumer's watermark");
                    if !pause(&lane, &retry, attempts).await {
                        break;
                    }
                    continue;
                }
            },
        };
        if let Some(r) = runner.upgrade() {
            r.reads.fetch_add(1, Ordering::Relaxed);
        }
        let page = match tenant.feed(from, limit).await {
            Ok(page) => page,
            Err(err) => {
                attempts += 1;
                tracing::warn!(consumer = name, workspace = %lane.workspace, error = %err, "a log consumer cannot read the log; backing off");
                if !pause(&lane, &retry, attempts).await {
                    break;
                }
                continue;
            }
        };
        let Some(last) = page.items.last().map(|e| e.event.sync_id) else {
            // Caught up: wait for the next wakeup.
            busy = false;
            continue;
        };
        let advance = Advance { consumer: name, from, to: last };
        match lane.consumer.handle(&tenant, &page.items, advance).await {
            Ok(handled) => {
                position = Some(last);
                if let Some(m) = &lane.memory {
                    m.store(last, Ordering::Release);
                }
                if let Some(m) = &metrics {
                    m.events.fetch_add(page.items.len() as u64, Ordering::Relaxed);
                    m.pages.fetch_add(1, Ordering::Relaxed);
                }
                attempts = 0;
                limit = PAGE;
                if let Some(at) = handled.wake_at
                    && let Some(r) = runner.upgrade()
                    && let Err(err) = r.schedule(lane.workspace, name, at).await
                {
                    tracing::warn!(consumer = name, workspace = %lane.workspace, error = %err, "cannot schedule a consumer's wake");
                }
                busy = page.has_more;
            }
            Err(ConsumerError::Store(StoreError::Conflict(_))) if matches!(kind, Position::Durable) => {
                // Another instance (or an earlier run of this lane) moved the watermark.
                if let Some(m) = &metrics {
                    m.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                position = None;
            }
            Err(ConsumerError::Store(err @ StoreError::Unavailable(_))) => {
                attempts += 1;
                tracing::warn!(consumer = name, workspace = %lane.workspace, error = %err, "log consumer: store unavailable; backing off");
                if !pause(&lane, &retry, attempts.min(12)).await {
                    break;
                }
            }
            Err(err) => {
                attempts += 1;
                if let Some(m) = &metrics {
                    m.failures.fetch_add(1, Ordering::Relaxed);
                }
                if page.items.len() > 1 {
                    // Find the event that fails: retry one at a time from the watermark.
                    tracing::warn!(consumer = name, workspace = %lane.workspace, error = %err, "a log consumer's page failed; retrying event by event");
                    limit = 1;
                    attempts = attempts.min(1);
                } else if attempts >= MAX_ATTEMPTS && matches!(kind, Position::Durable) && lane.consumer.watermark() == Watermark::Store {
                    let error = err.to_string();
                    tracing::error!(consumer = name, workspace = %lane.workspace, sync_id = last, %error,
                        "a log consumer stops in this workspace: this event failed {MAX_ATTEMPTS} times");
                    if let Err(e) = tenant.consumers().stop(name, last, &error).await {
                        tracing::error!(consumer = name, workspace = %lane.workspace, error = %e, "cannot record that the consumer stopped");
                    }
                    if let Some(r) = runner.upgrade() {
                        r.mark_stopped(&lane, last, error);
                    }
                    break;
                } else {
                    tracing::warn!(consumer = name, workspace = %lane.workspace, sync_id = last, attempt = attempts, error = %err, "a log consumer's event failed; backing off");
                }
                if !pause(&lane, &retry, attempts).await {
                    break;
                }
            }
        }
    }
    lane.running.store(false, Ordering::Release);
    if let Some(r) = runner.upgrade() {
        r.forget(&lane);
    }
}

/// Where a durable consumer stands in `tenant`'s workspace, and whether it is stopped there.
async fn watermark_of(consumer: &dyn Consumer, tenant: &Arc<dyn TenantStore>) -> Result<crate::store::ConsumerState, ConsumerError> {
    match consumer.watermark() {
        Watermark::Store => Ok(tenant.consumers().state(consumer.name()).await?),
        Watermark::Own => Ok(crate::store::ConsumerState { position: consumer.position(tenant).await?, stopped: None }),
    }
}

/// Backs off before the `attempt`th retry; `false` when the lane was stopped meanwhile.
async fn pause(lane: &LaneShared, retry: &Backoff, attempt: u32) -> bool {
    tokio::select! {
        _ = lane.stop.cancelled() => false,
        _ = tokio::time::sleep(retry.delay_now(attempt)) => true,
    }
}
