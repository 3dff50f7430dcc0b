//! Search: one Tantivy index per workspace, fed by the log, permission-filtered,
//! typo-tolerant, fresh within a second.
//!
//! The design this feature is built to (issue "Search"):
//! - **Where indexes live.** SQLite mode: `data/tenants/<ws>/search/`, beside the workspace
//!   it indexes (it travels with the folder, and is never needed: deleted, it is rebuilt).
//!   Postgres mode: each instance keeps its own under `EDGEDESK_SEARCH_DIR`, a cache derived
//!   from the log, which stays the source of truth.
//! - **The indexer** is a consumer on the log-consumers runner whose watermark is the
//!   index's own commit payload (`{schema, watermark}`), not a database row: a crash between
//!   indexing and commit re-indexes the page instead of skipping it. It batches the events
//!   of a busy workspace and commits at most every ~500 ms. Documents: the ticket (number,
//!   title, status, priority, tags, requester, assignee), each public reply, each internal
//!   note (staff only), the collaborative note's text (on `note.updated`, debounced) and
//!   each attachment's name and type. A deleted ticket's documents are deleted.
//! - **Resources.** No `IndexWriter` stays open for an idle workspace (each holds ≥ 15 MB);
//!   readers are cached behind an LRU cap like the tenant pools; indexing runs on blocking
//!   threads, never on the async workers.
//! - **Queries** (`query.rs`): words match with typos (edit distance 1 from 4 characters,
//!   2 from 8) and the last word also as a prefix (what is typed is often unfinished);
//!   `"quoted words"` are a phrase; a malformed query is a 422 naming the problem. The
//!   permission filter is part of the Tantivy query, not applied after paging: a requester's
//!   query only matches their own tickets' public documents, so a page is full even when
//!   most hits are staff-only.
//! - **Rebuild**: `edgedesk search rebuild [<workspace>|--all]`, and on its own when an index
//!   is missing, corrupt, or of an older schema version; `GET …/search/status` says how far
//!   the index is behind the log.

pub mod find;
pub mod index;
pub mod indexer;
pub mod query;
mod routes;
pub mod schema;

pub use index::{Indexes, SearchConfig};
pub use indexer::SearchConsumer;
pub use routes::routes;

use std::sync::Arc;

use crate::sync::runner::Runner;

/// What the search routes need: this instance's indexes, and the runner whose lane feeds
/// them (woken when a search finds its index behind).
#[derive(Clone)]
pub struct SearchState {
    pub indexes: Arc<Indexes>,
    pub runner: Arc<Runner>,
}

impl Indexes {
    /// The search lines of `/metrics`.
    pub fn render_metrics(&self) -> String {
        format!(
            "# HELP edgedesk_search_open_indexes Workspace search indexes open on this instance.\n\
             # TYPE edgedesk_search_open_indexes gauge\n\
             edgedesk_search_open_indexes {}\n\
             # HELP edgedesk_search_writers Search index writers open on this instance.\n\
             # TYPE edgedesk_search_writers gauge\n\
             edgedesk_search_writers {}\n",
            self.open_count(),
            self.writer_count()
        )
    }
}
