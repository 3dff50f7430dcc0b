//! Schema migrations for SQLite files, tracked in `PRAGMA user_version`.
//!
//! Migrations are the numbered files under `schema/sqlite/{platform,tenant}/`, compiled in.
//! Opening a database applies the missing ones in one `BEGIN IMMEDIATE` transaction, so a
//! second process opening the same file waits and then finds nothing left to do. A file
//! from a newer edgedesk (user_version beyond what this build knows) is refused rather
//! than written to.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::{StoreError, StoreResult};

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $dir:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/sqlite/", $dir, "/", $name, ".sql")),
        }
    };
}

pub const PLATFORM: &[Migration] = &[
    migration!(1, "platform", "0001_init"),
    migration!(2, "platform", "0002_consumers"),
    migration!(3, "platform", "0003_member_mirrors"),
    migration!(4, "platform", "0004_key_bundles"),
    migration!(5, "platform", "0005_mailboxes"),
];
pub const TENANT: &[Migration] = &[
    migration!(1, "tenant", "0001_init"),
    migration!(2, "tenant", "0002_consumers_notifications"),
    migration!(3, "tenant", "0003_notes"),
    migration!(4, "tenant", "0004_attachments"),
    migration!(5, "tenant", "0005_mail"),
    migration!(6, "tenant", "0006_outbox"),
    migration!(7, "tenant", "0007_inbound"),
    migration!(8, "tenant", "0008_mail_thread"),
];

/// Applies every migration newer than the file's `user_version`. Returns how many ran.
pub fn apply(conn: &mut Connection, migrations: &[Migration]) -> StoreResult<usize> {
    let latest = migrations.last().map_or(0, |m| m.version);
    let current = user_version(conn)?;
    if current == latest {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(super::error)?;
    // Re-read under the write lock: another connection may have migrated meanwhile.
    let current = user_version(&tx)?;
    if current > latest {
        return Err(StoreError::Internal(format!(
            "database schema version {current} is newer than this build knows ({latest}); upgrade edgedesk"
        )));
    }
    let mut applied = 0;
    for migration in migrations.iter().filter(|m| m.version > current) {
        tx.execute_batch(migration.sql).map_err(|e| StoreError::Internal(format!("migration {} failed: {e}", migration.name)))?;
        tx.pragma_update(None, "user_version", migration.version).map_err(super::error)?;
        applied += 1;
    }
    tx.commit().map_err(super::error)?;
    Ok(applied)
}

fn user_version(conn: &Connection) -> StoreResult<u32> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(super::error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_contiguous_from_one() {
        for set in [PLATFORM, TENANT] {
            for (i, m) in set.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1, "{}", m.name);
                assert!(m.name.starts_with(&format!("{:04}_", m.version)));
            }
        }
    }

    #[test]
    fn applying_twice_is_a_no_op_and_newer_files_are_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(apply(&mut conn, TENANT).unwrap(), TENANT.len());
        assert_eq!(apply(&mut conn, TENANT).unwrap(), 0);
        conn.pragma_update(None, "user_version", 999).unwrap();
        assert!(apply(&mut conn, TENANT).is_err());
    }
}
