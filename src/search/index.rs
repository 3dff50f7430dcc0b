//! One workspace's index on disk, and the registry of the ones open on this instance.
//!
//! An index is opened as it is found, or created empty when it is missing, unreadable or of
//! another [`SCHEMA_VERSION`] (the indexer then fills it from the start of the log). Its
//! watermark is in its last commit's payload. A writer exists only while the workspace is
//! busy: it is taken when events arrive, committed at most every `commit_every` (at once
//! when a search is waiting for it), and closed after `writer_idle` without work; at most
//! `writers` are open at once on the instance (each buffers up to `writer_bytes`). Readers
//! are reloaded at each commit. The registry keeps at most `open_cap` indexes open, and
//! closes the least recently used one that is not writing. All tantivy calls here block:
//! callers run them on blocking threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::indexer::IndexWriterOptions;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::schema::{Fields, SCHEMA_VERSION, TOKENIZER, TicketState, analyzer};
use crate::store::{TicketId, WorkspaceId};

/// How indexes are kept (settings `EDGEDESK_SEARCH_*`, see the README).
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// Postgres mode: this instance's directory of indexes (`EDGEDESK_SEARCH_DIR`, default
    /// `<data dir>/search`). SQLite mode keeps each in its workspace's folder.
    pub dir: Option<PathBuf>,
    /// Indexes open at once (readers cached; the least recently used is closed past it).
    pub open_cap: usize,
    /// Writers open at once on the instance.
    pub writers: usize,
    /// What one writer buffers before it writes a segment (tantivy's minimum is 15 MB).
    pub writer_bytes: usize,
    /// The longest a handled event waits to become searchable while the workspace is busy.
    pub commit_every: Duration,
    /// A writer without work for this long is committed and closed.
    pub writer_idle: Duration,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            dir: None,
            open_cap: 128,
            writers: 4,
            writer_bytes: 32 * 1024 * 1024,
            commit_every: Duration::from_millis(500),
            writer_idle: Duration::from_secs(5),
        }
    }
}

/// Why the index could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The indexer was handed a page from a watermark the index is not at (its index was
    /// replaced, or evicted before its last commit): it must ask for the position again.
    #[error("the index stands at {at}, not {from}")]
    Moved { at: i64, from: i64 },
    #[error("search index {dir}: {message}")]
    Tantivy { dir: String, message: String },
}

fn tantivy_error(dir: &Path, err: impl std::fmt::Display) -> IndexError {
    IndexError::Tantivy { dir: dir.display().to_string(), message: err.to_string() }
}

/// The commit payload.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    schema: u32,
    watermark: i64,
}

/// Where a workspace's index lives.
#[derive(Debug, Clone)]
pub enum Place {
    /// `search/` in the workspace's folder under this data directory (SQLite mode): it
    /// travels with the folder.
    WorkspaceFolders(PathBuf),
    /// `<dir>/<ws>/` (Postgres mode): this instance's own cache of the log.
    Directory(PathBuf),
}

impl Place {
    /// The place for a data directory and backend.
    pub fn new(data_dir: &Path, config: &SearchConfig, postgres: bool) -> Self {
        match (postgres, &config.dir) {
            (false, _) => Self::WorkspaceFolders(data_dir.to_owned()),
            (true, Some(dir)) => Self::Directory(dir.clone()),
            (true, None) => Self::Directory(data_dir.join("search")),
        }
    }

    pub fn dir(&self, workspace: WorkspaceId) -> PathBuf {
        match self {
            Self::WorkspaceFolders(data_dir) => crate::store::workspace_folder(data_dir, workspace).join("search"),
            Self::Directory(root) => root.join(workspace.to_string()),
        }
    }
}

/// The identity of an index directory (its inode, while it holds an index), to notice it
/// being deleted or swapped. (Not `meta.json`'s: each commit replaces that file.)
fn identity(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    if !dir.join("meta.json").exists() {
        return None;
    }
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// A change to one ticket's document.
pub enum Change {
    /// The new state of a ticket's document, given its current state (`None`: not indexed).
    Update(TicketId, Box<dyn FnOnce(Option<TicketState>) -> Option<TicketState> + Send>),
    /// The ticket is gone.
    Delete(TicketId),
}

struct Writer {
    writer: IndexWriter,
    _permit: OwnedSemaphorePermit,
}

struct Inner {
    writer: Option<Writer>,
    /// Every event up to here is handled (in `dirty` or committed).
    position: i64,
    /// The watermark of the last commit.
    committed: i64,
    /// Documents changed since the last commit (`None`: deleted), newest state.
    dirty: HashMap<TicketId, Option<TicketState>>,
    last_commit: Instant,
    last_write: Instant,
    /// A task is committing and closing this index's writer when due (see `tidy`).
    tidying: bool,
}

/// One workspace's open index.
pub struct WorkspaceIndex {
    pub workspace: WorkspaceId,
    pub dir: PathBuf,
    fields: Fields,
    index: Index,
    reader: IndexReader,
    inner: Mutex<Inner>,
    /// Every event up to this sync_id is searchable.
    visible: watch::Sender<i64>,
    /// Searches waiting for this index to catch up: commit at once.
    pub waiting: AtomicUsize,
    /// The directory's identity when opened.
    identity: Option<u64>,
    /// `inner`'s position and whether it has a writer, readable without waiting for a write
    /// in progress (the registry and the routes ask from async code).
    handled: AtomicI64,
    writing: AtomicBool,
    /// When it last wrote (Unix milliseconds).
    wrote_at: AtomicU64,
    /// Set when a write failed in a way that calls for a fresh start.
    broken: AtomicBool,
}

impl WorkspaceIndex {
    /// Opens the index in `dir`, creating it empty when missing, unreadable or of another
    /// schema.
    pub fn open(workspace: WorkspaceId, dir: &Path, fields: &Fields) -> Result<Self, IndexError> {
        let (index, watermark) = match Self::open_existing(dir, fields) {
            Ok(Some(found)) => found,
            Ok(None) => (Self::create(dir, fields)?, 0),
            Err(why) => {
                tracing::warn!(%workspace, dir = %dir.display(), %why, "the search index is rebuilt from the log");
                (Self::create(dir, fields)?, 0)
            }
        };
        index.tokenizers().register(TOKENIZER, analyzer());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(|e| tantivy_error(dir, e))?;
        let now = Instant::now();
        Ok(Self {
            workspace,
            dir: dir.to_owned(),
            fields: fields.clone(),
            index,
            reader,
            inner: Mutex::new(Inner {
                writer: None,
                position: watermark,
                committed: watermark,
                dirty: HashMap::new(),
                last_commit: now,
                last_write: now,
                tidying: false,
            }),
            visible: watch::channel(watermark).0,
            waiting: AtomicUsize::new(0),
            identity: identity(dir),
            broken: AtomicBool::new(false),
            handled: AtomicI64::new(watermark),
            writing: AtomicBool::new(false),
            wrote_at: AtomicU64::new(crate::store::Millis::now().0.max(0) as u64),
        })
    }

    /// `Ok(None)`: no index there. `Err`: one that must be rebuilt, and why.
    fn open_existing(dir: &Path, fields: &Fields) -> Result<Option<(Index, i64)>, String> {
        if !dir.join("meta.json").exists() {
            return Ok(None);
        }
        let index = Index::open_in_dir(dir).map_err(|e| format!("unreadable: {e}"))?;
        if index.schema() != fields.schema {
            return Err("written with another schema".into());
        }
        let metas = index.load_metas().map_err(|e| format!("unreadable: {e}"))?;
        let payload = match metas.payload.as_deref() {
            None => Payload { schema: SCHEMA_VERSION, watermark: 0 },
            Some(text) => serde_json::from_str(text).map_err(|e| format!("unreadable commit payload: {e}"))?,
        };
        if payload.schema != SCHEMA_VERSION {
            return Err(format!("schema version {} (this build writes {SCHEMA_VERSION})", payload.schema));
        }
        Ok(Some((index, payload.watermark)))
    }

    fn create(dir: &Path, fields: &Fields) -> Result<Index, IndexError> {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| tantivy_error(dir, e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| tantivy_error(dir, e))?;
        Index::create_in_dir(dir, fields.schema.clone()).map_err(|e| tantivy_error(dir, e))
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Every event up to this is handled.
    pub fn position(&self) -> i64 {
        self.handled.load(Ordering::Acquire)
    }

    /// Every event up to this is searchable.
    pub fn visible(&self) -> i64 {
        *self.visible.borrow()
    }

    pub fn watch_visible(&self) -> watch::Receiver<i64> {
        self.visible.subscribe()
    }

    pub fn has_writer(&self) -> bool {
        self.writing.load(Ordering::Acquire)
    }

    /// Moves the position (under the `inner` lock).
    fn set_position(&self, inner: &mut Inner, to: i64) {
        inner.position = to;
        self.handled.store(to, Ordering::Release);
    }

    /// Takes the writer away (under the `inner` lock).
    fn take_writer(&self, inner: &mut Inner) -> Option<Writer> {
        self.writing.store(false, Ordering::Release);
        inner.writer.take()
    }

    /// Whether the directory under this index was deleted or replaced, or a write failed.
    pub fn is_stale(&self) -> bool {
        self.broken.load(Ordering::Acquire) || identity(&self.dir) != self.identity
    }

    /// The committed document of `ticket`, if any.
    fn stored(&self, ticket: TicketId) -> Result<Option<TicketState>, IndexError> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(self.fields.ticket_term(ticket), IndexRecordOption::Basic);
        let hits = searcher.search(&query, &TopDocs::with_limit(1).order_by_score()).map_err(|e| tantivy_error(&self.dir, e))?;
        let Some((_, address)) = hits.first() else { return Ok(None) };
        let doc: TantivyDocument = searcher.doc(*address).map_err(|e| tantivy_error(&self.dir, e))?;
        Ok(self.fields.state_of(&doc))
    }

    /// Applies the changes of the events after `from` up to `to` (draining `changes`).
    /// `permit` lets a writer be opened when none is; [`Applied::NeedWriter`] asks for one,
    /// leaving `changes` as they were. Commits when due or awaited.
    pub fn apply(
        &self,
        from: i64,
        to: i64,
        changes: &mut Vec<Change>,
        permit: &mut Option<OwnedSemaphorePermit>,
        config: &SearchConfig,
    ) -> Result<Applied, IndexError> {
        let mut inner = self.inner();
        if inner.position != from {
            return Err(IndexError::Moved { at: inner.position, from });
        }
        if changes.is_empty() {
            self.set_position(&mut inner, to);
            if inner.dirty.is_empty() {
                self.visible.send_replace(to);
            }
            return Ok(Applied::Done { tidy: false });
        }
        if inner.writer.is_none() {
            let Some(permit) = permit.take() else { return Ok(Applied::NeedWriter) };
            let options = IndexWriterOptions::builder()
                .memory_budget_per_thread(WRITER_MIN.max(config.writer_bytes))
                .num_worker_threads(1)
                .num_merge_threads(1)
                .build();
            let writer = self.index.writer_with_options(options).map_err(|e| tantivy_error(&self.dir, e))?;
            inner.writer = Some(Writer { writer, _permit: permit });
            self.writing.store(true, Ordering::Release);
        }
        let mut touched = Vec::new();
        for change in changes.drain(..) {
            match change {
                Change::Update(ticket, update) => {
                    let current = match inner.dirty.get(&ticket) {
                        Some(state) => state.clone(),
                        None => self.stored(ticket)?,
                    };
                    inner.dirty.insert(ticket, update(current));
                    touched.push(ticket);
                }
                Change::Delete(ticket) => {
                    inner.dirty.insert(ticket, None);
                    touched.push(ticket);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for ticket in touched {
            let doc = match inner.dirty.get(&ticket) {
                Some(Some(state)) => Some(self.fields.document(state).map_err(|e| tantivy_error(&self.dir, e))?),
                _ => None,
            };
            let Some(writer) = inner.writer.as_mut() else { break };
            writer.writer.delete_term(self.fields.ticket_term(ticket));
            if let Some(doc) = doc {
                writer.writer.add_document(doc).map_err(|e| tantivy_error(&self.dir, e))?;
            }
        }
        self.set_position(&mut inner, to);
        inner.last_write = Instant::now();
        self.wrote_at.store(crate::store::Millis::now().0.max(0) as u64, Ordering::Relaxed);
        if inner.last_commit.elapsed() >= config.commit_every || self.waiting.load(Ordering::Acquire) > 0 {
            self.commit(&mut inner)?;
        }
        let tidy = !inner.tidying;
        inner.tidying = true;
        Ok(Applied::Done { tidy })
    }

    /// Commits what is written, with the position as the watermark, and makes it searchable.
    fn commit(&self, inner: &mut Inner) -> Result<(), IndexError> {
        let Some(writer) = inner.writer.as_mut() else { return Ok(()) };
        let payload = serde_json::to_string(&Payload { schema: SCHEMA_VERSION, watermark: inner.position }).unwrap_or_default();
        let result = writer.writer.prepare_commit().and_then(|mut prepared| {
            prepared.set_payload(&payload);
            prepared.commit()
        });
        if let Err(err) = result {
            self.broken.store(true, Ordering::Release);
            return Err(tantivy_error(&self.dir, err));
        }
        self.reader.reload().map_err(|e| tantivy_error(&self.dir, e))?;
        inner.dirty.clear();
        inner.committed = inner.position;
        inner.last_commit = Instant::now();
        self.visible.send_replace(inner.position);
        Ok(())
    }

    /// Commits now if anything waits (a search is waiting).
    pub fn commit_now(&self) -> Result<(), IndexError> {
        let mut inner = self.inner();
        if inner.dirty.is_empty() { Ok(()) } else { self.commit(&mut inner) }
    }

    /// Commits when due, closes the writer when idle (or `closing`). Returns how long to
    /// sleep before the next look, or `None` once the writer is closed (the tidy task ends).
    pub fn tidy(&self, commit_every: Duration, writer_idle: Duration, closing: bool) -> Option<Duration> {
        let mut inner = self.inner();
        if inner.writer.is_none() {
            inner.tidying = false;
            return None;
        }
        let dirty = !inner.dirty.is_empty();
        let unsaved = dirty || inner.position > inner.committed;
        let close = closing || inner.last_write.elapsed() >= writer_idle;
        if ((dirty && inner.last_commit.elapsed() >= commit_every) || (close && unsaved))
            && let Err(err) = self.commit(&mut inner)
        {
            // Start again from the last commit: the lane is told (`Moved`) at its next page.
            tracing::warn!(workspace = %self.workspace, error = %err, "cannot commit the search index; indexing resumes from its last commit");
            inner.dirty.clear();
            let committed = inner.committed;
            self.set_position(&mut inner, committed);
            drop(self.take_writer(&mut inner));
            inner.tidying = false;
            return None;
        }
        if close {
            if let Some(writer) = self.take_writer(&mut inner)
                && let Err(err) = writer.writer.wait_merging_threads()
            {
                tracing::debug!(workspace = %self.workspace, error = %err, "a search index merge ended with an error");
            }
            inner.tidying = false;
            return None;
        }
        let wait = if inner.dirty.is_empty() {
            writer_idle.saturating_sub(inner.last_write.elapsed())
        } else {
            commit_every.saturating_sub(inner.last_commit.elapsed())
        };
        Some(wait.max(Duration::from_millis(10)))
    }

    /// Commits what is pending and closes the writer; returns the documents now indexed.
    pub fn close(&self) -> Result<u64, IndexError> {
        let mut inner = self.inner();
        if inner.writer.is_some() && (!inner.dirty.is_empty() || inner.position > inner.committed) {
            self.commit(&mut inner)?;
        }
        if let Some(writer) = self.take_writer(&mut inner) {
            writer.writer.wait_merging_threads().map_err(|e| tantivy_error(&self.dir, e))?;
        }
        inner.tidying = false;
        drop(inner);
        self.reader.reload().map_err(|e| tantivy_error(&self.dir, e))?;
        Ok(self.reader.searcher().num_docs())
    }

    /// Closes the writer now if it is not in use (making room for another workspace's).
    pub fn try_close(&self) -> bool {
        let Ok(mut inner) = self.inner.try_lock() else { return false };
        if inner.writer.is_none() {
            return false;
        }
        if (!inner.dirty.is_empty() || inner.position > inner.committed) && self.commit(&mut inner).is_err() {
            return false;
        }
        if let Some(writer) = self.take_writer(&mut inner) {
            let _ = writer.writer.wait_merging_threads();
        }
        true
    }

    /// When it last wrote (Unix milliseconds).
    fn last_write(&self) -> u64 {
        self.wrote_at.load(Ordering::Relaxed)
    }
}

/// tantivy's smallest writer buffer.
const WRITER_MIN: usize = 15_000_000;

/// What [`WorkspaceIndex::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done { tidy: bool },
    NeedWriter,
}

struct Entry {
    index: Arc<WorkspaceIndex>,
    used: u64,
}

/// The indexes open on this instance.
pub struct Indexes {
    place: Place,
    pub config: SearchConfig,
    fields: Fields,
    open: Mutex<HashMap<WorkspaceId, Entry>>,
    /// One opener at a time per workspace: opening may rebuild the directory, and two
    /// rebuilding it at once (a search and the indexer after a restart) would tear it apart.
    opening: Mutex<HashMap<WorkspaceId, Arc<tokio::sync::Mutex<()>>>>,
    clock: AtomicU64,
    writers: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Indexes {
    pub fn new(place: Place, config: SearchConfig, shutdown: CancellationToken, tasks: TaskTracker) -> Arc<Self> {
        Arc::new(Self {
            place,
            writers: Arc::new(Semaphore::new(config.writers.max(1))),
            config,
            fields: Fields::new(),
            open: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            shutdown,
            tasks,
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<WorkspaceId, Entry>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self, workspace: WorkspaceId) -> PathBuf {
        self.place.dir(workspace)
    }

    pub fn open_count(&self) -> usize {
        self.map().len()
    }

    pub fn writer_count(&self) -> usize {
        self.config.writers.max(1) - self.writers.available_permits()
    }

    /// The open index of `workspace`, opened (or created) if needed. One whose directory
    /// was deleted or replaced under it is opened again.
    pub async fn get(self: &Arc<Self>, workspace: WorkspaceId) -> Result<Arc<WorkspaceIndex>, IndexError> {
        if let Some(index) = self.open_fresh(workspace).await {
            return Ok(index);
        }
        let gate = self.gate(workspace);
        let opened = {
            let _one_opener = gate.lock().await;
            // Whoever held the gate before may have opened it meanwhile.
            match self.open_fresh(workspace).await {
                Some(index) => Ok(index),
                None => self.open_now(workspace).await,
            }
        };
        self.ungate(workspace, gate);
        opened
    }

    /// The open index of `workspace`, unless there is none or its directory went away.
    async fn open_fresh(self: &Arc<Self>, workspace: WorkspaceId) -> Option<Arc<WorkspaceIndex>> {
        let stale = {
            let mut map = self.map();
            match map.get_mut(&workspace) {
                Some(entry) => {
                    entry.used = self.clock.fetch_add(1, Ordering::Relaxed);
                    Some(entry.index.clone())
                }
                None => None,
            }
        };
        let index = stale?;
        let check = index.clone();
        let is_stale = tokio::task::spawn_blocking(move || check.is_stale()).await.unwrap_or(true);
        if !is_stale {
            return Some(index);
        }
        tracing::warn!(%workspace, dir = %index.dir.display(), "the search index was deleted or replaced; opening it again");
        self.forget(&index);
        None
    }

    fn gate(&self, workspace: WorkspaceId) -> Arc<tokio::sync::Mutex<()>> {
        self.opening.lock().unwrap_or_else(|p| p.into_inner()).entry(workspace).or_default().clone()
    }

    /// Drops the gate once nobody else waits at it.
    fn ungate(&self, workspace: WorkspaceId, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else holds or waits.
        if Arc::strong_count(&gate) <= 2 {
            opening.remove(&workspace);
        }
    }

    /// Opens (or builds anew) the index of `workspace`; the caller holds its gate.
    async fn open_now(self: &Arc<Self>, workspace: WorkspaceId) -> Result<Arc<WorkspaceIndex>, IndexError> {
        let dir = self.dir(workspace);
        let fields = self.fields.clone();
        let opened = tokio::task::spawn_blocking(move || WorkspaceIndex::open(workspace, &dir, &fields))
            .await
            .map_err(|e| IndexError::Tantivy { dir: String::new(), message: e.to_string() })??;
        let opened = Arc::new(opened);
        let index = {
            let mut map = self.map();
            let used = self.clock.fetch_add(1, Ordering::Relaxed);
            let entry = map.entry(workspace).or_insert_with(|| Entry { index: opened.clone(), used });
            entry.index.clone()
        };
        self.evict();
        Ok(index)
    }

    /// Deletes the index of `workspace` and opens it again empty (its indexer then fills it
    /// from the start of the log, once repositioned).
    pub async fn reset(self: &Arc<Self>, workspace: WorkspaceId) -> Result<Arc<WorkspaceIndex>, IndexError> {
        let gate = self.gate(workspace);
        let reopened = {
            let _one_opener = gate.lock().await;
            let old = self.map().remove(&workspace);
            let dir = self.dir(workspace);
            let removed = tokio::task::spawn_blocking(move || {
                drop(old);
                match std::fs::remove_dir_all(&dir) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(tantivy_error(&dir, err)),
                    _ => Ok(()),
                }
            });
            match removed.await.map_err(|e| IndexError::Tantivy { dir: String::new(), message: e.to_string() }) {
                Ok(Ok(())) => self.open_now(workspace).await,
                Ok(Err(e)) | Err(e) => Err(e),
            }
        };
        self.ungate(workspace, gate);
        reopened
    }

    /// Drops `index` from the registry (if it is still the one there).
    pub fn forget(&self, index: &Arc<WorkspaceIndex>) {
        let mut map = self.map();
        if map.get(&index.workspace).is_some_and(|e| Arc::ptr_eq(&e.index, index)) {
            map.remove(&index.workspace);
        }
    }

    /// Past the cap, closes the least recently used indexes that are not writing.
    fn evict(&self) {
        let mut map = self.map();
        while map.len() > self.config.open_cap.max(1) {
            let victim = map.iter().filter(|(_, e)| !e.index.has_writer()).min_by_key(|(_, e)| e.used).map(|(ws, _)| *ws);
            match victim {
                Some(ws) => {
                    map.remove(&ws);
                }
                None => break,
            }
        }
    }

    /// A writer slot, closing the longest-idle other writer if all are taken.
    pub async fn writer_permit(self: &Arc<Self>, for_workspace: WorkspaceId) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.writers.clone().try_acquire_owned() {
            return Some(permit);
        }
        let idle: Option<Arc<WorkspaceIndex>> = {
            let map = self.map();
            map.values()
                .filter(|e| e.index.workspace != for_workspace && e.index.has_writer())
                .min_by_key(|e| e.index.last_write())
                .map(|e| e.index.clone())
        };
        if let Some(idle) = idle {
            let _ = tokio::task::spawn_blocking(move || idle.try_close()).await;
        }
        self.writers.clone().acquire_owned().await.ok()
    }

    /// Starts the task that commits `index` when due and closes its writer when idle.
    pub fn start_tidy(self: &Arc<Self>, index: Arc<WorkspaceIndex>) {
        let me = self.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let (every, idle) = (me.config.commit_every, me.config.writer_idle);
            let mut closing = false;
            loop {
                let look = index.clone();
                let next = tokio::task::spawn_blocking(move || look.tidy(every, idle, closing)).await.ok().flatten();
                let Some(wait) = next else { return };
                tokio::select! {
                    _ = shutdown.cancelled() => closing = true,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        });
    }
}
