//! The trained head of the local tier 1: a softmax (multinomial logistic) layer on the local
//! embedder's vectors, trained on the project's labelled examples and on public sentences
//! that are not product feedback (CLINC150, CC BY 3.0: see `data/README.md`). It ships as
//! weights (`data/head.json`), so the service does not embed its training data at start;
//! `make insights-head` trains it again from the data files, and a test fails when the data
//! changed without it.

use serde::{Deserialize, Serialize};

/// The label of sentences that are not product feedback.
pub const OTHER: &str = "other";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// The embedding model the vectors came from.
    pub model: String,
    /// `training_hash()` of the data it was trained on.
    pub data_hash: String,
    pub classes: Vec<String>,
    /// Per class, a weight per vector dimension and a bias last.
    pub weights: Vec<Vec<f32>>,
}

/// The training data: `(label, sentence)` from the examples and the public "other" set.
pub fn training_rows() -> Vec<(&'static str, &'static str)> {
    TRAINING_FILES
        .iter()
        .flat_map(|f| f.lines())
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (label, text) = l.split_once('\t')?;
            Some((label.trim(), text.trim()))
        })
        .collect()
}

const TRAINING_FILES: [&str; 2] = [
    include_str!("../data/examples.tsv"),
    include_str!("../data/clinc150_other.tsv"),
];

/// A fingerprint (FNV-1a, 64 bits) of the training files.
pub fn training_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in TRAINING_FILES.iter().flat_map(|f| f.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl Head {
    /// The head that ships with the product, if it was trained for this data.
    pub fn shipped() -> Option<Head> {
        let head: Head = serde_json::from_str(include_str!("../data/head.json")).ok()?;
        (head.data_hash == training_hash()).then_some(head)
    }

    /// Full-batch gradient descent from zero weights (the same data gives the same head), with
    /// a little L2; `balanced` weights each class by the inverse of its size, so that a large
    /// "other" set does not drown the kinds.
    pub fn train(
        model: &str,
        vectors: &[Vec<f32>],
        labels: &[&str],
        epochs: usize,
        balanced: bool,
    ) -> Self {
        let mut classes: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        classes.sort();
        classes.dedup();
        let dim = vectors.first().map(Vec::len).unwrap_or(0) + 1;
        let mut weights = vec![vec![0f32; dim]; classes.len()];
        let y: Vec<usize> = labels
            .iter()
            .map(|l| classes.iter().position(|c| c == l).expect("known class"))
            .collect();
        let mut count = vec![0usize; classes.len()];
        for &t in &y {
            count[t] += 1;
        }
        let weight: Vec<f32> = count
            .iter()
            .map(|&c| {
                if balanced {
                    y.len() as f32 / (classes.len() * c.max(1)) as f32
                } else {
                    1.0
                }
            })
            .collect();
        let (rate, l2) = (0.5f32, 1e-4f32);
        for _ in 0..epochs {
            let mut grad = vec![vec![0f32; dim]; classes.len()];
            for (x, &t) in vectors.iter().zip(&y) {
                let p = softmax(&weights, x);
                for (c, g) in grad.iter_mut().enumerate() {
                    let e = weight[t] * (p[c] - if c == t { 1.0 } else { 0.0 });
                    for (gi, xi) in g.iter_mut().zip(x.iter().chain([&1.0])) {
                        *gi += e * xi;
                    }
                }
            }
            let m = vectors.len().max(1) as f32;
            for (w, g) in weights.iter_mut().zip(&grad) {
                for (wi, gi) in w.iter_mut().zip(g) {
                    *wi -= rate * (gi / m + l2 * *wi);
                }
            }
        }
        Self {
            model: model.to_owned(),
            data_hash: training_hash(),
            classes,
            weights,
        }
    }

    /// The probability of each class (in `classes` order).
    pub fn probabilities(&self, x: &[f32]) -> Vec<f32> {
        softmax(&self.weights, x)
    }

    pub fn predict(&self, x: &[f32]) -> &str {
        let p = self.probabilities(x);
        let best = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0);
        &self.classes[best]
    }
}

fn softmax(weights: &[Vec<f32>], x: &[f32]) -> Vec<f32> {
    let z: Vec<f32> = weights
        .iter()
        .map(|w| {
            w.iter()
                .zip(x.iter().chain([&1.0]))
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    let top = z.iter().cloned().fold(f32::MIN, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - top).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_separable_set_is_learned_and_small_classes_are_not_drowned() {
        // Nine "other" points near one corner, one "bug" near another.
        let mut x: Vec<Vec<f32>> = (0..9).map(|i| vec![0.1 + i as f32 * 0.01, 0.9]).collect();
        x.push(vec![0.9, 0.1]);
        let mut labels = vec!["other"; 9];
        labels.push("bug");
        let head = Head::train("m", &x, &labels, 300, true);
        assert_eq!(head.predict(&[0.8, 0.2]), "bug");
        assert_eq!(head.predict(&[0.2, 0.8]), "other");
        assert_eq!(head.classes, vec!["bug", "other"]);
        // Deterministic: the same data, the same weights.
        assert_eq!(head, Head::train("m", &x, &labels, 300, true));
        // Unweighted, the lone bug is outvoted near the middle; weighted, it is not.
        let plain = Head::train("m", &x, &labels, 300, false);
        let middle = [0.5, 0.5];
        let p = |h: &Head| h.probabilities(&middle)[0];
        assert!(p(&head) > p(&plain), "{} vs {}", p(&head), p(&plain));
    }

    #[test]
    fn the_shipped_head_was_trained_on_the_data_as_it_is() {
        let raw: Head = serde_json::from_str(include_str!("../data/head.json")).unwrap();
        assert_eq!(
            raw.data_hash,
            training_hash(),
            "the training data changed: run `make insights-head`"
        );
        let head = Head::shipped().unwrap();
        let mut labels: Vec<&str> = training_rows().iter().map(|(l, _)| *l).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(head.classes, labels);
        assert!(head.weights.iter().all(|w| w.len() == 385));
        assert_eq!(head.model, "all-MiniLM-L6-v2");
    }
}
