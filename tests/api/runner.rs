//! The consumer runner below HTTP, on both backends: a consumer's "wake me at T" survives a
//! restart of the runner, and an in-memory consumer follows exactly the events after its
//! starting point.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use edgedesk::store::{Advance, FeedEvent, Millis, TenantStore, UserId, Workspace, WorkspaceId};
use edgedesk::sync::runner::{Consumer, ConsumerError, Handled, Pacing, Runner};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::both_backends;
use crate::store::{fresh_store, new_ticket};

/// Asks to be woken a moment after its first page, and counts its wakes.
struct Alarm {
    after: Duration,
    wakes: Arc<AtomicUsize>,
}

#[async_trait]
impl Consumer for Alarm {
    fn name(&self) -> &'static str {
        "alarm"
    }

    async fn handle(&self, tenant: &Arc<dyn TenantStore>, _page: &[FeedEvent], advance: Advance) -> Result<Handled, ConsumerError> {
        tenant.consumers().advance(advance).await?;
        Ok(Handled { wake_at: Some(Millis::now().plus(self.after)) })
    }

    async fn on_wake(&self, _tenant: &Arc<dyn TenantStore>) -> Result<Handled, ConsumerError> {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        Ok(Handled::default())
    }
}

fn start(store: &edgedesk::store::Store, consumer: Arc<dyn Consumer>) -> (Arc<Runner>, CancellationToken, TaskTracker) {
    let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
    let runner =
        Runner::start(store.tenants.clone(), store.consumers.clone(), vec![consumer], Pacing::default(), stop.clone(), tasks.clone());
    (runner, stop, tasks)
}

async fn stop(stop: CancellationToken, tasks: TaskTracker) {
    stop.cancel();
    tasks.close();
    tasks.wait().await;
}

both_backends! {
async fn a_wake_a_consumer_asked_for_survives_a_restart_of_the_runner(b: Backend) {
    let (store, _dir, _pg) = fresh_store(b).await;
    let actor = UserId::new();
    let ws = Workspace { id: WorkspaceId::new(), name: "Alarm".into(), created_at: Millis::now() };
    store.tenants.create(&ws, actor).await.unwrap();

    // The first runner handles the workspace's events, asks for a wake in 1.5 s, and is
    // stopped well before then.
    let wakes = Arc::new(AtomicUsize::new(0));
    let alarm = Arc::new(Alarm { after: Duration::from_millis(1500), wakes: wakes.clone() });
    let (_runner, token, tasks) = start(&store, alarm);
    let tenant = store.tenants.open(ws.id).await.unwrap();
    let head = tenant.head().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tenant.consumers().state("alarm").await.unwrap().position < head {
        assert!(std::time::Instant::now() < deadline, "the consumer did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The runner stores the wake a handler asks for right after the handler's commit.
    let next = loop {
        if let Some(next) = store.consumers.next_wake().await.unwrap() {
            break next;
        }
        assert!(std::time::Instant::now() < deadline, "the wake is stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(next > Millis::now(), "not due yet");
    stop(token, tasks).await;
    assert_eq!(wakes.load(Ordering::SeqCst), 0);

    // A new runner (a restarted process) wakes it when due, once.
    let wakes = Arc::new(AtomicUsize::new(0));
    let alarm = Arc::new(Alarm { after: Duration::from_secs(3600), wakes: wakes.clone() });
    let (_runner, token, tasks) = start(&store, alarm);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while wakes.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the stored wake never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(Millis::now() >= next, "woken when due, not before");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wakes.load(Ordering::SeqCst), 1, "once");
    assert_eq!(store.consumers.due(Millis::now(), 10).await.unwrap(), vec![], "handled wakes are dropped");
    stop(token, tasks).await;
}
}

/// Records every event handed to it.
struct Recorder(Arc<std::sync::Mutex<Vec<i64>>>);

#[async_trait]
impl Consumer for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn handle(&self, _tenant: &Arc<dyn TenantStore>, page: &[FeedEvent], _advance: Advance) -> Result<Handled, ConsumerError> {
        self.0.lock().unwrap().extend(page.iter().map(|e| e.event.sync_id));
        Ok(Handled::default())
    }
}

both_backends! {
async fn an_in_memory_consumer_gets_every_event_after_its_start_once_in_order(b: Backend) {
    let (store, _dir, _pg) = fresh_store(b).await;
    let actor = UserId::new();
    let ws = Workspace { id: WorkspaceId::new(), name: "Follow".into(), created_at: Millis::now() };
    let tenant = store.tenants.create(&ws, actor).await.unwrap();
    tenant.create_ticket(actor, new_ticket("before", actor)).await.unwrap();
    let from = tenant.head().await.unwrap();
    let (stop_token, tasks) = (CancellationToken::new(), TaskTracker::new());
    let runner = Runner::start(store.tenants.clone(), store.consumers.clone(), Vec::new(), Pacing::default(), stop_token.clone(), tasks.clone());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let following = runner.follow(Arc::new(Recorder(seen.clone())), tenant.clone(), from);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let tenant = tenant.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    tenant.create_ticket(actor, new_ticket(&format!("w{w} {i}"), actor)).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let head = tenant.head().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while following.position() < head {
        assert!(std::time::Instant::now() < deadline, "the lane did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*seen.lock().unwrap(), ((from + 1)..=head).collect::<Vec<_>>());
    drop(following);
    assert_eq!(runner.lane_count(), 0, "dropping the handle stops the lane");
    stop(stop_token, tasks).await;
}
}
