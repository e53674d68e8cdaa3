//! Product intelligence, second step: when each user's themes were last regrouped (all items
//! at once, so themes formed online do not drift from what a batch grouping reaches), and the
//! product areas a team names for its items.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "
CREATE TABLE IF NOT EXISTS insight_grouping (
    user_id      uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    items_then   integer NOT NULL DEFAULT 0,
    themes_then  integer NOT NULL DEFAULT 0,
    regrouped_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE insight_settings ADD COLUMN IF NOT EXISTS product_areas text[] NOT NULL DEFAULT '{}';
CREATE INDEX IF NOT EXISTS insight_items_area ON insight_items (user_id, product_area)
    WHERE product_area IS NOT NULL;
";
const DOWN: &str = "
DROP INDEX IF EXISTS insight_items_area;
ALTER TABLE insight_settings DROP COLUMN IF EXISTS product_areas;
DROP TABLE IF EXISTS insight_grouping;
";
