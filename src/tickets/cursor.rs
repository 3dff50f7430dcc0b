//! Opaque, stable list cursors: base64url of a small JSON object naming the sort it was
//! made for, so a cursor is never silently applied to a different ordering.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::store::{SortOrder, Ticket, TicketCursor, TicketId, TicketSort};

#[derive(Serialize, Deserialize)]
struct Wire {
    /// "u" updated_at, "c" created_at.
    s: char,
    /// "d" descending, "a" ascending.
    o: char,
    k: i64,
    i: TicketId,
}

fn tags(sort: TicketSort, order: SortOrder) -> (char, char) {
    (
        match sort {
            TicketSort::UpdatedAt => 'u',
            TicketSort::CreatedAt => 'c',
        },
        match order {
            SortOrder::Desc => 'd',
            SortOrder::Asc => 'a',
        },
    )
}

pub fn encode(sort: TicketSort, order: SortOrder, last: &Ticket) -> String {
    let (s, o) = tags(sort, order);
    let k = match sort {
        TicketSort::UpdatedAt => last.updated_at.0,
        TicketSort::CreatedAt => last.created_at.0,
    };
    let json = serde_json::to_vec(&Wire { s, o, k, i: last.id }).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

pub fn decode(text: &str, sort: TicketSort, order: SortOrder) -> Result<TicketCursor, AppError> {
    let bad = || AppError::BadRequest("malformed cursor".into());
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if (wire.s, wire.o) != tags(sort, order) {
        // Well-formed, but made for another ordering than the one asked for.
        return Err(AppError::Conflict("this cursor belongs to a different sort or order".into()));
    }
    Ok(TicketCursor { key: wire.k, id: wire.i })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Millis, Priority, Status, UserId};

    #[test]
    fn round_trips_and_refuses_other_orderings_and_garbage() {
        let t = Ticket {
            id: TicketId::new(),
            number: 1,
            title: "x".into(),
            status: Status::Open,
            priority: Priority::Normal,
            requester_id: UserId::new(),
            assignee_id: None,
            tags: vec![],
            created_at: Millis(5),
            updated_at: Millis(9),
            version: 1,
        };
        let c = encode(TicketSort::UpdatedAt, SortOrder::Desc, &t);
        assert_eq!(decode(&c, TicketSort::UpdatedAt, SortOrder::Desc).unwrap(), TicketCursor { key: 9, id: t.id });
        assert!(decode(&c, TicketSort::CreatedAt, SortOrder::Desc).is_err());
        assert!(decode(&c, TicketSort::UpdatedAt, SortOrder::Asc).is_err());
        assert!(decode("!!!", TicketSort::UpdatedAt, SortOrder::Desc).is_err());
        assert!(decode("e30", TicketSort::UpdatedAt, SortOrder::Desc).is_err());
    }
}
