//! Tickets, their comments (public replies and internal notes) and links between tickets.
//!
//! Requesters raise tickets and follow their own: they may set a ticket's title and status
//! and reply publicly; everything else (assignment, priority, tags, internal notes, links,
//! deletion) is for staff. A ticket a requester may not see answers 404, as if absent.

mod comments;
mod cursor;
mod links;
mod routes;
mod validate;

pub use routes::routes;

use serde::Deserialize;

use crate::store::{LinkId, TicketId, WorkspaceId};

pub use crate::http::extract::TicketPath;

/// `/api/workspaces/{ws}/tickets/{id}/links/{link}`.
#[derive(Debug, Deserialize)]
pub struct LinkPath {
    #[allow(dead_code)]
    pub ws: WorkspaceId,
    pub id: TicketId,
    pub link: LinkId,
}
