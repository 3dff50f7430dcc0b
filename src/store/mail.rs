//! What mail keeps in the workspace's store, behind its own trait ([`MailStore`], reached
//! through [`TenantStore::mail`](super::TenantStore::mail)): the workspace's mail channels.
//!
//! A channel is one support address with the IMAP server its mail is read from and the
//! SMTP server replies are sent through. The store keeps each password only as the sealed
//! bytes the mail feature hands it (`crypto::seal`, under a key the store never sees), so a
//! copied database or an export discloses no password. Channel changes are log events for
//! staff, carrying the channel as the API shows it (`password_set`, never the password), so
//! the audit trail says who pointed the workspace at which mailbox.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Event, Millis, StoreResult, UserId};

/// Why a channel's write is refused when its address is another channel's (`Conflict`).
pub const ADDRESS_TAKEN: &str = "another mail channel of this workspace has this address";

crate::store::model::id_type!(/// A mail channel: one support address with its IMAP and SMTP servers.
    ChannelId);

/// How a connection to a mail server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// TLS from the first byte (IMAPS on 993, SMTPS on 465).
    Tls,
    /// Plain first, upgraded with STARTTLS before logging in (refused if the server cannot).
    Starttls,
    /// No encryption at all: only for a server on a network you trust.
    None,
}

/// One mail server of a channel, apart from its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The login name; empty for an SMTP relay that takes mail without logging in.
    pub user: String,
}

/// A channel's settings: everything but the passwords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelSettings {
    /// The support address: mail to it becomes tickets, replies are sent from it.
    pub address: String,
    /// The name replies are sent under (`Acme Support <support@acme.test>`).
    pub display_name: Option<String>,
    /// A disabled channel neither reads nor sends; its queued mail waits.
    pub enabled: bool,
    pub imap: Server,
    /// The IMAP folder that is read (`INBOX` unless set).
    pub mailbox: String,
    pub smtp: Server,
}

impl ChannelSettings {
    /// The address as the store keys it: one channel per address, whatever its case.
    pub fn address_key(&self) -> String {
        self.address.to_lowercase()
    }
}

/// A channel as stored: its settings, and each password sealed (`None`: not set). An
/// export carries it as it is, the passwords still sealed (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub id: ChannelId,
    pub settings: ChannelSettings,
    #[serde(with = "sealed")]
    pub imap_password: Option<Vec<u8>>,
    #[serde(with = "sealed")]
    pub smtp_password: Option<Vec<u8>>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Sealed bytes in an export: base64 in JSON.
mod sealed {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?.map(|text| STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)).transpose()
    }
}

/// A mail server as the API shows it: whether a password is stored, never the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerView {
    #[serde(flatten)]
    pub server: Server,
    pub password_set: bool,
}

/// A channel as the API and the log show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailChannel {
    pub id: ChannelId,
    pub address: String,
    pub display_name: Option<String>,
    pub enabled: bool,
    pub imap: ServerView,
    pub mailbox: String,
    pub smtp: ServerView,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl From<&ChannelRecord> for MailChannel {
    fn from(c: &ChannelRecord) -> Self {
        let s = &c.settings;
        Self {
            id: c.id,
            address: s.address.clone(),
            display_name: s.display_name.clone(),
            enabled: s.enabled,
            imap: ServerView { server: s.imap.clone(), password_set: c.imap_password.is_some() },
            mailbox: s.mailbox.clone(),
            smtp: ServerView { server: s.smtp.clone(), password_set: c.smtp_password.is_some() },
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// The `data` of a `mail_channel.deleted` event.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelRemoved {
    pub id: ChannelId,
    pub address: String,
}

impl<'a> Event<'a, MailChannel> {
    /// `mail_channel.created` / `mail_channel.updated`: staff only (a customer has no business
    /// knowing which servers the workspace uses).
    pub fn mail_channel(channel: &'a MailChannel, created: bool) -> Self {
        Event {
            kind: if created { "mail_channel.created" } else { "mail_channel.updated" },
            entity: "mail_channel",
            entity_id: channel.id.to_string(),
            data: channel,
            ticket: None,
            staff_only: true,
            recipient: None,
        }
    }
}

impl<'a> Event<'a, ChannelRemoved> {
    pub fn mail_channel_deleted(removed: &'a ChannelRemoved) -> Self {
        Event {
            kind: "mail_channel.deleted",
            entity: "mail_channel",
            entity_id: removed.id.to_string(),
            data: removed,
            ticket: None,
            staff_only: true,
            recipient: None,
        }
    }
}

/// One workspace's mail channels.
#[async_trait]
pub trait MailStore: Send + Sync {
    /// Every channel, oldest first.
    async fn channels(&self) -> StoreResult<Vec<ChannelRecord>>;
    async fn channel(&self, id: ChannelId) -> StoreResult<Option<ChannelRecord>>;
    /// Adds `channel` (`mail_channel.created`). `Conflict` when another channel of the
    /// workspace has its address.
    async fn create_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()>;
    /// Replaces the channel with `channel`'s id (`mail_channel.updated`); `NotFound` when
    /// there is none, `Conflict` when another channel has the address.
    async fn update_channel(&self, actor: UserId, channel: &ChannelRecord) -> StoreResult<()>;
    /// Removes the channel (`mail_channel.deleted`); `NotFound` when there is none.
    async fn delete_channel(&self, actor: UserId, id: ChannelId) -> StoreResult<()>;
}
