//! Log consumers' watermarks in each `tenant.db`, advanced in the same transaction as a
//! consumer's output (the cross-workspace part, in `platform.db`, is `schedules.rs`).
//!
//! Every write here is bookkeeping (`tx.exempt`): nothing a client may see changes.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::error;
use super::log::WriteTx;
use super::tenant::SqliteTenant;
use crate::store::{Advance, ConsumerLog, ConsumerState, StoreError, StoreResult};

/// Moves `advance.consumer`'s watermark from `from` to `to`, or `Conflict` if it is not at
/// `from`. A consumer that never ran here is at 0.
pub(super) fn advance_watermark(tx: &WriteTx<'_>, advance: Advance) -> StoreResult<()> {
    let moved = tx
        .prepare_cached(
            "INSERT INTO consumer_watermarks (consumer, position, updated_at) SELECT ?1, ?3, ?4 WHERE ?2 = 0
             ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
             WHERE consumer_watermarks.position = ?2 AND consumer_watermarks.stopped_at IS NULL",
        )
        .and_then(|mut stmt| stmt.execute(params![advance.consumer, advance.from, advance.to, tx.now()]))
        .map_err(error)?;
    if moved == 0 {
        // Either the row exists at another position, or it does not exist and `from` ≠ 0;
        // the upsert cannot insert in the second case, so check for the first.
        let updated = tx
            .prepare_cached(
                "UPDATE consumer_watermarks SET position = ?3, updated_at = ?4
                 WHERE consumer = ?1 AND position = ?2 AND stopped_at IS NULL",
            )
            .and_then(|mut stmt| stmt.execute(params![advance.consumer, advance.from, advance.to, tx.now()]))
            .map_err(error)?;
        if updated == 0 {
            return Err(StoreError::Conflict(format!("consumer {} is no longer at {}", advance.consumer, advance.from)));
        }
    }
    Ok(())
}

fn state(conn: &Connection, consumer: &str) -> StoreResult<ConsumerState> {
    let row: Option<(i64, Option<i64>, Option<String>)> = conn
        .prepare_cached("SELECT position, stopped_at, last_error FROM consumer_watermarks WHERE consumer = ?1")
        .and_then(|mut stmt| stmt.query_row(params![consumer], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(error)?;
    Ok(match row {
        None => ConsumerState::default(),
        Some((position, stopped, last_error)) => {
            ConsumerState { position, stopped: stopped.map(|at| (at, last_error.unwrap_or_default())) }
        }
    })
}

#[async_trait]
impl ConsumerLog for SqliteTenant {
    async fn state(&self, consumer: &str) -> StoreResult<ConsumerState> {
        let consumer = consumer.to_string();
        self.read(move |conn| state(conn, &consumer)).await
    }

    async fn advance(&self, advance: Advance) -> StoreResult<()> {
        self.write(move |tx| {
            tx.exempt("bookkeeping: a consumer's watermark");
            advance_watermark(tx, advance)
        })
        .await
    }

    async fn stop(&self, consumer: &str, at: i64, error_text: &str) -> StoreResult<()> {
        let (consumer, error_text) = (consumer.to_string(), error_text.to_string());
        self.write(move |tx| {
            tx.exempt("bookkeeping: a consumer stops at an event that keeps failing");
            tx.execute(
                "INSERT INTO consumer_watermarks (consumer, position, stopped_at, last_error, updated_at) VALUES (?1, 0, ?2, ?3, ?4)
                 ON CONFLICT (consumer) DO UPDATE SET stopped_at = excluded.stopped_at, last_error = excluded.last_error,
                 updated_at = excluded.updated_at",
                params![consumer, at, error_text, tx.now()],
            )
            .map_err(error)?;
            Ok(())
        })
        .await
    }

    async fn resume(&self, consumer: &str) -> StoreResult<bool> {
        let consumer = consumer.to_string();
        self.write(move |tx| {
            tx.exempt("bookkeeping: a stopped consumer may go again");
            let changed = tx
                .execute(
                    "UPDATE consumer_watermarks SET stopped_at = NULL, last_error = NULL, updated_at = ?2
                     WHERE consumer = ?1 AND stopped_at IS NOT NULL",
                    params![consumer, tx.now()],
                )
                .map_err(error)?;
            Ok(changed > 0)
        })
        .await
    }
}
