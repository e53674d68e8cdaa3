//! Connections to providers (Google, HubSpot, Slack): encrypted tokens, sync cursors, status.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
CREATE TABLE connections (
    id                 uuid PRIMARY KEY,
    user_id            uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider           text NOT NULL,
    -- the provider's id for the connected account: Google user id, HubSpot portal, Slack team
    account_id         text NOT NULL,
    status             text NOT NULL DEFAULT 'connected',
    scopes             text NOT NULL DEFAULT '',
    -- KeyRing values (v1.<key id>.<base64>), bound to user + provider
    access_token_enc   text,
    refresh_token_enc  text,
    expires_at         timestamptz,
    -- historyId, syncToken, modified-since...: advanced only after a batch is persisted
    cursors            jsonb NOT NULL DEFAULT '{}',
    last_sync_at       timestamptz,
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, provider)
);
CREATE INDEX connections_account ON connections (provider, account_id);
"#;

const DOWN: &str = "DROP TABLE IF EXISTS connections";
