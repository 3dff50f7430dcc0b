//! Collaborative ticket notes: one Yjs document per ticket, spoken to over the stock
//! y-websocket protocol (`GET /api/workspaces/{ws}/tickets/{id}/note`, upgraded), so any
//! editor on `yjs` + `y-websocket`'s `WebsocketProvider` works unchanged.
//!
//! How it fits together (the design this feature is built to):
//! - **Who.** Owners, admins and agents read and write; anyone else gets the 404 of a
//!   missing ticket before the upgrade. Browsers authenticate with a stream token minted
//!   for this ticket's note; a connection is watched (`auth::watch`) and ends when its
//!   access changes, as SSE streams do.
//! - **Documents.** A note is loaded on first open (its snapshot and the updates after it,
//!   `store::notes::NoteStore::load`), shared by every connection to it on this instance,
//!   and evicted a while after the last one leaves. The server's own client id is
//!   `store::notes::server_client_id`.
//! - **Durable before relayed.** A frame is decoded behind `catch_unwind` (a bad frame
//!   closes only its own connection); its update is applied to the document (validating
//!   it), appended with its `note.updated` event in one transaction, and only after that
//!   COMMIT sent to the other connections. Nothing reads the document between the two, so
//!   nothing a client saw can be lost (`doc.rs`).
//! - **Between instances.** A runner consumer with an in-memory watermark (like the live
//!   bus) reads `note.updated` events, fetches the stored bytes of those it did not make,
//!   and applies them to the documents open here. Awareness (cursors, presence) never
//!   touches the log: where other instances may serve the note (Postgres), each document
//!   with connections exchanges it every 250 ms through the store (`note_presence`, an
//!   UNLOGGED table: its own clients' states out, the others' in), and forgets a remote
//!   client not renewed for 45 s (its instance died).
//! - **Compaction.** A background sweep folds the updates of busy notes into a new
//!   snapshot, in one transaction, without changing anyone's content.
//! - **Text.** The document's `XmlFragment` named `default` (the field Tiptap's
//!   Collaboration extension uses by default) projects to plain text for `GET …/note`
//!   without an upgrade, for bootstrap and for search.

mod doc;
pub mod protocol;
mod routes;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use yrs::{ReadTxn, StateVector, Transact};

use crate::caps::{Caps, Place};
use crate::store::notes::{Compaction, NOTE_UPDATED};
use crate::store::{Advance, FeedEvent, StoreError, StoreResult, TenantStore, TenantStores, TicketId, UserId, WorkspaceId};
use crate::sync::runner::{Consumer, ConsumerError, Following, Handled, Runner};
pub use doc::close;
use doc::{DocContext, DocHandle};
pub use routes::{NotesState, routes};

/// The limits and timings of notes (each an `EDGEDESK_NOTE_…` setting).
#[derive(Debug, Clone, Copy)]
pub struct NotesConfig {
    /// Largest frame a client may send (a paste of a long text is one update).
    pub max_frame: usize,
    /// Messages per second a connection may keep sending (updates and awareness), and the
    /// burst above that rate; beyond it the server stops reading the connection until the
    /// rate allows (the client slows down; nothing is dropped).
    pub updates_per_sec: u32,
    pub burst: u32,
    /// Connections per document, per user, and per instance (429 beyond).
    pub per_document: usize,
    pub per_user: usize,
    pub max_connections: usize,
    /// A document stays loaded this long after its last connection leaves.
    pub idle: Duration,
    /// The text projection (bootstrap, `GET …/note`, search) is written this long after an
    /// edit, and when the document closes.
    pub text_delay: Duration,
    /// Notes with this many updates after their snapshot are compacted, checked this often.
    pub compact_after: u64,
    pub compact_every: Duration,
    /// Commands waiting for a document at most (senders wait beyond it).
    pub queue: usize,
    /// Frames waiting for one connection at most; beyond it the connection is closed as too
    /// slow (it reconnects and syncs).
    pub outbox: usize,
    /// Awareness states one document keeps at most.
    pub awareness_states: usize,
}

impl Default for NotesConfig {
    fn default() -> Self {
        Self {
            max_frame: 2 * 1024 * 1024,
            updates_per_sec: 300,
            burst: 1_000,
            per_document: 200,
            per_user: 32,
            max_connections: 20_000,
            idle: Duration::from_secs(30),
            text_delay: Duration::from_secs(1),
            compact_after: 500,
            compact_every: Duration::from_secs(30),
            queue: 4_096,
            outbox: 4_096,
            awareness_states: 1_000,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct NotesMetrics {
    pub documents: AtomicUsize,
    pub updates: AtomicU64,
    pub relayed: AtomicU64,
    pub bad_frames: AtomicU64,
    pub throttled: AtomicU64,
    pub compactions: AtomicU64,
}

/// One workspace's open documents on this instance, and the relay lane that feeds them.
struct OpenWorkspace {
    docs: HashMap<TicketId, Arc<DocHandle>>,
    _lane: Following,
}

/// The notes feature's shared state: the open documents, the relay, compaction.
pub struct Notes {
    config: NotesConfig,
    runner: Arc<Runner>,
    tenants: Arc<dyn TenantStores>,
    metrics: Arc<NotesMetrics>,
    per_user: Arc<Caps<UserId>>,
    open: Mutex<HashMap<WorkspaceId, OpenWorkspace>>,
    /// Workspaces whose notes changed through this instance since the last compaction sweep.
    touched: Arc<Mutex<HashSet<WorkspaceId>>>,
    next_conn: AtomicU64,
    /// This instance, in the presence states it shares with others (Postgres).
    instance: uuid::Uuid,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    me: Weak<Notes>,
}

/// A document held by one connection: its place in the caps, and its share of the
/// document (given back on drop, so the document can be evicted).
pub struct Held {
    pub doc: Arc<DocHandle>,
    _user: Place<UserId>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.doc.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Notes {
    pub fn start(
        config: NotesConfig,
        runner: Arc<Runner>,
        tenants: Arc<dyn TenantStores>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        let notes = Arc::new_cyclic(|me| Self {
            config,
            runner,
            tenants,
            metrics: Arc::default(),
            per_user: Caps::new(config.per_user, config.max_connections),
            open: Mutex::default(),
            touched: Arc::default(),
            next_conn: AtomicU64::new(1),
            instance: uuid::Uuid::new_v4(),
            shutdown,
            tasks: tasks.clone(),
            me: me.clone(),
        });
        tasks.spawn(notes.clone().compaction_sweeps());
        notes
    }

    pub fn config(&self) -> &NotesConfig {
        &self.config
    }

    pub fn metrics(&self) -> &NotesMetrics {
        &self.metrics
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WorkspaceId, OpenWorkspace>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Connections open on this instance.
    pub fn connections(&self) -> usize {
        self.per_user.open()
    }

    /// The document of `ticket`, opened (and its workspace followed by the relay) if needed,
    /// held for one connection of `user`. `TooManyRequests` beyond the caps.
    pub async fn hold(&self, store: &Arc<dyn TenantStore>, ticket: TicketId, user: UserId) -> Result<Held, crate::error::AppError> {
        let too_many = || crate::error::AppError::TooManyRequests { retry_after_secs: 5 };
        let place = self.per_user.acquire(user).map_err(|_| too_many())?;
        let workspace = store.workspace_id();
        if let Some(doc) = self.existing(workspace, ticket)? {
            return Ok(Held { doc, _user: place });
        }
        // The relay starts from the head as it is before the document loads: nothing
        // committed after the load can be missed, and what came before is in it.
        let head = store.head().await?;
        let mut open = self.lock();
        let entry = open.entry(workspace).or_insert_with(|| OpenWorkspace {
            docs: HashMap::new(),
            _lane: self.runner.follow(Arc::new(Relay { notes: self.me.clone(), workspace }), store.clone(), head),
        });
        if let Some(doc) = entry.docs.get(&ticket).filter(|d| !d.tx.is_closed()) {
            if doc.connections.load(Ordering::Acquire) >= self.config.per_document {
                return Err(too_many());
            }
            doc.connections.fetch_add(1, Ordering::AcqRel);
            return Ok(Held { doc: doc.clone(), _user: place });
        }
        let ctx = DocContext {
            store: store.clone(),
            config: self.config,
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.child_token(),
            touched: self.touched.clone(),
            evict: Box::new({
                let me = self.me.clone();
                move |doc: &DocHandle, force: bool| me.upgrade().is_none_or(|notes| notes.evict(doc, force))
            }),
            instance: self.instance,
        };
        let doc = doc::spawn(workspace, ticket, ctx, &self.tasks);
        doc.connections.fetch_add(1, Ordering::AcqRel);
        entry.docs.insert(ticket, doc.clone());
        Ok(Held { doc, _user: place })
    }

    fn existing(&self, workspace: WorkspaceId, ticket: TicketId) -> Result<Option<Arc<DocHandle>>, crate::error::AppError> {
        let open = self.lock();
        let Some(doc) = open.get(&workspace).and_then(|w| w.docs.get(&ticket)).filter(|d| !d.tx.is_closed()) else {
            return Ok(None);
        };
        if doc.connections.load(Ordering::Acquire) >= self.config.per_document {
            return Err(crate::error::AppError::TooManyRequests { retry_after_secs: 5 });
        }
        doc.connections.fetch_add(1, Ordering::AcqRel);
        Ok(Some(doc.clone()))
    }

    /// Removes `doc` from the registry if nobody holds it (or `force`: its ticket is gone).
    /// True when it was removed (or was no longer there).
    fn evict(&self, doc: &DocHandle, force: bool) -> bool {
        let mut open = self.lock();
        let Some(entry) = open.get_mut(&doc.workspace) else { return true };
        match entry.docs.get(&doc.ticket) {
            Some(current) if std::ptr::eq(current.as_ref(), doc) => {
                if !force && doc.connections.load(Ordering::Acquire) > 0 {
                    return false;
                }
                entry.docs.remove(&doc.ticket);
            }
            _ => return true,
        }
        if entry.docs.is_empty() {
            // Its relay lane stops with it.
            open.remove(&doc.workspace);
        }
        true
    }

    fn docs_of(&self, workspace: WorkspaceId) -> HashMap<TicketId, Arc<DocHandle>> {
        self.lock().get(&workspace).map(|w| w.docs.clone()).unwrap_or_default()
    }

    /// The feature's gauges and counters, in Prometheus' text format.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        };
        line(
            "edgedesk_note_documents",
            "gauge",
            "Collaborative notes loaded on this instance.",
            m.documents.load(Ordering::Relaxed) as u64,
        );
        line("edgedesk_note_connections", "gauge", "Note WebSocket connections open on this instance.", self.connections() as u64);
        line(
            "edgedesk_note_updates_total",
            "counter",
            "Note updates stored from this instance's connections.",
            m.updates.load(Ordering::Relaxed),
        );
        line(
            "edgedesk_note_relayed_total",
            "counter",
            "Note updates stored elsewhere and relayed to documents here.",
            m.relayed.load(Ordering::Relaxed),
        );
        line(
            "edgedesk_note_bad_frames_total",
            "counter",
            "Note connections closed for a frame that is not the protocol.",
            m.bad_frames.load(Ordering::Relaxed),
        );
        line(
            "edgedesk_note_throttled_total",
            "counter",
            "Times a note connection was paused by its rate limit.",
            m.throttled.load(Ordering::Relaxed),
        );
        line("edgedesk_note_compactions_total", "counter", "Notes compacted into a new snapshot.", m.compactions.load(Ordering::Relaxed));
        out
    }

    /// Documents open on this instance.
    pub fn open_documents(&self) -> usize {
        self.lock().values().map(|w| w.docs.len()).sum()
    }

    async fn compaction_sweeps(self: Arc<Self>) {
        let mut every = tokio::time::interval(self.config.compact_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let workspaces: Vec<WorkspaceId> =
                std::mem::take(&mut *self.touched.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
            for workspace in workspaces {
                if self.shutdown.is_cancelled() {
                    return;
                }
                if let Err(err) = self.compact_workspace(workspace).await {
                    tracing::warn!(%workspace, error = %err, "note compaction failed; it is tried again later");
                    self.touched.lock().unwrap_or_else(|p| p.into_inner()).insert(workspace);
                }
            }
        }
    }

    /// Compacts the notes of `workspace` that have gathered enough updates. Returns how many
    /// were compacted.
    pub async fn compact_workspace(&self, workspace: WorkspaceId) -> StoreResult<usize> {
        const PER_SWEEP: usize = 32;
        let store = self.tenants.open(workspace).await?;
        let tickets = store.notes().needing_compaction(self.config.compact_after, PER_SWEEP).await?;
        let mut done = 0;
        for ticket in &tickets {
            if compact(&store, *ticket).await? {
                done += 1;
                self.metrics.compactions.fetch_add(1, Ordering::Relaxed);
            }
        }
        if tickets.len() == PER_SWEEP {
            self.touched.lock().unwrap_or_else(|p| p.into_inner()).insert(workspace);
        }
        Ok(done)
    }
}

/// Folds the note's snapshot and updates into a new snapshot (on a blocking thread: a big
/// note is real work). False when the note moved on meanwhile (tried again next sweep).
pub async fn compact(store: &Arc<dyn TenantStore>, ticket: TicketId) -> StoreResult<bool> {
    let note = store.notes().load(ticket).await?;
    if note.updates.is_empty() {
        return Ok(false);
    }
    let client_id = crate::store::notes::server_client_id(store.workspace_id(), ticket);
    let (base_seq, through, covered) = (note.snapshot_seq, note.through(), note.updates.len() as u64);
    let (snapshot, text) = tokio::task::spawn_blocking(move || -> StoreResult<(Bytes, String)> {
        let doc = doc::build(&note, client_id)?;
        let snapshot = doc.transact().encode_state_as_update_v1(&StateVector::default());
        Ok((Bytes::from(snapshot), protocol::plain_text(&doc)))
    })
    .await
    .map_err(|e| StoreError::Internal(format!("compaction task failed: {e}")))??;
    store.notes().compact(Compaction { ticket, base_seq, through, covered, snapshot, text }).await
}

/// The relay: an in-memory consumer per workspace with open documents, reading the log
/// past its watermark and bringing the updates other processes stored to the documents
/// open here (and telling them when their ticket is deleted).
struct Relay {
    notes: Weak<Notes>,
    workspace: WorkspaceId,
}

#[async_trait::async_trait]
impl Consumer for Relay {
    fn name(&self) -> &'static str {
        "notes-relay"
    }

    async fn handle(&self, tenant: &Arc<dyn TenantStore>, page: &[FeedEvent], _advance: Advance) -> Result<Handled, ConsumerError> {
        let Some(notes) = self.notes.upgrade() else { return Ok(Handled::default()) };
        let docs = notes.docs_of(self.workspace);
        if docs.is_empty() {
            return Ok(Handled::default());
        }
        let mut fetch = Vec::new();
        let mut gone = Vec::new();
        for event in page {
            let Some(ticket) = event.ticket_id() else { continue };
            let Some(doc) = docs.get(&ticket) else { continue };
            match event.event.kind.as_str() {
                NOTE_UPDATED if !doc.take_local(event.event.sync_id) => fetch.push(event.event.sync_id),
                "ticket.deleted" => gone.push(doc.clone()),
                _ => {}
            }
        }
        if !fetch.is_empty() {
            let mut by_ticket: HashMap<TicketId, Vec<_>> = HashMap::new();
            for update in tenant.notes().updates(fetch).await? {
                by_ticket.entry(update.ticket_id).or_default().push(update);
            }
            for (ticket, updates) in by_ticket {
                if let Some(doc) = docs.get(&ticket) {
                    // A document that has ended takes nothing; its next opening loads it all.
                    let _ = doc.tx.send(doc::Command::Remote(updates)).await;
                }
            }
        }
        for doc in gone {
            let _ = doc.tx.send(doc::Command::Gone).await;
        }
        Ok(Handled::default())
    }
}
