//! Full text never reads a long list of not-yet-merged index entries.
//!
//! GIN buffers new entries in an unsorted pending list that every search reads from start to
//! end until it is merged into the index. At the 4 MB default that list held ~4,500 chunks
//! after a bulk load and cost every full-text search 2-3 ms; at 64 kB (the least Postgres
//! allows) inserts are still merged in batches (every ~80 chunks) and the scan is negligible.
//!
//! (A GIN index over `(user_id, tsv)` by btree_gin was tried and left out: with one user
//! owning most chunks, intersecting that user's million-entry posting tree made a selective
//! search 5 ms where the plain index takes 0.7.)

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "
ALTER INDEX chunks_tsv SET (gin_pending_list_limit = 64);
SELECT gin_clean_pending_list('chunks_tsv');
";

const DOWN: &str = "ALTER INDEX chunks_tsv RESET (gin_pending_list_limit);";
