//! How model types sit in Postgres columns: ids as `uuid`, times as `bigint` milliseconds,
//! enums as `text` (checked by constraints).

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, accepts, to_sql_checked};
use uuid::Uuid;

use super::error;
use crate::store::StoreResult;
use crate::store::attachments::ReservationId;
use crate::store::blobs::{AttachmentId, VersionId};
use crate::store::mail::{ChannelId, InboundOutcome, MailId, MailStatus};
use crate::store::model::*;
use crate::store::notifications::{FollowReason, NotificationId, NotificationKind};

type BoxError = Box<dyn Error + Sync + Send>;

macro_rules! uuid_column {
    ($($ty:ident),+) => {$(
        impl ToSql for $ty {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
                self.0.to_sql(ty, out)
            }
            accepts!(UUID);
            to_sql_checked!();
        }
        impl<'a> FromSql<'a> for $ty {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
                Uuid::from_sql(ty, raw).map(Self)
            }
            accepts!(UUID);
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
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.0.to_sql(ty, out)
    }
    accepts!(INT8);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Millis {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        i64::from_sql(ty, raw).map(Self)
    }
    accepts!(INT8);
}

macro_rules! text_enum_column {
    ($($ty:ident),+) => {$(
        impl ToSql for $ty {
            fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
                self.as_str().to_sql(ty, out)
            }
            accepts!(TEXT, VARCHAR);
            to_sql_checked!();
        }
        impl<'a> FromSql<'a> for $ty {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
                let text = <&str>::from_sql(ty, raw)?;
                $ty::parse(text).ok_or_else(|| format!("unknown {} {text:?}", stringify!($ty)).into())
            }
            accepts!(TEXT, VARCHAR);
        }
    )+};
}

text_enum_column!(Role, Status, Priority, LinkKind, NotificationKind, FollowReason, MailStatus, InboundOutcome);

/// `user_id, email, name, role, joined_at`, the column order every member query uses.
pub fn member_from_row(row: &Row) -> StoreResult<Member> {
    Ok(Member {
        user_id: row.try_get(0).map_err(error)?,
        email: row.try_get(1).map_err(error)?,
        name: row.try_get(2).map_err(error)?,
        role: row.try_get(3).map_err(error)?,
        joined_at: row.try_get(4).map_err(error)?,
    })
}

/// `id, name, created_at`.
pub fn workspace_from_row(row: &Row) -> StoreResult<Workspace> {
    Ok(Workspace { id: row.try_get(0).map_err(error)?, name: row.try_get(1).map_err(error)?, created_at: row.try_get(2).map_err(error)? })
}
