//! A claim on a running write is a lease: who holds it and until when. Another attempt (a
//! redelivery while the first is still calling the provider) takes it over only once the
//! lease has run out, so two attempts never call the provider at the same time.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = "
ALTER TABLE tool_invocations
    ADD COLUMN IF NOT EXISTS lease_owner uuid,
    ADD COLUMN IF NOT EXISTS lease_until timestamptz;
";
const DOWN: &str = "
ALTER TABLE tool_invocations DROP COLUMN IF EXISTS lease_owner, DROP COLUMN IF EXISTS lease_until;
";
