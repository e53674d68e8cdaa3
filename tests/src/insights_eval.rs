//! The product-intelligence evaluation on public labelled data (`tests/data/insights`): tier 1
//! finding feature requests and bugs among GitHub issue titles, and themes grouping BANKING77
//! customer requests by intent, each beside the baseline the issue names, on a held-out third
//! no setting was tuned on. Themes are formed by the product's own store
//! (`db::insights::replace_items`, one item at a time as they would arrive), not a copy of it.

use anyhow::Context;
use common::UserId;
use common::events::DocumentInput;
use common::ids::Source;
use db::DatabaseConnection;
use db::insights::{Customer, Joining, NewItem};
use embed::LocalModel;
use insights::{Kind, LocalClassifier};
use std::collections::HashMap;
use std::time::Instant;

const BANKING: &str = include_str!("../data/insights/banking77_test.csv");
const ISSUES: &str = include_str!("../data/insights/issue_titles.csv");
const CLINC_TEST: &str = include_str!("../data/insights/clinc150_test_sample.csv");

/// A product team's channel as it is: mostly talk that is not product feedback (the CLINC150
/// test sample, which the head was not trained on), and every tenth message a customer's
/// feature request or bug (held-out issue titles): `(text, is feedback)`.
pub fn realistic_stream() -> anyhow::Result<Vec<(String, bool)>> {
    let chatter = rows(CLINC_TEST)?;
    let mut feedback = rows(ISSUES)?
        .into_iter()
        .filter(|(t, l)| held_out(t) && (l == "feature" || l == "bug"));
    let mut out = Vec::new();
    for (i, (text, _)) in chatter.into_iter().enumerate() {
        if i % 9 == 0
            && let Some((f, _)) = feedback.next()
        {
            out.push((f, true));
        }
        out.push((text, false));
    }
    Ok(out)
}

/// Held out: a third of the rows, chosen by a hash of the text (FNV-1a), the same every run.
pub fn held_out(text: &str) -> bool {
    fnv(text).is_multiple_of(3)
}

fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Rows in the order they arrive in a stream: by a hash of each text (salted, so not in the
/// order of `held_out`'s hash), which spreads a dataset sorted by label over time, the same
/// every run.
fn in_time_order<T>(mut rows: Vec<T>, text: impl Fn(&T) -> &str) -> Vec<T> {
    rows.sort_by_cached_key(|r| fnv(&format!("arrival:{}", text(r))));
    rows
}

fn rows(csv_text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let (text, label) = match (
        col("text").or(col("title")),
        col("category").or(col("label")),
    ) {
        (Some(t), Some(l)) => (t, l),
        _ => anyhow::bail!("no text or label column"),
    };
    let mut out = Vec::new();
    for r in reader.records() {
        let r = r?;
        out.push((r[text].to_owned(), r[label].to_owned()));
    }
    Ok(out)
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, Default)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

pub fn prf(truth: &[&str], predicted: &[&str], class: &str) -> Prf {
    let tp = truth
        .iter()
        .zip(predicted)
        .filter(|(t, p)| **t == class && **p == class)
        .count() as f64;
    let predicted_n = predicted.iter().filter(|p| **p == class).count() as f64;
    let support = truth.iter().filter(|t| **t == class).count();
    let precision = if predicted_n > 0.0 {
        tp / predicted_n
    } else {
        0.0
    };
    let recall = if support > 0 {
        tp / support as f64
    } else {
        0.0
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Prf {
        precision,
        recall,
        f1,
        support,
    }
}

/// Grouping quality against true labels.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grouping {
    /// Greedy one-to-one matching of groups to labels: the share of items in matched pairs.
    pub accuracy: f64,
    pub nmi: f64,
    pub ari: f64,
    pub groups: usize,
    pub labels: usize,
}

pub fn grouping(truth: &[usize], found: &[usize]) -> Grouping {
    let n = truth.len() as f64;
    let mut table: HashMap<(usize, usize), usize> = HashMap::new();
    let (mut by_truth, mut by_found): (HashMap<usize, usize>, HashMap<usize, usize>) =
        (HashMap::new(), HashMap::new());
    for (t, f) in truth.iter().zip(found) {
        *table.entry((*f, *t)).or_default() += 1;
        *by_truth.entry(*t).or_default() += 1;
        *by_found.entry(*f).or_default() += 1;
    }
    // Greedy 1:1: the largest cell first, each group and label used once.
    let mut cells: Vec<((usize, usize), usize)> = table.iter().map(|(k, v)| (*k, *v)).collect();
    cells.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let (mut used_f, mut used_t) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    let mut matched = 0;
    for ((f, t), c) in cells {
        if used_f.contains(&f) || used_t.contains(&t) {
            continue;
        }
        used_f.insert(f);
        used_t.insert(t);
        matched += c;
    }
    let entropy = |m: &HashMap<usize, usize>| {
        -m.values()
            .map(|c| {
                let p = *c as f64 / n;
                p * p.ln()
            })
            .sum::<f64>()
    };
    let mi: f64 = table
        .iter()
        .map(|((f, t), c)| {
            let p = *c as f64 / n;
            p * (p / ((by_found[f] as f64 / n) * (by_truth[t] as f64 / n))).ln()
        })
        .sum();
    let (hf, ht) = (entropy(&by_found), entropy(&by_truth));
    let nmi = if hf + ht > 0.0 {
        2.0 * mi / (hf + ht)
    } else {
        1.0
    };
    let ari = insights::cluster::adjusted_rand(found, truth);
    Grouping {
        accuracy: matched as f64 / n,
        nmi,
        ari,
        groups: by_found.len(),
        labels: by_truth.len(),
    }
}

/// Plain average-link clustering of unit vectors, merging while the closest pair of groups is
/// at least `threshold` similar on average: the batch baseline (the product's regrouping uses
/// the same method).
pub use insights::cluster::average_link;

/// The in-domain baseline: a plain softmax (multinomial logistic) head on the vectors,
/// trained by gradient descent with no class weights.
fn logistic_baseline(vectors: &[Vec<f32>], labels: &[&str]) -> insights::head::Head {
    insights::head::Head::train("baseline", vectors, labels, 300, false)
}

fn embed_all(model: &LocalModel, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(32) {
        out.extend(model.embed(batch)?);
    }
    Ok(out.into_iter().map(insights::classify::unit).collect())
}

/// The classifier the pipeline runs: the examples with the shipped head.
pub fn local_classifier(model: &LocalModel) -> anyhow::Result<LocalClassifier> {
    let head = insights::head::Head::shipped()
        .context("the shipped head does not match its data: run `make insights-head`")?;
    examples_classifier(model)?
        .with_head(head)
        .map_err(anyhow::Error::msg)
}

/// The examples alone, without the trained head: what the head adds is measured against it.
pub fn examples_classifier(model: &LocalModel) -> anyhow::Result<LocalClassifier> {
    let examples = insights::classify::examples();
    let texts: Vec<String> = examples.iter().map(|(_, t)| (*t).to_owned()).collect();
    let vectors = embed_all(model, &texts)?;
    Ok(LocalClassifier::new(
        examples.into_iter().map(|(k, _)| k).zip(vectors).collect(),
    ))
}

/// Trains the head on `insights::head::training_rows()` with the local model.
pub fn train_head(model: &LocalModel) -> anyhow::Result<insights::head::Head> {
    let rows = insights::head::training_rows();
    let texts: Vec<String> = rows.iter().map(|(_, t)| (*t).to_owned()).collect();
    let labels: Vec<&str> = rows.iter().map(|(l, _)| *l).collect();
    let vectors = embed_all(model, &texts)?;
    Ok(insights::head::Head::train(
        "all-MiniLM-L6-v2",
        &vectors,
        &labels,
        300,
        true,
    ))
}

#[derive(Debug, Clone, Default)]
pub struct Classification {
    pub feature: Prf,
    pub bug: Prf,
    pub baseline_feature: Prf,
    pub baseline_bug: Prf,
    pub held_out: usize,
    /// Tier 1 (split, embed, score) and the embedder alone, texts/s on the same titles.
    pub tier1_rate: f64,
    pub embedder_rate: f64,
}

/// The realistic stream through tier 1 with no model (in-process, as the pipeline scores a
/// message: its best sentence): `(messages passed on, feedback messages passed on)`.
pub fn stream_local(
    model: &LocalModel,
    classifier: &LocalClassifier,
    min_score: u8,
) -> anyhow::Result<(usize, usize)> {
    let stream = realistic_stream()?;
    let texts: Vec<String> = stream.iter().map(|(t, _)| t.clone()).collect();
    let (mut passed, mut feedback_passed) = (0, 0);
    for ((_, feedback), verdict) in stream.iter().zip(best_verdicts(model, classifier, &texts)?) {
        if verdict.is_some_and(|v| v.score >= min_score) {
            passed += 1;
            feedback_passed += usize::from(*feedback);
        }
    }
    Ok((passed, feedback_passed))
}

/// Tier 1 as the pipeline runs it on each text: its sentences, their vectors, the
/// classifier; the verdict of its highest-scoring sentence.
fn best_verdicts(
    model: &LocalModel,
    classifier: &LocalClassifier,
    texts: &[String],
) -> anyhow::Result<Vec<Option<insights::Verdict>>> {
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(32) {
        let mut pieces = Vec::new();
        let mut owner = Vec::new();
        for (i, t) in batch.iter().enumerate() {
            for s in insights::text::sentences(t, t.len(), false) {
                pieces.push(s.span.of(t).to_owned());
                owner.push(i);
            }
        }
        let vs = if pieces.is_empty() {
            Vec::new()
        } else {
            model.embed(&pieces)?
        };
        let mut best: Vec<Option<insights::Verdict>> = vec![None; batch.len()];
        for (v, i) in vs.iter().zip(&owner) {
            let verdict = classifier.classify(v);
            if best[*i].is_none_or(|b| verdict.score > b.score) {
                best[*i] = Some(verdict);
            }
        }
        out.extend(best);
    }
    Ok(out)
}

/// Feature requests and bugs among the held-out issue titles (`limit` caps the rows read,
/// for a quick run).
pub fn classification(
    model: &LocalModel,
    classifier: &LocalClassifier,
    min_score: u8,
    limit: usize,
) -> anyhow::Result<Classification> {
    let all: Vec<(String, String)> = rows(ISSUES)?.into_iter().take(limit).collect();
    let (test, train): (Vec<_>, Vec<_>) = all.into_iter().partition(|(t, _)| held_out(t));
    let texts: Vec<String> = test.iter().map(|(t, _)| t.clone()).collect();
    let truth: Vec<&str> = test.iter().map(|(_, l)| l.as_str()).collect();

    let started = Instant::now();
    let vectors = embed_all(model, &texts)?;
    let embedder_rate = texts.len() as f64 / started.elapsed().as_secs_f64();

    // Tier 1 as the pipeline runs it: sentences, their vectors, the classifier.
    let started = Instant::now();
    let predicted: Vec<&str> = best_verdicts(model, classifier, &texts)?
        .into_iter()
        .map(|b| match b {
            Some(v) if v.score >= min_score && v.kind == Kind::FeatureRequest => "feature",
            Some(v) if v.score >= min_score && v.kind == Kind::Bug => "bug",
            _ => "other",
        })
        .collect();
    let tier1_rate = texts.len() as f64 / started.elapsed().as_secs_f64();

    let train_texts: Vec<String> = train.iter().map(|(t, _)| t.clone()).collect();
    let train_vectors = embed_all(model, &train_texts)?;
    let train_labels: Vec<&str> = train.iter().map(|(_, l)| l.as_str()).collect();
    let head = logistic_baseline(&train_vectors, &train_labels);
    let baseline: Vec<&str> = vectors.iter().map(|v| head.predict(v)).collect();
    Ok(Classification {
        feature: prf(&truth, &predicted, "feature"),
        bug: prf(&truth, &predicted, "bug"),
        baseline_feature: prf(&truth, &baseline, "feature"),
        baseline_bug: prf(&truth, &baseline, "bug"),
        held_out: texts.len(),
        tier1_rate,
        embedder_rate,
    })
}

#[derive(Debug, Clone, Default)]
pub struct Themes {
    /// The store's grouping as items arrive, with its periodic regrouping, at the configured
    /// thresholds, held out.
    pub online: Grouping,
    /// The same without the regrouping: each item joins the closest theme or starts one.
    pub join_only: Grouping,
    pub joining: Joining,
    /// The join threshold that scored best on the tuning rows (the mean of 1:1 accuracy and
    /// NMI: NMI alone rewards splitting into many small themes), regrouping as configured, and
    /// the held-out grouping with it.
    pub tuned_join: f32,
    pub tuned: Grouping,
    /// Average-link clustering of the same held-out vectors, its threshold chosen on the
    /// tuning rows the same way.
    pub batch: Grouping,
    pub batch_threshold: f32,
    pub held_out: usize,
}

/// One message stored as the pipeline stores an item found in it (the whole text as its
/// quote), by the product's store: the document, and whether an item was placed (one like a
/// dismissed quote is not).
async fn store_item(
    db: &DatabaseConnection,
    user: UserId,
    number: usize,
    text: &str,
    vector: &[f32],
    joining: Joining,
) -> anyhow::Result<(uuid::Uuid, bool)> {
    let input = DocumentInput {
        source: Source::parse("eval").expect("valid"),
        kind: Source::parse("feedback").expect("valid"),
        external_id: format!("eval-{number}"),
        title: String::new(),
        body: text.to_owned(),
        metadata: serde_json::json!({}),
        occurred_at: None,
    };
    let (doc, _, _) = db::documents::upsert(db, user, &input).await?;
    let placed = db::insights::replace_items(
        db,
        user,
        doc,
        vec![NewItem {
            span_start: 0,
            span_end: text.len() as i32,
            kind: "question".into(),
            title: text.to_owned(),
            description: text.to_owned(),
            quote: text.to_owned(),
            score: 10,
            customer: Customer::default(),
            product_area: None,
            sentiment: "neutral".into(),
            urgency: "low".into(),
            embedding: vector.to_vec(),
            occurred_at: chrono::Utc::now(),
            confirmed: None,
        }],
        joining,
    )
    .await?;
    Ok((doc.0, !placed.is_empty()))
}

/// Each stored item's document, theme and id (dismissed ones have no theme).
async fn stored_items(
    db: &DatabaseConnection,
    user: UserId,
) -> anyhow::Result<HashMap<uuid::Uuid, (Option<uuid::Uuid>, uuid::Uuid)>> {
    use sea_orm::ConnectionTrait;
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT document_id, theme_id, id FROM insight_items WHERE user_id = $1",
            [user.0.into()],
        ))
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get("", "document_id")?,
                (r.try_get("", "theme_id")?, r.try_get("", "id")?),
            ))
        })
        .collect()
}

/// Themes as numbers (in order of first appearance) for the items of `documents`.
fn numbered(
    documents: &[uuid::Uuid],
    items: &HashMap<uuid::Uuid, (Option<uuid::Uuid>, uuid::Uuid)>,
) -> anyhow::Result<Vec<usize>> {
    let mut number: HashMap<uuid::Uuid, usize> = HashMap::new();
    documents
        .iter()
        .map(|d| {
            let theme = items
                .get(d)
                .and_then(|(t, _)| *t)
                .context("every item has a theme")?;
            let next = number.len();
            Ok(*number.entry(theme).or_insert(next))
        })
        .collect()
}

/// Every request stored as an item, one at a time, by the product's store, for a fresh user,
/// regrouping when due (as the pipeline does) if `regroup`; the theme each is in at the end.
async fn store_grouping(
    db: &DatabaseConnection,
    user: UserId,
    texts: &[String],
    vectors: &[Vec<f32>],
    joining: Joining,
    regroup: bool,
) -> anyhow::Result<Vec<usize>> {
    let mut documents = Vec::with_capacity(texts.len());
    for (i, (text, vector)) in texts.iter().zip(vectors).enumerate() {
        documents.push(store_item(db, user, i, text, vector, joining).await?.0);
        if regroup {
            db::insights::regroup_if_due(db, user, joining).await?;
        }
    }
    numbered(&documents, &stored_items(db, user).await?)
}

/// BANKING77 requests grouped into themes: the store as items arrive (with and without its
/// regrouping) at the configured thresholds, at the join threshold tuned on the other two
/// thirds, and average-link in batch. `per_intent` caps the rows of each intent, for a quick
/// run.
pub async fn themes(
    db: &DatabaseConnection,
    model: &LocalModel,
    joining: Joining,
    per_intent: usize,
    sweep: &[f32],
) -> anyhow::Result<Themes> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let all: Vec<(String, String)> = rows(BANKING)?
        .into_iter()
        .filter(|(_, l)| {
            let n = seen.entry(l.clone()).or_default();
            *n += 1;
            *n <= per_intent
        })
        .collect();
    let labels: Vec<String> = {
        let mut l: Vec<String> = all.iter().map(|(_, l)| l.clone()).collect();
        l.sort();
        l.dedup();
        l
    };
    let label_of = |l: &str| labels.iter().position(|x| x == l).expect("label");
    let (test, tune): (Vec<_>, Vec<_>) = all.into_iter().partition(|(t, _)| held_out(t));
    let texts = |v: &[(String, String)]| v.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
    let truth = |v: &[(String, String)]| v.iter().map(|(_, l)| label_of(l)).collect::<Vec<_>>();
    let (test_texts, tune_texts) = (texts(&test), texts(&tune));
    let (test_vectors, tune_vectors) = (
        embed_all(model, &test_texts)?,
        embed_all(model, &tune_texts)?,
    );
    let mut run = 0;
    let mut fresh_user = || {
        run += 1;
        format!("insights-eval-{}-{run}@example.com", std::process::id())
    };
    let mut users = Vec::new();
    let mut group = async |texts: &[String],
                           vectors: &[Vec<f32>],
                           joining: Joining,
                           regroup: bool,
                           email: String| {
        let user = db::users::ensure(db, &email).await?;
        users.push(email);
        store_grouping(db, user, texts, vectors, joining, regroup).await
    };
    let mut best = (f64::MIN, joining.join);
    for &t in sweep {
        let candidate = Joining {
            join: t,
            ask: t,
            ..joining
        };
        let found = group(&tune_texts, &tune_vectors, candidate, true, fresh_user()).await?;
        let g = grouping(&truth(&tune), &found);
        if (g.accuracy + g.nmi) / 2.0 > best.0 {
            best = ((g.accuracy + g.nmi) / 2.0, t);
        }
    }
    let online = grouping(
        &truth(&test),
        &group(&test_texts, &test_vectors, joining, true, fresh_user()).await?,
    );
    let join_only = grouping(
        &truth(&test),
        &group(&test_texts, &test_vectors, joining, false, fresh_user()).await?,
    );
    let tuned_joining = Joining {
        join: best.1,
        ask: best.1,
        ..joining
    };
    let tuned = grouping(
        &truth(&test),
        &group(
            &test_texts,
            &test_vectors,
            tuned_joining,
            true,
            fresh_user(),
        )
        .await?,
    );
    let mut batch_best = (f64::MIN, 0.5f32);
    for &t in sweep {
        let g = grouping(&truth(&tune), &average_link(&tune_vectors, t));
        if (g.accuracy + g.nmi) / 2.0 > batch_best.0 {
            batch_best = ((g.accuracy + g.nmi) / 2.0, t);
        }
    }
    let batch = grouping(&truth(&test), &average_link(&test_vectors, batch_best.1));
    for email in users {
        use sea_orm::ConnectionTrait;
        db.execute_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "DELETE FROM users WHERE email = $1",
            [email.into()],
        ))
        .await?;
    }
    Ok(Themes {
        online,
        join_only,
        joining,
        tuned_join: best.1,
        tuned,
        batch,
        batch_threshold: batch_best.1,
        held_out: test_texts.len(),
    })
}

/// The shares of a stream, from its start, that a team has curated when its last quarter (held
/// out by time) is measured.
pub const CURATED_SHARES: [f64; 3] = [0.25, 0.5, 0.75];

/// Tier 1 on the last quarter of the team channel, after the team dismissed every item of the
/// first `share` of it that was not feedback.
#[derive(Debug, Clone, Default)]
pub struct Dismissing {
    pub share: f64,
    pub dismissed: usize,
    /// Feedback among the last quarter's messages kept as items: they passed tier 1 and were
    /// not like a dismissed quote.
    pub kept: Prf,
    /// Last-quarter messages that passed tier 1 and were dropped as like a dismissed quote,
    /// and how many of those were feedback.
    pub dropped: usize,
    pub dropped_feedback: usize,
}

/// Themes of the last quarter of a stream of requests, after the team merged the themes of
/// the first `share` that hold the same intent and moved misplaced items to their intent's
/// theme.
#[derive(Debug, Clone, Default)]
pub struct Moving {
    pub share: f64,
    pub merges: usize,
    pub moves: usize,
    pub last_quarter: Grouping,
    /// Moved items still in the theme they were moved to at the end, after every regrouping.
    pub intact: usize,
}

/// The team's own curations as labelled data, held out by time (`curation`).
#[derive(Debug, Clone, Default)]
pub struct Curation {
    pub messages: usize,
    pub last_quarter: usize,
    pub last_quarter_feedback: usize,
    /// No curation, then each of `CURATED_SHARES`.
    pub dismissing: Vec<Dismissing>,
    pub requests: usize,
    pub last_quarter_requests: usize,
    /// No curation, then each of `CURATED_SHARES`.
    pub moving: Vec<Moving>,
    /// What other bars for "like a dismissed quote" would do with the most curated share
    /// (computed beside the store: the last quarter's messages that passed tier 1, dropped
    /// when a dismissed quote is at least the bar similar), the shipped bar
    /// (`db::insights::DISMISSED_LIKE`) first.
    pub bars: Vec<(f64, Dismissing)>,
}

/// What a team's curations teach, measured on what arrives after them. Two streams in time
/// order, each stored one message at a time by the product's store, for a fresh user per run:
///
/// - the team channel (`realistic_stream`) through the shipped tier 1 at `min_score`; the team
///   dismisses every item of the stream's first part that is not feedback (dismissals are
///   tier 1's negatives: a later quote like one dismissed is dropped);
/// - BANKING77's held-out requests, regrouped when due as the pipeline does; the team merges
///   the themes of the first part that hold the same intent (most of their items) and moves
///   every item whose theme holds another intent to its intent's theme (moves correct the
///   theme match: a later item closest to a moved one goes where it was put).
///
/// The last quarter of each is measured with no curation and with the first quarter, half and
/// three quarters curated; nothing is tuned on it. `limit` caps each stream, for a quick run.
pub async fn curation(
    db: &DatabaseConnection,
    model: &LocalModel,
    classifier: &LocalClassifier,
    min_score: u8,
    joining: Joining,
    limit: usize,
) -> anyhow::Result<Curation> {
    let mut stream = in_time_order(realistic_stream()?, |(t, _)| t);
    stream.truncate(limit);
    let texts: Vec<String> = stream.iter().map(|(t, _)| t.clone()).collect();
    let passed: Vec<bool> = best_verdicts(model, classifier, &texts)?
        .into_iter()
        .map(|v| v.is_some_and(|v| v.score >= min_score))
        .collect();
    let vectors = embed_all(model, &texts)?;
    let mut requests = in_time_order(
        rows(BANKING)?
            .into_iter()
            .filter(|(t, _)| held_out(t))
            .collect::<Vec<_>>(),
        |(t, _)| t,
    );
    requests.truncate(limit);
    let request_texts: Vec<String> = requests.iter().map(|(t, _)| t.clone()).collect();
    let request_vectors = embed_all(model, &request_texts)?;
    let intents: Vec<usize> = {
        let mut names: Vec<&str> = requests.iter().map(|(_, l)| l.as_str()).collect();
        names.sort();
        names.dedup();
        requests
            .iter()
            .map(|(_, l)| names.binary_search(&l.as_str()).expect("an intent"))
            .collect()
    };
    let shares = std::iter::once(0.0).chain(CURATED_SHARES);
    let bars = [db::insights::DISMISSED_LIKE, 0.85, 0.8, 0.75, 0.7]
        .into_iter()
        .map(|bar| (bar, dismissing_at(&stream, &passed, &vectors, bar)))
        .collect();
    let mut out = Curation {
        bars,
        messages: stream.len(),
        last_quarter: stream.len() - stream.len() * 3 / 4,
        last_quarter_feedback: stream[stream.len() * 3 / 4..]
            .iter()
            .filter(|(_, f)| *f)
            .count(),
        requests: requests.len(),
        last_quarter_requests: requests.len() - requests.len() * 3 / 4,
        ..Default::default()
    };
    // Each run is a team of its own, so neither stream's items or curations meet the other's.
    let team = async |run: String| -> anyhow::Result<UserId> {
        let email = format!("curation-eval-{}-{run}@example.com", std::process::id());
        Ok(db::users::ensure(db, &email).await?)
    };
    for (run, share) in shares.enumerate() {
        let user = team(format!("channel-{run}")).await?;
        out.dismissing
            .push(dismissing(db, user, &stream, &passed, &vectors, joining, share).await?);
        let user = team(format!("requests-{run}")).await?;
        out.moving.push(
            moving(
                db,
                user,
                &request_texts,
                &intents,
                &request_vectors,
                joining,
                share,
            )
            .await?,
        );
    }
    use sea_orm::ConnectionTrait;
    db.execute_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        "DELETE FROM users WHERE email LIKE $1",
        [format!("curation-eval-{}-%", std::process::id()).into()],
    ))
    .await?;
    Ok(out)
}

/// The team channel's last quarter if, with the most curated share dismissed, a message that
/// passed tier 1 were dropped when a dismissed quote is at least `bar` similar.
fn dismissing_at(
    stream: &[(String, bool)],
    passed: &[bool],
    vectors: &[Vec<f32>],
    bar: f64,
) -> Dismissing {
    let share = CURATED_SHARES[CURATED_SHARES.len() - 1];
    let n = stream.len();
    let (cut, tail) = ((n as f64 * share) as usize, n * 3 / 4);
    let dismissed: Vec<&Vec<f32>> = (0..cut)
        .filter(|&i| passed[i] && !stream[i].1)
        .map(|i| &vectors[i])
        .collect();
    let like_dismissed = |i: usize| {
        dismissed
            .iter()
            .any(|d| insights::classify::dot(&vectors[i], d) as f64 >= bar)
    };
    let kept: Vec<bool> = (0..n)
        .map(|i| i >= tail && passed[i] && !like_dismissed(i))
        .collect();
    last_quarter(stream, passed, &kept, share, dismissed.len())
}

/// The team channel's last quarter scored: feedback among the messages `kept` as items, and
/// those that passed tier 1 but were dropped.
fn last_quarter(
    stream: &[(String, bool)],
    passed: &[bool],
    kept: &[bool],
    share: f64,
    dismissed: usize,
) -> Dismissing {
    let (n, tail) = (stream.len(), stream.len() * 3 / 4);
    let dropped: Vec<usize> = (tail..n).filter(|&i| passed[i] && !kept[i]).collect();
    let label = |b: bool| if b { "feedback" } else { "other" };
    let truth: Vec<&str> = stream[tail..].iter().map(|(_, f)| label(*f)).collect();
    let predicted: Vec<&str> = kept[tail..].iter().map(|k| label(*k)).collect();
    Dismissing {
        share,
        dismissed,
        kept: prf(&truth, &predicted, "feedback"),
        dropped: dropped.len(),
        dropped_feedback: dropped.iter().filter(|&&i| stream[i].1).count(),
    }
}

/// One run of the team channel (see `curation`), for `user`, who has no items yet.
async fn dismissing(
    db: &DatabaseConnection,
    user: UserId,
    stream: &[(String, bool)],
    passed: &[bool],
    vectors: &[Vec<f32>],
    joining: Joining,
    share: f64,
) -> anyhow::Result<Dismissing> {
    let n = stream.len();
    let cut = (n as f64 * share) as usize;
    let mut documents: Vec<Option<uuid::Uuid>> = vec![None; n];
    let mut kept = vec![false; n];
    let mut dismissed = 0;
    for i in 0..n {
        if i == cut && cut > 0 {
            // The team reads what it has so far and dismisses what is not feedback.
            let items = stored_items(db, user).await?;
            for j in 0..cut {
                if let (false, Some(d)) = (stream[j].1, documents[j])
                    && let Some((Some(_), id)) = items.get(&d)
                {
                    db::curation::dismiss(db, user, "curation-eval", *id).await?;
                    dismissed += 1;
                }
            }
        }
        if passed[i] {
            let (document, placed) =
                store_item(db, user, i, &stream[i].0, &vectors[i], joining).await?;
            documents[i] = Some(document);
            kept[i] = placed;
        }
    }
    Ok(last_quarter(stream, passed, &kept, share, dismissed))
}

/// One run of the requests (see `curation`), for `user`, who has no items yet.
async fn moving(
    db: &DatabaseConnection,
    user: UserId,
    texts: &[String],
    intents: &[usize],
    vectors: &[Vec<f32>],
    joining: Joining,
    share: f64,
) -> anyhow::Result<Moving> {
    let n = texts.len();
    let (cut, tail) = ((n as f64 * share) as usize, n * 3 / 4);
    let mut documents = Vec::with_capacity(n);
    let (mut merges, mut moved) = (0, Vec::new());
    for i in 0..n {
        if i == cut && cut > 0 {
            (merges, moved) = curate_themes(db, user, &documents, &intents[..cut]).await?;
        }
        documents.push(
            store_item(db, user, i, &texts[i], &vectors[i], joining)
                .await?
                .0,
        );
        db::insights::regroup_if_due(db, user, joining).await?;
    }
    let items = stored_items(db, user).await?;
    let theme_of: HashMap<uuid::Uuid, Option<uuid::Uuid>> =
        items.values().map(|(theme, id)| (*id, *theme)).collect();
    Ok(Moving {
        share,
        merges,
        moves: moved.len(),
        last_quarter: grouping(&intents[tail..], &numbered(&documents[tail..], &items)?),
        intact: moved
            .iter()
            .filter(|(item, theme)| theme_of.get(item) == Some(&Some(*theme)))
            .count(),
    })
}

/// The team's curation of the themes holding `documents` (whose intents are `intents`): themes
/// whose items are mostly of one intent are merged into the largest of them, then every item
/// in a theme of another intent is moved to its own intent's theme, where there is one. The
/// merges, and each moved item with the theme it was moved to.
async fn curate_themes(
    db: &DatabaseConnection,
    user: UserId,
    documents: &[uuid::Uuid],
    intents: &[usize],
) -> anyhow::Result<(usize, Vec<(uuid::Uuid, uuid::Uuid)>)> {
    // Each theme's intent (most of its items; ties to the lower number) and size.
    let themes = async || -> anyhow::Result<_> {
        let items = stored_items(db, user).await?;
        let mut counts: HashMap<uuid::Uuid, HashMap<usize, usize>> = HashMap::new();
        for (d, intent) in documents.iter().zip(intents) {
            if let Some((Some(theme), _)) = items.get(d) {
                *counts
                    .entry(*theme)
                    .or_default()
                    .entry(*intent)
                    .or_default() += 1;
            }
        }
        let mut of: Vec<(uuid::Uuid, usize, usize)> = counts
            .into_iter()
            .map(|(theme, c)| {
                let size = c.values().sum();
                let intent = c
                    .into_iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                    .expect("a theme here has items")
                    .0;
                (theme, intent, size)
            })
            .collect();
        // Largest first, then by id: each intent's home is its largest theme.
        of.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        Ok((items, of))
    };
    let (_, of) = themes().await?;
    let mut home: HashMap<usize, uuid::Uuid> = HashMap::new();
    let mut merges = 0;
    for (theme, intent, _) in of {
        match home.get(&intent) {
            Some(&into) => {
                db::curation::merge(db, user, "curation-eval", theme, into).await?;
                merges += 1;
            }
            None => {
                home.insert(intent, theme);
            }
        }
    }
    let (items, of) = themes().await?;
    let intent_of: HashMap<uuid::Uuid, usize> = of.iter().map(|(t, i, _)| (*t, *i)).collect();
    let mut moved = Vec::new();
    for (d, intent) in documents.iter().zip(intents) {
        if let Some((Some(theme), id)) = items.get(d)
            && intent_of.get(theme) != Some(intent)
            && let Some(&to) = home.get(intent)
            && intent_of.get(&to) == Some(intent)
        {
            db::curation::move_item(db, user, "curation-eval", *id, to).await?;
            moved.push((*id, to));
        }
    }
    Ok((merges, moved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_hand_computed_values() {
        let truth = [0, 0, 0, 1, 1, 1];
        let perfect = grouping(&truth, &[5, 5, 5, 7, 7, 7]);
        assert!((perfect.accuracy - 1.0).abs() < 1e-9 && (perfect.nmi - 1.0).abs() < 1e-9);
        assert!((perfect.ari - 1.0).abs() < 1e-9);
        // One item in the wrong group: 5 of 6 matched.
        let off = grouping(&truth, &[0, 0, 1, 1, 1, 1]);
        assert!((off.accuracy - 5.0 / 6.0).abs() < 1e-9);
        assert!(off.nmi < 1.0 && off.ari < 1.0 && off.ari > 0.0);
        let p = prf(&["bug", "bug", "other"], &["bug", "other", "bug"], "bug");
        assert!((p.precision - 0.5).abs() < 1e-9 && (p.recall - 0.5).abs() < 1e-9);
    }

    #[test]
    fn average_link_merges_what_is_close_and_keeps_apart_what_is_not() {
        let v = |a: f32, b: f32| insights::classify::unit(vec![a, b]);
        let groups = average_link(
            &[v(1.0, 0.0), v(0.95, 0.05), v(0.0, 1.0), v(0.05, 0.95)],
            0.9,
        );
        assert_eq!(groups[0], groups[1]);
        assert_eq!(groups[2], groups[3]);
        assert_ne!(groups[0], groups[2]);
    }

    #[test]
    fn a_logistic_head_learns_a_separable_set() {
        let x = vec![
            vec![1.0, 0.0],
            vec![0.9, 0.1],
            vec![0.0, 1.0],
            vec![0.1, 0.9],
        ];
        let head = insights::head::Head::train("t", &x, &["a", "a", "b", "b"], 200, false);
        assert_eq!(head.predict(&[0.8, 0.2]), "a");
        assert_eq!(head.predict(&[0.2, 0.8]), "b");
    }
}

/// What a stream of messages costs with a model.
#[derive(Debug, Clone, Default)]
pub struct ModelStream {
    pub messages: i64,
    /// Messages tier 1 passed on to the model.
    pub reached_tier2: i64,
    pub calls: i64,
    pub tokens: i64,
    /// The realistic stream (`realistic_stream`) within it: its messages, how many reached
    /// tier 2, and of its feedback, how much and how much of it reached tier 2.
    pub realistic: i64,
    pub realistic_reached: i64,
    pub feedback: i64,
    pub feedback_reached: i64,
}

/// Both demo tenants' data (a product team's feedback and an advisor's mail, CRM and
/// calendar) as one user's stream with product intelligence on for every source, through the
/// running pipeline with a model configured: how many messages reach tier 2, and the calls
/// and tokens it takes.
pub async fn model_stream(env: &crate::bench::Env) -> anyhow::Result<ModelStream> {
    use sea_orm::ConnectionTrait;
    let email = "bench-insights-model@example.com";
    let user = db::users::ensure(&env.db, email).await?;
    let limits = common::intake::Limits {
        max_batch: env.config.max_batch_documents,
        max_body_bytes: env.config.max_document_bytes,
    };
    let mut accepted = ctl::load_product_demo(&env.db, &env.bus, user, &limits).await?;
    accepted.extend(ctl::load_demo(&env.bus, user, &limits).await?);
    let stream = realistic_stream()?;
    let messages: Vec<DocumentInput> = stream
        .iter()
        .enumerate()
        .map(|(i, (text, feedback))| DocumentInput {
            source: Source::parse("slack").expect("valid"),
            kind: Source::parse("message").expect("valid"),
            external_id: format!("C0TEAM:{}.{i:06}", if *feedback { "f" } else { "o" }),
            title: "#team".into(),
            body: text.clone(),
            metadata: serde_json::json!({"channel": "C0TEAM", "channel_name": "team",
                                         "user": "U0SOMEONE", "user_name": "Someone"}),
            occurred_at: None,
        })
        .collect();
    accepted.extend(ctl::submit_all(&env.bus, user, messages, &limits).await?);
    let stored = accepted.len() as i64;
    let count = |sql: &str| {
        let (db, sql) = (env.db.clone(), sql.to_owned());
        async move {
            let row = db
                .query_one_raw(sea_orm::Statement::from_sql_and_values(
                    sea_orm::DbBackend::Postgres,
                    sql,
                    [user.0.into()],
                ))
                .await?
                .context("a count")?;
            anyhow::Ok(row.try_get::<i64>("", "n")?)
        }
    };
    let started = Instant::now();
    let wait = std::time::Duration::from_secs(300);
    while count("SELECT count(*) AS n FROM documents WHERE user_id = $1").await? < stored {
        anyhow::ensure!(
            started.elapsed() < wait,
            "the stream was not stored in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Every stored document but the records the pipeline never reads.
    let records = embedding::insights::RECORD_KINDS
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let expected = count(&format!(
        "SELECT count(*) AS n FROM documents WHERE user_id = $1 AND kind NOT IN ({records})"
    ))
    .await?;
    while count("SELECT count(*) AS n FROM insight_messages WHERE user_id = $1").await? < expected {
        anyhow::ensure!(started.elapsed() < wait, "the stream was not read in time");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let out = ModelStream {
        messages: count("SELECT count(*) AS n FROM insight_messages WHERE user_id = $1").await?,
        reached_tier2: count(
            "SELECT count(*) AS n FROM insight_messages WHERE user_id = $1
             AND (status = 'extracted' OR reason LIKE 'model%')",
        )
        .await?,
        calls: count("SELECT count(*) AS n FROM model_calls WHERE user_id = $1").await?,
        tokens: count(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0)::bigint AS n FROM model_calls
             WHERE user_id = $1",
        )
        .await?,
        realistic: stream.len() as i64,
        realistic_reached: count(
            "SELECT count(*) AS n FROM insight_messages m JOIN documents d ON d.id = m.document_id
             WHERE m.user_id = $1 AND d.external_id LIKE 'C0TEAM:%'
               AND (m.status = 'extracted' OR m.reason LIKE 'model%')",
        )
        .await?,
        feedback: stream.iter().filter(|(_, f)| *f).count() as i64,
        feedback_reached: count(
            "SELECT count(*) AS n FROM insight_messages m JOIN documents d ON d.id = m.document_id
             WHERE m.user_id = $1 AND d.external_id LIKE 'C0TEAM:f.%'
               AND (m.status = 'extracted' OR m.reason LIKE 'model%')",
        )
        .await?,
    };
    env.forget_user(email).await?;
    Ok(out)
}
