//! Hybrid search over one user's documents, with the query embedded by the embedding service
//! over NATS request/reply. If the embedder does not answer in time (or is already saturated)
//! the search runs on full text alone and says so in `mode`.

use crate::query;
use crate::{ActionError, Result};
use chrono::{DateTime, Utc};
pub use chrono_tz::Tz;
use common::UserId;
use common::bus::Bus;
use common::events::{EMBED_QUERY_SUBJECT, EmbedQuery, EmbedQueryReply};
use common::ids::Source;
use common::intake;
use db::DatabaseConnection;
use db::search::{Boosts, SearchHit, SearchQuery, Timings};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub const MAX_QUERY_CHARS: usize = 1_000;
const EMBED_TIMEOUT: Duration = Duration::from_secs(3);

/// A search as asked: plain words plus optional filters.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub q: String,
    /// 1-100, default 10.
    pub top_k: Option<u32>,
    /// Source names (`gmail`, `hubspot`, ...); empty means all.
    pub sources: Vec<String>,
    /// Kind names (`email`, `note`, ...); empty means all.
    pub kinds: Vec<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub ranking: Ranking,
    /// The moment relative times ("last week") are read against; now when `None`.
    pub now: Option<DateTime<Utc>>,
    /// The time zone they are read in; the user's own (from their calendar) when `None`,
    /// else UTC.
    pub time_zone: Option<Tz>,
}

/// Which evidence ranks the documents. Only the default is offered to users; the others
/// exist so the evaluation can show what each side contributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ranking {
    #[default]
    Hybrid,
    Vector,
    FullText,
}

/// What the search understood from the question besides its words, and applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Understood {
    /// The time the question named (`from` inclusive, `to` exclusive): documents from it rank
    /// first. Not read when the request sets its own `from`/`to` filter.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The words that named the time ("last week").
    pub when: Option<String>,
    /// The time zone the time was read in.
    pub time_zone: Option<Tz>,
    /// People the question names: contacts found by name (with their email) or, when no
    /// contact matched, the name as written. Documents involving them rank higher.
    pub people: Vec<Person>,
    /// Kinds of document the question asks for; they rank higher.
    pub kinds: Vec<String>,
    /// The question asks for the most recent; newer documents rank higher.
    pub latest: bool,
    /// What the trade also calls the question's phrases (the glossary's "ltc" for "nursing
    /// care"), searched for as well.
    pub also_searched: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub name: String,
    pub email: Option<String>,
}

impl Understood {
    /// One line per thing understood, for logs and the evaluation's report.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(when), Some(from), Some(to)) = (&self.when, self.from, self.to) {
            let zone = self.time_zone.unwrap_or(Tz::UTC);
            out.push(format!(
                "time {when:?}: {} to {} ({zone})",
                from.with_timezone(&zone).format("%Y-%m-%d"),
                to.with_timezone(&zone).format("%Y-%m-%d")
            ));
        }
        for p in &self.people {
            out.push(match &p.email {
                Some(e) => format!("person {} <{e}>", p.name),
                None => format!("person {}", p.name),
            });
        }
        for k in &self.kinds {
            out.push(format!("kind {k}"));
        }
        if self.latest {
            out.push("latest first".into());
        }
        if !self.also_searched.is_empty() {
            out.push(format!("also searched {}", self.also_searched.join(", ")));
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Searched {
    /// The query as searched (cleaned and trimmed).
    pub query: String,
    /// `hybrid`, or `fulltext` when the query could not be embedded right now.
    pub mode: &'static str,
    pub hits: Vec<SearchHit>,
    pub understood: Understood,
    /// How long embedding the query took (zero when it was not embedded).
    pub embed: Duration,
    /// Where the database part of the search spent its time.
    pub timings: Timings,
}

/// Runs searches within the deployment's bounds: at most `SEARCH_MAX_CONCURRENT` at once, at
/// most `QUERY_EMBED_MAX_IN_FLIGHT` query embeddings awaited.
#[derive(Clone)]
pub struct Searcher {
    db: DatabaseConnection,
    bus: Bus,
    dimensions: usize,
    search_slots: Arc<Semaphore>,
    embed_slots: Arc<Semaphore>,
}

impl Searcher {
    pub fn new(db: DatabaseConnection, bus: Bus, config: &common::Config) -> Self {
        Self {
            db,
            bus,
            dimensions: config.embedding_dimensions,
            search_slots: Arc::new(Semaphore::new(config.search_max_concurrent)),
            embed_slots: Arc::new(Semaphore::new(config.query_embed_max_in_flight)),
        }
    }

    /// Searches `user`'s own documents, and nobody else's.
    pub async fn search(&self, user: UserId, request: SearchRequest) -> Result<Searched> {
        let mut q = request.q;
        intake::clean_text(&mut q);
        let q = q.trim().to_owned();
        for (field, at) in [("from", request.from), ("to", request.to)] {
            if let Some(at) = at {
                intake::check_date(field, at).map_err(ActionError::Invalid)?;
            }
        }
        if q.is_empty() {
            return Err(ActionError::invalid("q", "must not be empty"));
        }
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(ActionError::invalid("q", "longer than 1000 characters"));
        }
        let top_k = request.top_k.unwrap_or(10);
        if !(1..=100).contains(&top_k) {
            return Err(ActionError::invalid("top_k", "must be between 1 and 100"));
        }
        if let (Some(from), Some(to)) = (request.from, request.to)
            && from >= to
        {
            return Err(ActionError::invalid("from", "must be before `to`"));
        }
        let sources = names("sources", request.sources)?;
        let kinds = names("kinds", request.kinds)?;
        // Limits first, then work: a search holds a slot while it runs.
        let _slot = self
            .search_slots
            .try_acquire()
            .map_err(|_| ActionError::Busy)?;
        let now = request.now.unwrap_or_else(Utc::now);
        let mut parsed = query::parse(&q, now);
        // A time in the question is read in the user's zone: "yesterday" in New York at 10 pm
        // is not yesterday in UTC. Questions without one need not look the zone up.
        let mut zone = request.time_zone;
        if parsed.when.is_some() {
            if zone.is_none() {
                zone = db::users::time_zone(&self.db, user)
                    .await?
                    .and_then(|z| z.parse().ok());
            }
            if let Some(zone) = zone {
                parsed = query::parse(&q, now.with_timezone(&zone));
            }
        }
        let embed = async {
            let started = std::time::Instant::now();
            let vector = if request.ranking == Ranking::FullText {
                None
            } else {
                self.embed_query(&parsed.embedded()).await
            };
            (vector, started.elapsed())
        };
        let ((embedding, embed_took), people) =
            tokio::join!(embed, self.people(user, &parsed.names));
        let people = people?;
        let mode = if embedding.is_some() {
            "hybrid"
        } else {
            "fulltext"
        };
        // A time the request gives is a filter and beats one read from the question, which
        // ranks its documents first (the words may name a time the answer talks about).
        let (from, to) = (request.from, request.to);
        let read = request.from.is_none() && request.to.is_none();
        let understood = Understood {
            from: parsed.from.filter(|_| read),
            to: parsed.to.filter(|_| read),
            when: parsed.when.clone().filter(|_| read),
            time_zone: parsed
                .when
                .as_ref()
                .filter(|_| read)
                .map(|_| zone.unwrap_or(Tz::UTC)),
            people,
            kinds: parsed.kinds.iter().map(|k| (*k).to_owned()).collect(),
            latest: parsed.latest,
            also_searched: parsed.related.clone(),
        };
        let query = SearchQuery {
            user: Some(user),
            tsquery: if request.ranking == Ranking::Vector {
                None
            } else {
                // What the trade also calls the question's phrases counts like the question's
                // own words ("ltc" for "nursing care"; measured: weighting it lower ranks worse).
                query::tsquery(&[parsed.terms.clone(), parsed.related.clone()].concat())
            },
            tsquery_all: query::tsquery_all(&parsed.terms),
            embedding,
            sources,
            kinds,
            from,
            to,
            top_k,
            boosts: Boosts {
                people: understood
                    .people
                    .iter()
                    .flat_map(|p| std::iter::once(p.name.to_lowercase()).chain(p.email.clone()))
                    .collect(),
                kinds: understood.kinds.clone(),
                latest: understood.latest,
                window: understood.from.zip(understood.to),
            },
        };
        let (hits, timings) = db::search::hybrid_timed(&self.db, &query).await?;
        tracing::debug!(?timings, understood = ?understood.describe(), "searched");
        Ok(Searched {
            query: q,
            mode,
            hits,
            understood,
            embed: embed_took,
            timings,
        })
    }

    /// The people the question names: each run of names resolved against the user's
    /// contacts, or kept as written when none matches.
    async fn people(&self, user: UserId, names: &[Vec<String>]) -> Result<Vec<Person>> {
        let mut out = Vec::new();
        for words in names {
            let found = db::search::people(&self.db, user, words).await?;
            if found.is_empty() {
                out.push(Person {
                    name: words.join(" "),
                    email: None,
                });
            }
            for (name, email) in found {
                if !out.iter().any(|p: &Person| p.name == name) {
                    out.push(Person { name, email });
                }
            }
        }
        Ok(out)
    }

    pub async fn embed_query(&self, text: &str) -> Option<Vec<f32>> {
        // With the embedder already this far behind, full text now beats a vector later.
        let Ok(_slot) = self.embed_slots.try_acquire() else {
            tracing::debug!("query embeddings saturated; searching full text only");
            return None;
        };
        let subject = self.bus.ns.subject(EMBED_QUERY_SUBJECT);
        let payload = serde_json::to_vec(&EmbedQuery {
            text: text.to_owned(),
        })
        .ok()?;
        let reply = tokio::time::timeout(
            EMBED_TIMEOUT,
            self.bus.client.request(subject, payload.into()),
        )
        .await;
        let reply: Option<EmbedQueryReply> = match reply {
            Ok(Ok(msg)) => serde_json::from_slice(&msg.payload).ok(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "query embedding failed; searching full text only");
                None
            }
            Err(_) => {
                tracing::warn!("query embedding timed out; searching full text only");
                None
            }
        };
        match reply {
            Some(EmbedQueryReply {
                vector: Some(v), ..
            }) if v.len() == self.dimensions => Some(v),
            Some(EmbedQueryReply { error, .. }) => {
                tracing::warn!(error = ?error, "embedding service could not embed the query");
                None
            }
            None => None,
        }
    }
}

/// A time zone by its IANA name (`America/New_York`), for the `time_zone` field.
pub fn time_zone(name: &str) -> Result<Tz> {
    name.trim().parse().map_err(|_| {
        ActionError::invalid(
            "time_zone",
            "not a time zone name (IANA, like `America/New_York`)",
        )
    })
}

/// Source or kind names, checked; blanks dropped.
fn names(field: &str, values: Vec<String>) -> Result<Vec<String>> {
    values
        .into_iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(|v| {
            Source::parse(&v)
                .map(String::from)
                .map_err(|r| ActionError::invalid(field, &r))
        })
        .collect()
}
