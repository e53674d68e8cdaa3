//! Sources and the markers that cite them. Every document a tool shows the model gets a number,
//! stable for the whole conversation; the model cites it as `[n]`. Markers are resolved while
//! the answer streams: text is held back only from a `[` until it is clearly a marker or not,
//! so a half-written `[1` never reaches the client, and a marker naming no given source is
//! dropped.

use common::chat::Citation;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// The sources shown to the model in this conversation, by number.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    by_number: BTreeMap<u32, Citation>,
    by_document: HashMap<Uuid, u32>,
}

impl Sources {
    /// The number of `citation`'s document, assigning the next one if it is new.
    pub fn register(&mut self, mut citation: Citation) -> u32 {
        if let Some(n) = self.by_document.get(&citation.document_id) {
            return *n;
        }
        let n = self.by_number.keys().next_back().copied().unwrap_or(0) + 1;
        citation.n = n;
        self.by_document.insert(citation.document_id, n);
        self.by_number.insert(n, citation);
        n
    }

    /// Restores a source shown earlier, under the number it had.
    pub fn restore(&mut self, citation: Citation) {
        self.by_document.insert(citation.document_id, citation.n);
        self.by_number.insert(citation.n, citation);
    }

    pub fn get(&self, n: u32) -> Option<&Citation> {
        self.by_number.get(&n)
    }

    pub fn is_empty(&self) -> bool {
        self.by_number.is_empty()
    }
}

/// What resolving a piece of streamed text produced.
#[derive(Debug, Default, PartialEq)]
pub struct Resolved {
    /// Text safe to show now.
    pub text: String,
    /// Sources cited for the first time in this piece.
    pub cited: Vec<Citation>,
}

/// Resolves markers in a stream of text pieces.
#[derive(Debug, Default)]
pub struct Resolver {
    pending: String,
    cited: Vec<u32>,
}

/// The longest marker held back: `[` plus numbers, commas and spaces.
const MAX_MARKER: usize = 24;

impl Resolver {
    /// Sources already cited earlier in this answer (a resumed turn).
    pub fn with_cited(cited: impl IntoIterator<Item = u32>) -> Self {
        Self {
            pending: String::new(),
            cited: cited.into_iter().collect(),
        }
    }

    pub fn cited(&self) -> &[u32] {
        &self.cited
    }

    pub fn push(&mut self, piece: &str, sources: &Sources) -> Resolved {
        let mut out = Resolved::default();
        for c in piece.chars() {
            self.step(c, sources, &mut out);
        }
        out
    }

    /// The end of the answer: a marker still open was never finished and is dropped.
    pub fn finish(&mut self) -> Resolved {
        let pending = std::mem::take(&mut self.pending);
        let mut out = Resolved::default();
        if !could_be_marker(&pending) {
            out.text = pending;
        }
        out
    }

    fn step(&mut self, c: char, sources: &Sources, out: &mut Resolved) {
        if self.pending.is_empty() {
            if c == '[' {
                self.pending.push(c);
            } else {
                out.text.push(c);
            }
            return;
        }
        if c == ']' {
            let marker = std::mem::take(&mut self.pending);
            let numbers: Option<Vec<u32>> = marker[1..]
                .split(',')
                .map(|n| n.trim().parse::<u32>().ok())
                .collect();
            match numbers {
                Some(numbers) if !numbers.is_empty() => {
                    for n in numbers {
                        if let Some(source) = sources.get(n) {
                            out.text.push_str(&format!("[{n}]"));
                            if !self.cited.contains(&n) {
                                self.cited.push(n);
                                out.cited.push(source.clone());
                            }
                        }
                    }
                }
                // `[note]`, `[]`: ordinary text.
                _ => {
                    out.text.push_str(&marker);
                    out.text.push(']');
                }
            }
            return;
        }
        self.pending.push(c);
        if !could_be_marker(&self.pending) || self.pending.len() > MAX_MARKER {
            let text = std::mem::take(&mut self.pending);
            // The last character may open a marker of its own.
            let (head, last) = text.split_at(text.len() - c.len_utf8());
            out.text.push_str(head);
            if last == "[" {
                self.pending.push('[');
            } else {
                out.text.push_str(last);
            }
        }
    }
}

/// `[`, `[1`, `[1, 2`: text that a `]` would make a marker.
fn could_be_marker(text: &str) -> bool {
    text.starts_with('[')
        && text[1..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(n: usize) -> Sources {
        let mut s = Sources::default();
        for i in 0..n {
            s.register(Citation {
                n: 0,
                document_id: Uuid::new_v4(),
                title: format!("doc {i}"),
                source: "gmail".into(),
                kind: "email".into(),
                external_id: format!("m{i}"),
                occurred_at: None,
                link: None,
            });
        }
        s
    }

    /// Feeds `pieces` one by one and returns everything shown, piece by piece.
    fn run(pieces: &[&str], sources: &Sources) -> (Vec<String>, Vec<u32>) {
        let mut r = Resolver::default();
        let mut shown = Vec::new();
        let mut cited = Vec::new();
        for p in pieces {
            let out = r.push(p, sources);
            shown.push(out.text);
            cited.extend(out.cited.iter().map(|c| c.n));
        }
        shown.push(r.finish().text);
        (shown, cited)
    }

    #[test]
    fn a_marker_split_across_pieces_is_never_shown_half_written() {
        let s = sources(2);
        let (shown, cited) = run(&["Her son plays [", "1", "] and ", "[2", "]."], &s);
        assert_eq!(shown, ["Her son plays ", "", "[1] and ", "", "[2].", ""]);
        assert_eq!(cited, [1, 2]);
    }

    #[test]
    fn unknown_markers_are_dropped_and_known_ones_cited_once() {
        let s = sources(1);
        let (shown, cited) = run(&["A [7] b [1] c [1, 9]."], &s);
        assert_eq!(shown.concat(), "A  b [1] c [1].");
        assert_eq!(cited, [1]);
    }

    #[test]
    fn brackets_that_are_not_markers_pass_through() {
        let s = sources(1);
        let (shown, _) = run(&["see [note] and [[1]] or [", "x"], &s);
        assert_eq!(shown.concat(), "see [note] and [[1]] or [x");
    }

    #[test]
    fn an_unfinished_marker_at_the_end_is_dropped() {
        let s = sources(1);
        let (shown, cited) = run(&["done [1"], &s);
        assert_eq!(shown.concat(), "done ");
        assert!(cited.is_empty());
    }

    #[test]
    fn numbers_are_stable_per_document() {
        let mut s = sources(2);
        let again = s.get(1).unwrap().clone();
        assert_eq!(s.register(again), 1);
    }
}
