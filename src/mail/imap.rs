//! An IMAP session with a channel's server, the way both the channel test (`probe.rs`) and
//! the mailbox reader (`ingest.rs`) open one: connect (`net.rs`: allowed addresses, TLS),
//! read the greeting, STARTTLS when asked (the session is refused if the server cannot),
//! log in and open the mailbox, every step under the mail timeout and failing in words.

use super::MailConfig;
use super::net::{self, MailStream};
use crate::store::mail::{Security, Server};

pub type Session = async_imap::Session<MailStream>;

/// Runs one step under the mail timeout; its failure says `what` and why.
pub async fn step<T, E: std::fmt::Display>(config: &MailConfig, what: &str, work: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(config.timeout, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", config.timeout.as_secs())),
    }
}

/// An open session, logged in, with `mailbox` selected: how many messages it holds, and
/// whether the server can IDLE.
pub struct Opened {
    pub session: Session,
    pub exists: u32,
    pub idle: bool,
}

/// Logs in to `server` and opens `mailbox`.
pub async fn open(server: &Server, mailbox: &str, password: &str, config: &MailConfig) -> Result<Opened, String> {
    let host = &server.host;
    let stream = net::open(server, config).await.map_err(|e| e.to_string())?;
    let mut client = async_imap::Client::new(stream);
    let greeting = step(config, &format!("{host} did not greet"), client.read_response()).await?;
    if greeting.is_none() {
        return Err(format!("{host} closed the connection before greeting"));
    }
    if server.security == Security::Starttls {
        step(config, &format!("{host} refused STARTTLS"), client.run_command_and_check_ok("STARTTLS", None)).await?;
        let stream = net::upgrade(client.into_inner(), host, config).await.map_err(|e| e.to_string())?;
        client = async_imap::Client::new(stream);
    }
    let mut session = match tokio::time::timeout(config.timeout, client.login(&server.user, password)).await {
        Ok(Ok(session)) => session,
        Ok(Err((e, _))) => return Err(format!("{host} refused the login as {:?}: {e}", server.user)),
        Err(_) => return Err(format!("{host} did not answer the login within {} s", config.timeout.as_secs())),
    };
    let opened = step(config, &format!("the mailbox {mailbox:?} cannot be opened"), session.select(mailbox)).await?;
    let capabilities = step(config, &format!("{host} did not list its capabilities"), session.capabilities()).await?;
    let idle = capabilities.has_str("IDLE");
    Ok(Opened { session, exists: opened.exists, idle })
}
