//! Per-user counts over fixed windows (firings and backtests a minute), so that one user's
//! bursts are bounded the same on every replica; and the index that counts a user's turns in
//! flight.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "
CREATE TABLE IF NOT EXISTS quota_windows (
    user_id      uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         text NOT NULL,
    window_start timestamptz NOT NULL,
    used         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, name, window_start)
);
CREATE INDEX IF NOT EXISTS quota_windows_by_start ON quota_windows (window_start);
CREATE INDEX IF NOT EXISTS turns_in_flight ON turns (user_id) WHERE status IN ('queued', 'running');
";
const DOWN: &str = "
DROP INDEX IF EXISTS turns_in_flight;
DROP TABLE IF EXISTS quota_windows;
";
