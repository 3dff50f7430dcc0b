-- Users' key bundles for client-side encryption, every version kept (see store/keys.rs).
-- The server stores these as the client wrote them and interprets none of them.
CREATE TABLE key_bundles (
    user_id                  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    version                  INTEGER NOT NULL CHECK (version >= 1),
    classical_public_key     TEXT NOT NULL,
    pq_public_key            TEXT NOT NULL,
    classical_priv_encrypted TEXT NOT NULL,
    pq_priv_encrypted        TEXT NOT NULL,
    created_at               INTEGER NOT NULL,
    PRIMARY KEY (user_id, version)
) WITHOUT ROWID;
