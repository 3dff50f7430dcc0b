//! The indexer: a consumer on the log-consumers runner whose watermark is the index's own
//! commit payload ([`Watermark::Own`]). Each page of the log becomes changes to ticket
//! documents ([`changes`]), applied on a blocking thread ([`index_page`]); the same two
//! steps rebuild an index from the start of the log (`edgedesk search rebuild`).

use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use super::index::{Applied, Change, IndexError, Indexes, WorkspaceIndex};
use super::schema::{CommentText, FileText, TicketState};
use crate::store::Advance;
use crate::store::attachments::{Attachment, AttachmentRemoved};
use crate::store::notes::{NOTE_TEXT_UPDATED, NoteTextChange};
use crate::store::{Comment, FeedEvent, Removed, StoreError, TenantStore, Ticket, TicketId};
use crate::sync::runner::{Consumer, ConsumerError, Handled, Watermark};

/// The consumer's name (its lanes and metrics).
pub const CONSUMER: &str = "search";

pub struct SearchConsumer {
    indexes: Arc<Indexes>,
}

impl SearchConsumer {
    pub fn new(indexes: Arc<Indexes>) -> Self {
        Self { indexes }
    }
}

fn failed(err: IndexError) -> ConsumerError {
    match err {
        // The lane re-reads the position and goes on from there.
        IndexError::Moved { .. } => ConsumerError::Store(StoreError::Conflict(err.to_string())),
        other => ConsumerError::Failed(other.to_string()),
    }
}

#[async_trait]
impl Consumer for SearchConsumer {
    fn name(&self) -> &'static str {
        CONSUMER
    }

    fn watermark(&self) -> Watermark {
        Watermark::Own
    }

    async fn position(&self, tenant: &Arc<dyn TenantStore>) -> Result<i64, ConsumerError> {
        Ok(self.indexes.get(tenant.workspace_id()).await.map_err(failed)?.position())
    }

    async fn handle(&self, tenant: &Arc<dyn TenantStore>, page: &[FeedEvent], advance: Advance) -> Result<Handled, ConsumerError> {
        let index = self.indexes.get(tenant.workspace_id()).await.map_err(failed)?;
        let changes = changes(tenant.as_ref(), page).await?;
        index_page(&self.indexes, &index, advance.from, advance.to, changes).await.map_err(failed)?;
        Ok(Handled::default())
    }
}

/// Applies `changes` (the events after `from` up to `to`) to `index`, taking a writer slot
/// when it needs one, and starts its tidy task when it has none.
pub async fn index_page(
    indexes: &Arc<Indexes>,
    index: &Arc<WorkspaceIndex>,
    from: i64,
    to: i64,
    changes: Vec<Change>,
) -> Result<(), IndexError> {
    let mut permit = None;
    let mut changes = Some(changes);
    loop {
        if permit.is_none() && changes.as_ref().is_some_and(|c| !c.is_empty()) && !index.has_writer() {
            permit = indexes.writer_permit(index.workspace).await;
        }
        let (work, config) = (index.clone(), indexes.config.clone());
        let batch = changes.take().unwrap_or_default();
        let mut slot = permit.take();
        let (outcome, back, slot) = tokio::task::spawn_blocking(move || {
            let mut batch = batch;
            let outcome = work.apply(from, to, &mut batch, &mut slot, &config);
            (outcome, batch, slot)
        })
        .await
        .map_err(|e| IndexError::Tantivy { dir: index.dir.display().to_string(), message: e.to_string() })?;
        match outcome? {
            Applied::Done { tidy } => {
                if tidy {
                    indexes.start_tidy(index.clone());
                }
                return Ok(());
            }
            Applied::NeedWriter => {
                changes = Some(back);
                permit = slot;
            }
        }
    }
}

/// The payload of an event, or `None` (logged) when it is not what its kind says: an
/// unreadable event is skipped rather than stopping search in the workspace (the index is
/// a cache; the log keeps the event).
fn data<T: DeserializeOwned>(event: &FeedEvent) -> Option<T> {
    match serde_json::from_value(event.event.data.clone()) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::error!(sync_id = event.event.sync_id, kind = %event.event.kind, error = %err, "search skips an event it cannot read");
            None
        }
    }
}

fn update(ticket: TicketId, f: impl FnOnce(Option<TicketState>) -> Option<TicketState> + Send + 'static) -> Change {
    Change::Update(ticket, Box::new(f))
}

/// Changes to documents that `page` makes. Reads the store only for a note's new text.
pub async fn changes(tenant: &dyn TenantStore, page: &[FeedEvent]) -> Result<Vec<Change>, ConsumerError> {
    let mut out = Vec::new();
    for event in page {
        let staff_only = event.visibility.staff_only;
        match event.event.kind.as_str() {
            "ticket.created" | "ticket.updated" => {
                let Some(ticket) = data::<Ticket>(event) else { continue };
                out.push(update(ticket.id, move |current| match current {
                    Some(mut state) => {
                        state.ticket = ticket;
                        Some(state)
                    }
                    None => Some(TicketState::new(ticket)),
                }));
            }
            "ticket.deleted" => {
                let Some(removed) = data::<Removed<TicketId>>(event) else { continue };
                out.push(Change::Delete(removed.id));
            }
            "comment.created" => {
                let Some(comment) = data::<Comment>(event) else { continue };
                let text = CommentText { id: comment.id, internal: comment.internal, body: comment.body };
                out.push(update(comment.ticket_id, move |current| {
                    current.map(|mut state| {
                        state.add_comment(text);
                        state
                    })
                }));
            }
            "attachment.created" | "attachment.versioned" | "attachment.updated" => {
                let Some(file) = data::<Attachment>(event) else { continue };
                let text = FileText {
                    id: file.id,
                    comment: file.comment_id,
                    name: file.name,
                    content_type: file.latest.content_type,
                    internal: staff_only,
                };
                out.push(update(file.ticket_id, move |current| {
                    current.map(|mut state| {
                        state.set_file(text);
                        state
                    })
                }));
            }
            "attachment.deleted" => {
                let Some(removed) = data::<AttachmentRemoved>(event) else { continue };
                out.push(update(removed.ticket_id, move |current| {
                    current.map(|mut state| {
                        state.files.retain(|f| f.id != removed.id);
                        state
                    })
                }));
            }
            NOTE_TEXT_UPDATED => {
                let Some(change) = data::<NoteTextChange>(event) else { continue };
                // The latest text: a later change's event will only set it again.
                let text = tenant.notes().summary(change.ticket_id).await?.map(|s| s.text).unwrap_or_default();
                out.push(update(change.ticket_id, move |current| {
                    current.map(|mut state| {
                        state.note = text;
                        state
                    })
                }));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct Rebuilt {
    /// The watermark of the new index.
    pub through: i64,
    pub events: u64,
    pub documents: u64,
}

/// Builds `tenant`'s index anew from the start of the log, beside the live one, then puts
/// it in its place (a server using the old one notices and opens the new one). `progress`
/// is told (events read so far, the head when it started) after each page.
pub async fn rebuild(
    indexes: &Arc<Indexes>,
    tenant: &Arc<dyn TenantStore>,
    mut progress: impl FnMut(i64, i64),
) -> Result<Rebuilt, ConsumerError> {
    let workspace = tenant.workspace_id();
    let dir = indexes.dir(workspace);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "search".into());
    let temp = dir.with_file_name(format!("{name}.rebuild-{}", uuid::Uuid::new_v4()));
    let fields = super::schema::Fields::new();
    let opening = temp.clone();
    let index = tokio::task::spawn_blocking(move || WorkspaceIndex::open(workspace, &opening, &fields))
        .await
        .map_err(|e| ConsumerError::Failed(e.to_string()))?
        .map_err(failed)?;
    let index = Arc::new(index);
    let head = tenant.head().await?;
    let (mut from, mut events) = (0i64, 0u64);
    loop {
        let page = tenant.feed(from, crate::sync::runner::PAGE).await?;
        let Some(to) = page.items.last().map(|e| e.event.sync_id) else { break };
        let changes = changes(tenant.as_ref(), &page.items).await?;
        index_page(indexes, &index, from, to, changes).await.map_err(failed)?;
        events += page.items.len() as u64;
        from = to;
        progress(to, head);
        if !page.has_more {
            break;
        }
    }
    let closing = index.clone();
    let documents =
        tokio::task::spawn_blocking(move || closing.close()).await.map_err(|e| ConsumerError::Failed(e.to_string()))?.map_err(failed)?;
    drop(index);
    let (live, built) = (dir.clone(), temp.clone());
    tokio::task::spawn_blocking(move || swap_in(&built, &live)).await.map_err(|e| ConsumerError::Failed(e.to_string()))?.map_err(|e| {
        ConsumerError::Failed(format!("cannot put the rebuilt index {} in place of {}: {e}", temp.display(), dir.display()))
    })?;
    Ok(Rebuilt { through: from, events, documents })
}

/// Moves `built` to `live`, the index there (if any) out of the way first and then deleted.
/// A server may open (and so create) `live` between the two moves: try again a few times.
fn swap_in(built: &std::path::Path, live: &std::path::Path) -> std::io::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        let old = live.with_file_name(format!(
            "{}.old-{}",
            live.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
            uuid::Uuid::new_v4()
        ));
        match std::fs::rename(live, &old) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let moved = std::fs::rename(built, live);
        if old.exists() {
            let _ = std::fs::remove_dir_all(&old);
        }
        match moved {
            Ok(()) => return Ok(()),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the index directory kept reappearing")))
}
