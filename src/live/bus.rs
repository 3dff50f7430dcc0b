//! The live bus: per-workspace topics fed from the log, fanned out to SSE subscribers.
//!
//! A topic exists while someone follows its workspace. It keeps a watermark into the log;
//! the change feed's wakeups (which carry nothing) make its drain task read every event
//! past the watermark and push each, pre-rendered once as an SSE frame, into a ring buffer
//! (for replay) and a broadcast channel (the live tail). One reader of the log per
//! workspace per instance, however many clients follow it.
//!
//! The ring holds exactly the events with ids in `(base, watermark]`: a client whose
//! Last-Event-ID is at least `base` replays from memory, an older one from the log.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::store::{Audience, FeedEvent, StoreResult, TenantStore, TenantStores, Wakeup, WorkspaceId};

/// Events read from the log per query while draining.
const DRAIN_PAGE: usize = 500;

/// One event as every subscriber receives it: the frame is rendered once, shared by all.
#[derive(Debug)]
pub struct LiveEvent {
    pub sync_id: i64,
    pub visibility: FeedEvent,
    /// `id: …\nevent: …\ndata: …\n\n`
    pub frame: Bytes,
}

impl LiveEvent {
    pub fn new(event: FeedEvent) -> Self {
        let frame = render(&event.event);
        Self { sync_id: event.event.sync_id, visibility: event, frame }
    }

    pub fn visible_to(&self, audience: Audience, ticket: Option<crate::store::TicketId>) -> bool {
        wanted(&self.visibility, audience, ticket)
    }
}

/// Whether a subscriber for `audience`, narrowed to `ticket` if given, receives `event`.
/// The one rule for replay and live tail alike.
pub fn wanted(event: &FeedEvent, audience: Audience, ticket: Option<crate::store::TicketId>) -> bool {
    event.visible_to(audience) && ticket.is_none_or(|t| event.ticket_id == Some(t))
}

/// The SSE frame of a log event: `id` is the sync_id, `event` its kind, `data` the same
/// JSON as a delta event.
pub fn render(event: &crate::store::SyncEvent) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("id: {}\nevent: {}\ndata: {data}\n\n", event.sync_id, event.kind))
}

struct Ring {
    events: VecDeque<Arc<LiveEvent>>,
    /// Every event with an id in `(base, watermark]` is in `events`.
    base: i64,
    watermark: i64,
}

pub struct Topic {
    pub workspace: WorkspaceId,
    store: Arc<dyn TenantStore>,
    ring: Mutex<Ring>,
    /// The live tail. Taken (dropped) at shutdown, which ends every subscriber's stream
    /// through the channel itself: no stream has to check a shutdown flag on every poll.
    tx: Mutex<Option<broadcast::Sender<Arc<LiveEvent>>>>,
    wake: Notify,
    subscribers: AtomicUsize,
    capacity: usize,
    stop: CancellationToken,
}

impl Topic {
    /// `(base, events after `after` in the ring)`: what memory can replay.
    pub fn replay_from_ring(&self, after: i64) -> (i64, Vec<Arc<LiveEvent>>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        (ring.base, ring.events.iter().filter(|e| e.sync_id > after).cloned().collect())
    }

    pub fn store(&self) -> &Arc<dyn TenantStore> {
        &self.store
    }

    fn watermark(&self) -> i64 {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).watermark
    }

    /// Reads everything past the watermark into the ring and the live tail.
    async fn drain(&self) -> StoreResult<()> {
        loop {
            let page = self.store.feed(self.watermark(), DRAIN_PAGE).await?;
            for event in page.items {
                let live = Arc::new(LiveEvent::new(event));
                {
                    let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
                    if live.sync_id <= ring.watermark {
                        continue;
                    }
                    ring.watermark = live.sync_id;
                    ring.events.push_back(live.clone());
                    while ring.events.len() > self.capacity {
                        if let Some(old) = ring.events.pop_front() {
                            ring.base = old.sync_id;
                        }
                    }
                }
                // No subscriber right now is fine: the ring keeps it for replay.
                if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let _ = tx.send(live);
                }
            }
            if !page.has_more {
                return Ok(());
            }
        }
    }

    async fn run(self: Arc<Self>) {
        loop {
            if let Err(err) = self.drain().await {
                tracing::warn!(workspace = %self.workspace, error = %err, "live topic could not read the log; retrying on the next wakeup");
            }
            tokio::select! {
                _ = self.stop.cancelled() => {
                    self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
                    return;
                }
                _ = self.wake.notified() => {}
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BusConfig {
    /// Events kept per workspace for replay.
    pub ring: usize,
    /// Events buffered per subscriber before it counts as too far behind.
    pub lag: usize,
}

pub struct Bus {
    tenants: Arc<dyn TenantStores>,
    topics: Mutex<HashMap<WorkspaceId, Arc<Topic>>>,
    config: BusConfig,
    shutdown: CancellationToken,
}

/// A subscriber's hold on a topic, and its receiver of the live tail.
pub struct Subscription {
    pub guard: TopicGuard,
    pub live: broadcast::Receiver<Arc<LiveEvent>>,
}

/// Dropping it unsubscribes (and retires a topic nobody follows any more).
pub struct TopicGuard {
    pub topic: Arc<Topic>,
    bus: Arc<Bus>,
}

impl Drop for TopicGuard {
    fn drop(&mut self) {
        let mut topics = self.bus.topics.lock().unwrap_or_else(|p| p.into_inner());
        if self.topic.subscribers.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Still nobody (a new subscriber would have incremented under this lock).
            if self.topic.subscribers.load(Ordering::Acquire) == 0 {
                topics.remove(&self.topic.workspace);
                self.topic.stop.cancel();
            }
        }
    }
}

impl Bus {
    /// Starts the bus; it follows the store's wakeups until `shutdown`.
    pub fn start(tenants: Arc<dyn TenantStores>, config: BusConfig, shutdown: CancellationToken) -> Arc<Self> {
        let bus = Arc::new(Self { tenants, topics: Mutex::default(), config, shutdown });
        let mut wakeups = bus.tenants.wakeups();
        let weak = Arc::downgrade(&bus);
        let stop = bus.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let wakeup = tokio::select! {
                    _ = stop.cancelled() => return,
                    w = wakeups.recv() => w,
                };
                let Some(bus) = weak.upgrade() else { return };
                let topics: Vec<Arc<Topic>> = {
                    let map = bus.topics.lock().unwrap_or_else(|p| p.into_inner());
                    match wakeup {
                        Ok(Wakeup::Workspace(ws)) => map.get(&ws).cloned().into_iter().collect(),
                        // A lagging receiver may have missed anything: wake everyone.
                        Ok(Wakeup::Any) | Err(broadcast::error::RecvError::Lagged(_)) => map.values().cloned().collect(),
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                };
                for topic in topics {
                    topic.wake.notify_one();
                }
            }
        });
        bus
    }

    /// Follows `store`'s workspace. The live receiver exists before any replay is read, so
    /// nothing committed from now on can fall between replay and tail.
    pub async fn subscribe(self: &Arc<Self>, store: Arc<dyn TenantStore>) -> StoreResult<Subscription> {
        let workspace = store.workspace_id();
        if let Some(sub) = self.join(workspace) {
            return Ok(sub);
        }
        let head = store.head().await?;
        let (tx, _) = broadcast::channel(self.config.lag);
        let topic = Arc::new(Topic {
            workspace,
            store,
            ring: Mutex::new(Ring { events: VecDeque::with_capacity(self.config.ring.min(1024)), base: head, watermark: head }),
            tx: Mutex::new(Some(tx)),
            wake: Notify::new(),
            subscribers: AtomicUsize::new(0),
            capacity: self.config.ring,
            stop: self.shutdown.child_token(),
        });
        {
            let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            if let std::collections::hash_map::Entry::Vacant(slot) = topics.entry(workspace) {
                slot.insert(topic.clone());
                tokio::spawn(topic.clone().run());
            }
        }
        self.join(workspace).ok_or_else(|| crate::store::StoreError::internal("live topic vanished"))
    }

    fn join(self: &Arc<Self>, workspace: WorkspaceId) -> Option<Subscription> {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let topic = topics.get(&workspace)?.clone();
        let live = topic.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref()?.subscribe();
        topic.subscribers.fetch_add(1, Ordering::AcqRel);
        // Catch up on anything committed before this topic's first drain.
        topic.wake.notify_one();
        Some(Subscription { guard: TopicGuard { topic, bus: self.clone() }, live })
    }

    pub fn topic_count(&self) -> usize {
        self.topics.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
