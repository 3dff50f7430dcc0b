//! Reading the workspaces' mailboxes: one IMAP session per channel, on one instance at a
//! time.
//!
//! - The registry (`Mailboxes`) lists the channels to read; the mail consumer keeps it in
//!   step with `mail_channel.*` events. Every `scan` the supervisor ([`Ingest::run`]) reads
//!   it, takes the reader lease of each channel nobody holds (or whose holder stopped
//!   renewing), renews its own, and starts, restarts (the channel changed) or stops
//!   sessions to match. In Postgres mode the lease is what keeps a mailbox to one instance.
//! - A session logs in (`imap.rs`), files every unseen message (`filing.rs`) and only then
//!   marks it `\Seen`, then waits in IDLE (re-issued every `idle`, under the RFC's 29
//!   minutes) or, on a server without IDLE, polls every `poll`. A message larger than the
//!   cap is not fetched whole: its headers are, and it is set aside.
//! - A session that fails (the server restarted, a network error, a refused login)
//!   reconnects after a full-jitter backoff that grows with its consecutive failures; one
//!   that filed something counts as healthy again.
//! - At shutdown every session leaves IDLE, logs out and gives its lease up.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use super::MailConfig;
use super::filing::Filer;
use super::imap::{self, Session, step};
use super::secrets::{self, Which};
use crate::backoff::Backoff;
use crate::store::mail::{ChannelId, ChannelRecord, InboundOutcome, MailboxLease, Mailboxes};
use crate::store::{Millis, TenantStores, WorkspaceId};

/// How mailboxes are read (settings `EDGEDESK_MAIL_IMAP_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IngestConfig {
    /// How often the registry is read and leases renewed.
    pub scan: Duration,
    /// How long a reader lease lasts unless renewed (a dead instance's channels are taken
    /// over after it).
    pub lease: Duration,
    /// How long one IDLE lasts before it is re-issued.
    pub idle: Duration,
    /// How often a server without IDLE is asked for new mail.
    pub poll: Duration,
    /// Reconnecting after failures.
    pub reconnect: Backoff,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            scan: Duration::from_secs(10),
            lease: Duration::from_secs(60),
            idle: Duration::from_secs(20 * 60),
            poll: Duration::from_secs(60),
            reconnect: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
        }
    }
}

/// Messages fetched with one command, at most.
const BATCH: usize = 50;
/// Bytes fetched with one command, at most (a single larger message is fetched alone).
const BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// Messages of a batch filed at once (each its own transaction: the store's group commit
/// takes them together).
const FILING_AT_ONCE: usize = 8;

/// A message's UID and size.
type UidSize = (u32, u64);

fn uid_set(uids: &[u32]) -> String {
    uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Counters for `/metrics`.
#[derive(Default)]
struct Counters {
    ticket: AtomicU64,
    comment: AtomicU64,
    ignored: AtomicU64,
    bounce: AtomicU64,
    failed: AtomicU64,
    reconnects: AtomicU64,
}

/// A running session: what stops it, and the channel version it was started for.
struct Running {
    stop: CancellationToken,
    version: Option<Millis>,
    done: tokio::task::JoinHandle<()>,
}

/// The mailbox readers of this instance.
pub struct Ingest {
    tenants: Arc<dyn TenantStores>,
    mailboxes: Arc<dyn Mailboxes>,
    filer: Filer,
    seal_key: Arc<Zeroizing<[u8; 32]>>,
    mail: MailConfig,
    config: IngestConfig,
    /// This instance, as the reader leases name it.
    holder: String,
    counters: Counters,
    sessions: std::sync::Mutex<HashMap<(WorkspaceId, ChannelId), Running>>,
}

impl Ingest {
    /// Starts the supervisor on `tasks`; it stops with `stop`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        tenants: Arc<dyn TenantStores>,
        mailboxes: Arc<dyn Mailboxes>,
        filer: Filer,
        seal_key: Arc<Zeroizing<[u8; 32]>>,
        mail: MailConfig,
        config: IngestConfig,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Self> {
        let ingest = Arc::new(Self {
            tenants,
            mailboxes,
            filer,
            seal_key,
            mail,
            config,
            holder: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
            counters: Counters::default(),
            sessions: std::sync::Mutex::new(HashMap::new()),
        });
        tasks.spawn(ingest.clone().run(stop));
        ingest
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<(WorkspaceId, ChannelId), Running>> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The supervisor: every `scan`, sessions to match the registry and the leases.
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(err) = self.scan().await {
                tracing::warn!(error = %err, "cannot read the mailbox registry; trying again at the next scan");
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.config.scan) => {}
            }
        }
        let running: Vec<((WorkspaceId, ChannelId), Running)> = self.sessions().drain().collect();
        for ((workspace, channel), session) in running {
            session.stop.cancel();
            let _ = tokio::time::timeout(self.mail.timeout, session.done).await;
            if let Err(err) = self.mailboxes.release(workspace, channel, &self.holder).await {
                tracing::warn!(%workspace, %channel, error = %err, "cannot give a mailbox's reader lease up; it ends on its own");
            }
        }
    }

    async fn scan(self: &Arc<Self>) -> crate::store::StoreResult<()> {
        let readable = self.mailboxes.readable().await?;
        let now = Millis::now();
        let until = now.plus(self.config.lease);
        // Sessions whose channel is no longer read, or that ended on their own.
        {
            let mut sessions = self.sessions();
            sessions.retain(|key, running| {
                let listed = readable.iter().any(|m| (m.workspace, m.channel) == *key);
                if !listed {
                    running.stop.cancel();
                }
                listed && !running.done.is_finished()
            });
        }
        for MailboxLease { workspace, channel, reader, reader_until, changed_at } in readable {
            let key = (workspace, channel);
            let ours = reader.as_deref() == Some(self.holder.as_str());
            let free = reader.is_none() || ours || reader_until.is_none_or(|t| t.0 < now.0);
            let held = free && self.mailboxes.hold(workspace, channel, &self.holder, now, until).await?;
            let mut sessions = self.sessions();
            match (held, sessions.get(&key)) {
                (false, Some(_)) => {
                    // Another instance has it now (this one stopped renewing in time).
                    if let Some(running) = sessions.remove(&key) {
                        running.stop.cancel();
                    }
                }
                (true, Some(running)) if running.version == changed_at => {}
                (true, _) => {
                    if let Some(old) = sessions.remove(&key) {
                        old.stop.cancel();
                    }
                    let stop = CancellationToken::new();
                    let done = tokio::spawn(self.clone().session(workspace, channel, stop.clone()));
                    sessions.insert(key, Running { stop, version: changed_at, done });
                }
                (false, None) => {}
            }
        }
        Ok(())
    }

    /// One channel's session, reconnecting after failures until `stop`.
    async fn session(self: Arc<Self>, workspace: WorkspaceId, channel: ChannelId, stop: CancellationToken) {
        let mut failures: u32 = 0;
        while !stop.is_cancelled() {
            match self.read(workspace, channel, &stop, &mut failures).await {
                Ok(()) => break,
                Err(err) => {
                    failures = failures.saturating_add(1);
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    let delay = self.config.reconnect.delay_now(failures);
                    tracing::warn!(%workspace, %channel, error = %err, retry_in_ms = delay.as_millis() as u64, "mailbox session failed");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Logs in and reads until `stop` (`Ok`) or a failure (`Err`, reconnected after a pause).
    async fn read(&self, workspace: WorkspaceId, channel: ChannelId, stop: &CancellationToken, failures: &mut u32) -> Result<(), String> {
        let tenant = self.tenants.open(workspace).await.map_err(|e| e.to_string())?;
        let Some(record) = tenant.mail().channel(channel).await.map_err(|e| e.to_string())? else { return Ok(()) };
        if !record.settings.enabled {
            return Ok(());
        }
        let sealed = record.imap_password.as_deref().ok_or("the channel has no IMAP password")?;
        let password = secrets::open(&self.seal_key, workspace, channel, Which::Imap, sealed)
            .map_err(|_| "the IMAP password cannot be opened (sealed under another master key?)")?;
        let server = &record.settings.imap;
        let opened = imap::open(server, &record.settings.mailbox, &password, &self.mail).await?;
        drop(password);
        let (mut session, idle) = (opened.session, opened.idle);
        tracing::info!(%workspace, %channel, host = %server.host, idle, "mailbox session open");
        loop {
            let filed = self.drain(&mut session, &tenant, &record).await?;
            if filed > 0 {
                *failures = 0;
            }
            if stop.is_cancelled() {
                break;
            }
            if idle {
                session = self.idle(session, stop).await?;
            } else {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(self.config.poll) => {}
                }
            }
            if stop.is_cancelled() {
                break;
            }
        }
        let _ = tokio::time::timeout(self.mail.timeout, session.logout()).await;
        Ok(())
    }

    /// Waits in IDLE until the server says something, `idle` passes, or `stop`.
    async fn idle(&self, session: Session, stop: &CancellationToken) -> Result<Session, String> {
        let mut handle = session.idle();
        step(&self.mail, "IDLE was refused", handle.init()).await?;
        {
            let (wait, interrupt) = handle.wait_with_timeout(self.config.idle);
            tokio::select! {
                answer = wait => { answer.map_err(|e| format!("the connection failed in IDLE: {e}"))?; }
                _ = stop.cancelled() => {}
            }
            drop(interrupt);
        }
        step(&self.mail, "leaving IDLE failed", handle.done()).await
    }

    /// Files every unseen message, oldest first, and marks each seen once it is filed.
    /// Messages are fetched in batches (at most [`BATCH`] of them and [`BATCH_BYTES`]
    /// together), filed [`FILING_AT_ONCE`] at a time in the batch's waves (an answer after
    /// what it answers, a sender's messages in order), and the filed ones marked seen with one command. Returns how many
    /// were filed.
    async fn drain(
        &self,
        session: &mut Session,
        tenant: &Arc<dyn crate::store::TenantStore>,
        channel: &ChannelRecord,
    ) -> Result<usize, String> {
        while session.unsolicited_responses.try_recv().is_ok() {}
        let mut unseen: Vec<u32> =
            step(&self.mail, "searching for unseen mail failed", session.uid_search("UNSEEN")).await?.into_iter().collect();
        unseen.sort_unstable();
        let mut filed = 0;
        for chunk in unseen.chunks(BATCH) {
            let sizes = step(&self.mail, "reading message sizes failed", async {
                let fetches: Vec<_> = session.uid_fetch(uid_set(chunk), "(UID RFC822.SIZE)").await?.try_collect().await?;
                Ok::<_, async_imap::error::Error>(fetches.iter().filter_map(|f| Some((f.uid?, u64::from(f.size?)))).collect::<Vec<_>>())
            })
            .await?;
            let max = self.filer.limits.max_message_bytes;
            let (mut large, mut whole): (Vec<UidSize>, Vec<UidSize>) = sizes.into_iter().partition(|(_, size)| *size > max);
            large.sort_unstable();
            whole.sort_unstable();
            // The large ones, by their headers alone.
            let mut seen = Vec::new();
            for (uid, size) in large {
                let Some((_, headers)) = self.fetch(session, &[uid], "BODY.PEEK[HEADER]").await?.pop() else { continue };
                if self.settle(tenant, channel, uid, self.filer.set_aside_large(tenant, channel, &headers, size).await) {
                    seen.push(uid);
                }
            }
            // The rest in batches bounded in bytes too.
            let mut start = 0;
            while start < whole.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < whole.len() && (end == start || bytes + whole[end].1 <= BATCH_BYTES) {
                    bytes += whole[end].1;
                    end += 1;
                }
                let uids: Vec<u32> = whole[start..end].iter().map(|(uid, _)| *uid).collect();
                start = end;
                let fetched = self.fetch(session, &uids, "BODY.PEEK[]").await?;
                let keys: Vec<_> = fetched.iter().map(|(_, raw)| super::inbound::batch_key(raw)).collect();
                for wave in super::inbound::waves(&keys) {
                    use futures::StreamExt;
                    let outcomes: Vec<(u32, bool)> = futures::stream::iter(wave.into_iter().map(|i| {
                        let (uid, raw) = &fetched[i];
                        async move { (*uid, self.settle(tenant, channel, *uid, self.filer.file(tenant, channel, raw).await)) }
                    }))
                    .buffered(FILING_AT_ONCE)
                    .collect()
                    .await;
                    seen.extend(outcomes.into_iter().filter(|(_, ok)| *ok).map(|(uid, _)| uid));
                }
            }
            if !seen.is_empty() {
                step(&self.mail, "marking messages seen failed", async {
                    session.uid_store(uid_set(&seen), "+FLAGS.SILENT (\\Seen)").await?.try_collect::<Vec<_>>().await
                })
                .await?;
                filed += seen.len();
            }
        }
        Ok(filed)
    }

    /// The bodies `query` names of these messages, by UID.
    async fn fetch(&self, session: &mut Session, uids: &[u32], query: &str) -> Result<Vec<(u32, Vec<u8>)>, String> {
        step(&self.mail, "fetching messages failed", async {
            let fetches: Vec<_> = session.uid_fetch(uid_set(uids), query).await?.try_collect().await?;
            let mut bodies: Vec<(u32, Vec<u8>)> =
                fetches.iter().filter_map(|f| Some((f.uid?, f.body().or_else(|| f.header())?.to_vec()))).collect();
            bodies.sort_unstable_by_key(|(uid, _)| *uid);
            Ok::<_, async_imap::error::Error>(bodies)
        })
        .await
    }

    /// Counts how a message's filing went; true when it may be marked seen.
    fn settle(
        &self,
        tenant: &Arc<dyn crate::store::TenantStore>,
        channel: &ChannelRecord,
        uid: u32,
        outcome: Result<crate::store::mail::InboundRecord, super::filing::FilingError>,
    ) -> bool {
        match outcome {
            Ok(record) => {
                self.count(record.outcome);
                true
            }
            Err(err) => {
                // Left unseen: tried again at the next pass.
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(workspace = %tenant.workspace_id(), channel = %channel.id, uid, error = %err, "an incoming message could not be filed; it stays unseen");
                false
            }
        }
    }

    fn count(&self, outcome: InboundOutcome) {
        let counter = match outcome {
            InboundOutcome::Ticket => &self.counters.ticket,
            InboundOutcome::Comment => &self.counters.comment,
            InboundOutcome::Ignored => &self.counters.ignored,
            InboundOutcome::Bounce => &self.counters.bounce,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The sessions' gauge and the inbound counters, Prometheus text.
    pub fn render_metrics(&self) -> String {
        let c = &self.counters;
        let sessions = self.sessions().values().filter(|r| !r.done.is_finished()).count();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# HELP edgedesk_mail_imap_sessions Mailbox sessions this instance runs.\n\
             # TYPE edgedesk_mail_imap_sessions gauge\n\
             edgedesk_mail_imap_sessions {sessions}\n\
             # HELP edgedesk_mail_imap_reconnects_total Mailbox sessions that failed and reconnect.\n\
             # TYPE edgedesk_mail_imap_reconnects_total counter\n\
             edgedesk_mail_imap_reconnects_total {}\n\
             # HELP edgedesk_mail_inbound_total Incoming messages by what became of them.\n\
             # TYPE edgedesk_mail_inbound_total counter\n\
             edgedesk_mail_inbound_total{{outcome=\"ticket\"}} {}\n\
             edgedesk_mail_inbound_total{{outcome=\"comment\"}} {}\n\
             edgedesk_mail_inbound_total{{outcome=\"ignored\"}} {}\n\
             edgedesk_mail_inbound_total{{outcome=\"bounce\"}} {}\n\
             edgedesk_mail_inbound_total{{outcome=\"failed\"}} {}\n",
            get(&c.reconnects),
            get(&c.ticket),
            get(&c.comment),
            get(&c.ignored),
            get(&c.bounce),
            get(&c.failed),
        )
    }
}
