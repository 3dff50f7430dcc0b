//! The SSE route: subscribe, replay what the client missed, then follow the live tail.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use serde::Deserialize;
use std::future::Future;
use tokio_util::sync::WaitForCancellationFutureOwned;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::LiveState;
use super::bus::{Delivery, Follower, Topic, render, wanted};
use super::limits::Slot;
use crate::auth::watch::Lease;
use crate::auth::{AuthState, StreamToken};
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::ApiQuery;
use crate::store::access::Grant;
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

/// Log events read per query while replaying.
const REPLAY_PAGE: usize = 500;
/// A client this many events behind is told to bootstrap again rather than replayed to:
/// a fresh snapshot is cheaper for both sides, and replay stays bounded in memory.
pub const REPLAY_MAX: usize = 10_000;
/// …or when what it missed, rendered, is more than this many bytes (a few large comments
/// weigh more than thousands of small events): replay is held in memory until sent.
pub const REPLAY_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Sent first: how long a client waits before reconnecting after the stream drops.
const RETRY: &[u8] = b"retry: 3000\n\n";
const PING: &[u8] = b": ping\n\n";
/// Sent last when the caller's access changed: reconnect (and be authorised again).
const REVOKED: &[u8] = b"event: access-changed\ndata: {}\n\n";
/// Frames written together when several are ready at once.
const COALESCE: usize = 32;

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
/// was missed. An `event: reset` means this client cannot be brought up to date by replay:
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
    // Watched from before the first byte: a change of access from here on ends the stream.
    let grant = Grant { credential: conn.caller.credential, user: conn.user(), workspace: conn.workspace };
    let lease = live.watch.watch(grant, conn.role.is_staff());
    // Subscribed before anything is read: nothing committed from here on can fall between
    // the replay and the live tail.
    let guard = live.bus.subscribe(conn.store.clone()).await?;
    // "Now" for a new follower is fixed before the client gets its 200: whatever it writes
    // after seeing the response has a later id and reaches it live.
    let head = conn.store.head().await?;
    let audience = conn.audience();
    let mut pending = VecDeque::from([Bytes::from_static(RETRY)]);
    let sent = replay(&guard.topic, audience, ticket, last, head, &mut pending).await?;
    let revoked = Box::pin(lease.revoked().clone().cancelled_owned());
    let stream = LiveStream {
        pending,
        ended: sent.is_none(),
        audience,
        ticket,
        follower: Follower::new(guard, sent.unwrap_or(head)).until_membership_of(conn.user()),
        revoked,
        _lease: lease,
        _slot: slot,
    };
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies (nginx) must pass frames on as they come.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Queues what the client missed. Returns the sync_id it will then be current to, or
/// `None` when it must bootstrap again (a `reset` is queued).
async fn replay(
    topic: &Topic,
    audience: Audience,
    ticket: Option<TicketId>,
    last: Option<i64>,
    head: i64,
    out: &mut VecDeque<Bytes>,
) -> AppResult<Option<i64>> {
    let Some(last) = last else {
        // A new follower: from now on (it bootstrapped, or it only wants news).
        return Ok(Some(head));
    };
    // An id this log never issued (a restored or replaced workspace), or a gap too long to
    // replay: start over from a snapshot.
    if last > head || head - last > REPLAY_MAX as i64 {
        out.push_back(Bytes::from(format!("event: reset\ndata: {{\"sync_id\":{head}}}\n\n")));
        return Ok(None);
    }
    let (base, ring) = topic.replay_from_ring(last);
    let mut sent = last;
    let mut bytes = 0usize;
    let reset = |out: &mut VecDeque<Bytes>| {
        out.retain(|frame| frame.as_ref() == RETRY);
        out.push_back(Bytes::from(format!("event: reset\ndata: {{\"sync_id\":{head}}}\n\n")));
    };
    if last < base {
        // The ring does not reach back: the log does (it is never compacted yet).
        let store = topic.store();
        loop {
            let page = store.feed(sent, REPLAY_PAGE).await?;
            for event in &page.items {
                sent = event.event.sync_id;
                if wanted(event, audience, ticket) {
                    let frame = render(&event.event);
                    bytes += frame.len();
                    if bytes > REPLAY_MAX_BYTES {
                        reset(out);
                        return Ok(None);
                    }
                    out.push_back(frame);
                }
            }
            if !page.has_more {
                break;
            }
        }
    }
    for event in &ring {
        if event.sync_id > sent {
            sent = event.sync_id;
            if event.visible_to(audience, ticket) {
                bytes += event.frame.len();
                if bytes > REPLAY_MAX_BYTES {
                    reset(out);
                    return Ok(None);
                }
                out.push_back(event.frame.clone());
            }
        }
    }
    Ok(Some(sent))
}

/// One subscriber's response body: replayed frames, then the live tail read straight from
/// the topic's ring, and heartbeats. It ends when the server shuts down, when the client
/// falls too far behind (it reconnects with its Last-Event-ID and catches up from the log),
/// or when the connection goes; a client that stops reading is cut off by the connection's
/// write timeout. Dropping it deregisters it.
struct LiveStream {
    pending: VecDeque<Bytes>,
    ended: bool,
    audience: Audience,
    ticket: Option<TicketId>,
    follower: Follower,
    /// Fires when the caller's access changed (see `auth::watch`).
    revoked: Pin<Box<WaitForCancellationFutureOwned>>,
    _lease: Lease,
    /// Counted against the connection limits until the stream is dropped.
    _slot: Slot,
}

impl Stream for LiveStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if !this.ended && this.revoked.as_mut().poll(cx).is_ready() {
            // Nothing more goes out under the old access: what is queued is dropped, the
            // client is told why, and its reconnect is authorised afresh.
            this.ended = true;
            this.pending.clear();
            return Poll::Ready(Some(Ok(Bytes::from_static(REVOKED))));
        }
        if let Some(frame) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match this.follower.poll_next(cx, this.audience, this.ticket, COALESCE) {
            Poll::Ready(Delivery::Frames(frames)) => Poll::Ready(Some(Ok(frames))),
            Poll::Ready(Delivery::Ping) => Poll::Ready(Some(Ok(Bytes::from_static(PING)))),
            Poll::Ready(Delivery::End) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Delivery::AccessChanged) => {
                this.ended = true;
                Poll::Ready(Some(Ok(Bytes::from_static(REVOKED))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
