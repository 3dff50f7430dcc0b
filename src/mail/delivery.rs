//! Delivery workers: they take a workspace whose mail is due, claim a batch under a lease
//! (`MailStore::claim`: SKIP LOCKED on Postgres, inside `BEGIN IMMEDIATE` on SQLite, so no
//! two workers on any instance send one mail at once, and a dead worker's mail is claimed
//! again when its lease ends), hand each mail to its channel's relay with lettre over a
//! connection from `net.rs` (one connection serves a workspace's whole batch while the
//! relay keeps it open), and record how it went.
//!
//! - The relay took it: sent, with its answer.
//! - A 5xx answer (the relay refuses this mail for good): failed at once, with the answer.
//! - Anything else (4xx, no connection, a timeout, a TLS failure, a password that does not
//!   open): tried again after the runner's full-jitter backoff ([`crate::backoff`]), until
//!   the expiry (default 4 days, RFC 5321 §4.5.4.1) has passed since it was queued; then
//!   failed, saying how long it tried.
//! - A relay whose breaker is open ([`super::breaker`]) is not tried: its mail waits until
//!   the breaker lets a probe through, and counts no attempt.
//!
//! When a workspace's mail is due is kept with the runner's durable schedules: the mail
//! consumer asks to be woken when it queues mail, and its wake hands the workspace to
//! these workers ([`Delivery::submit`]), which ask again for the next due time when done.
//! Each worker is supervised: one that panics is logged and left stopped (the
//! `edgedesk_mail_workers{state="stopped"}` gauge says so), never restarted in a loop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use super::breaker::{Breaker, BreakerConfig};
use super::secrets::{self, Which};
use super::{MailConfig, net};
use crate::backoff::Backoff;
use crate::store::mail::{ChannelId, ChannelRecord, ClaimedMail, Delivered, Security};
use crate::store::{ConsumerIndex, Millis, StoreError, TenantStore, TenantStores, WorkspaceId};

/// The runner's name for the mail consumer, under which its wakes are kept.
pub const CONSUMER: &str = "mail";

/// How delivery paces itself (settings `EDGEDESK_MAIL_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryConfig {
    /// Pauses between tries of one mail: from `base`, doubling, to `cap`, full jitter.
    pub backoff: Backoff,
    /// A mail that still fails this long after it was queued is given up.
    pub expiry: Duration,
    /// How long a claimed mail is a worker's before another may take it.
    pub lease: Duration,
    /// Workers on this instance.
    pub workers: usize,
    /// Mails claimed at a time.
    pub batch: usize,
    pub breaker: BreakerConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            backoff: Backoff::new(Duration::from_secs(30), Duration::from_secs(3600)),
            expiry: Duration::from_secs(4 * 24 * 3600),
            lease: Duration::from_secs(300),
            workers: 2,
            batch: 20,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Why a try failed, and so what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Worth another try later (and it counts against the relay's breaker).
    Transient(String),
    /// The relay refused this mail for good.
    Permanent(String),
}

/// What a failed try of a mail leads to: another try after the backoff, or, past the
/// expiry, giving up. `attempts` counts this try; `unit` is the backoff's random sample.
pub fn after_failure(config: &DeliveryConfig, attempts: u32, queued_at: Millis, now: Millis, answer: String, unit: f64) -> Delivered {
    let gives_up = queued_at.plus(config.expiry);
    if now.0 >= gives_up.0 {
        let hours = config.expiry.as_secs() / 3600;
        return Delivered::Failed { answer: format!("gave up after {attempts} tries over {hours} hours; the last: {answer}") };
    }
    let at = now.plus(config.backoff.delay(attempts.saturating_sub(1), unit));
    // The last try is at the expiry, not beyond it.
    Delivered::Retry { at: if at.0 > gives_up.0 { gives_up } else { at }, answer, attempted: true }
}

/// An open connection to a channel's relay, kept for the rest of a workspace's batch.
struct Session {
    channel: crate::store::mail::ChannelId,
    /// The channel's settings it was opened with (`updated_at`): changed settings, new
    /// connection.
    version: Millis,
    conn: lettre::transport::smtp::client::AsyncSmtpConnection,
}

/// Counters for `/metrics`.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    held: AtomicU64,
    breaker_opened: AtomicU64,
}

pub struct Delivery {
    tenants: Arc<dyn TenantStores>,
    index: Arc<dyn ConsumerIndex>,
    /// The runner whose schedules wake the mail consumer, once it runs (it is built with the
    /// consumer, so after this): scheduling through it wakes its schedule loop at once.
    runner: OnceLock<Weak<crate::sync::runner::Runner>>,
    seal_key: Arc<Zeroizing<[u8; 32]>>,
    net: MailConfig,
    config: DeliveryConfig,
    queue: mpsc::Sender<WorkspaceId>,
    /// Workspaces handed over and not yet taken by a worker (each queued once).
    pending: Mutex<HashSet<WorkspaceId>>,
    breakers: Mutex<HashMap<String, Breaker>>,
    /// Who holds a lease: this instance and process, so another instance's worker never
    /// settles a mail this one claimed.
    owner: String,
    running: AtomicUsize,
    stopped: AtomicUsize,
    counters: Counters,
}

impl Delivery {
    pub fn start(
        tenants: Arc<dyn TenantStores>,
        index: Arc<dyn ConsumerIndex>,
        seal_key: Arc<Zeroizing<[u8; 32]>>,
        net: MailConfig,
        config: DeliveryConfig,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Arc<Self> {
        let (queue, receiver) = mpsc::channel(4096);
        let owner = format!("{}:{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let delivery = Arc::new(Self {
            tenants,
            index,
            runner: OnceLock::new(),
            seal_key,
            net,
            config,
            queue,
            pending: Mutex::new(HashSet::new()),
            breakers: Mutex::new(HashMap::new()),
            owner,
            running: AtomicUsize::new(0),
            stopped: AtomicUsize::new(0),
            counters: Counters::default(),
        });
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for n in 0..config.workers.max(1) {
            let worker = tokio::spawn(delivery.clone().work(receiver.clone(), shutdown.clone()));
            delivery.running.fetch_add(1, Ordering::Relaxed);
            let supervised = delivery.clone();
            tasks.spawn(async move {
                let ended = worker.await;
                supervised.running.fetch_sub(1, Ordering::Relaxed);
                if let Err(err) = ended
                    && err.is_panic()
                {
                    supervised.stopped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(worker = n, error = %err, "a mail delivery worker panicked; it stays stopped (edgedesk_mail_workers)");
                }
            });
        }
        delivery
    }

    /// Schedules through `runner` from now on (see the field).
    pub fn attach(&self, runner: &Arc<crate::sync::runner::Runner>) {
        let _ = self.runner.set(Arc::downgrade(runner));
    }

    /// Asks for the mail consumer to be woken in `workspace` at `at` (durable).
    pub(super) async fn schedule(&self, workspace: WorkspaceId, at: Millis) -> Result<(), StoreError> {
        match self.runner.get().and_then(Weak::upgrade) {
            Some(runner) => runner.schedule(workspace, CONSUMER, at).await,
            None => self.index.schedule(workspace, CONSUMER, at).await,
        }
    }

    /// Asks the workers to send `workspace`'s due mail. Never waits: a workspace already
    /// handed over is not queued twice, and one that finds the queue full is woken again by
    /// its schedule.
    pub fn submit(&self, workspace: WorkspaceId) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.insert(workspace) && self.queue.try_send(workspace).is_err() {
            pending.remove(&workspace);
        }
    }

    async fn work(self: Arc<Self>, receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<WorkspaceId>>>, shutdown: CancellationToken) {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = async { receiver.lock().await.recv().await } => next,
            };
            let Some(workspace) = next else { return };
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&workspace);
            if let Err(err) = self.deliver(workspace).await {
                tracing::warn!(workspace = %workspace, error = %err, "mail delivery failed; it is tried again when next due");
                let again = Millis::now().plus(self.config.backoff.base);
                let _ = self.schedule(workspace, again).await;
            }
        }
    }

    /// Sends what is due in `workspace`, a batch at a time, then asks to be woken when the
    /// next mail there is due. The next batch is claimed while one is being sent, so the
    /// store's work and the relay's overlap.
    async fn deliver(&self, workspace: WorkspaceId) -> Result<(), StoreError> {
        let tenant = self.tenants.open(workspace).await?;
        let claim = || async {
            let now = Millis::now();
            tenant.mail().claim(&self.owner, now, now.plus(self.config.lease), self.config.batch).await
        };
        // One SMTP connection serves a workspace's mail while it lasts.
        let mut session: Option<Session> = None;
        let mut claimed = claim().await?;
        while !claimed.is_empty() {
            // A batch claimed ahead and not sent (the store failed meanwhile) is tried again
            // when its lease ends.
            let (sent, next) = tokio::join!(self.send_batch(&tenant, &claimed, &mut session), claim());
            sent?;
            claimed = next?;
        }
        if let Some(mut done) = session {
            let _ = tokio::time::timeout(self.net.timeout, done.conn.quit()).await;
        }
        if let Some(at) = tenant.mail().next_due().await? {
            self.schedule(workspace, at).await?;
        }
        Ok(())
    }

    /// Tries each mail of a claimed batch and records the outcomes.
    async fn send_batch(
        &self,
        tenant: &Arc<dyn TenantStore>,
        claimed: &[ClaimedMail],
        session: &mut Option<Session>,
    ) -> Result<(), StoreError> {
        // The batch's channels are read once, and its outcomes are recorded together: in one
        // transaction at its end, or at once after a try that did not go through (a slow
        // relay must not keep sent mail unrecorded until its lease ends).
        let claimed_at = std::time::Instant::now();
        let mut channels = HashMap::new();
        let mut outcomes = Vec::with_capacity(claimed.len());
        let mut settled = 0;
        for mail in claimed {
            let outcome = self.try_one(tenant, mail, &mut channels, session).await;
            match &outcome {
                Delivered::Sent { .. } => self.counters.sent.fetch_add(1, Ordering::Relaxed),
                Delivered::Retry { attempted: true, .. } => self.counters.retried.fetch_add(1, Ordering::Relaxed),
                Delivered::Retry { attempted: false, .. } => self.counters.held.fetch_add(1, Ordering::Relaxed),
                Delivered::Failed { .. } => self.counters.failed.fetch_add(1, Ordering::Relaxed),
            };
            let flush = !matches!(outcome, Delivered::Sent { .. }) || claimed_at.elapsed() > self.config.lease / 2;
            outcomes.push((mail.mail.id, outcome));
            if flush {
                settled += tenant.mail().settle(&self.owner, std::mem::take(&mut outcomes)).await?.len();
            }
        }
        if !outcomes.is_empty() {
            settled += tenant.mail().settle(&self.owner, outcomes).await?.len();
        }
        if settled < claimed.len() {
            // Their leases ran out and other workers have them: theirs to record.
            tracing::warn!(workspace = %tenant.workspace_id(), mails = claimed.len() - settled, "mail leases ended before their tries did");
        }
        Ok(())
    }

    /// One try of one mail, as the outcome to record.
    async fn try_one(
        &self,
        tenant: &Arc<dyn TenantStore>,
        claimed: &ClaimedMail,
        channels: &mut HashMap<ChannelId, Option<ChannelRecord>>,
        session: &mut Option<Session>,
    ) -> Delivered {
        let mail = &claimed.mail;
        let now = Millis::now();
        if let std::collections::hash_map::Entry::Vacant(slot) = channels.entry(mail.channel_id) {
            match tenant.mail().channel(mail.channel_id).await {
                Ok(channel) => {
                    slot.insert(channel);
                }
                Err(err) => return self.failed_try(mail.attempts, mail.created_at, format!("the store: {err}")),
            }
        }
        let Some(Some(channel)) = channels.get(&mail.channel_id).cloned() else {
            return Delivered::Failed { answer: "the mail channel it was queued for was removed".into() };
        };
        if !channel.settings.enabled {
            let at = now.plus(self.config.backoff.cap);
            return Delivered::Retry { at, answer: "the mail channel is disabled; the mail waits".into(), attempted: false };
        }
        let relay = format!("{}:{}", channel.settings.smtp.host, channel.settings.smtp.port);
        let allowed = self
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(relay.clone())
            .or_insert_with(|| Breaker::new(self.config.breaker))
            .allow(now);
        if let Err(until) = allowed {
            let answer = format!("held back: the relay {relay} is failing; it is tried again from {}", until.0);
            return Delivered::Retry { at: until, answer, attempted: false };
        }
        let result = self.send(tenant.workspace_id(), &channel, claimed, session).await;
        let healthy = !matches!(result, Err(Failure::Transient(_)));
        if let Some(breaker) = self.breakers.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&relay) {
            let was_closed = breaker.state(Millis::now()) == super::breaker::State::Closed;
            breaker.record(Millis::now(), healthy);
            if was_closed && breaker.state(Millis::now()) != super::breaker::State::Closed {
                self.counters.breaker_opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(relay = %relay, "a mail relay keeps failing: its circuit breaker opened");
            }
        }
        match result {
            Ok(answer) => Delivered::Sent { answer },
            Err(Failure::Permanent(answer)) => Delivered::Failed { answer },
            Err(Failure::Transient(answer)) => self.failed_try(mail.attempts, mail.created_at, answer),
        }
    }

    fn failed_try(&self, attempts_before: u32, queued_at: Millis, answer: String) -> Delivered {
        after_failure(&self.config, attempts_before + 1, queued_at, Millis::now(), answer, crate::backoff::unit_sample())
    }

    /// Hands the message to the channel's relay, over `session` when it is this channel's
    /// and still open (a connection the relay dropped meanwhile is replaced once), else over
    /// a new connection that then becomes the session. The relay's answer on success.
    async fn send(
        &self,
        workspace: WorkspaceId,
        channel: &ChannelRecord,
        claimed: &ClaimedMail,
        session: &mut Option<Session>,
    ) -> Result<String, Failure> {
        use lettre::address::Envelope;
        let from = claimed.from.parse().map_err(|e| Failure::Permanent(format!("the sender {:?}: {e}", claimed.from)))?;
        let to = claimed.mail.to.parse().map_err(|e| Failure::Permanent(format!("the recipient {:?}: {e}", claimed.mail.to)))?;
        let envelope = Envelope::new(Some(from), vec![to]).map_err(|e| Failure::Permanent(format!("the envelope: {e}")))?;
        let reusable = session.as_ref().is_some_and(|s| s.channel == channel.id && s.version == channel.updated_at && !s.conn.has_broken());
        if !reusable {
            if let Some(mut old) = session.take() {
                let _ = tokio::time::timeout(self.net.timeout, old.conn.quit()).await;
            }
        } else if let Some(open) = session.as_mut() {
            match self.transaction(&mut open.conn, &envelope, &claimed.message).await {
                Ok(answer) => return Ok(answer),
                // The relay answered (4xx, 5xx): about this mail, and the session goes on.
                Err((failure, true)) => return Err(failure),
                // The connection failed: a new one, once.
                Err((_, false)) => *session = None,
            }
        }
        let mut conn = self.connect(workspace, channel).await?;
        match self.transaction(&mut conn, &envelope, &claimed.message).await {
            Ok(answer) => {
                *session = Some(Session { channel: channel.id, version: channel.updated_at, conn });
                Ok(answer)
            }
            Err((failure, answered)) => {
                if answered {
                    *session = Some(Session { channel: channel.id, version: channel.updated_at, conn });
                } else {
                    let _ = tokio::time::timeout(self.net.timeout, conn.quit()).await;
                }
                Err(failure)
            }
        }
    }

    /// MAIL, RCPT, DATA on an open connection. On failure, whether the relay answered (the
    /// connection is still good) or the connection failed.
    async fn transaction(
        &self,
        conn: &mut lettre::transport::smtp::client::AsyncSmtpConnection,
        envelope: &lettre::address::Envelope,
        message: &[u8],
    ) -> Result<String, (Failure, bool)> {
        let timeout = self.net.timeout;
        match tokio::time::timeout(timeout, conn.send(envelope, message)).await {
            Ok(Ok(response)) => Ok(format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" "))),
            Ok(Err(e)) => {
                let answered = e.is_response();
                let text = format!("the relay answered: {e}");
                Err((if e.is_permanent() { Failure::Permanent(text) } else { Failure::Transient(text) }, answered))
            }
            Err(_) => Err((Failure::Transient(format!("sending: no answer within {} s", timeout.as_secs())), false)),
        }
    }

    /// A new connection to the channel's relay: connect, greeting and EHLO, STARTTLS when
    /// set, a login when a user is set.
    async fn connect(
        &self,
        workspace: WorkspaceId,
        channel: &ChannelRecord,
    ) -> Result<lettre::transport::smtp::client::AsyncSmtpConnection, Failure> {
        use lettre::transport::smtp::authentication::{Credentials, Mechanism};
        use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
        use lettre::transport::smtp::extension::ClientId;

        let server = &channel.settings.smtp;
        let transient = |what: &str, e: &dyn std::fmt::Display| Failure::Transient(format!("{what}: {e}"));
        let smtp_error = |what: &str, e: lettre::transport::smtp::Error| {
            let text = format!("{what}: {e}");
            if e.is_permanent() { Failure::Permanent(text) } else { Failure::Transient(text) }
        };
        let password = match (&channel.smtp_password, server.user.is_empty()) {
            (_, true) => None,
            (None, false) => return Err(Failure::Transient("no SMTP password is set".into())),
            (Some(sealed), false) => Some(
                secrets::open(&self.seal_key, workspace, channel.id, Which::Smtp, sealed)
                    .map_err(|_| Failure::Transient("the stored SMTP password cannot be opened: set it again".into()))?,
            ),
        };
        let timeout = self.net.timeout;
        let within = |what: &'static str| move |_| Failure::Transient(format!("{what}: no answer within {} s", timeout.as_secs()));
        let stream = net::open(server, &self.net).await.map_err(|e| transient("connecting", &e))?;
        let hello = ClientId::default();
        let mut conn = tokio::time::timeout(timeout, AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello))
            .await
            .map_err(within("the greeting"))?
            .map_err(|e| smtp_error("the greeting", e))?;
        if server.security == Security::Starttls {
            if !conn.can_starttls() {
                return Err(Failure::Transient(format!("{} does not offer STARTTLS", server.host)));
            }
            let tls = TlsParameters::new(server.host.clone()).map_err(|e| transient("TLS settings", &e))?;
            tokio::time::timeout(timeout, conn.starttls(tls, &hello))
                .await
                .map_err(within("STARTTLS"))?
                .map_err(|e| smtp_error("STARTTLS", e))?;
        }
        if let Some(password) = password {
            let credentials = Credentials::new(server.user.clone(), password.to_string());
            tokio::time::timeout(timeout, conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials))
                .await
                .map_err(within("the login"))?
                // A refused login is the channel's settings, not this mail: try again later.
                .map_err(|e| Failure::Transient(format!("the login as {:?}: {e}", server.user)))?;
        }
        Ok(conn)
    }

    /// The workers' gauge, the outcome counters and each relay's breaker, Prometheus text.
    pub fn render_metrics(&self) -> String {
        let c = &self.counters;
        let now = Millis::now();
        let mut breakers: Vec<(String, &'static str)> = self
            .breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(relay, b)| {
                let state = match b.state(now) {
                    super::breaker::State::Closed => "closed",
                    super::breaker::State::Open { .. } => "open",
                    super::breaker::State::HalfOpen => "half_open",
                };
                (relay.clone(), state)
            })
            .collect();
        breakers.sort();
        let mut out = String::from(
            "# HELP edgedesk_mail_breaker Each relay's circuit breaker on this instance (1 for its current state).\n\
             # TYPE edgedesk_mail_breaker gauge\n",
        );
        for (relay, state) in &breakers {
            out.push_str(&format!("edgedesk_mail_breaker{{relay=\"{relay}\",state=\"{state}\"}} 1\n"));
        }
        out.push_str(&format!(
            "# HELP edgedesk_mail_breaker_opened_total Times a relay's circuit breaker opened.\n\
             # TYPE edgedesk_mail_breaker_opened_total counter\n\
             edgedesk_mail_breaker_opened_total {}\n",
            c.breaker_opened.load(Ordering::Relaxed)
        ));
        out + &format!(
            "# HELP edgedesk_mail_workers Mail delivery workers on this instance, by state (a stopped one panicked).\n\
             # TYPE edgedesk_mail_workers gauge\n\
             edgedesk_mail_workers{{state=\"running\"}} {}\n\
             edgedesk_mail_workers{{state=\"stopped\"}} {}\n\
             # HELP edgedesk_mail_deliveries_total Tries of outgoing mail by outcome.\n\
             # TYPE edgedesk_mail_deliveries_total counter\n\
             edgedesk_mail_deliveries_total{{outcome=\"sent\"}} {}\n\
             edgedesk_mail_deliveries_total{{outcome=\"retry\"}} {}\n\
             edgedesk_mail_deliveries_total{{outcome=\"failed\"}} {}\n\
             edgedesk_mail_deliveries_total{{outcome=\"held_back\"}} {}\n",
            self.running.load(Ordering::Relaxed),
            self.stopped.load(Ordering::Relaxed),
            c.sent.load(Ordering::Relaxed),
            c.retried.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.held.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_until_the_expiry_and_then_give_up() {
        let config = DeliveryConfig::default();
        let queued = Millis(1_000_000_000);
        for attempts in [1u32, 2, 5, 20, 99, 150, u32::MAX] {
            let now = queued.plus(Duration::from_secs(60));
            match after_failure(&config, attempts, queued, now, "451 try later".into(), 0.999) {
                Delivered::Retry { at, answer, attempted } => {
                    assert!(attempted && answer == "451 try later");
                    assert!(at.0 >= now.0 && at.0 <= now.plus(config.backoff.cap).0, "{attempts}: bounded by the cap");
                }
                other => panic!("{attempts}: {other:?}"),
            }
        }
        // Never scheduled past the expiry, and given up once it has passed.
        let late = queued.plus(config.expiry - Duration::from_secs(10));
        let Delivered::Retry { at, .. } = after_failure(&config, 40, queued, late, "x".into(), 0.999) else { panic!() };
        assert_eq!(at, queued.plus(config.expiry));
        let over = after_failure(&config, 41, queued, queued.plus(config.expiry), "451 still busy".into(), 0.5);
        assert_eq!(over, Delivered::Failed { answer: "gave up after 41 tries over 96 hours; the last: 451 still busy".into() });
    }
}
