//! The live bus: per-workspace topics fed from the log, fanned out to SSE subscribers.
//!
//! A topic exists while someone follows its workspace. It is an in-memory consumer on the
//! log-consumer runner (`sync::runner`), the one drain loop of the server: the runner reads
//! every event past the topic's watermark when a wakeup (which carries nothing) names the
//! workspace, and hands each page to the topic, which pushes each event, pre-rendered once
//! as an SSE frame, into a ring buffer and wakes the followers waiting on it. One reader of
//! the log per workspace per instance, however many clients follow it.
//!
//! The ring holds exactly the events with ids in `(base, watermark]`. It serves replay (a
//! client whose Last-Event-ID is at least `base` replays from memory, an older one from the
//! log) and the live tail alike: each [`Follower`] is only a position in it, so a delivery
//! costs one wake and one look into shared memory, with no channel, queue or timer per
//! subscriber. Heartbeats are one timer per topic.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::store::{Advance, Audience, FeedEvent, StoreResult, TenantStore, TicketId, UserId, WorkspaceId};
use crate::sync::runner::{Consumer, ConsumerError, Following, Handled, Runner};

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

    /// A `member.*` event about `user`.
    pub fn changes_membership_of(&self, user: UserId) -> bool {
        let event = &self.visibility.event;
        event.entity == "member" && event.entity_id.parse::<UserId>().is_ok_and(|id| id == user)
    }
}

/// Whether a subscriber for `audience`, narrowed to `ticket` if given, receives `event`.
/// The one rule for replay and live tail alike.
pub fn wanted(event: &FeedEvent, audience: Audience, ticket: Option<crate::store::TicketId>) -> bool {
    event.visible_to(audience) && ticket.is_none_or(|t| event.ticket_id() == Some(t))
}

/// The SSE frame of a log event: `id` is the sync_id, `event` its kind, `data` the same
/// JSON as a delta event.
pub fn render(event: &crate::store::SyncEvent) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("id: {}\nevent: {}\ndata: {data}\n\n", event.sync_id, event.kind))
}

/// A topic's shared state: the ring of recent events and who is waiting for more.
struct Tail {
    events: VecDeque<Arc<LiveEvent>>,
    /// Every event with an id in `(base, watermark]` is in `events`.
    base: i64,
    watermark: i64,
    /// Followers waiting for the next event, heartbeat or the end.
    waiting: Vec<Waker>,
    /// Bumped whenever `waiting` is woken: a follower registered in an earlier round
    /// registers again.
    round: u64,
    /// Heartbeats so far: a follower that has seen fewer, and was sent nothing since the
    /// one before, sends a ping.
    pings: u64,
    /// Set at shutdown: every follower ends.
    closed: bool,
}

impl Tail {
    /// The index of the first event with an id past `sync_id`.
    fn after(&self, sync_id: i64) -> usize {
        self.events.partition_point(|e| e.sync_id <= sync_id)
    }

    /// Takes the waiting followers, to be woken once the lock is released.
    fn take_waiting(&mut self) -> Vec<Waker> {
        self.round += 1;
        let capacity = self.waiting.len();
        std::mem::replace(&mut self.waiting, Vec::with_capacity(capacity))
    }
}

pub struct Topic {
    pub workspace: WorkspaceId,
    store: Arc<dyn TenantStore>,
    tail: Mutex<Tail>,
    /// The topic's lane on the runner; dropped (which stops it) when the topic retires.
    lane: Mutex<Option<Following>>,
    subscribers: AtomicUsize,
    config: BusConfig,
    stop: CancellationToken,
}

impl Topic {
    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `(base, events after `after` in the ring)`: what memory can replay.
    pub fn replay_from_ring(&self, after: i64) -> (i64, Vec<Arc<LiveEvent>>) {
        let tail = self.tail();
        (tail.base, tail.events.range(tail.after(after)..).cloned().collect())
    }

    pub fn store(&self) -> &Arc<dyn TenantStore> {
        &self.store
    }

    /// Pushes a page the runner read into the ring, then wakes the followers.
    fn push(&self, page: &[FeedEvent]) {
        // Rendered before the lock is taken.
        let fresh: Vec<Arc<LiveEvent>> = page.iter().map(|e| Arc::new(LiveEvent::new(e.clone()))).collect();
        let waiting = {
            let mut tail = self.tail();
            let before = tail.watermark;
            for live in fresh {
                if live.sync_id <= tail.watermark {
                    continue;
                }
                tail.watermark = live.sync_id;
                tail.events.push_back(live);
                while tail.events.len() > self.config.ring {
                    if let Some(old) = tail.events.pop_front() {
                        tail.base = old.sync_id;
                    }
                }
            }
            if tail.watermark > before { tail.take_waiting() } else { Vec::new() }
        };
        waiting.into_iter().for_each(Waker::wake);
    }

    /// Marks a heartbeat (or the end) and wakes every follower. Only followers that were
    /// sent nothing for a whole period write a ping, so a heartbeat on a busy topic costs a
    /// wake per follower and no write.
    fn announce(&self, end: bool) {
        let waiting = {
            let mut tail = self.tail();
            tail.pings += 1;
            tail.closed |= end;
            tail.take_waiting()
        };
        waiting.into_iter().for_each(Waker::wake);
    }

    /// The topic's heartbeats, until it retires or the server stops.
    async fn heartbeats(self: Arc<Self>) {
        let period = self.config.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => {
                    self.announce(true);
                    return;
                }
                _ = heartbeat.tick() => self.announce(false),
            }
        }
    }
}

/// A topic as a consumer of the log: what the runner reads, it pushes into the ring.
struct Feeder(std::sync::Weak<Topic>);

#[async_trait::async_trait]
impl Consumer for Feeder {
    fn name(&self) -> &'static str {
        "live"
    }

    async fn handle(&self, _tenant: &Arc<dyn TenantStore>, page: &[FeedEvent], _advance: Advance) -> Result<Handled, ConsumerError> {
        if let Some(topic) = self.0.upgrade() {
            topic.push(page);
        }
        Ok(Handled::default())
    }
}

/// What a follower gets next.
pub enum Delivery {
    /// One or more frames, ready to write.
    Frames(Bytes),
    /// Nothing new for a heartbeat period.
    Ping,
    /// The stream is over: the server is stopping, or this follower fell too far behind
    /// (it reconnects with its Last-Event-ID and catches up from the log).
    End,
    /// The subscriber's membership changed (see [`Follower::until_membership_of`]).
    AccessChanged,
}

/// One subscriber's place in its topic's live tail. Followers share the topic's ring:
/// no queue, channel or timer per subscriber.
pub struct Follower {
    guard: TopicGuard,
    /// The last sync_id delivered or skipped.
    sent: i64,
    /// The waiting round this follower's waker is registered in.
    registered: Option<u64>,
    pings: u64,
    /// Frames were handed out since the last heartbeat: the next one needs no ping.
    active: bool,
    /// The subscriber's own user: an event changing their membership here ends the stream
    /// right after it, before anything later in the log.
    member: Option<UserId>,
    access_changed: bool,
}

impl Follower {
    /// Follows `guard`'s topic from just after `sent`.
    pub fn new(guard: TopicGuard, sent: i64) -> Self {
        let pings = guard.topic.tail().pings;
        Self { guard, sent, registered: None, pings, active: false, member: None, access_changed: false }
    }

    /// Ends the stream (with [`Delivery::AccessChanged`]) right after an event that changes
    /// `user`'s membership of this workspace: nothing later in the log reaches it under the
    /// old role, on any instance.
    pub fn until_membership_of(mut self, user: UserId) -> Self {
        self.member = Some(user);
        self
    }

    /// Up to `max` frames this subscriber may see, all that are ready, in one buffer.
    pub fn poll_next(&mut self, cx: &mut Context<'_>, audience: Audience, ticket: Option<TicketId>, max: usize) -> Poll<Delivery> {
        if self.access_changed {
            return Poll::Ready(Delivery::AccessChanged);
        }
        let topic = &self.guard.topic;
        let mut tail = topic.tail();
        if tail.closed || self.sent < tail.base || tail.watermark - self.sent > topic.config.lag as i64 {
            return Poll::Ready(Delivery::End);
        }
        let start = tail.after(self.sent);
        let mut first: Option<&Bytes> = None;
        let mut joined: Option<BytesMut> = None;
        let mut taken = 0;
        for event in tail.events.range(start..) {
            if taken == max {
                break;
            }
            self.sent = event.sync_id;
            let cut = self.member.is_some_and(|user| event.changes_membership_of(user));
            if event.visible_to(audience, ticket) {
                taken += 1;
                match first {
                    None => first = Some(&event.frame),
                    Some(one) => joined.get_or_insert_with(|| BytesMut::from(&one[..])).extend_from_slice(&event.frame),
                }
            }
            if cut {
                self.access_changed = true;
                break;
            }
        }
        if self.access_changed && first.is_none() {
            return Poll::Ready(Delivery::AccessChanged);
        }
        if let Some(joined) = joined {
            self.active = true;
            return Poll::Ready(Delivery::Frames(joined.freeze()));
        }
        if let Some(one) = first {
            self.active = true;
            // The shared frame itself: no copy for the common case of one event.
            return Poll::Ready(Delivery::Frames(one.clone()));
        }
        if tail.pings != self.pings {
            self.pings = tail.pings;
            // A stream that carried frames during the period is alive without a ping: a
            // stream is never silent for more than two periods.
            if !std::mem::replace(&mut self.active, false) {
                return Poll::Ready(Delivery::Ping);
            }
        }
        if self.registered != Some(tail.round) {
            self.registered = Some(tail.round);
            tail.waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BusConfig {
    /// Events kept per workspace for replay.
    pub ring: usize,
    /// Events a follower may be behind the head before it is closed.
    pub lag: usize,
    /// A `: ping` to every follower of a topic this often.
    pub heartbeat: Duration,
}

pub struct Bus {
    runner: Arc<Runner>,
    topics: Mutex<HashMap<WorkspaceId, Arc<Topic>>>,
    config: BusConfig,
    shutdown: CancellationToken,
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
                drop(self.topic.lane.lock().unwrap_or_else(|p| p.into_inner()).take());
            }
        }
    }
}

impl Bus {
    /// Starts the bus; its topics follow their workspaces on `runner` until `shutdown`.
    pub fn start(runner: Arc<Runner>, config: BusConfig, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self { runner, topics: Mutex::default(), config, shutdown })
    }

    /// Follows `store`'s workspace. The topic's ring keeps everything committed from now
    /// on (up to its capacity), so nothing can fall between a replay and the live tail.
    pub async fn subscribe(self: &Arc<Self>, store: Arc<dyn TenantStore>) -> StoreResult<TopicGuard> {
        let workspace = store.workspace_id();
        if let Some(guard) = self.join(workspace) {
            return Ok(guard);
        }
        let head = store.head().await?;
        let topic = Arc::new(Topic {
            workspace,
            store,
            tail: Mutex::new(Tail {
                events: VecDeque::with_capacity(self.config.ring.min(1024)),
                base: head,
                watermark: head,
                waiting: Vec::new(),
                round: 0,
                pings: 0,
                closed: false,
            }),
            lane: Mutex::new(None),
            subscribers: AtomicUsize::new(0),
            config: self.config,
            stop: self.shutdown.child_token(),
        });
        {
            let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            if let std::collections::hash_map::Entry::Vacant(slot) = topics.entry(workspace) {
                slot.insert(topic.clone());
                let lane = self.runner.follow(Arc::new(Feeder(Arc::downgrade(&topic))), topic.store.clone(), head);
                *topic.lane.lock().unwrap_or_else(|p| p.into_inner()) = Some(lane);
                tokio::spawn(topic.clone().heartbeats());
            }
        }
        self.join(workspace).ok_or_else(|| crate::store::StoreError::internal("live topic vanished"))
    }

    fn join(self: &Arc<Self>, workspace: WorkspaceId) -> Option<TopicGuard> {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let topic = topics.get(&workspace)?.clone();
        topic.subscribers.fetch_add(1, Ordering::AcqRel);
        // Catch up on anything committed before this topic's first drain.
        if let Some(lane) = topic.lane.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            lane.poke();
        }
        Some(TopicGuard { topic, bus: self.clone() })
    }

    pub fn topic_count(&self) -> usize {
        self.topics.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
