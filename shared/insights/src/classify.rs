//! The local tier 1: which kind of feedback a sentence carries, if any, from its embedding
//! alone. Each kind (and "not feedback") is represented by labelled example sentences; a
//! sentence is scored by its mean similarity to the closest examples of each class, and the
//! similarities become probabilities with a softmax. The relevance score 0–10 is how likely
//! the sentence is feedback at all.

use serde::{Deserialize, Serialize};

/// What an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    FeatureRequest,
    Bug,
    PainPoint,
    Praise,
    Question,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::FeatureRequest,
        Kind::Bug,
        Kind::PainPoint,
        Kind::Praise,
        Kind::Question,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::FeatureRequest => "feature_request",
            Kind::Bug => "bug",
            Kind::PainPoint => "pain_point",
            Kind::Praise => "praise",
            Kind::Question => "question",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Kinds that become items with no model: what a product team acts on.
    pub fn extracted_locally(self) -> bool {
        matches!(self, Kind::FeatureRequest | Kind::Bug | Kind::PainPoint)
    }
}

/// The labelled examples the local classifier starts from: `(kind, sentence)`, `None` for
/// sentences that are not product feedback.
pub fn examples() -> Vec<(Option<Kind>, &'static str)> {
    include_str!("../data/examples.tsv")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (label, text) = l.split_once('\t')?;
            let kind = match label {
                "other" => None,
                k => Some(Kind::parse(k)?),
            };
            Some((kind, text.trim()))
        })
        .collect()
}

/// Tier 1's verdict on one sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The most likely kind of feedback (even when the score is low).
    pub kind: Kind,
    /// 0–10: how likely this is product feedback at all.
    pub score: u8,
    /// The probability of `kind`.
    pub confidence: f32,
}

pub struct LocalClassifier {
    /// Per class (`None` = not feedback), its examples' unit vectors.
    classes: Vec<(Option<Kind>, Vec<Vec<f32>>)>,
    temperature: f32,
    nearest: usize,
    /// The trained head (`crate::head`), with the kind of each of its classes; its
    /// probabilities are averaged with the examples'.
    head: Option<(crate::head::Head, Vec<Option<Kind>>)>,
}

/// The name stored with each outcome, so a change of classifier can be told apart.
pub const LOCAL_CLASSIFIER: &str = "local-examples-v3+head";

impl LocalClassifier {
    /// From labelled vectors (any order; they are normalized here).
    pub fn new(labelled: Vec<(Option<Kind>, Vec<f32>)>) -> Self {
        let mut classes: Vec<(Option<Kind>, Vec<Vec<f32>>)> = Vec::new();
        for (kind, v) in labelled {
            let v = unit(v);
            match classes.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, vs)) => vs.push(v),
                None => classes.push((kind, vec![v])),
            }
        }
        Self {
            classes,
            temperature: 0.04,
            nearest: 3,
            head: None,
        }
    }

    /// Averages the trained head's probabilities with the examples' (a head whose classes
    /// are not kinds or `other` is refused).
    pub fn with_head(mut self, head: crate::head::Head) -> Result<Self, String> {
        let kinds = head
            .classes
            .iter()
            .map(|c| match c.as_str() {
                crate::head::OTHER => Ok(None),
                k => Kind::parse(k).map(Some).ok_or(format!("unknown class {k}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.head = Some((head, kinds));
        Ok(self)
    }

    pub fn classify(&self, vector: &[f32]) -> Verdict {
        let v = unit(vector.to_vec());
        let sims: Vec<(Option<Kind>, f32)> = self
            .classes
            .iter()
            .map(|(k, examples)| {
                let mut s: Vec<f32> = examples.iter().map(|e| dot(e, &v)).collect();
                s.sort_by(|a, b| b.total_cmp(a));
                let n = self.nearest.min(s.len()).max(1);
                (*k, s.iter().take(n).sum::<f32>() / n as f32)
            })
            .collect();
        let top = sims.iter().map(|(_, s)| *s).fold(f32::MIN, f32::max);
        let weights: Vec<(Option<Kind>, f32)> = sims
            .iter()
            .map(|(k, s)| (*k, ((s - top) / self.temperature).exp()))
            .collect();
        let total: f32 = weights
            .iter()
            .map(|(_, w)| w)
            .sum::<f32>()
            .max(f32::MIN_POSITIVE);
        let mut probability: Vec<(Option<Kind>, f32)> =
            weights.iter().map(|(k, w)| (*k, w / total)).collect();
        if let Some((head, kinds)) = &self.head {
            let p = head.probabilities(&v);
            for (k, q) in probability.iter_mut() {
                let h: f32 = kinds
                    .iter()
                    .zip(&p)
                    .filter(|(hk, _)| *hk == k)
                    .map(|(_, x)| x)
                    .sum();
                *q = (*q + h) / 2.0;
            }
        }
        let other = probability
            .iter()
            .filter(|(k, _)| k.is_none())
            .map(|(_, p)| p)
            .sum::<f32>();
        let (kind, p) = probability
            .iter()
            .filter_map(|(k, p)| k.map(|k| (k, *p)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or((Kind::FeatureRequest, 0.0));
        Verdict {
            kind,
            score: ((1.0 - other) * 10.0).round().clamp(0.0, 10.0) as u8,
            confidence: p,
        }
    }
}

pub fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        for x in &mut v {
            *x /= n;
        }
    }
    v
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_examples_and_every_line_parses() {
        let ex = examples();
        let lines = include_str!("../data/examples.tsv")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(ex.len(), lines, "a line with an unknown label");
        for kind in Kind::ALL.map(Some).into_iter().chain([None]) {
            assert!(
                ex.iter().filter(|(k, _)| *k == kind).count() >= 10,
                "{kind:?} has few examples"
            );
        }
    }

    #[test]
    fn the_nearest_class_wins_and_not_feedback_scores_low() {
        let c = LocalClassifier::new(vec![
            (Some(Kind::Bug), vec![1.0, 0.0, 0.0]),
            (Some(Kind::FeatureRequest), vec![0.0, 1.0, 0.0]),
            (None, vec![0.0, 0.0, 1.0]),
        ]);
        let bug = c.classify(&[0.9, 0.1, 0.1]);
        assert_eq!(bug.kind, Kind::Bug);
        assert!(bug.score >= 9, "{bug:?}");
        let chat = c.classify(&[0.1, 0.1, 0.9]);
        assert!(chat.score <= 1, "{chat:?}");
    }
}
