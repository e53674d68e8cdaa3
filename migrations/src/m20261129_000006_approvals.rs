//! Writes that wait for the user, and the rules users keep: each tool invocation records
//! whether it needs approval and why, until when, and how often it was attempted (a second
//! attempt reconciles with the provider before calling it again); rules are stored with
//! their text and, later, their compiled form.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
-- `status`: awaiting_approval, held (a call waiting for its siblings' approvals), approved,
-- running, succeeded, failed, rejected, expired.
ALTER TABLE tool_invocations
    ADD COLUMN step integer,
    ADD COLUMN approval_reason text,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN decided_at timestamptz,
    ADD COLUMN attempts integer NOT NULL DEFAULT 0;
CREATE INDEX tool_invocations_waiting ON tool_invocations (user_id, created_at DESC)
    WHERE status = 'awaiting_approval';
CREATE INDEX tool_invocations_by_turn ON tool_invocations (turn_id, step);

-- What the user told the assistant to remember or to do when something happens.
CREATE TABLE rules (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    text        text NOT NULL,
    kind        text NOT NULL DEFAULT 'memory',
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rules_by_user ON rules (user_id, created_at);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS rules;
DROP INDEX IF EXISTS tool_invocations_by_turn;
DROP INDEX IF EXISTS tool_invocations_waiting;
ALTER TABLE tool_invocations
    DROP COLUMN IF EXISTS attempts,
    DROP COLUMN IF EXISTS decided_at,
    DROP COLUMN IF EXISTS expires_at,
    DROP COLUMN IF EXISTS approval_reason,
    DROP COLUMN IF EXISTS step;
"#;
