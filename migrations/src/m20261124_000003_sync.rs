//! Sign-in sessions, OAuth flows in progress, per-resource sync state, push channels and
//! items skipped by sync (with the reason).

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
-- email for Google, team name for Slack, portal domain for HubSpot: how webhooks find the user
ALTER TABLE connections ADD COLUMN account_name text NOT NULL DEFAULT '';
CREATE INDEX connections_account_name ON connections (provider, account_name);

-- Browser sessions. Only a SHA-256 of the cookie value is stored.
CREATE TABLE sessions (
    id_hash      bytea PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- OAuth authorization requests in flight: one-time `state`, bound to the browser that
-- started them (hash of a cookie), with the PKCE verifier encrypted.
CREATE TABLE oauth_flows (
    state         text PRIMARY KEY,
    provider      text NOT NULL,
    browser_hash  bytea NOT NULL,
    verifier_enc  text NOT NULL,
    user_id       uuid REFERENCES users(id) ON DELETE CASCADE,
    return_to     text NOT NULL DEFAULT '/',
    expires_at    timestamptz NOT NULL
);

-- One row per user and synced resource (gmail, calendar, hubspot, slack).
CREATE TABLE sync_state (
    user_id        uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    resource       text NOT NULL,
    -- historyId, syncToken, modified-since, per-channel ts: advanced after a batch persists
    cursor         jsonb NOT NULL DEFAULT '{}',
    -- a run holds the lease so two runs never move one cursor
    lease_until    timestamptz,
    last_sync_at   timestamptz,
    last_error     text,
    items_synced   bigint NOT NULL DEFAULT 0,
    next_run_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, resource)
);
CREATE INDEX sync_state_due ON sync_state (next_run_at);

-- Push subscriptions: Gmail watch (one per user) and Calendar channels.
CREATE TABLE watch_channels (
    id           text PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    resource     text NOT NULL,
    -- SHA-256 of the channel token Google echoes in X-Goog-Channel-Token
    token_hash   bytea,
    resource_id  text,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX watch_channels_expiry ON watch_channels (expires_at);

-- Items a sync did not index, and why (too large, unreadable).
CREATE TABLE skipped_items (
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    resource     text NOT NULL,
    external_id  text NOT NULL,
    reason       text NOT NULL,
    size_bytes   bigint,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, resource, external_id)
);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS skipped_items;
DROP TABLE IF EXISTS watch_channels;
DROP TABLE IF EXISTS sync_state;
DROP TABLE IF EXISTS oauth_flows;
DROP TABLE IF EXISTS sessions;
ALTER TABLE connections DROP COLUMN IF EXISTS account_name;
"#;
