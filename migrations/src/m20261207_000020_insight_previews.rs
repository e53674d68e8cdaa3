//! Changes to product intelligence previewed before they apply. A preview replays a window
//! of stored messages through candidate settings (thresholds, tier 1's bar, sources, product
//! areas, the tier 2 model) into shadow tables shaped like the live ones, reports what would
//! change, and can be promoted. The live tables are never written until then.
//!
//! The settings gain per-team grouping thresholds and the tier 2 model, so what a preview
//! tried can be kept once applied.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
ALTER TABLE insight_settings
    ADD COLUMN IF NOT EXISTS theme_join real,
    ADD COLUMN IF NOT EXISTS theme_regroup real,
    ADD COLUMN IF NOT EXISTS model text;

CREATE TABLE IF NOT EXISTS insight_previews (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    requested_by  text NOT NULL,
    from_at       timestamptz NOT NULL,
    to_at         timestamptz NOT NULL,
    settings      jsonb NOT NULL,
    status        text NOT NULL CHECK (status IN ('queued', 'running', 'ready', 'failed', 'applied', 'discarded')),
    messages      integer NOT NULL DEFAULT 0,
    read          integer NOT NULL DEFAULT 0,
    report        jsonb,
    error         text,
    live_print    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    applied_at    timestamptz
);
CREATE INDEX IF NOT EXISTS insight_previews_user ON insight_previews (user_id, created_at DESC);

-- What the candidate made of each message of the window.
CREATE TABLE IF NOT EXISTS insight_preview_messages (
    preview_id   uuid NOT NULL REFERENCES insight_previews(id) ON DELETE CASCADE,
    LIKE insight_messages INCLUDING DEFAULTS,
    PRIMARY KEY (preview_id, document_id)
);

-- The items it found, shaped like the live ones (same ids for the same document and span),
-- with the group the candidate's grouping put each in.
CREATE TABLE IF NOT EXISTS insight_preview_items (
    preview_id   uuid NOT NULL REFERENCES insight_previews(id) ON DELETE CASCADE,
    LIKE insight_items INCLUDING DEFAULTS,
    PRIMARY KEY (preview_id, id)
);

-- The themes the grouping formed: a live theme's id where the group takes it over, else a
-- new id that applying creates.
CREATE TABLE IF NOT EXISTS insight_preview_themes (
    preview_id   uuid NOT NULL REFERENCES insight_previews(id) ON DELETE CASCADE,
    LIKE insight_themes INCLUDING DEFAULTS,
    live         boolean NOT NULL,
    PRIMARY KEY (preview_id, id)
);
"#;

const DOWN: &str = "
DROP TABLE IF EXISTS insight_preview_themes;
DROP TABLE IF EXISTS insight_preview_items;
DROP TABLE IF EXISTS insight_preview_messages;
DROP TABLE IF EXISTS insight_previews;
ALTER TABLE insight_settings DROP COLUMN IF EXISTS theme_join,
    DROP COLUMN IF EXISTS theme_regroup, DROP COLUMN IF EXISTS model;
";
