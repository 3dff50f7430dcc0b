//! Moving a workspace between installations and backends: `edgedesk tenant export|import`.
//!
//! The file is NDJSON: a header naming the workspace, its members' user accounts (with
//! their password hashes, so people can still log in after the move: treat the file as a
//! secret) and key bundles, their memberships, then every row of the workspace's storage
//! and its whole log as [`TenantRow`]s, then the bytes of every attachment version: an
//! `object` line (its key, size and SHA-256) followed by `chunk` lines of base64, so a file
//! of any size moves through a line at a time, between any two blob stores (local ↔ S3).
//! Import refuses a workspace that already exists, writes the storage in one transaction,
//! writes each object and checks it against its version's row (size and SHA-256; a
//! version without its bytes fails the import), then creates the users it lacks (keeping
//! their ids, with their key bundles), commits, and registers the workspace last, as
//! creation does: a failed import leaves nothing registered, no rows, and no objects.
//!
//! Imported users never become platform administrators here, whatever the file says: a
//! platform's administrators are its own decision (the import says whose rights it dropped).
//! Files are read and written through tokio's I/O, so the file work runs on blocking
//! threads, never on the async workers.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::store::blobs::{AttachmentId, BlobKey, BlobStore, VersionId};
use crate::store::keys::KeyBundleRecord;
use crate::store::notes::Base64Bytes;
use crate::store::{Millis, Role, Store, StoreError, StoreResult, TenantRow, User, UserId, Workspace, WorkspaceId};

/// Format 2 adds key bundles, attachments and their objects; format 1 files still import.
pub const FORMAT: u32 = 2;
const FORMATS: std::ops::RangeInclusive<u32> = 1..=FORMAT;

/// Raw bytes per `chunk` line (64 KiB of base64 text).
const CHUNK: usize = 48 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Meta {
    Export { format: u32, workspace: Workspace },
    User { user: User, password_hash: String },
    KeyBundle(KeyBundleRecord),
    Membership { user_id: UserId, role: Role, joined_at: Millis },
    Object { attachment: AttachmentId, version: VersionId, size: u64, sha256: String },
    Chunk { data: Base64Bytes },
}

async fn write_line(out: &mut (dyn AsyncWrite + Unpin + Send), value: &impl Serialize) -> StoreResult<()> {
    let mut line = serde_json::to_vec(value).map_err(StoreError::internal)?;
    line.push(b'\n');
    out.write_all(&line).await.map_err(StoreError::internal)
}

/// What an import brought in.
#[derive(Debug)]
pub struct Imported {
    pub workspace: Workspace,
    /// Users created here (the rest were here already).
    pub users_created: usize,
    /// Emails of imported users the file called platform administrators: here they are not.
    pub admin_rights_dropped: Vec<String>,
}

/// Writes `workspace` to `out`, its attachments' bytes read from `blobs`. Returns the
/// number of lines written.
pub async fn export_workspace(
    store: &Store,
    blobs: &dyn BlobStore,
    workspace: WorkspaceId,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> StoreResult<u64> {
    let ws = store.platform.workspace(workspace).await?.ok_or(StoreError::NotFound)?;
    write_line(out, &Meta::Export { format: FORMAT, workspace: ws }).await?;
    let mut lines = 1;
    let mut versions = Vec::new();
    let members = store.platform.list_members(workspace).await?;
    for member in &members {
        let (user, password_hash) = store.platform.user_secret(member.user_id).await?.ok_or(StoreError::NotFound)?;
        write_line(out, &Meta::User { user, password_hash }).await?;
        for bundle in store.keys.all_keys(member.user_id).await? {
            write_line(out, &Meta::KeyBundle(KeyBundleRecord { user_id: member.user_id, bundle })).await?;
            lines += 1;
        }
        write_line(out, &Meta::Membership { user_id: member.user_id, role: member.role, joined_at: member.joined_at }).await?;
        lines += 2;
    }
    let tenant = store.tenants.open(workspace).await?;
    let (tx, mut rx) = mpsc::channel(256);
    let producer = tokio::spawn(async move { tenant.export(tx).await });
    while let Some(row) = rx.recv().await {
        if let TenantRow::AttachmentVersion(v) = &row {
            versions.push((BlobKey { workspace, attachment: v.attachment_id, version: v.id }, v.size, v.sha256.clone()));
        }
        write_line(out, &row).await?;
        lines += 1;
    }
    producer.await.map_err(StoreError::internal)??;
    for (key, size, sha256) in versions {
        lines += export_object(blobs, &key, size, sha256, out).await?;
    }
    out.flush().await.map_err(StoreError::internal)?;
    Ok(lines)
}

/// One version's bytes: its `object` line and the `chunk` lines after it. A missing or
/// short object fails the export: a file that silently lacked someone's attachment would
/// only be found out after the move.
async fn export_object(
    blobs: &dyn BlobStore,
    key: &BlobKey,
    size: u64,
    sha256: String,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> StoreResult<u64> {
    let missing = |why: String| StoreError::Internal(format!("the bytes of attachment {} version {}: {why}", key.attachment, key.version));
    let read = blobs.get(key, None).await.map_err(|e| missing(e.to_string()))?;
    if read.total != size {
        return Err(missing(format!("the object holds {} bytes, its row says {size}", read.total)));
    }
    write_line(out, &Meta::Object { attachment: key.attachment, version: key.version, size, sha256 }).await?;
    let mut lines = 1;
    let (mut body, mut pending, mut sent) = (read.body, bytes::BytesMut::new(), 0u64);
    loop {
        let next = body.next().await.transpose().map_err(|e| missing(e.to_string()))?;
        if let Some(bytes) = &next {
            pending.extend_from_slice(bytes);
        }
        while pending.len() >= CHUNK || (next.is_none() && !pending.is_empty()) {
            let take = pending.len().min(CHUNK);
            let data = pending.split_to(take).freeze();
            sent += data.len() as u64;
            write_line(out, &Meta::Chunk { data: Base64Bytes(data) }).await?;
            lines += 1;
        }
        if next.is_none() {
            break;
        }
    }
    if sent != size {
        return Err(missing(format!("read {sent} of {size} bytes")));
    }
    Ok(lines)
}

/// One object being written from the file: its bytes go down `tx` into a `put`.
struct ObjectWrite {
    key: BlobKey,
    size: u64,
    sha256: String,
    received: u64,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    put: tokio::task::JoinHandle<crate::store::blobs::BlobResult<crate::store::blobs::Written>>,
}

impl ObjectWrite {
    fn start(blobs: &Arc<dyn BlobStore>, key: BlobKey, size: u64, sha256: String) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let (blobs, body) = (blobs.clone(), Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)));
        let put = tokio::spawn(async move { blobs.put(&key, body, size).await });
        Self { key, size, sha256, received: 0, tx, put }
    }

    /// The object is whole: waits for the store and checks what it wrote. Once stored it is
    /// listed in `written` (to be removed if the import fails), matching or not.
    async fn finish(self, written: &mut Vec<BlobKey>) -> StoreResult<()> {
        let Self { key, size, sha256, tx, put, .. } = self;
        drop(tx);
        let stored =
            put.await.map_err(StoreError::internal)?.map_err(|e| StoreError::Internal(format!("writing {}: {e}", key.relative())))?;
        written.push(key);
        if stored.size != size || stored.sha256 != sha256 {
            return Err(StoreError::invalid("file", format!("the bytes of version {} do not match its size and SHA-256", key.version)));
        }
        Ok(())
    }

    /// The import failed midway through it: the store keeps nothing of it.
    async fn abort(self, blobs: &dyn BlobStore) {
        let _ = self.tx.send(Err(std::io::Error::other("import failed"))).await;
        drop(self.tx);
        if let Ok(Ok(_)) = self.put.await {
            let _ = blobs.delete(&self.key).await;
        }
    }
}

/// What an import has under way, to be finished or undone.
#[derive(Default)]
struct Progress {
    /// The rows' writer: its transaction waits for `commit` after the last row.
    writer: Option<tokio::task::JoinHandle<StoreResult<u64>>>,
    commit: Option<tokio::sync::oneshot::Sender<()>>,
    /// Objects written, and the one being written.
    objects: Vec<BlobKey>,
    current: Option<ObjectWrite>,
}

impl Progress {
    /// The writer's answer, once it has stopped (committed, or failed and rolled back).
    async fn writer_result(&mut self) -> StoreResult<()> {
        match self.writer.take() {
            Some(writer) => writer.await.map_err(StoreError::internal)?.map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Reads an export from `input` into this installation, its attachments' bytes into
/// `blobs`. Returns the workspace.
pub async fn import_workspace(
    store: &Store,
    blobs: &Arc<dyn BlobStore>,
    input: &mut (dyn AsyncBufRead + Unpin + Send),
) -> StoreResult<Imported> {
    let mut progress = Progress::default();
    let result = import_into(store, blobs, input, &mut progress).await;
    if result.is_err() {
        // Without its commit the rows' transaction rolls back.
        progress.commit.take();
        let _ = progress.writer_result().await;
        if let Some(current) = progress.current.take() {
            current.abort(blobs.as_ref()).await;
        }
        for key in &progress.objects {
            if let Err(e) = blobs.delete(key).await {
                tracing::error!(key = %key.relative(), error = %e, "a failed import could not remove an object it wrote");
            }
        }
    }
    result
}

async fn import_into(
    store: &Store,
    blobs: &Arc<dyn BlobStore>,
    input: &mut (dyn AsyncBufRead + Unpin + Send),
    progress: &mut Progress,
) -> StoreResult<Imported> {
    let mut lines = input.lines();
    async fn next(lines: &mut tokio::io::Lines<&mut (dyn AsyncBufRead + Unpin + Send)>) -> StoreResult<Option<serde_json::Value>> {
        match lines.next_line().await.map_err(StoreError::internal)? {
            None => Ok(None),
            Some(line) => {
                serde_json::from_str(&line).map(Some).map_err(|e| StoreError::invalid("file", format!("not an edgedesk export line: {e}")))
            }
        }
    }
    let workspace = match next(&mut lines).await?.map(serde_json::from_value::<Meta>) {
        Some(Ok(Meta::Export { format, workspace })) if FORMATS.contains(&format) => workspace,
        Some(Ok(Meta::Export { format, .. })) => {
            return Err(StoreError::invalid("file", format!("export format {format} is not supported")));
        }
        _ => return Err(StoreError::invalid("file", "this is not an edgedesk workspace export")),
    };
    if store.platform.workspace(workspace.id).await?.is_some() {
        return Err(StoreError::Conflict(format!("workspace {} already exists here", workspace.id)));
    }
    let mut memberships = Vec::new();
    let (tx, rx) = mpsc::channel(256);
    let (commit, committed) = tokio::sync::oneshot::channel();
    let tenants = store.tenants.clone();
    let target = workspace.clone();
    progress.writer = Some(tokio::spawn(async move { tenants.import(&target, rx, committed).await }));
    progress.commit = Some(commit);
    let mut rows = Some(tx);
    // Versions whose bytes are still to come, by the rows that name them.
    let mut awaited: HashMap<VersionId, (AttachmentId, u64, String)> = HashMap::new();
    let (mut users, mut bundles) = (Vec::new(), Vec::new());
    while let Some(value) = next(&mut lines).await? {
        let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_string();
        match kind.as_str() {
            "user" | "membership" | "key_bundle" | "object" | "chunk" => {
                match serde_json::from_value::<Meta>(value).map_err(|e| StoreError::invalid("file", format!("bad {kind} line: {e}")))? {
                    // People come in last, with the commit: a failed import makes no accounts.
                    Meta::User { user, password_hash } => users.push((user, password_hash)),
                    Meta::KeyBundle(record) => bundles.push(record),
                    Meta::Membership { user_id, role, .. } => memberships.push((user_id, role)),
                    Meta::Object { attachment, version, size, sha256 } => {
                        // The rows are all in; they commit with the objects, at the end.
                        rows.take();
                        if let Some(done) = progress.current.take() {
                            done.finish(&mut progress.objects).await?;
                        }
                        let expected = awaited.remove(&version);
                        if expected != Some((attachment, size, sha256.clone())) {
                            return Err(StoreError::invalid("file", format!("an object for version {version}, which no row describes so")));
                        }
                        let key = BlobKey { workspace: workspace.id, attachment, version };
                        progress.current = Some(ObjectWrite::start(blobs, key, size, sha256));
                    }
                    Meta::Chunk { data } => {
                        let Some(current) = progress.current.as_mut() else {
                            return Err(StoreError::invalid("file", "bytes outside an object"));
                        };
                        current.received += data.0.len() as u64;
                        if current.received > current.size {
                            return Err(StoreError::invalid("file", format!("more bytes than version {} has", current.key.version)));
                        }
                        if current.tx.send(Ok(data.0)).await.is_err() {
                            // The store stopped taking bytes: its answer says why.
                            if let Some(failed) = progress.current.take() {
                                failed.finish(&mut progress.objects).await?;
                            }
                            return Err(StoreError::internal("the blob store stopped mid-object"));
                        }
                    }
                    Meta::Export { .. } => return Err(StoreError::invalid("file", "a second export header")),
                }
            }
            _ => {
                let row: TenantRow = serde_json::from_value(value).map_err(|e| StoreError::invalid("file", format!("bad row: {e}")))?;
                let Some(tx) = rows.as_ref() else {
                    return Err(StoreError::invalid("file", "a row after the attachments' bytes"));
                };
                if let TenantRow::AttachmentVersion(v) = &row {
                    awaited.insert(v.id, (v.attachment_id, v.size, v.sha256.clone()));
                }
                if tx.send(row).await.is_err() {
                    // The writer stopped early; its error says why.
                    progress.writer_result().await?;
                    return Err(StoreError::internal("the import stopped before the end of the file"));
                }
            }
        }
    }
    drop(rows);
    if let Some(done) = progress.current.take() {
        if done.received != done.size {
            let version = done.key.version;
            progress.current = Some(done);
            return Err(StoreError::invalid("file", format!("the file ends inside the bytes of version {version}")));
        }
        done.finish(&mut progress.objects).await?;
    }
    if let Some(version) = awaited.keys().next() {
        return Err(StoreError::invalid("file", format!("the file lacks the bytes of {} version(s), {version} among them", awaited.len())));
    }
    // Every row and every object is in: the people, then the rows commit.
    let (mut users_created, mut admin_rights_dropped, mut created) = (0, Vec::new(), std::collections::HashSet::new());
    for (mut user, password_hash) in users {
        let was_admin = std::mem::replace(&mut user.is_admin, false);
        if store.platform.import_user(&user, &password_hash).await? {
            users_created += 1;
            created.insert(user.id);
            if was_admin {
                admin_rights_dropped.push(user.email.clone());
            }
        }
    }
    // Someone already here keeps the keys they have.
    for record in bundles.iter().filter(|r| created.contains(&r.user_id)) {
        store.keys.import_keys(record).await?;
    }
    if let Some(commit) = progress.commit.take() {
        let _ = commit.send(());
    }
    progress.writer_result().await?;
    // Committed rows own their objects now.
    progress.objects.clear();
    let owner = memberships
        .iter()
        .find(|(_, role)| *role == Role::Owner)
        .map(|(user, _)| *user)
        .ok_or_else(|| StoreError::invalid("file", "the export names no owner"))?;
    // The workspace's copy of its memberships came with the file: finishing each mirror
    // records nothing unless the platform here knows a member by another name or email.
    let change = store.platform.create_workspace(&workspace, owner).await?;
    let tenant = store.tenants.open(workspace.id).await?;
    super::mirror(store.platform.as_ref(), tenant.as_ref(), change.mirror, change.after.as_ref()).await?;
    for (user, role) in memberships.into_iter().filter(|(user, _)| *user != owner) {
        super::change_member(store.platform.as_ref(), tenant.as_ref(), user, Some(role), Some(owner))
            .await
            .map_err(StoreError::internal)?;
    }
    // Its mailboxes are read here now.
    for channel in tenant.mail().channels().await? {
        store.mailboxes.set_readable(workspace.id, channel.id, channel.settings.enabled.then_some(channel.updated_at)).await?;
    }
    Ok(Imported { workspace, users_created, admin_rights_dropped })
}
