//! Each user's time zone (IANA name), which decides when "yesterday" or "in October" start in
//! their questions. Recorded from their Google Calendar at each calendar sync; a search may
//! name another; `NULL` reads times in UTC.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "ALTER TABLE users ADD COLUMN time_zone text;";
const DOWN: &str = "ALTER TABLE users DROP COLUMN IF EXISTS time_zone;";
