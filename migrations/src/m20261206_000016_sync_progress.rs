//! A sync pass's progress: items read so far and the provider's estimate of how many it has
//! to read. A pass runs from a resource's first run until a run finishes with nothing left,
//! across the continuations a large first sync queues, so progress never restarts between
//! them.
//!
//! `pass_totals` holds one estimate per part of the resource (`{"messages": 1200}` for
//! Gmail; one per object type for HubSpot), each recorded once per pass: the first page of
//! a part counts everything the pass has to read of it, and a continuation's later search
//! of the same part would count only what is left.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "
ALTER TABLE sync_state
    ADD COLUMN pass_open       boolean NOT NULL DEFAULT false,
    ADD COLUMN pass_started_at timestamptz,
    ADD COLUMN pass_done       bigint NOT NULL DEFAULT 0,
    ADD COLUMN pass_totals     jsonb NOT NULL DEFAULT '{}';
";

const DOWN: &str = "
ALTER TABLE sync_state
    DROP COLUMN pass_open, DROP COLUMN pass_started_at, DROP COLUMN pass_done,
    DROP COLUMN pass_totals;
";
