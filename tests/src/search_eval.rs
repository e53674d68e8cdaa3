//! The search evaluation set (`tests/data/search_eval`): a labelled corpus of one advisor's
//! email, calendar, CRM, Slack and call transcripts, and questions with the documents that
//! answer them. Each document is written as its provider would send it and normalized by
//! ingest's own code, so what is indexed is what production indexes. [`evaluate`] runs every
//! question through [`actions::search::Searcher`] (the search the API and the assistant's tools
//! run) and scores the ranking.

use actions::search::{Ranking, SearchRequest, Searcher};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration as Span, NaiveDateTime, Utc};
use common::events::DocumentInput;
use common::{DocumentId, UserId};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The moment questions like "last week" are asked at.
pub const NOW: &str = "2026-11-29T12:00:00Z";
const USER_EMAIL: &str = "dana@whitfieldwealth.com";

pub fn now() -> DateTime<Utc> {
    NOW.parse().expect("NOW is RFC 3339")
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/search_eval")
}

/// One document of the corpus: its label and what ingest makes of it.
pub struct EvalDoc {
    pub id: String,
    pub input: DocumentInput,
}

pub struct Question {
    pub category: String,
    pub relevant: Vec<String>,
    pub text: String,
    /// Every third question: never tuned on.
    pub held_out: bool,
}

/// The corpus, each document normalized as its provider's sync would.
pub fn corpus() -> anyhow::Result<Vec<EvalDoc>> {
    let text = std::fs::read_to_string(dir().join("corpus.txt"))?;
    let mut docs = Vec::new();
    for block in text.split("\n=== ").skip(1) {
        let (head, rest) = block.split_once('\n').unwrap_or((block, ""));
        let parts: Vec<&str> = head.split('|').map(str::trim).collect();
        anyhow::ensure!(parts.len() == 3, "bad block header: {head}");
        let (id, kind) = (parts[0].to_owned(), parts[1]);
        let at = NaiveDateTime::parse_from_str(parts[2], "%Y-%m-%d %H:%M")?.and_utc();
        // A block without fields (a note) starts with its blank line.
        let (fields_text, body) = match rest.strip_prefix('\n') {
            Some(body) => ("", body),
            None => rest.split_once("\n\n").unwrap_or((rest, "")),
        };
        let fields: BTreeMap<&str, &str> = fields_text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let body = body.trim().to_owned();
        let input = document(&id, kind, at, &fields, &body)
            .map_err(|e| anyhow::anyhow!("document {id}: {e}"))?;
        docs.push(EvalDoc { id, input });
    }
    Ok(docs)
}

fn document(
    id: &str,
    kind: &str,
    at: DateTime<Utc>,
    f: &BTreeMap<&str, &str>,
    body: &str,
) -> anyhow::Result<DocumentInput> {
    let field = |k: &str| f.get(k).copied().unwrap_or_default();
    Ok(match kind {
        "email" => {
            let mut headers = vec![
                json!({"name": "From", "value": field("from")}),
                json!({"name": "To", "value": field("to")}),
                json!({"name": "Subject", "value": field("subject")}),
                json!({"name": "Date", "value": at.to_rfc2822()}),
                json!({"name": "Message-ID", "value": format!("<{id}@mail.example>")}),
            ];
            if f.contains_key("cc") {
                headers.push(json!({"name": "Cc", "value": field("cc")}));
            }
            let sent = field("from").contains(USER_EMAIL);
            let message = json!({
                "id": id,
                "threadId": f.get("thread").copied().unwrap_or(id),
                "labelIds": [if sent { "SENT" } else { "INBOX" }],
                "snippet": body.chars().take(120).collect::<String>(),
                "internalDate": at.timestamp_millis().to_string(),
                "payload": {
                    "mimeType": "text/plain",
                    "headers": headers,
                    "body": {"data": URL_SAFE_NO_PAD.encode(body), "size": body.len()},
                },
            });
            ingest::sync::gmail::to_document(&serde_json::from_value(message)?)
        }
        "meeting" => {
            let attendees: Vec<Value> = field("attendees")
                .split(">,")
                .filter(|a| !a.trim().is_empty())
                .map(|a| {
                    let (name, email) = a.split_once('<').unwrap_or((a, a));
                    json!({
                        "email": email.trim().trim_end_matches('>'),
                        "displayName": name.trim(),
                        "responseStatus": "accepted",
                    })
                })
                .collect();
            ingest::sync::calendar::to_document(&json!({
                "id": id,
                "status": "confirmed",
                "summary": field("title"),
                "description": body,
                "location": field("location"),
                "start": {"dateTime": at.to_rfc3339()},
                "end": {"dateTime": (at + Span::hours(1)).to_rfc3339()},
                "organizer": {"email": USER_EMAIL},
                "attendees": attendees,
                "updated": at.to_rfc3339(),
            }))
        }
        "contact" | "company" | "deal" | "note" => {
            let (object_type, properties) = match kind {
                "contact" => (
                    "contacts",
                    json!({
                        "firstname": field("first"), "lastname": field("last"),
                        "email": field("email"), "phone": field("phone"),
                        "company": field("company"), "jobtitle": field("jobtitle"),
                        "lifecyclestage": field("stage"),
                    }),
                ),
                "company" => (
                    "companies",
                    json!({
                        "name": field("name"), "domain": field("domain"),
                        "industry": field("industry"), "city": field("city"),
                        "description": body,
                    }),
                ),
                "deal" => (
                    "deals",
                    json!({
                        "dealname": field("name"), "amount": field("amount"),
                        "dealstage": field("stage"), "pipeline": field("pipeline"),
                        "closedate": field("closedate"),
                    }),
                ),
                _ => (
                    "notes",
                    json!({"hs_note_body": body, "hs_timestamp": at.to_rfc3339()}),
                ),
            };
            ingest::sync::hubspot::to_document(
                object_type,
                &json!({"id": id, "properties": properties, "updatedAt": at.to_rfc3339()}),
            )
        }
        "slack" => {
            let channel = field("channel");
            ingest::sync::slack::to_document(
                &format!("C{}", channel.to_uppercase()),
                channel,
                field("user"),
                &json!({
                    "ts": format!("{}.{:06}", at.timestamp(), id.len()),
                    "text": body,
                    "user": format!("U{}", field("user").replace(' ', "").to_uppercase()),
                }),
            )
        }
        "transcript" => {
            let turns: Vec<Value> = body
                .split("\n\n")
                .enumerate()
                .map(|(i, turn)| {
                    let (speaker, text) = turn.split_once(':').unwrap_or(("Unknown", turn));
                    json!({"speaker": speaker.trim(), "start_secs": i as f64 * 40.0, "text": text.trim()})
                })
                .collect();
            let request: gateway::routes::transcripts::TranscriptRequest = serde_json::from_value(
                json!({
                    "source": "fathom",
                    "external_id": id,
                    "title": field("title"),
                    "occurred_at": at.to_rfc3339(),
                    "participants": field("participants").split(',').map(str::trim).collect::<Vec<_>>(),
                    "turns": turns,
                }),
            )?;
            request
                .into_input(1 << 20)
                .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.reason))?
        }
        other => anyhow::bail!("unknown kind {other}"),
    })
}

pub fn questions() -> anyhow::Result<Vec<Question>> {
    let text = std::fs::read_to_string(dir().join("questions.txt"))?;
    let mut out = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.splitn(3, '|').map(str::trim).collect();
        anyhow::ensure!(parts.len() == 3, "bad question line: {line}");
        out.push(Question {
            category: parts[0].to_owned(),
            relevant: parts[1].split(',').map(|s| s.trim().to_owned()).collect(),
            text: parts[2].to_owned(),
            held_out: out.len() % 3 == 2,
        });
    }
    Ok(out)
}

/// Stores the corpus as `user`'s documents and indexes it with the embedding service's own
/// indexer (chunker and batcher as `config` sets them). Returns each stored document's label.
pub async fn load(
    db: &db::DatabaseConnection,
    config: &common::Config,
    embedder: embed::Embedder,
    user: UserId,
    docs: &[EvalDoc],
) -> anyhow::Result<HashMap<uuid::Uuid, String>> {
    let indexer = embedding::Indexer {
        db: db.clone(),
        batcher: embed::Batcher::spawn(embedder, config.embed_batch_size, Duration::from_millis(2)),
        chunker: std::sync::Arc::new(embedding::chunker(config)),
    };
    let mut labels = HashMap::new();
    for doc in docs {
        let (id, hash, _) = db::documents::upsert(db, user, &doc.input).await?;
        labels.insert(id.0, doc.id.clone());
        indexer
            .index(DocumentId(id.0), &hash, embed::Priority::Bulk, false)
            .await
            .map_err(|e| anyhow::anyhow!("indexing {}: {e:?}", doc.id))?;
    }
    Ok(labels)
}

/// What one question got: the labels of the documents returned, best first.
pub struct Outcome {
    pub ranked: Vec<String>,
    pub took: Duration,
    pub filters: Vec<String>,
}

/// Runs every question through the searcher with the given ranking.
pub async fn run(
    searcher: &Searcher,
    user: UserId,
    labels: &HashMap<uuid::Uuid, String>,
    questions: &[&Question],
    ranking: Ranking,
) -> anyhow::Result<Vec<Outcome>> {
    let mut out = Vec::with_capacity(questions.len());
    for q in questions {
        let started = Instant::now();
        let searched = searcher
            .search(
                user,
                SearchRequest {
                    q: q.text.clone(),
                    top_k: Some(10),
                    ranking,
                    now: Some(now()),
                    ..Default::default()
                },
            )
            .await?;
        let took = started.elapsed();
        out.push(Outcome {
            ranked: searched
                .hits
                .iter()
                .map(|h| labels.get(&h.document_id).cloned().unwrap_or_default())
                .collect(),
            took,
            filters: searched.understood.describe(),
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Metrics {
    pub questions: usize,
    pub recall5: f64,
    pub recall10: f64,
    pub mrr: f64,
    pub ndcg10: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Recall@k counts the relevant documents in the top k out of as many as could fit
/// (min(relevant, k)); MRR and nDCG@10 use binary relevance.
pub fn score(questions: &[&Question], outcomes: &[Outcome]) -> Metrics {
    let n = questions.len().max(1) as f64;
    let mut m = Metrics {
        questions: questions.len(),
        ..Default::default()
    };
    for (q, o) in questions.iter().zip(outcomes) {
        let relevant = |label: &String| q.relevant.contains(label);
        let found = |k: usize| o.ranked.iter().take(k).filter(|l| relevant(l)).count() as f64;
        m.recall5 += found(5) / q.relevant.len().min(5) as f64;
        m.recall10 += found(10) / q.relevant.len().min(10) as f64;
        if let Some(rank) = o.ranked.iter().position(relevant) {
            m.mrr += 1.0 / (rank + 1) as f64;
        }
        let dcg: f64 = o
            .ranked
            .iter()
            .take(10)
            .enumerate()
            .filter(|(_, l)| relevant(l))
            .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let ideal: f64 = (0..q.relevant.len().min(10))
            .map(|i| 1.0 / ((i + 2) as f64).log2())
            .sum();
        m.ndcg10 += dcg / ideal;
    }
    m.recall5 /= n;
    m.recall10 /= n;
    m.mrr /= n;
    m.ndcg10 /= n;
    if !outcomes.is_empty() {
        let took: Vec<Duration> = outcomes.iter().map(|o| o.took).collect();
        let total = took.iter().sum();
        let stats = crate::bench::stats(took, total);
        (m.p50, m.p99) = (stats.p50, stats.p99);
    }
    m
}

/// The three rankings the evaluation compares.
pub const RANKINGS: [(&str, Ranking); 3] = [
    ("vector only", Ranking::Vector),
    ("full text only", Ranking::FullText),
    ("default (hybrid)", Ranking::Hybrid),
];
