//! Trying a channel's servers the way the mail workers will use them, to tell an owner
//! what works and, in words, what does not: for IMAP, connect, STARTTLS when asked, log
//! in, open the mailbox and see whether the server can IDLE; for SMTP, connect, EHLO,
//! STARTTLS when asked, log in when a user is set. Nothing is read, marked or sent.

use serde::Serialize;
use utoipa::ToSchema;

use super::MailConfig;
use super::imap::{Opened, step};
use super::net::{self, MailStream};
use crate::store::mail::{Security, Server};

/// One server's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Check {
    pub ok: bool,
    /// What was found (`logged in as …; INBOX holds 3 messages; IDLE supported`) or what
    /// failed, in words.
    pub detail: String,
}

impl Check {
    fn passed(detail: String) -> Self {
        Self { ok: true, detail }
    }
    fn failed(detail: String) -> Self {
        Self { ok: false, detail }
    }
}

/// A channel test's answer: both servers, each tried whatever the other's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProbeReport {
    pub ok: bool,
    pub imap: Check,
    pub smtp: Check,
}

/// Why a step failed, for a [`Check`]'s detail.
type Step<T> = Result<T, String>;

/// Tries the IMAP server: `password` is the opened password, or why there is none.
pub async fn imap(server: &Server, mailbox: &str, password: Result<&str, &str>, config: &MailConfig) -> Check {
    match try_imap(server, mailbox, password, config).await {
        Ok(detail) => Check::passed(detail),
        Err(detail) => Check::failed(detail),
    }
}

async fn try_imap(server: &Server, mailbox: &str, password: Result<&str, &str>, config: &MailConfig) -> Step<String> {
    // Without a password there is nothing to try: say so before connecting.
    let password = password.map_err(str::to_string)?;
    let Opened { mut session, exists, idle } = super::imap::open(server, mailbox, password, config).await?;
    let idle = if idle { "IDLE supported" } else { "no IDLE: new mail is polled for" };
    let encrypted = if session.get_ref().is_encrypted() { "encrypted" } else { "NOT encrypted" };
    let _ = tokio::time::timeout(config.timeout, session.logout()).await;
    Ok(format!("logged in as {:?} ({encrypted}); {mailbox} holds {exists} messages; {idle}", server.user))
}

/// Tries the SMTP server: `password` as for [`imap`]; a relay without a user is not logged in to.
pub async fn smtp(server: &Server, password: Result<&str, &str>, config: &MailConfig) -> Check {
    match try_smtp(server, password, config).await {
        Ok(detail) => Check::passed(detail),
        Err(detail) => Check::failed(detail),
    }
}

async fn try_smtp(server: &Server, password: Result<&str, &str>, config: &MailConfig) -> Step<String> {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;

    let password = match server.user.is_empty() {
        true => None,
        false => Some(password.map_err(str::to_string)?),
    };
    let host = &server.host;
    let stream: MailStream = net::open(server, config).await.map_err(|e| e.to_string())?;
    let hello = ClientId::default();
    let mut conn =
        step(config, &format!("{host} refused the SMTP session"), AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello))
            .await?;
    if server.security == Security::Starttls {
        if !conn.can_starttls() {
            return Err(format!("{host} does not offer STARTTLS (choose tls, or none on a network you trust)"));
        }
        let tls = TlsParameters::new(host.clone()).map_err(|e| format!("TLS settings for {host}: {e}"))?;
        step(config, &format!("STARTTLS with {host} failed"), conn.starttls(tls, &hello)).await?;
    }
    let encrypted = if conn.is_encrypted() { "encrypted" } else { "NOT encrypted" };
    let detail = if let Some(password) = password {
        let credentials = Credentials::new(server.user.clone(), password.to_string());
        step(
            config,
            &format!("{host} refused the login as {:?}", server.user),
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials),
        )
        .await?;
        format!("logged in as {:?} ({encrypted})", server.user)
    } else {
        format!("{host} accepts SMTP sessions ({encrypted}); no login (no user set)")
    };
    let _ = tokio::time::timeout(config.timeout, conn.quit()).await;
    Ok(detail)
}
