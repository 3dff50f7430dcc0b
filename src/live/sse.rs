//! The SSE route: subscribe, replay what the client missed, then follow the live tail.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::LiveState;
use super::bus::{LiveEvent, Subscription, render, wanted};
use super::limits::Slot;
use crate::auth::{AuthState, StreamToken};
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::ApiQuery;
use crate::store::{Audience, TicketId};
use crate::tenants::{TenantConn, TenantsState};

pub fn routes<S>() -> OpenApiRouter<S>
where
    AuthState: FromRef<S>,
    TenantsState: FromRef<S>,
    LiveState: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new().routes(routes!(events))
}

/// Frames buffered per subscriber between the bus and the HTTP writer.
const OUT_BUFFER: usize = 64;
/// Log events read per query while replaying.
const REPLAY_PAGE: usize = 500;
/// Sent first: how long a client waits before reconnecting after the stream drops.
const RETRY: &[u8] = b"retry: 3000\n\n";
const PING: &[u8] = b": ping\n\n";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Only events about this ticket.
    ticket: Option<String>,
    /// For clients that cannot send the `Last-Event-ID` header: the last sync_id received.
    last_event_id: Option<String>,
    /// A stream token from `POST /api/auth/stream-token`, for clients that cannot send headers.
    #[allow(dead_code)] // read by the StreamToken extractor
    access_token: Option<String>,
}

/// The workspace's changes as Server-Sent Events (`id` = sync_id, `event` = kind, `data` =
/// the same JSON as a delta event). Reconnect with `Last-Event-ID` to receive exactly what
/// was missed. An `event: reset` means the log cannot bring this client up to date:
/// bootstrap again. `: ping` comments keep idle streams alive.
#[utoipa::path(get, path = "/api/workspaces/{ws}/events", tag = "sync",
    params(("ws" = uuid::Uuid, Path, description = "Workspace id"), ("Last-Event-ID" = Option<String>, Header), EventsParams),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
async fn events(
    _token: StreamToken,
    conn: TenantConn,
    State(live): State<LiveState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<EventsParams>,
) -> AppResult<Response> {
    let ticket = params
        .ticket
        .as_deref()
        .map(|t| t.parse::<TicketId>().map_err(|_| AppError::invalid("ticket", "must be a ticket id")))
        .transpose()?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(params.last_event_id)
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| AppError::BadRequest("Last-Event-ID must be a sync_id".into()))
        })
        .transpose()?;
    let slot = live.limits.acquire(conn.user())?;
    let subscription = live.bus.subscribe(conn.store.clone()).await?;
    // "Now" for a new follower is fixed before the client gets its 200: whatever it writes
    // after seeing the response has a later id and reaches it live.
    let head = conn.store.head().await?;
    let (out, frames) = mpsc::channel::<Bytes>(OUT_BUFFER);
    let follower =
        Follower { audience: conn.audience(), ticket, out, stall: live.stall, shutdown: live.bus.shutdown().clone(), _slot: slot };
    tokio::spawn(follower.run(subscription, last, head, live.heartbeat));
    let body = ReceiverStream::new(frames).map(Ok::<_, std::convert::Infallible>);
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies (nginx) must pass frames on as they come.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One subscriber's task: between the bus and its HTTP response.
struct Follower {
    audience: Audience,
    ticket: Option<TicketId>,
    out: mpsc::Sender<Bytes>,
    stall: Duration,
    shutdown: CancellationToken,
    /// Counted against the connection limits until this follower ends.
    _slot: Slot,
}

impl Follower {
    /// `false` when the client is gone or has not taken anything for `stall`.
    async fn send(&self, frame: Bytes) -> bool {
        matches!(tokio::time::timeout(self.stall, self.out.send(frame)).await, Ok(Ok(())))
    }

    fn wants(&self, event: &LiveEvent) -> bool {
        event.visible_to(self.audience, self.ticket)
    }

    /// Ends (dropping the subscription, which deregisters it) when the client goes, stalls,
    /// falls too far behind, or the server shuts down.
    async fn run(self, mut sub: Subscription, last: Option<i64>, head: i64, heartbeat: Duration) {
        if !self.send(Bytes::from_static(RETRY)).await {
            return;
        }
        let Some(mut sent) = self.replay(&sub, last, head).await else { return };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.out.closed() => return,
                _ = tick.tick() => {
                    if !self.send(Bytes::from_static(PING)).await {
                        return;
                    }
                }
                event = sub.live.recv() => match event {
                    Ok(event) if event.sync_id > sent => {
                        sent = event.sync_id;
                        if self.wants(&event) && !self.send(event.frame.clone()).await {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Too far behind to follow: close; the client reconnects with its
                    // Last-Event-ID and catches up from the log without holding anyone up.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    /// Sends what the client missed; returns the sync_id it is now current to, or `None`
    /// when the stream should end.
    async fn replay(&self, sub: &Subscription, last: Option<i64>, head: i64) -> Option<i64> {
        let store = sub.topic.store();
        let Some(last) = last else {
            // A new follower: from now on (it bootstrapped, or it only wants news).
            return Some(head);
        };
        if last > head {
            // An id this log never issued (a restored or replaced workspace): start over.
            let reset = Bytes::from(format!("event: reset\ndata: {{\"sync_id\":{head}}}\n\n"));
            self.send(reset).await;
            return None;
        }
        let (base, ring) = sub.topic.replay_from_ring(last);
        let mut sent = last;
        if last < base {
            // The ring does not reach back: the log does (it is never compacted yet).
            loop {
                let page = store.feed(sent, REPLAY_PAGE).await.ok()?;
                for event in &page.items {
                    sent = event.event.sync_id;
                    if wanted(event, self.audience, self.ticket) && !self.send(render(&event.event)).await {
                        return None;
                    }
                }
                if !page.has_more {
                    break;
                }
            }
        }
        for event in &ring {
            if event.sync_id <= sent {
                continue;
            }
            sent = event.sync_id;
            if self.wants(event) && !self.send(event.frame.clone()).await {
                return None;
            }
        }
        Some(sent)
    }
}
