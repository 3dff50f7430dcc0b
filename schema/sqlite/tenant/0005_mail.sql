-- Mail channels (src/store/mail.rs): a support address with its IMAP and SMTP servers.
-- Passwords are stored only sealed (AES-256-GCM under a key derived from the server's
-- master key, bound to the workspace, the channel and the server they belong to).

CREATE TABLE mail_channels (
    id            TEXT PRIMARY KEY,
    -- Lower-cased: one channel per address.
    address       TEXT NOT NULL UNIQUE,
    -- The rest of the settings (store::mail::ChannelSettings), as JSON.
    settings      TEXT NOT NULL,
    imap_password BLOB,
    smtp_password BLOB,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
