//! End-to-end tests: real Postgres + pgvector, real NATS JetStream, every service in-process.

mod admission;
mod assistant_writes;
mod boundary;
mod chat;
mod connections;
mod console;
mod crm_fakes;
mod edge;
mod fairness;
mod fakes;
mod google;
mod insights;
mod intake;
mod ops;
mod outages;
mod pipeline;
mod providers;
mod quotas;
mod resilience;
mod rules;
mod search_quality;
mod slack_isolation;
mod sync;
mod tasks;
mod tokens;
mod transcripts;
mod webhooks;

use assistant_tests::TestApp;
use common::ids::Source;
use common::{DocumentId, UserId};
use serde_json::{Value, json};

pub fn doc(source: &str, kind: &str, external_id: &str, title: &str, body: &str) -> Value {
    json!({"source": source, "kind": kind, "external_id": external_id, "title": title, "body": body})
}

pub fn doc_id(user: UserId, source: &str, external_id: &str) -> DocumentId {
    DocumentId::derive(user, &Source::parse(source).unwrap(), external_id)
}

pub fn titles(result: &Value) -> Vec<String> {
    result["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["title"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn wait_indexed(app: &TestApp, ids: &[DocumentId]) {
    assistant_tests::eventually(
        "documents indexed",
        std::time::Duration::from_secs(60),
        || async {
            for id in ids {
                if !app.indexed(*id).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
}
