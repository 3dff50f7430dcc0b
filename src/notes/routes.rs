//! `GET /api/workspaces/{ws}/tickets/{id}/note`: the note's WebSocket when upgraded (the
//! y-websocket protocol), its text as JSON or its whole Yjs update as bytes otherwise.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use yrs::{ReadTxn, StateVector, Transact};

use super::doc::{Closer, Command, Peer, close};
use super::{Held, Notes, protocol};
use crate::auth::watch::{AccessWatch, Lease};
use crate::auth::{AuthState, StreamToken, stream::NoteRoute};
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::{ApiPath, TicketPath};
use crate::store::access::Grant;
use crate::store::{Millis, StoreError, TenantStore, TicketId};
use crate::tenants::{TenantConn, TenantsState};

/// What the notes route needs from the application.
#[derive(Clone)]
pub struct NotesState {
    pub notes: Arc<Notes>,
    /// Ends connections whose access changed (see `auth::watch`).
    pub watch: Arc<AccessWatch>,
}

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    NotesState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(note))
}

/// A note's text, for scripts and for anyone without a Yjs client.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoteText {
    /// The plain text of the note's `default` XmlFragment (Tiptap's and y-prosemirror's
    /// field), one line per block.
    pub text: String,
    /// Bytes the note takes in storage (snapshot and updates since).
    pub size: u64,
    /// When it was last edited; absent for a note never written.
    pub updated_at: Option<Millis>,
}

/// The ticket's collaborative note (staff only). Upgraded to a WebSocket, it speaks the
/// y-websocket protocol (the document is the URL; browsers authenticate with
/// `?access_token=` from `POST /api/auth/stream-token` with purpose `note`). Without an
/// upgrade it answers the note's text as JSON, or with `Accept: application/octet-stream`
/// the whole document as one Yjs update (v1). Requesters and non-members get 404, as for a
/// missing ticket.
#[utoipa::path(get, path = "/api/workspaces/{ws}/tickets/{id}/note", tag = "notes",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("id" = uuid::Uuid, Path),
        ("access_token" = Option<String>, Query, description = "A stream token with purpose `note` for this ticket")),
    responses((status = 200, body = NoteText), (status = 101, description = "Switched to the y-websocket protocol"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem)))]
async fn note(
    _token: StreamToken<NoteRoute>,
    conn: TenantConn,
    State(state): State<NotesState>,
    ApiPath(path): ApiPath<TicketPath>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> AppResult<Response> {
    // Staff only: anyone else is told what a missing ticket tells them.
    if !conn.role.is_staff() {
        return Err(AppError::NotFound);
    }
    conn.store.ticket(conn.audience(), path.id).await?.ok_or(AppError::NotFound)?;
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) if !headers.contains_key(header::UPGRADE) => return plain(&conn.store, path.id, &headers).await,
        Err(rejection) => return Err(AppError::BadRequest(format!("cannot open the note's WebSocket: {rejection}"))),
    };
    let held = state.notes.hold(&conn.store, path.id, conn.user()).await?;
    // Watched from before the upgrade: a change of access from here on closes it.
    let lease = state.watch.watch(Grant { credential: conn.caller.credential, user: conn.user(), workspace: conn.workspace }, true);
    let config = *state.notes.config();
    let notes = state.notes.clone();
    let tasks = state.notes.tasks().clone();
    let user = conn.user();
    let upgrade = upgrade
        .max_message_size(config.max_frame)
        .max_frame_size(config.max_frame)
        // tungstenite's defaults (128 KiB each way) would be most of a connection's memory.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(config.max_frame.max(WRITE_BUFFER) * 2);
    Ok(upgrade.on_upgrade(move |socket| {
        // Tracked, so that shutdown waits for each connection's close frame.
        tasks.track_future(serve(socket, notes, held, lease, user))
    }))
}

/// The note without a WebSocket: its text (JSON) or its whole state (bytes).
async fn plain(store: &Arc<dyn TenantStore>, ticket: TicketId, headers: &HeaderMap) -> AppResult<Response> {
    let wants_bytes = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|part| part.trim().starts_with("application/octet-stream")));
    let note = store.notes().load(ticket).await?;
    let summary = store.notes().summary(ticket).await?;
    let client_id = crate::store::notes::server_client_id(store.workspace_id(), ticket);
    let (state, text) = tokio::task::spawn_blocking(move || -> Result<(Vec<u8>, String), StoreError> {
        let doc = super::doc::build(&note, client_id)?;
        let state = doc.transact().encode_state_as_update_v1(&StateVector::default());
        Ok((state, protocol::plain_text(&doc)))
    })
    .await
    .map_err(|e| AppError::internal(format!("note task failed: {e}")))??;
    if wants_bytes {
        let mut response = Bytes::from(state).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(response);
    }
    let body = NoteText { text, size: summary.as_ref().map_or(0, |s| s.size), updated_at: summary.map(|s| s.updated_at) };
    Ok(axum::Json(body).into_response())
}

/// Per connection: the chunk reads are made in, and what writes gather before they go out.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 16 * 1024;
/// Frames written together when several are waiting.
const WRITE_BATCH: usize = 64;

/// A token bucket over a connection's messages: `take` says how long to wait first.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Self {
        Self { tokens: burst as f64, rate: rate as f64, burst: burst as f64, at: Instant::now() }
    }

    fn take(&mut self, n: usize) -> Option<Duration> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        self.tokens -= n as f64;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

async fn close_with(sink: &mut futures::stream::SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    let _ = sink.close().await;
}

/// One connection: frames in (checked, rate-limited, decoded) to the document; frames out
/// from the document; closed by the document, by a change of access, or by the client.
async fn serve(socket: WebSocket, notes: Arc<Notes>, held: Held, lease: Lease, user: crate::store::UserId) {
    let config = *notes.config();
    let doc = held.doc.clone();
    let id = notes.connection_id();
    let closer = Arc::new(Closer::default());
    let (out, mut outbox) = mpsc::channel::<Bytes>(config.outbox);
    let (mut sink, mut stream) = socket.split();
    if doc.tx.send(Command::Join(Peer { id, user, out, closer: closer.clone() })).await.is_err() {
        close_with(&mut sink, close::TRY_AGAIN, "the note is closing; reconnect").await;
        return;
    }
    let mut bucket = Bucket::new(config.updates_per_sec, config.burst);
    let revoked = lease.revoked().clone();
    loop {
        tokio::select! {
            biased;
            _ = closer.token.cancelled() => {
                // What the document sent before closing goes first.
                while let Ok(frame) = outbox.try_recv() {
                    if sink.send(Message::Binary(frame)).await.is_err() {
                        break;
                    }
                }
                let (code, reason) = closer.reason().unwrap_or((close::GOING_AWAY, "closing"));
                close_with(&mut sink, code, reason).await;
                break;
            }
            _ = revoked.cancelled() => {
                close_with(&mut sink, close::POLICY, "access changed").await;
                break;
            }
            frame = outbox.recv() => match frame {
                Some(frame) => {
                    // Whatever else is waiting goes out with it, in one write.
                    let mut ok = sink.feed(Message::Binary(frame)).await.is_ok();
                    for _ in 0..WRITE_BATCH {
                        let Ok(more) = outbox.try_recv() else { break };
                        ok = ok && sink.feed(Message::Binary(more)).await.is_ok();
                    }
                    if !ok || sink.flush().await.is_err() {
                        break;
                    }
                }
                None => {
                    close_with(&mut sink, close::TRY_AGAIN, "the note closed; reconnect").await;
                    break;
                }
            },
            message = stream.next() => match message {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Binary(frame))) => {
                    let messages = match protocol::decode_frame(&frame) {
                        Ok(messages) => messages,
                        Err(bad) => {
                            notes.metrics().bad_frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::info!(conn = id, ticket = %doc.ticket, reason = bad.0, "closing a note connection: bad frame");
                            close_with(&mut sink, close::BAD_FRAME, bad.0).await;
                            break;
                        }
                    };
                    if messages.is_empty() {
                        continue;
                    }
                    if let Some(wait) = bucket.take(messages.len()) {
                        notes.metrics().throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                    }
                    if doc.tx.send(Command::Frame { from: id, messages }).await.is_err() {
                        close_with(&mut sink, close::TRY_AGAIN, "the note closed; reconnect").await;
                        break;
                    }
                }
                Some(Ok(Message::Text(_))) => {
                    close_with(&mut sink, close::POLICY, "text frames are not the y-websocket protocol").await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    // axum hides tungstenite's error type: its capacity error reads
                    // "Space limit exceeded: Message too long: …".
                    let text = err.to_string();
                    if text.contains("Space limit exceeded") || text.contains("too long") {
                        close_with(&mut sink, close::TOO_BIG, "frame too large").await;
                    }
                    break;
                }
            },
        }
    }
    let _ = doc.tx.send(Command::Leave(id)).await;
    drop(held);
}
