//! Each user's chunks newest first. Full-text search scores at most the newest 1,000 chunks
//! that match a question; without this index Postgres found them by walking the whole table
//! backwards and skipping every other user's chunks.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "CREATE INDEX IF NOT EXISTS chunks_user_newest ON chunks (user_id, id);";
const DOWN: &str = "DROP INDEX IF EXISTS chunks_user_newest;";
