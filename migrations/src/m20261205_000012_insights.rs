//! Product intelligence: who turned it on for which sources, what each message scored, the
//! items found in them (keyed by document and span, so a redelivery or replay finds the
//! same rows) and the themes items join.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "
CREATE TABLE IF NOT EXISTS insight_settings (
    user_id    uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    enabled    boolean NOT NULL DEFAULT false,
    sources    text[] NOT NULL DEFAULT '{}',
    channels   text[] NOT NULL DEFAULT '{}',
    min_score  smallint NOT NULL DEFAULT 6 CHECK (min_score BETWEEN 0 AND 10),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per document version the pipeline looked at: its outcome and why.
CREATE TABLE IF NOT EXISTS insight_messages (
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    document_id  uuid NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    content_hash text NOT NULL,
    source       text NOT NULL,
    status       text NOT NULL CHECK (status IN ('skipped', 'below', 'extracted')),
    reason       text,
    score        smallint,
    kinds        text[] NOT NULL DEFAULT '{}',
    items        integer NOT NULL DEFAULT 0,
    classifier   text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, document_id)
);
CREATE INDEX IF NOT EXISTS insight_messages_progress ON insight_messages (user_id, source, status);

CREATE TABLE IF NOT EXISTS insight_themes (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title       text NOT NULL,
    summary     text NOT NULL DEFAULT '',
    kind        text NOT NULL,
    centroid    vector(384) NOT NULL,
    items       integer NOT NULL DEFAULT 0,
    accounts    integer NOT NULL DEFAULT 0,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS insight_themes_user ON insight_themes (user_id, items DESC);

CREATE TABLE IF NOT EXISTS insight_items (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    document_id  uuid NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    span_start   integer NOT NULL,
    span_end     integer NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('feature_request', 'bug', 'pain_point', 'praise', 'question')),
    title        text NOT NULL,
    description  text NOT NULL,
    quote        text NOT NULL,
    score        smallint NOT NULL,
    customer     jsonb NOT NULL DEFAULT '{}',
    company      text,
    product_area text,
    sentiment    text NOT NULL,
    urgency      text NOT NULL,
    theme_id     uuid REFERENCES insight_themes(id) ON DELETE SET NULL,
    similarity   real,
    embedding    vector(384) NOT NULL,
    occurred_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, document_id, span_start, span_end)
);
CREATE INDEX IF NOT EXISTS insight_items_theme ON insight_items (theme_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS insight_items_user_time ON insight_items (user_id, occurred_at DESC);
CREATE INDEX IF NOT EXISTS insight_items_document ON insight_items (document_id);
";
const DOWN: &str = "
DROP TABLE IF EXISTS insight_items;
DROP TABLE IF EXISTS insight_themes;
DROP TABLE IF EXISTS insight_messages;
DROP TABLE IF EXISTS insight_settings;
";
