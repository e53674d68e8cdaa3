//! A product team's curation of its themes, kept through every regrouping.
//!
//! - `insight_items.pinned`: a person put the item in its theme (a merge, split or move).
//!   Regrouping keeps pinned items where they are: those of one theme stay together
//!   (must-link) and those of two themes stay apart (cannot-link).
//! - `insight_items.dismissed_at`: not feedback. Out of every theme, list and count, and a
//!   negative example for tier 1.
//! - `insight_themes.title_curated`: renamed by a person; nothing renames it again.
//! - `insight_curations`: each curation, who made it and when, with what it changed (to
//!   undo it).
//! - `insight_cannot_link`: item pairs a move set apart (the moved item and the items of the
//!   theme it left), dropped when the move is undone.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "
ALTER TABLE insight_items
    ADD COLUMN pinned       boolean NOT NULL DEFAULT false,
    ADD COLUMN dismissed_at timestamptz;
ALTER TABLE insight_themes ADD COLUMN title_curated boolean NOT NULL DEFAULT false;

CREATE TABLE IF NOT EXISTS insight_curations (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    actor      text NOT NULL,
    action     text NOT NULL CHECK (action IN ('merge', 'split', 'rename', 'move', 'dismiss')),
    request    jsonb NOT NULL,
    before     jsonb NOT NULL,
    items      uuid[] NOT NULL DEFAULT '{}',
    themes     uuid[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    undone_at  timestamptz,
    undone_by  text
);
CREATE INDEX IF NOT EXISTS insight_curations_user ON insight_curations (user_id, created_at DESC);

CREATE TABLE IF NOT EXISTS insight_cannot_link (
    user_id  uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    a        uuid NOT NULL,
    b        uuid NOT NULL,
    curation uuid NOT NULL REFERENCES insight_curations(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, a, b, curation)
);
";

const DOWN: &str = "
DROP TABLE IF EXISTS insight_cannot_link;
DROP TABLE IF EXISTS insight_curations;
ALTER TABLE insight_themes DROP COLUMN title_curated;
ALTER TABLE insight_items DROP COLUMN pinned, DROP COLUMN dismissed_at;
";
