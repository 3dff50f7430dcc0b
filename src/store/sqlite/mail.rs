//! Mail channels in the workspace's `tenant.db`.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::error;
use super::log::WriteTx;
use super::tenant::SqliteTenant;
use crate::store::mail::*;
use crate::store::{Event, StoreError, StoreResult, UserId};

pub(super) const CHANNEL_COLS: &str = "id, settings, imap_password, smtp_password, created_at, updated_at";

pub(super) fn channel_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ChannelRecord> {
    let settings: String = row.get(1)?;
    Ok(ChannelRecord {
        id: row.get(0)?,
        settings: serde_json::from_str(&settings)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e)))?,
        imap_password: row.get(2)?,
        smtp_password: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
    })
}

fn channel(conn: &Connection, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
    conn.prepare_cached(&format!("SELECT {CHANNEL_COLS} FROM mail_channels WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![id], channel_from_row).optional())
        .map_err(error)
}

/// The store's error for a write, with a unique address named as such.
fn address_taken(err: rusqlite::Error) -> StoreError {
    match error(err) {
        StoreError::Conflict(_) => StoreError::Conflict(ADDRESS_TAKEN.into()),
        other => other,
    }
}

fn write_channel(tx: &mut WriteTx<'_>, actor: UserId, c: &ChannelRecord, created: bool) -> StoreResult<()> {
    let settings = serde_json::to_string(&c.settings).map_err(StoreError::internal)?;
    let address = c.settings.address_key();
    let changed = if created {
        tx.prepare_cached(
            "INSERT INTO mail_channels (id, address, settings, imap_password, smtp_password, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut stmt| stmt.execute(params![c.id, address, settings, c.imap_password, c.smtp_password, c.created_at, c.updated_at]))
    } else {
        tx.prepare_cached(
            "UPDATE mail_channels SET address = ?2, settings = ?3, imap_password = ?4, smtp_password = ?5, updated_at = ?6
             WHERE id = ?1",
        )
        .and_then(|mut stmt| stmt.execute(params![c.id, address, settings, c.imap_password, c.smtp_password, c.updated_at]))
    }
    .map_err(address_taken)?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    tx.record(Some(actor), Event::mail_channel(&MailChannel::from(c), created))?;
    Ok(())
}

#[async_trait]
impl MailStore for SqliteTenant {
    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>> {
        self.read(|conn| {
            conn.prepare_cached(&format!("SELECT {CHANNEL_COLS} FROM mail_channels ORDER BY created_at, id"))
                .and_then(|mut stmt| stmt.query_map([], channel_from_row)?.collect::<Result<Vec<_>, _>>())
                .map_err(error)
        })
        .await
    }

    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>> {
        self.read(move |conn| channel(conn, id)).await
    }

    async fn create_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()> {
        let channel = channel.clone();
        self.write(move |tx| write_channel(tx, actor, &channel, true)).await
    }

    async fn update_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()> {
        let channel = channel.clone();
        self.write(move |tx| write_channel(tx, actor, &channel, false)).await
    }

    async fn delete_channel(&self, actor: UserId, id: ChannelId) -> StoreResult<()> {
        self.write(move |tx| {
            let removed = channel(tx, id)?.ok_or(StoreError::NotFound)?;
            tx.prepare_cached("DELETE FROM mail_channels WHERE id = ?1").and_then(|mut stmt| stmt.execute(params![id])).map_err(error)?;
            tx.record(Some(actor), Event::mail_channel_deleted(&ChannelRemoved { id, address: removed.settings.address }))?;
            Ok(())
        })
        .await
    }
}
