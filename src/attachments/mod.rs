//! Attachments: versioned files on tickets and comments, quota-checked, in local files or
//! an S3-compatible bucket, optionally encrypted in the browser.
//!
//! How it fits together (the design this feature is built to):
//! - **Routes.** `POST /api/workspaces/{ws}/tickets/{id}/attachments` (a new attachment, on
//!   the ticket or one of its comments), `POST …/attachments/{att}/versions`,
//!   `GET …/attachments/{att}/versions`, `GET …/attachments/{att}` (the latest version's
//!   bytes) and `…/versions/{ver}`, `DELETE …/attachments/{att}`. Bytes stream in and out
//!   (`store::blobs::BlobStore`), never whole in memory; downloads carry `ETag` (the
//!   version's SHA-256), `Range` (206), `Content-Disposition: attachment` with a cleaned
//!   name and `X-Content-Type-Options: nosniff`.
//! - **An upload, in order.** The caller may see the ticket (and the comment: requesters
//!   only their own tickets, never internal notes) → the projected size is reserved
//!   against the quota (413 with `used`, `limit`, `requested` when it would cross it) →
//!   the object is written under the server's own key, its bytes counted, hashed and
//!   refused past the upload limit or the declared length → the version's row is written
//!   with its event and its usage → if that fails, the object is deleted again (logged
//!   loudly if that fails too) and the reservation released. Versions beyond
//!   `max_versions` are pruned after the response; a periodic sweep deletes objects that
//!   have no row (a crash between the object and the row).
//! - **Content types.** The declared type is checked against the file's magic bytes; a
//!   type a browser would run (HTML, SVG, JavaScript, XML…) is served as
//!   `application/octet-stream`. Encrypted versions are never sniffed.
//! - **Keys.** `GET|PUT /api/me/keys` (the caller's key bundle, versioned: a PUT carries the
//!   next version or gets 409) and `GET /api/workspaces/{ws}/members/{user}/keys` (another
//!   member's public keys only). The server stores and returns key material; it never
//!   holds a plaintext key.
