//! Product intelligence without I/O. The insights consumer cuts a message into sentences
//! (`text`), embeds them, scores them (`classify`, tier 1) and turns the relevant ones into
//! items (`extract`, tier 2) with the quote as a span of the source; the store then matches
//! each item to a theme by similarity (`db::insights`).

pub mod classify;
pub mod cluster;
pub mod extract;
pub mod head;
pub mod model;
pub mod text;
pub mod trend;

pub use classify::{Kind, LocalClassifier, Verdict};
pub use text::{Sentence, Span};

/// One sentence with its embedding and tier 1's verdict.
#[derive(Debug, Clone)]
pub struct Scored {
    pub sentence: Sentence,
    pub vector: Vec<f32>,
    pub verdict: Verdict,
}

/// An item found in a message, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub span: Span,
    pub kind: Kind,
    pub title: String,
    pub description: String,
    pub quote: String,
    pub score: u8,
    pub sentiment: &'static str,
    pub urgency: &'static str,
    /// Who said it, when the source names speakers.
    pub speaker: Option<String>,
    pub vector: Vec<f32>,
}

/// What tier 1 and the extractive tier 2 made of one message.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The message's relevance: the highest of its chunks' (its sentences') scores.
    pub score: u8,
    /// The kinds of feedback that scored at least `min_score`, most common first.
    pub kinds: Vec<Kind>,
    pub items: Vec<Found>,
}

/// Items from scored sentences: each sentence of a locally extracted kind scoring at least
/// `min_score` becomes one item quoting it.
pub fn extract_local(text: &str, scored: &[Scored], min_score: u8) -> Outcome {
    let score = scored.iter().map(|s| s.verdict.score).max().unwrap_or(0);
    let mut counts: Vec<(Kind, usize)> = Vec::new();
    let mut items = Vec::new();
    for s in scored.iter().filter(|s| s.verdict.score >= min_score) {
        let kind = s.verdict.kind;
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((kind, 1)),
        }
        if !kind.extracted_locally() {
            continue;
        }
        let quote = s.sentence.span.of(text).to_owned();
        items.push(Found {
            span: s.sentence.span,
            kind,
            title: extract::title(&quote),
            description: quote.clone(),
            sentiment: extract::sentiment(kind),
            urgency: extract::urgency(kind, &quote),
            quote,
            score: s.verdict.score,
            speaker: s.sentence.speaker.clone(),
            vector: s.vector.clone(),
        });
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    Outcome {
        score,
        kinds: counts.into_iter().map(|(k, _)| k).collect(),
        items,
    }
}
