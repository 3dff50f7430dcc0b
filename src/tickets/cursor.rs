//! Stable list cursors: `<sort>.<order>.<key>.<ticket id>` (`u` updated_at or `c`
//! created_at, `d` descending or `a` ascending, the last row's sort key in milliseconds,
//! its id). Every string of that shape names a position (perhaps past the end: an empty
//! page), so the `pattern` the list route documents is exact; a cursor made for another sort or order
//! is a conflict (409), never silently applied to a different ordering.

use crate::error::AppError;
use crate::store::{SortOrder, Ticket, TicketCursor, TicketId, TicketSort};

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
    format!("{s}.{o}.{k}.{}", last.id)
}

pub fn decode(text: &str, sort: TicketSort, order: SortOrder) -> Result<TicketCursor, AppError> {
    let bad = || AppError::BadRequest("malformed cursor".into());
    let mut parts = text.splitn(4, '.');
    let (Some(s), Some(o), Some(k), Some(i)) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let (s, o) = match (s, o) {
        ("u" | "c", "d" | "a") => (s.chars().next().unwrap_or('u'), o.chars().next().unwrap_or('d')),
        _ => return Err(bad()),
    };
    let key: i64 = k.parse().map_err(|_| bad())?;
    let id: TicketId = i.parse().map_err(|_| bad())?;
    if (s, o) != tags(sort, order) {
        // Well-formed, but made for another ordering than the one asked for.
        return Err(AppError::Conflict("this cursor belongs to a different sort or order".into()));
    }
    Ok(TicketCursor { key, id })
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
        assert!(decode(&format!("u.d.12345678901234567890.{}", t.id), TicketSort::UpdatedAt, SortOrder::Desc).is_err(), "key overflow");
    }
}
