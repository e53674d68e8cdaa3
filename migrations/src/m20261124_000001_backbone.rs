//! The event backbone: users, documents, chunks (vector + full text), dead letters.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Generic (Standard Webhooks) endpoints: the signature tells which user a delivery is for.
CREATE TABLE webhook_endpoints (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source      text NOT NULL,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_source ON webhook_endpoints (source);

CREATE TABLE documents (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    source        text NOT NULL,
    kind          text NOT NULL,
    external_id   text NOT NULL,
    title         text NOT NULL,
    body          text NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    occurred_at   timestamptz,
    content_hash  text NOT NULL,
    -- content_hash of the version whose chunks are stored; differs while re-indexing is due
    indexed_hash  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, source, external_id)
);
CREATE INDEX documents_user_time ON documents (user_id, occurred_at DESC);

CREATE TABLE chunks (
    id           bigserial PRIMARY KEY,
    document_id  uuid NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    user_id      uuid NOT NULL,
    source       text NOT NULL,
    kind         text NOT NULL,
    occurred_at  timestamptz,
    ordinal      int NOT NULL,
    title        text NOT NULL,
    content      text NOT NULL,
    embedding    vector(384) NOT NULL,
    tsv          tsvector GENERATED ALWAYS AS (
                     setweight(to_tsvector('english', title), 'A') ||
                     setweight(to_tsvector('english', content), 'B')) STORED,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX chunks_tsv ON chunks USING gin (tsv);
CREATE INDEX chunks_user ON chunks (user_id, source, kind);

CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    stream       text NOT NULL,
    consumer     text NOT NULL,
    subject      text NOT NULL,
    stream_seq   bigint NOT NULL,
    deliveries   int NOT NULL,
    headers      jsonb NOT NULL DEFAULT '{}',
    payload      bytea NOT NULL,
    error        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    requeued_at  timestamptz,
    UNIQUE (stream, consumer, stream_seq)
);
CREATE INDEX dead_letters_open ON dead_letters (created_at) WHERE requeued_at IS NULL;
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS dead_letters;
DROP TABLE IF EXISTS chunks;
DROP TABLE IF EXISTS documents;
DROP TABLE IF EXISTS webhook_endpoints;
DROP TABLE IF EXISTS users;
"#;
