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

use crate::store::Wakeup;

pub const CHANNEL: &str = "edgedesk_changes";
/// Wakeups buffered per receiver (see the SQLite feed).
pub const CAPACITY: usize = 1024;
/// The listener's `application_name`, so operators (and tests) can find its backend.
pub const APPLICATION_NAME: &str = "edgedesk-listener";

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Full-jitter exponential backoff: a uniform delay in `[0, min(cap, base · 2^attempt)]`.
/// `unit` is a uniform sample in `[0, 1)`; pure, so it can be tested without a clock.
pub fn backoff(attempt: u32, unit: f64) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(BACKOFF_CAP);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

fn unit_sample() -> f64 {
    let bytes = crate::crypto::random_bytes::<4>();
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// Runs until aborted: listen, forward wakeups, reconnect on failure.
pub async fn listen(url: String, wakeups: broadcast::Sender<Wakeup>) {
    let mut attempt = 0u32;
    loop {
        match listen_once(&url, &wakeups).await {
            Ok(()) => tracing::warn!("the change-feed connection closed; reconnecting"),
            Err(err) => tracing::warn!(error = %err, attempt, "the change-feed connection failed; reconnecting"),
        }
        let delay = backoff(attempt, unit_sample());
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay).await;
        // A connection that lived a while resets the backoff on its next failure.
        if delay >= BACKOFF_CAP / 2 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_is_capped_and_jittered_from_zero() {
        assert_eq!(backoff(0, 0.0), Duration::ZERO);
        assert_eq!(backoff(0, 0.999_999), BACKOFF_BASE.mul_f64(0.999_999));
        assert_eq!(backoff(3, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(30, 0.5), BACKOFF_CAP / 2);
        assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_CAP);
        for attempt in 0..40 {
            for unit in [0.0, 0.25, 0.5, 0.75, 0.999] {
                assert!(backoff(attempt, unit) <= BACKOFF_CAP);
                assert!(backoff(attempt, unit) <= backoff(attempt + 1, unit) || backoff(attempt, unit) == BACKOFF_CAP.mul_f64(unit));
            }
        }
    }
}
