//! One open note: a task that owns the Yjs document and everything that touches it, fed by
//! the note's connections and the relay through one queue, so that the document is only
//! ever changed in one place and in one order.
//!
//! Writes go in rounds: the updates waiting in the queue are applied (each behind
//! `catch_unwind`; a panic rebuilds the document from storage and closes only the
//! connection that sent it), appended with their events in one transaction, and only after
//! that COMMIT sent to the other connections. Nothing that reads the document's content
//! (a joiner's step 1) is answered between applying and committing, so no client is ever
//! shown content that a crash could take back.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use yrs::block::ClientID;
use yrs::sync::AwarenessUpdate;
use yrs::sync::awareness::AwarenessUpdateEntry;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Options, ReadTxn, StateVector, Transact, Update};

use super::protocol::{self, Incoming};
use super::{NotesConfig, NotesMetrics};
use crate::store::notes::{NewNoteUpdate, NoteUpdate, PresenceEntry, StoredNote};
use crate::store::{StoreError, TenantStore, TicketId, UserId, WorkspaceId};

/// WebSocket close codes the server uses.
pub mod close {
    /// The server is shutting down (or the document was evicted): reconnect.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame that is not the y-websocket protocol.
    pub const BAD_FRAME: u16 = 1007;
    /// The caller's access changed, or a text frame.
    pub const POLICY: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server could not store an update: reconnect (the client still has it and sends
    /// it again on sync).
    pub const SERVER_ERROR: u16 = 1011;
    /// The connection fell too far behind: reconnect.
    pub const TRY_AGAIN: u16 = 1013;
    /// The ticket (and so its note) was deleted.
    pub const GONE: u16 = 4404;
}

/// How a connection is told to close, once.
#[derive(Default)]
pub struct Closer {
    pub token: CancellationToken,
    reason: OnceLock<(u16, &'static str)>,
}

impl Closer {
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.reason.set((code, reason));
        self.token.cancel();
    }

    pub fn reason(&self) -> Option<(u16, &'static str)> {
        self.reason.get().copied()
    }
}

pub type ConnId = u64;

/// A connection as the document sees it: where its frames go, and how to close it.
pub struct Peer {
    pub id: ConnId,
    pub user: UserId,
    pub out: mpsc::Sender<Bytes>,
    pub closer: Arc<Closer>,
}

pub enum Command {
    Join(Peer),
    Leave(ConnId),
    Frame {
        from: ConnId,
        messages: Vec<Incoming>,
    },
    /// Updates another process or instance stored (read by the relay).
    Remote(Vec<NoteUpdate>),
    /// The ticket was deleted.
    Gone,
}

/// The shared handle on an open document.
pub struct DocHandle {
    pub workspace: WorkspaceId,
    pub ticket: TicketId,
    pub tx: mpsc::Sender<Command>,
    /// Connections that hold (or are about to hold) the document: counted under the
    /// workspace's lock, so eviction and a new connection never cross.
    pub connections: AtomicUsize,
    /// Sync_ids this instance wrote, not yet seen by the relay (which then skips them).
    local: Mutex<HashSet<i64>>,
}

impl DocHandle {
    /// Whether the relay may skip `seq` (this instance wrote it); forgets it either way.
    pub fn take_local(&self, seq: i64) -> bool {
        self.local.lock().unwrap_or_else(|p| p.into_inner()).remove(&seq)
    }

    fn add_local(&self, seqs: &[i64]) {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a relay that never comes (no lane) must not grow it without end.
        if local.len() > 100_000 {
            local.clear();
        }
        local.extend(seqs.iter().copied());
    }
}

/// How a document task leaves the registry (see [`DocContext::evict`]).
pub type Evict = Box<dyn Fn(&DocHandle, bool) -> bool + Send + Sync>;

/// What the document task needs from its surroundings.
pub struct DocContext {
    pub store: Arc<dyn TenantStore>,
    pub config: NotesConfig,
    pub metrics: Arc<NotesMetrics>,
    pub shutdown: CancellationToken,
    /// Workspaces whose notes changed here, for the compaction sweep.
    pub touched: Arc<Mutex<HashSet<WorkspaceId>>>,
    /// Removes the document from the registry when nobody holds it (or always, when
    /// forced: its ticket is gone). True when removed: the task may end.
    pub evict: Evict,
    /// This instance, as other instances know its shared presence states.
    pub instance: uuid::Uuid,
}

/// How often a document with connections exchanges presence with other instances.
const PRESENCE_EVERY: Duration = Duration::from_millis(250);
/// Re-read this far back on the store's clock, so a state committed late is still seen
/// (clocks make reading one twice harmless).
const PRESENCE_OVERLAP_MS: i64 = 2_000;
/// A client on another instance whose state was not renewed this long is gone (its instance
/// died); Yjs clients renew every 15 s.
const PRESENCE_EXPIRES: Duration = Duration::from_secs(45);

/// A Yjs document built from what storage holds.
pub fn build(note: &StoredNote, client_id: u64) -> Result<Doc, StoreError> {
    let doc = Doc::with_options(Options { client_id: ClientID::new(client_id), skip_gc: false, ..Options::default() });
    let applied = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let mut txn = doc.transact_mut();
        if let Some(snapshot) = &note.snapshot {
            let update = Update::decode_v1(snapshot).map_err(|e| format!("snapshot: {e}"))?;
            txn.apply_update(update).map_err(|e| format!("snapshot: {e}"))?;
        }
        // All in one transaction: 10,000 small updates integrate in one pass.
        for stored in &note.updates {
            let update = Update::decode_v1(&stored.bytes).map_err(|e| format!("update {}: {e}", stored.seq))?;
            txn.apply_update(update).map_err(|e| format!("update {}: {e}", stored.seq))?;
        }
        Ok(())
    }));
    match applied {
        Ok(Ok(())) => Ok(doc),
        Ok(Err(e)) => Err(StoreError::Internal(format!("stored note does not decode: {e}"))),
        Err(_) => Err(StoreError::Internal("stored note could not be applied".into())),
    }
}

/// Applies one update behind `catch_unwind`: `Ok(true)` when it changed the document (or
/// waits in it for updates it depends on), `Ok(false)` when it was already known, `Err`
/// when yrs refused or panicked (the document may then be damaged: rebuild it).
fn apply(doc: &Doc, update: Update) -> Result<bool, &'static str> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut txn = doc.transact_mut();
        txn.apply_update(update).map_err(|_| "update could not be applied")?;
        let changed = txn.before_state() != txn.after_state() || !txn.delete_set().is_empty();
        let pending = txn.store().pending_update().is_some() || txn.store().pending_ds().is_some();
        Ok(changed || pending)
    }))
    .unwrap_or(Err("update could not be applied"))
}

struct Conn {
    user: UserId,
    out: mpsc::Sender<Bytes>,
    closer: Arc<Closer>,
    /// Awareness client ids this connection has spoken for: removed when it leaves.
    controlled: HashSet<ClientID>,
}

/// One update of a round, waiting for its commit.
struct Pending {
    from: ConnId,
    author: UserId,
    bytes: Bytes,
}

struct Actor {
    handle: Arc<DocHandle>,
    ctx: DocContext,
    doc: Doc,
    client_id: u64,
    /// Everything up to this sync_id was in what was loaded: the relay skips it.
    loaded_through: i64,
    conns: HashMap<ConnId, Conn>,
    awareness: HashMap<ClientID, AwarenessUpdateEntry>,
    /// Presence shared between instances (Postgres): local changes not yet written, the
    /// clients whose state came from other instances (and when it was last renewed), where
    /// the next read starts on the store's clock, and when the next exchange is due.
    presence: Presence,
    round: Vec<Pending>,
    /// When the text projection is due to be written (`None`: up to date).
    text_due: Option<Instant>,
    last_text: Option<String>,
    /// When the last connection left (for eviction).
    idle_since: Option<Instant>,
    /// A bad update may have damaged the document: rebuild it before the next commit.
    needs_reload: bool,
}

/// Starts the task of a document; it loads the note first (a failure closes whoever joined).
pub fn spawn(workspace: WorkspaceId, ticket: TicketId, ctx: DocContext, tasks: &tokio_util::task::TaskTracker) -> Arc<DocHandle> {
    let (tx, rx) = mpsc::channel(ctx.config.queue);
    let handle = Arc::new(DocHandle { workspace, ticket, tx, connections: AtomicUsize::new(0), local: Mutex::new(HashSet::new()) });
    tasks.spawn(run(handle.clone(), ctx, rx));
    handle
}

async fn run(handle: Arc<DocHandle>, ctx: DocContext, mut rx: mpsc::Receiver<Command>) {
    let client_id = crate::store::notes::server_client_id(handle.workspace, handle.ticket);
    let started = std::time::Instant::now();
    let loaded = match ctx.store.notes().load(handle.ticket).await {
        Ok(note) => build(&note, client_id).map(|doc| (doc, note.through(), note.updates.len())),
        Err(e) => Err(e),
    };
    let (doc, loaded_through, updates) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            tracing::error!(workspace = %handle.workspace, ticket = %handle.ticket, error = %err, "cannot open note");
            fail_all(&handle, &mut rx, &ctx).await;
            return;
        }
    };
    tracing::debug!(ticket = %handle.ticket, updates, ms = started.elapsed().as_millis() as u64, "note opened");
    ctx.metrics.documents.fetch_add(1, Ordering::Relaxed);
    if updates as u64 >= ctx.config.compact_after {
        ctx.touched.lock().unwrap_or_else(|p| p.into_inner()).insert(handle.workspace);
    }
    let shared = ctx.store.notes().shares_presence();
    let mut actor = Actor {
        handle,
        ctx,
        doc,
        client_id,
        loaded_through,
        conns: HashMap::new(),
        awareness: HashMap::new(),
        presence: Presence { shared, ..Presence::default() },
        round: Vec::new(),
        text_due: None,
        last_text: None,
        idle_since: Some(Instant::now()),
        needs_reload: false,
    };
    actor.main(&mut rx).await;
    actor.ctx.metrics.documents.fetch_sub(1, Ordering::Relaxed);
}

#[derive(Default)]
struct Presence {
    /// Whether other instances may serve this note (fixed for the store's life).
    shared: bool,
    unsent: HashMap<ClientID, AwarenessUpdateEntry>,
    remote: HashMap<ClientID, Instant>,
    since: i64,
    due: Option<Instant>,
}

/// The note could not be loaded: everyone who joins is told to come back later, until the
/// document is evicted.
async fn fail_all(handle: &DocHandle, rx: &mut mpsc::Receiver<Command>, ctx: &DocContext) {
    loop {
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(Command::Join(peer))) => peer.closer.close(close::SERVER_ERROR, "the note could not be opened"),
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(_) => {
                if (ctx.evict)(handle, false) {
                    return;
                }
            }
        }
    }
}

/// Commands handled per round at most (a round's updates share one transaction).
const ROUND: usize = 256;

impl Actor {
    async fn main(&mut self, rx: &mut mpsc::Receiver<Command>) {
        let shutdown = self.ctx.shutdown.clone();
        loop {
            let deadline = self.next_deadline();
            let command = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.drain_then_close(rx, close::GOING_AWAY, "server shutting down").await;
                    return;
                }
                command = rx.recv() => command,
                _ = sleep_until(deadline) => {
                    if self.on_timer().await {
                        return;
                    }
                    continue;
                }
            };
            let Some(command) = command else { return };
            let mut batch = vec![command];
            while batch.len() < ROUND {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            for command in batch {
                if self.handle(command).await.is_err() {
                    return;
                }
            }
            if self.flush().await.is_err() {
                return;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let evict = self.idle_since.map(|t| t + self.ctx.config.idle);
        [self.text_due, evict, self.presence.due].into_iter().flatten().min()
    }

    /// The text projection and eviction. True when the task ends.
    async fn on_timer(&mut self) -> bool {
        let now = Instant::now();
        if self.presence.due.is_some_and(|t| t <= now) {
            self.exchange_presence().await;
        }
        if self.text_due.is_some_and(|t| t <= now) {
            self.write_text().await;
        }
        if self.conns.is_empty() && self.idle_since.is_some_and(|t| t + self.ctx.config.idle <= now) {
            if self.text_due.is_some() {
                self.write_text().await;
            }
            if (self.ctx.evict)(&self.handle, false) {
                return true;
            }
            // Someone is joining: look again after another idle period.
            self.idle_since = Some(now);
        }
        false
    }

    async fn write_text(&mut self) {
        self.text_due = None;
        let text = protocol::plain_text(&self.doc);
        if self.last_text.as_deref() == Some(text.as_str()) {
            return;
        }
        match self.ctx.store.notes().set_text(self.handle.ticket, text.clone()).await {
            Ok(()) => self.last_text = Some(text),
            Err(err) => {
                tracing::warn!(ticket = %self.handle.ticket, error = %err, "cannot record a note's text; retrying");
                self.text_due = Some(Instant::now() + self.ctx.config.text_delay);
            }
        }
    }

    fn touch(&self) {
        self.ctx.touched.lock().unwrap_or_else(|p| p.into_inner()).insert(self.handle.workspace);
    }

    fn text_changed(&mut self) {
        if self.text_due.is_none() {
            self.text_due = Some(Instant::now() + self.ctx.config.text_delay);
        }
    }

    /// Handles one command. `Err` ends the task.
    async fn handle(&mut self, command: Command) -> Result<(), ()> {
        match command {
            Command::Join(peer) => {
                self.flush().await?;
                self.idle_since = None;
                if self.presence.shared && self.presence.due.is_none() {
                    // Before the hello: whoever is on other instances is in it.
                    self.exchange_presence().await;
                }
                // The server speaks first, as y-websocket's server does: its state vector,
                // then who is here.
                let sv = self.doc.transact().state_vector();
                let mut hello = vec![protocol::step1(&sv)];
                if !self.awareness.is_empty() {
                    hello.push(protocol::awareness(&AwarenessUpdate { clients: self.awareness.clone() }));
                }
                let conn = Conn { user: peer.user, out: peer.out, closer: peer.closer, controlled: HashSet::new() };
                self.conns.insert(peer.id, conn);
                for frame in hello {
                    self.send(peer.id, frame);
                }
                if self.presence.shared && self.presence.due.is_none() {
                    self.presence.due = Some(Instant::now() + PRESENCE_EVERY);
                }
            }
            Command::Leave(id) => self.leave(id),
            Command::Frame { from, messages } => {
                for message in messages {
                    if !self.conns.contains_key(&from) {
                        break;
                    }
                    match message {
                        Incoming::Update { bytes, update } => self.apply_from(from, bytes, update),
                        Incoming::Step1(sv) => {
                            self.flush().await?;
                            self.answer_step1(from, &sv);
                        }
                        Incoming::Awareness { frame, update } => self.awareness_from(from, frame, update),
                        Incoming::QueryAwareness => {
                            let update = AwarenessUpdate { clients: self.awareness.clone() };
                            self.send(from, protocol::awareness(&update));
                        }
                        Incoming::Auth => {}
                    }
                }
            }
            Command::Remote(updates) => {
                self.flush().await?;
                self.apply_remote(updates);
            }
            Command::Gone => {
                self.close_all(close::GONE, "the ticket was deleted");
                (self.ctx.evict)(&self.handle, true);
                return Err(());
            }
        }
        Ok(())
    }

    fn answer_step1(&mut self, to: ConnId, sv: &StateVector) {
        let diff = catch_unwind(AssertUnwindSafe(|| self.doc.transact().encode_state_as_update_v1(sv)));
        match diff {
            Ok(diff) => self.send(to, protocol::step2(&diff)),
            Err(_) => self.close(to, close::BAD_FRAME, "state vector could not be answered"),
        }
    }

    /// Applies a client's update to the document (validating it); it is committed and sent
    /// on at the end of the round.
    fn apply_from(&mut self, from: ConnId, bytes: Bytes, update: Update) {
        let Some(author) = self.conns.get(&from).map(|c| c.user) else { return };
        match apply(&self.doc, update) {
            Ok(true) => self.round.push(Pending { from, author, bytes }),
            Ok(false) => {}
            Err(reason) => {
                self.ctx.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(ticket = %self.handle.ticket, conn = from, reason, "closing a note connection");
                self.close(from, close::BAD_FRAME, reason);
                // The document may be damaged: it is rebuilt from storage (and this round's
                // updates from others) before anything is committed or answered.
                self.needs_reload = true;
            }
        }
    }

    /// Commits this round's updates with their events, then sends each to the other
    /// connections. `Err` ends the task.
    async fn flush(&mut self) -> Result<(), ()> {
        if self.needs_reload {
            self.reload().await?;
        }
        if self.round.is_empty() {
            return Ok(());
        }
        let round = std::mem::take(&mut self.round);
        let updates = round.iter().map(|p| NewNoteUpdate { author: p.author, bytes: p.bytes.clone() }).collect();
        match self.ctx.store.notes().append(self.handle.ticket, updates).await {
            Ok(seqs) => {
                self.handle.add_local(&seqs);
                self.touch();
                self.ctx.metrics.updates.fetch_add(round.len() as u64, Ordering::Relaxed);
                for pending in &round {
                    self.broadcast(Some(pending.from), protocol::update(&pending.bytes));
                }
                self.text_changed();
                Ok(())
            }
            Err(StoreError::NotFound) => {
                self.close_all(close::GONE, "the ticket was deleted");
                (self.ctx.evict)(&self.handle, true);
                Err(())
            }
            Err(err) => {
                // Not stored, so not sent: the senders reconnect and send them again on
                // sync; everyone else never saw them.
                tracing::warn!(ticket = %self.handle.ticket, error = %err, updates = round.len(), "cannot store note updates");
                let senders: HashSet<ConnId> = round.iter().map(|p| p.from).collect();
                for id in senders {
                    self.close(id, close::SERVER_ERROR, "the update could not be saved; reconnect");
                }
                self.needs_reload = true;
                self.reload().await
            }
        }
    }

    /// Rebuilds the document from storage, then re-applies this round's updates (which are
    /// not stored yet). `Err` (storage unreadable) closes everyone and ends the task.
    async fn reload(&mut self) -> Result<(), ()> {
        self.needs_reload = false;
        let rebuilt = match self.ctx.store.notes().load(self.handle.ticket).await {
            Ok(note) => build(&note, self.client_id),
            Err(e) => Err(e),
        };
        match rebuilt {
            Ok(doc) => {
                self.doc = doc;
                let round = std::mem::take(&mut self.round);
                for pending in round {
                    match Update::decode_v1(&pending.bytes).map_err(|_| "update could not be applied").and_then(|u| apply(&self.doc, u)) {
                        Ok(_) => self.round.push(pending),
                        Err(reason) => self.close(pending.from, close::BAD_FRAME, reason),
                    }
                }
                Ok(())
            }
            Err(err) => {
                tracing::error!(ticket = %self.handle.ticket, error = %err, "cannot reload a note; closing its connections");
                self.close_all(close::SERVER_ERROR, "the note could not be read; reconnect");
                (self.ctx.evict)(&self.handle, true);
                Err(())
            }
        }
    }

    /// Updates stored elsewhere: applied, and sent to every connection here.
    fn apply_remote(&mut self, updates: Vec<NoteUpdate>) {
        for stored in updates {
            if stored.seq <= self.loaded_through {
                continue;
            }
            let applied = Update::decode_v1(&stored.bytes).map_err(|_| "stored update does not decode").and_then(|u| apply(&self.doc, u));
            if let Err(reason) = applied {
                tracing::error!(ticket = %self.handle.ticket, seq = stored.seq, reason, "a stored note update could not be applied");
                self.needs_reload = true;
                continue;
            }
            self.ctx.metrics.relayed.fetch_add(1, Ordering::Relaxed);
            // Sent even when the document knew it already (a reload may have read it
            // before the relay brought it): clients ignore what they have.
            self.broadcast(None, protocol::update(&stored.bytes));
            self.text_changed();
        }
    }

    fn awareness_from(&mut self, from: ConnId, frame: Bytes, update: AwarenessUpdate) {
        let mut changed = false;
        for (client, entry) in update.clients {
            let current = self.awareness.get(&client).map(|e| e.clock);
            let removal = &*entry.json == "null";
            let accept = match current {
                None => !removal,
                Some(clock) => clock < entry.clock || (clock == entry.clock && removal),
            };
            if !accept {
                continue;
            }
            if let Some(conn) = self.conns.get_mut(&from) {
                if removal {
                    conn.controlled.remove(&client);
                } else {
                    conn.controlled.insert(client);
                }
            }
            if removal {
                self.awareness.remove(&client);
            } else {
                // Bounded: a document has at most its connections' worth of states.
                if current.is_none() && self.awareness.len() >= self.ctx.config.awareness_states {
                    continue;
                }
                self.awareness.insert(client, entry.clone());
            }
            if self.presence.shared {
                self.presence.remote.remove(&client);
                self.presence.unsent.insert(client, entry);
            }
            changed = true;
        }
        if changed {
            self.broadcast(Some(from), frame);
        }
    }

    /// Shares presence with the other instances (a no-op where there are none): writes the
    /// local changes, takes in theirs, forgets their clients that went quiet, and tells the
    /// connections here what changed. Repeats while anyone is connected; a failure is retried
    /// at the next round (presence is best effort, the document is not affected).
    async fn exchange_presence(&mut self) {
        if !self.presence.shared {
            return;
        }
        let notes = self.ctx.store.notes();
        let (ticket, instance) = (self.handle.ticket, self.ctx.instance);
        if !self.presence.unsent.is_empty() {
            let entries = self
                .presence
                .unsent
                .iter()
                .map(|(client, e)| PresenceEntry { client: client.get(), clock: e.clock, state: e.json.to_string() })
                .collect();
            match notes.share_presence(ticket, instance, entries).await {
                Ok(()) => self.presence.unsent.clear(),
                Err(err) => tracing::debug!(%ticket, error = %err, "cannot share note presence; retrying"),
            }
        }
        let now = Instant::now();
        let mut changed = HashMap::new();
        match notes.shared_presence(ticket, instance, self.presence.since).await {
            Ok(shared) => {
                self.presence.since = shared.now - PRESENCE_OVERLAP_MS;
                for entry in shared.entries {
                    let client = ClientID::new(entry.client);
                    let removal = entry.state == "null";
                    let current = self.awareness.get(&client).map(|e| e.clock);
                    let newer = match current {
                        None => !removal,
                        Some(clock) => {
                            clock < entry.clock || (clock == entry.clock && removal && self.presence.remote.contains_key(&client))
                        }
                    };
                    // A client connected here is this instance's to speak for.
                    let local = self.conns.values().any(|c| c.controlled.contains(&client));
                    if !newer || local {
                        continue;
                    }
                    let update = AwarenessUpdateEntry { clock: entry.clock, json: entry.state.into() };
                    if removal {
                        self.awareness.remove(&client);
                        self.presence.remote.remove(&client);
                    } else {
                        if current.is_none() && self.awareness.len() >= self.ctx.config.awareness_states {
                            continue;
                        }
                        self.awareness.insert(client, update.clone());
                        self.presence.remote.insert(client, now);
                    }
                    changed.insert(client, update);
                }
            }
            Err(err) => tracing::debug!(%ticket, error = %err, "cannot read shared note presence; retrying"),
        }
        let quiet: Vec<ClientID> =
            self.presence.remote.iter().filter(|(_, renewed)| now.duration_since(**renewed) >= PRESENCE_EXPIRES).map(|(c, _)| *c).collect();
        for client in quiet {
            self.presence.remote.remove(&client);
            if let Some(entry) = self.awareness.remove(&client) {
                changed.insert(client, AwarenessUpdateEntry { clock: entry.clock + 1, json: "null".into() });
            }
        }
        if !changed.is_empty() {
            self.broadcast(None, protocol::awareness(&AwarenessUpdate { clients: changed }));
        }
        // Again while anyone is here, or while a departure is still to be told.
        self.presence.due = (!self.conns.is_empty() || !self.presence.unsent.is_empty()).then(|| now + PRESENCE_EVERY);
    }

    /// Sends to one connection; one that cannot keep up is closed (it reconnects and syncs).
    fn send(&mut self, to: ConnId, frame: Bytes) {
        let Some(conn) = self.conns.get(&to) else { return };
        match conn.out.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.close(to, close::TRY_AGAIN, "too far behind; reconnect"),
            Err(mpsc::error::TrySendError::Closed(_)) => self.leave(to),
        }
    }

    fn broadcast(&mut self, except: Option<ConnId>, frame: Bytes) {
        let mut failed = Vec::new();
        for (id, conn) in &self.conns {
            if Some(*id) == except {
                continue;
            }
            match conn.out.try_send(frame.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => failed.push((*id, true)),
                Err(mpsc::error::TrySendError::Closed(_)) => failed.push((*id, false)),
            }
        }
        for (id, full) in failed {
            if full {
                self.close(id, close::TRY_AGAIN, "too far behind; reconnect");
            } else {
                self.leave(id);
            }
        }
    }

    fn close(&mut self, id: ConnId, code: u16, reason: &'static str) {
        if let Some(conn) = self.conns.get(&id) {
            conn.closer.close(code, reason);
        }
        self.leave(id);
    }

    fn close_all(&mut self, code: u16, reason: &'static str) {
        for conn in self.conns.values() {
            conn.closer.close(code, reason);
        }
        self.conns.clear();
    }

    /// Forgets a connection, and tells the others its cursors are gone.
    fn leave(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else { return };
        let mut removed = HashMap::new();
        for client in conn.controlled {
            if let Some(entry) = self.awareness.remove(&client) {
                let gone = AwarenessUpdateEntry { clock: entry.clock + 1, json: "null".into() };
                if self.presence.shared {
                    self.presence.unsent.insert(client, gone.clone());
                }
                removed.insert(client, gone);
            }
        }
        if !removed.is_empty() {
            self.broadcast(None, protocol::awareness(&AwarenessUpdate { clients: removed }));
        }
        if self.conns.is_empty() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// At shutdown: everything already queued is handled and committed, the text recorded,
    /// then every connection closed with "going away".
    async fn drain_then_close(&mut self, rx: &mut mpsc::Receiver<Command>, code: u16, reason: &'static str) {
        while let Ok(command) = rx.try_recv() {
            if matches!(command, Command::Join(_)) {
                if let Command::Join(peer) = command {
                    peer.closer.close(code, reason);
                }
                continue;
            }
            if self.handle(command).await.is_err() {
                return;
            }
        }
        if self.flush().await.is_err() {
            return;
        }
        if self.text_due.is_some() {
            self.write_text().await;
        }
        self.close_all(code, reason);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
