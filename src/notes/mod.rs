//! Collaborative ticket notes: one Yjs document per ticket, spoken to over the stock
//! y-websocket protocol (`GET /api/workspaces/{ws}/tickets/{id}/note`, upgraded), so any
//! editor on `yjs` + `y-websocket`'s `WebsocketProvider` works unchanged.
//!
//! How it fits together (the design this feature is built to):
//! - **Who.** Owners, admins and agents read and write; anyone else gets the 404 of a
//!   missing ticket before the upgrade. Browsers authenticate with a stream token minted
//!   for this ticket's note; a connection is watched (`auth::watch`) and ends when its
//!   access changes, as SSE streams do.
//! - **Documents.** A note is loaded on first open (its snapshot and the updates after it,
//!   `store::notes::NoteStore::load`), shared by every connection to it on this instance,
//!   and evicted a while after the last one leaves. The server's own client id is
//!   `store::notes::server_client_id`.
//! - **Durable before relayed.** An update from a client is applied to a scratch copy
//!   behind `catch_unwind` (a bad frame closes only its own connection), appended with its
//!   `note.updated` event in one transaction, applied to the shared document, and only then
//!   sent to the other connections: nothing a client saw can be lost.
//! - **Between instances.** A runner consumer with an in-memory watermark (like the live
//!   bus) reads `note.updated` events, fetches the stored bytes of those it did not make,
//!   and applies them to the documents open here. Awareness (cursors, presence) stays on
//!   the instance and never touches the log.
//! - **Compaction.** A background sweep folds the updates of busy notes into a new
//!   snapshot, in one transaction, without changing anyone's content.
//! - **Text.** The document's `XmlFragment` named `default` (the field Tiptap's
//!   Collaboration extension uses by default) projects to plain text for `GET …/note`
//!   without an upgrade, for bootstrap and for search.
