//! Security hardening and fairness: revocable API tokens (per token and per user), users
//! bound to Google's stable account id, the Slack member behind each connection, and an index
//! of each user's documents waiting to be indexed.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
-- Tokens issued at or before this moment are refused ("sign out everywhere").
ALTER TABLE users ADD COLUMN tokens_valid_after timestamptz;
-- Google's `sub`: the account, whatever its email address becomes.
ALTER TABLE users ADD COLUMN google_sub text UNIQUE;

-- The person behind a connection at the provider where it differs from the account (the
-- Slack member id inside a workspace): what a user may see is decided per person.
ALTER TABLE connections ADD COLUMN account_user text;

-- A user's documents not indexed yet: how much interactive work they hold (the rest of what
-- they send goes to the bulk lane).
CREATE INDEX documents_unindexed ON documents (user_id)
    WHERE indexed_hash IS DISTINCT FROM content_hash;

-- One revoked API token (a stolen one), until it would have expired anyway.
CREATE TABLE revoked_tokens (
    jti         uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS revoked_tokens;
DROP INDEX IF EXISTS documents_unindexed;
ALTER TABLE connections DROP COLUMN IF EXISTS account_user;
ALTER TABLE users DROP COLUMN IF EXISTS google_sub;
ALTER TABLE users DROP COLUMN IF EXISTS tokens_valid_after;
"#;
