//! How model types sit in SQLite columns: ids as their hyphenated UUID text, times as
//! integer milliseconds, enums as their lowercase names. A value that does not parse
//! back is a corrupt file, reported as an error, never a panic.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::store::attachments::ReservationId;
use crate::store::blobs::{AttachmentId, VersionId};
use crate::store::mail::{ChannelId, InboundOutcome, MailId, MailStatus};
use crate::store::model::*;
use crate::store::notifications::{FollowReason, NotificationId, NotificationKind};

macro_rules! uuid_column {
    ($($ty:ident),+) => {$(
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.0.hyphenated().to_string()))
            }
        }
        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                uuid::Uuid::parse_str(text).map(Self).map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}

uuid_column!(
    UserId,
    WorkspaceId,
    TicketId,
    CommentId,
    LinkId,
    SessionId,
    TokenId,
    NotificationId,
    AttachmentId,
    VersionId,
    ReservationId,
    ChannelId,
    MailId
);

impl ToSql for Millis {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0))
    }
}

impl FromSql for Millis {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_i64().map(Self)
    }
}

macro_rules! text_enum_column {
    ($($ty:ident),+) => {$(
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $ty::parse(text).ok_or_else(|| FromSqlError::Other(format!("unknown {} {text:?}", stringify!($ty)).into()))
            }
        }
    )+};
}

text_enum_column!(Role, Status, Priority, LinkKind, NotificationKind, FollowReason, MailStatus, InboundOutcome);

/// `user_id, email, name, role, joined_at`, the column order every member query uses.
pub fn member_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Member> {
    Ok(Member { user_id: row.get(0)?, email: row.get(1)?, name: row.get(2)?, role: row.get(3)?, joined_at: row.get(4)? })
}

/// `id, name, created_at`.
pub fn workspace_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Workspace> {
    Ok(Workspace { id: row.get(0)?, name: row.get(1)?, created_at: row.get(2)? })
}
