//! Themes announced as trending, one row per theme and week: the announcement is made once
//! per week however long the week's items keep coming (JetStream's duplicate window covers
//! only a redelivery, two hours).

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "
CREATE TABLE IF NOT EXISTS insight_trending (
    theme_id     uuid NOT NULL REFERENCES insight_themes(id) ON DELETE CASCADE,
    week         date NOT NULL,
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    items        integer NOT NULL,
    baseline     double precision NOT NULL,
    p_value      double precision NOT NULL,
    announced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (theme_id, week)
);
CREATE INDEX IF NOT EXISTS insight_trending_user ON insight_trending (user_id, week DESC);
";

const DOWN: &str = "DROP TABLE IF EXISTS insight_trending;";
