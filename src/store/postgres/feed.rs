//! Wakeups for the Postgres backend: one dedicated connection LISTENs on the channel the
//! `sync_actions` trigger notifies (schema/postgres/0002_notify.sql).
//!
//! A pooled connection would drop notifications, so the listener owns its connection and
//! reads them from `Connection::poll_message`. Every (re)connect sends [`Wakeup::Any`]
//! first: whatever was committed while it was away is caught up by the consumers' own
//! watermarks. It never trusts a payload (there is none), and reconnects after any failure
//! with exponential backoff and full jitter.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::backoff::Backoff;
use crate::store::Wakeup;

pub const CHANNEL: &str = "edgedesk_changes";
/// Wakeups buffered per receiver (see the SQLite feed).
pub const CAPACITY: usize = 1024;
/// The listener's `application_name`, so operators (and tests) can find its backend.
pub const APPLICATION_NAME: &str = "edgedesk-listener";

/// Reconnect delays: from 100 ms doubling to 30 s, with full jitter.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));

/// Runs until aborted: listen, forward wakeups, reconnect on failure.
pub async fn listen(url: String, wakeups: broadcast::Sender<Wakeup>) {
    let mut attempt = 0u32;
    loop {
        match listen_once(&url, &wakeups).await {
            Ok(()) => tracing::warn!("the change-feed connection closed; reconnecting"),
            Err(err) => tracing::warn!(error = %err, attempt, "the change-feed connection failed; reconnecting"),
        }
        let delay = BACKOFF.delay_now(attempt);
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay).await;
        // A connection that lived a while resets the backoff on its next failure.
        if delay >= BACKOFF.cap / 2 {
            attempt = attempt.min(8);
        }
    }
}

async fn listen_once(url: &str, wakeups: &broadcast::Sender<Wakeup>) -> Result<(), tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = match url.parse() {
        Ok(config) => config,
        Err(err) => return Err(err),
    };
    config.application_name(APPLICATION_NAME);
    let (client, mut connection) = config.connect(NoTls).await?;
    let (notes, mut received) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled for anything to happen, including the LISTEN below.
    let pump = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if notes.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Connected and listening: catch up on whatever happened while we were not.
    let _ = wakeups.send(Wakeup::Any);
    while received.recv().await.is_some() {
        // Coalesce a burst into one wakeup.
        while received.try_recv().is_ok() {}
        let _ = wakeups.send(Wakeup::Any);
    }
    drop(client);
    match pump.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
