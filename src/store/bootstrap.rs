//! The bootstrap wire format, shared by every backend: NDJSON with a header, rows, a footer.
//!
//! `{"type":"header","sync_id":N,…}` first; then one line per row, each the entity's own
//! JSON with `"type"` first; then `{"type":"footer","count":rows,"checksum":"xxh3-128:…"}`.
//! The checksum is XXH3-128 over the row lines exactly as sent (each with its `\n`), so a
//! client can verify what it received and two snapshots of the same state compare equal.
//! It guards against truncation and corruption, not tampering (that is TLS's job), which
//! is why it is not SHA-256: hashing every byte of a million-row snapshot with SHA-256 cost
//! 14% of the whole stream; XXH3 runs at memory speed. Output is cut into chunks of about
//! [`CHUNK`] bytes for the bounded channel.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use xxhash_rust::xxh3::Xxh3;

use super::{BootstrapSummary, StoreError, StoreResult, WorkspaceId};

/// Bytes per chunk handed to the channel: big enough that the hand-off between the
/// producing thread and the HTTP writer (a context switch) is rare, small enough that the
/// chunks in flight are a small, fixed amount of memory.
pub const CHUNK: usize = 256 * 1024;
/// Chunks the channel holds; with [`CHUNK`] this bounds buffered output at ~1 MiB.
pub const CHANNEL_CHUNKS: usize = 4;

/// Where a snapshot's chunks go, and until when: a reader that has not taken a chunk by
/// the deadline ends the snapshot (its read transaction closes, its connection returns to
/// the pool), however slowly it reads. One rule for both backends.
pub struct BootstrapSink {
    tx: mpsc::Sender<Bytes>,
    deadline: Instant,
    limit: Duration,
}

impl BootstrapSink {
    pub fn new(tx: mpsc::Sender<Bytes>, limit: Duration) -> Self {
        Self { tx, deadline: Instant::now() + limit, limit }
    }

    fn too_slow(&self) -> StoreError {
        StoreError::Unavailable(format!("the snapshot stayed open {} s, the longest allowed: closed", self.limit.as_secs()))
    }

    /// Sends `chunk` (if any), waiting no later than the deadline.
    pub async fn send(&self, chunk: Option<Bytes>) -> StoreResult<()> {
        let Some(bytes) = chunk else { return Ok(()) };
        match tokio::time::timeout_at(self.deadline, self.tx.send(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Internal("bootstrap reader went away".into())),
            Err(_) => Err(self.too_slow()),
        }
    }

    /// The same from a blocking thread (SQLite's snapshot runs on one).
    pub fn send_blocking(&self, runtime: &tokio::runtime::Handle, chunk: Option<Bytes>) -> StoreResult<()> {
        runtime.block_on(self.send(chunk))
    }
}

pub struct Encoder {
    buf: Vec<u8>,
    hasher: Xxh3,
    count: u64,
    sync_id: i64,
}

#[derive(Serialize)]
struct Header {
    #[serde(rename = "type")]
    kind: &'static str,
    sync_id: i64,
    workspace_id: WorkspaceId,
    format: u32,
}

impl Encoder {
    pub fn new(workspace_id: WorkspaceId, sync_id: i64) -> StoreResult<Self> {
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        serde_json::to_writer(&mut buf, &Header { kind: "header", sync_id, workspace_id, format: 1 }).map_err(StoreError::internal)?;
        buf.push(b'\n');
        Ok(Self { buf, hasher: Xxh3::new(), count: 0, sync_id })
    }

    /// Appends one row; returns a full chunk when one is ready to send.
    pub fn row<T: Serialize>(&mut self, kind: &str, row: &T) -> StoreResult<Option<Bytes>> {
        let start = self.buf.len();
        self.buf.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut self.buf, kind).map_err(StoreError::internal)?;
        let body = self.buf.len();
        serde_json::to_writer(&mut self.buf, row).map_err(StoreError::internal)?;
        // The row serialises as `{…}`: turn its opening brace into the comma after "type".
        match self.buf.get(body..body + 2) {
            Some(b"{}") => {
                self.buf.truncate(body);
                self.buf.push(b'}');
            }
            Some([b'{', _]) => self.buf[body] = b',',
            _ => return Err(StoreError::internal("bootstrap row is not a JSON object")),
        }
        self.buf.push(b'\n');
        self.hasher.update(&self.buf[start..]);
        self.count += 1;
        Ok(self.take_if_full())
    }

    fn take_if_full(&mut self) -> Option<Bytes> {
        (self.buf.len() >= CHUNK).then(|| Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + 4096))))
    }

    /// The last chunk (remaining rows and the footer) and the summary.
    pub fn finish(mut self) -> StoreResult<(Bytes, BootstrapSummary)> {
        let checksum = format!("xxh3-128:{:032x}", self.hasher.digest128());
        #[derive(Serialize)]
        struct Footer<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            count: u64,
            checksum: &'a str,
        }
        serde_json::to_writer(&mut self.buf, &Footer { kind: "footer", count: self.count, checksum: &checksum })
            .map_err(StoreError::internal)?;
        self.buf.push(b'\n');
        Ok((Bytes::from(self.buf), BootstrapSummary { sync_id: self.sync_id, count: self.count, checksum }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Thing {
        id: u32,
        name: &'static str,
    }

    #[derive(Serialize)]
    struct Empty {}

    #[test]
    fn rows_carry_type_first_and_the_footer_counts_and_hashes_them() {
        let ws = WorkspaceId::new();
        let mut enc = Encoder::new(ws, 7).unwrap();
        assert!(enc.row("thing", &Thing { id: 1, name: "a" }).unwrap().is_none());
        assert!(enc.row("empty", &Empty {}).unwrap().is_none());
        let (bytes, summary) = enc.finish().unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let header: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(header["type"], "header");
        assert_eq!(header["sync_id"], 7);
        assert_eq!(lines[1], r#"{"type":"thing","id":1,"name":"a"}"#);
        assert_eq!(lines[2], r#"{"type":"empty"}"#);
        let expected = xxhash_rust::xxh3::xxh3_128(format!("{}\n{}\n", lines[1], lines[2]).as_bytes());
        let footer: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(footer["count"], 2);
        assert_eq!(footer["checksum"], format!("xxh3-128:{expected:032x}"));
        assert_eq!(summary.count, 2);
    }

    #[test]
    fn output_is_cut_into_bounded_chunks() {
        let mut enc = Encoder::new(WorkspaceId::new(), 0).unwrap();
        let mut chunks = 0;
        for id in 0..100_000 {
            if let Some(chunk) = enc.row("thing", &Thing { id, name: "some ticket title" }).unwrap() {
                assert!(chunk.len() < CHUNK + 4096);
                chunks += 1;
            }
        }
        assert!(chunks > 5);
    }
}

#[cfg(test)]
mod sink_tests {
    use super::*;

    #[tokio::test]
    async fn a_reader_that_never_reads_ends_the_snapshot_at_the_deadline() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = BootstrapSink::new(tx, Duration::from_millis(200));
        sink.send(Some(Bytes::from_static(b"fits"))).await.unwrap();
        let started = std::time::Instant::now();
        let err = sink.send(Some(Bytes::from_static(b"waits"))).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let gone = BootstrapSink::new(tx, Duration::from_secs(60)).send(Some(Bytes::from_static(b"x"))).await.unwrap_err();
        assert!(matches!(gone, StoreError::Internal(_)), "a reader that went away: {gone:?}");
    }
}
