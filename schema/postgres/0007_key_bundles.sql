-- Users' key bundles for client-side encryption (see the SQLite migration of the same name).
CREATE TABLE key_bundles (
    user_id                  uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    version                  integer NOT NULL CHECK (version >= 1),
    classical_public_key     text NOT NULL,
    pq_public_key            text NOT NULL,
    classical_priv_encrypted text NOT NULL,
    pq_priv_encrypted        text NOT NULL,
    created_at               bigint NOT NULL,
    PRIMARY KEY (user_id, version)
);
