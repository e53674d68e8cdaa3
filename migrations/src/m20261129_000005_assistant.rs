//! The assistant: conversations, the turns that answer them (one per user message, keyed by
//! the client's idempotency key), the stored messages a model sees as history (tool calls and
//! results included), every model call with its token usage, and every tool invocation with
//! who asked, its arguments, result and timing.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
CREATE TABLE conversations (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_by_user ON conversations (user_id, updated_at DESC);

-- One user message and the work that answers it. `status`: queued, running, done, failed,
-- cancelled. A retried request with the same idempotency key finds the same turn.
CREATE TABLE turns (
    id               uuid PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    idempotency_key  text,
    message          text NOT NULL,
    status           text NOT NULL DEFAULT 'queued',
    cancel_requested boolean NOT NULL DEFAULT false,
    final_text       text,
    citations        jsonb NOT NULL DEFAULT '[]',
    usage            jsonb NOT NULL DEFAULT '{}',
    error_code       text,
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX turns_by_conversation ON turns (conversation_id, created_at);

-- The conversation as a model sees it: `role` user, assistant (text and/or tool_calls) or
-- tool (a result, answering `tool_call_id`). `step` orders one turn's messages and makes
-- recording them idempotent.
CREATE TABLE messages (
    id               bigserial PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    turn_id          uuid NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
    step             integer NOT NULL,
    role             text NOT NULL,
    content          text NOT NULL DEFAULT '',
    tool_calls       jsonb,
    tool_call_id     text,
    citations        jsonb NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (turn_id, step)
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, id);

-- Every call to the chat model: what it cost and how long it took.
CREATE TABLE model_calls (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    turn_id        uuid REFERENCES turns(id) ON DELETE SET NULL,
    provider       text NOT NULL,
    model          text NOT NULL,
    input_tokens   integer NOT NULL DEFAULT 0,
    output_tokens  integer NOT NULL DEFAULT 0,
    latency_ms     integer NOT NULL DEFAULT 0,
    first_token_ms integer,
    status         text NOT NULL,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_calls_by_user_day ON model_calls (user_id, created_at);

-- Every tool invocation, recorded (unique key) before any provider is called.
CREATE TABLE tool_invocations (
    id               uuid PRIMARY KEY,
    user_id          uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    idempotency_key  text NOT NULL,
    tool             text NOT NULL,
    arguments        jsonb NOT NULL,
    conversation_id  uuid REFERENCES conversations(id) ON DELETE SET NULL,
    turn_id          uuid REFERENCES turns(id) ON DELETE SET NULL,
    tool_call_id     text,
    model_call_id    uuid REFERENCES model_calls(id) ON DELETE SET NULL,
    status           text NOT NULL,
    result           jsonb,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX tool_invocations_by_user ON tool_invocations (user_id, created_at DESC);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS tool_invocations;
DROP TABLE IF EXISTS model_calls;
DROP TABLE IF EXISTS messages;
DROP TABLE IF EXISTS turns;
DROP TABLE IF EXISTS conversations;
"#;
