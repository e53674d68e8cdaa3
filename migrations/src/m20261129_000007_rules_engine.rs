//! Rules that fire on events and tasks that wait: each rule keeps its compiled form and the
//! event-type keys it is indexed under; every firing is recorded once per (rule, event);
//! tasks keep their steps, where they are and what they wait for, until when; notifications
//! are what rules and tasks tell the user.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
-- `kind`: memory (kept for chat), structured (`when ... then ...`), instruction (plain
-- language, compiled to a trigger by the model). `compiled`: the parsed rule or the trigger.
-- `triggers`: the event patterns it listens to, the index the engine looks rules up by.
ALTER TABLE rules
    ADD COLUMN compiled jsonb,
    ADD COLUMN triggers text[] NOT NULL DEFAULT '{}',
    ADD COLUMN act_without_approval boolean NOT NULL DEFAULT false;
CREATE INDEX rules_by_trigger ON rules USING gin (triggers) WHERE active;

-- One row per (rule, event) that matched tier 1: what the rule saw, which tier decided, what
-- it decided and what it started. Kept when the rule is deleted, for the audit.
CREATE TABLE rule_firings (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    rule_id     uuid NOT NULL,
    event_id    uuid NOT NULL,
    event_type  text NOT NULL,
    event       jsonb NOT NULL,
    -- 1: the deterministic tier decided; 2: the model decided.
    tier        smallint NOT NULL,
    -- fired, chain_stopped, no_action (tier 2 decided not to act)
    status      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}',
    depth       integer NOT NULL DEFAULT 0,
    task_id     uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rule_id, event_id)
);
CREATE INDEX rule_firings_by_rule ON rule_firings (rule_id, created_at DESC);
CREATE INDEX rule_firings_by_user ON rule_firings (user_id, created_at DESC);

-- A task: steps run in order; a wait step parks it until a matching event or its deadline.
-- `state`: running, waiting, waiting_approval, done, failed, cancelled.
CREATE TABLE tasks (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title       text NOT NULL,
    origin      text NOT NULL,
    rule_id     uuid,
    event_id    uuid,
    turn_id     uuid,
    steps       jsonb NOT NULL,
    context     jsonb NOT NULL DEFAULT '{}',
    step        integer NOT NULL DEFAULT 0,
    state       text NOT NULL DEFAULT 'running',
    depth       integer NOT NULL DEFAULT 0,
    act_without_approval boolean NOT NULL DEFAULT false,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_by_user ON tasks (user_id, created_at DESC);
CREATE INDEX tasks_waiting_approval ON tasks (updated_at) WHERE state = 'waiting_approval';

-- What a wait step waits for. `state`: pending (registered with the email it waits on, before
-- the task reaches it), waiting, matched, timed_out, cancelled. `expect`: for a reply, the
-- Message-ID sent and, once known, the thread.
CREATE TABLE task_waits (
    task_id     uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    step        integer NOT NULL,
    user_id     uuid NOT NULL,
    keys        text[] NOT NULL,
    wait        jsonb NOT NULL,
    expect      jsonb NOT NULL DEFAULT '{}',
    deadline    timestamptz,
    state       text NOT NULL,
    matched_event jsonb,
    resolved_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, step)
);
CREATE INDEX task_waits_open ON task_waits USING gin (keys) WHERE state IN ('pending', 'waiting');
CREATE INDEX task_waits_due ON task_waits (deadline) WHERE state = 'waiting';

-- Invocations that a task step made.
ALTER TABLE tool_invocations ADD COLUMN task_id uuid, ADD COLUMN rule_id uuid;
CREATE INDEX tool_invocations_by_task ON tool_invocations (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX tool_invocations_by_rule ON tool_invocations (rule_id, created_at DESC) WHERE rule_id IS NOT NULL;

-- What a task created at a provider, so the event that comes back for it carries the chain
-- depth of the rule that caused it (`hubspot:contact:9001`, `gmail:<id>`, `calendar:<id>`).
CREATE TABLE rule_effects (
    user_id     uuid NOT NULL,
    entity      text NOT NULL,
    depth       integer NOT NULL,
    task_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, entity)
);

-- A tier-2 decision is a turn of the agent inside the task that asked for it.
ALTER TABLE turns ADD COLUMN task_id uuid;
ALTER TABLE conversations ADD COLUMN origin text NOT NULL DEFAULT 'chat';

-- Lookups rules make: a contact by email; an email answering one a task sent.
CREATE INDEX documents_contact_email
    ON documents (user_id, lower(coalesce(metadata->'properties'->>'email', metadata->>'email')))
    WHERE source = 'hubspot' AND kind = 'contact';
CREATE INDEX documents_gmail_thread ON documents (user_id, (metadata->>'thread_id'))
    WHERE source = 'gmail';
CREATE INDEX documents_gmail_reply ON documents (user_id, (metadata->>'in_reply_to'))
    WHERE source = 'gmail';

-- What rules and tasks tell the user (`notify`, a wait that timed out).
CREATE TABLE notifications (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    text        text NOT NULL,
    task_id     uuid,
    rule_id     uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz
);
CREATE INDEX notifications_by_user ON notifications (user_id, created_at DESC);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS notifications;
DROP INDEX IF EXISTS documents_gmail_reply;
DROP INDEX IF EXISTS documents_gmail_thread;
DROP INDEX IF EXISTS documents_contact_email;
ALTER TABLE conversations DROP COLUMN IF EXISTS origin;
ALTER TABLE turns DROP COLUMN IF EXISTS task_id;
DROP TABLE IF EXISTS rule_effects;
DROP INDEX IF EXISTS tool_invocations_by_rule;
DROP INDEX IF EXISTS tool_invocations_by_task;
ALTER TABLE tool_invocations DROP COLUMN IF EXISTS rule_id, DROP COLUMN IF EXISTS task_id;
DROP TABLE IF EXISTS task_waits;
DROP TABLE IF EXISTS tasks;
DROP TABLE IF EXISTS rule_firings;
DROP INDEX IF EXISTS rules_by_trigger;
ALTER TABLE rules
    DROP COLUMN IF EXISTS act_without_approval,
    DROP COLUMN IF EXISTS triggers,
    DROP COLUMN IF EXISTS compiled;
"#;
