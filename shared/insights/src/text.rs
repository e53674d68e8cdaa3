//! Cutting a message into what tier 1 scores (chunks) and what tier 2 quotes (sentences),
//! each with its byte span in the stored text, so a quote is always a slice of the source.

use regex::Regex;
use std::sync::LazyLock;

/// Texts longer than this are skipped with the reason recorded.
pub const MAX_TEXT_BYTES: usize = 50 * 1024;
/// About this many characters per tier-1 chunk.
pub const CHUNK_CHARS: usize = 1_500;
/// Consecutive chunks share this many characters, so a sentence on a border is whole in one.
pub const CHUNK_OVERLAP: usize = 200;
/// At most this many chunks of one message are scored.
pub const MAX_CHUNKS: usize = 5;
/// Sentences shorter than this many words carry no request ("Thanks!", "Sounds good.").
const MIN_WORDS: usize = 3;
/// A quote longer than this is cut at a word boundary.
pub const MAX_QUOTE_CHARS: usize = 400;

/// A piece of the source: `text[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn of<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }
}

/// A sentence worth classifying, with who said it when the source names speakers
/// (a transcript's `[00:01:02] Dana: ...` lines).
#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    pub span: Span,
    pub speaker: Option<String>,
}

/// Chunks of at most about `CHUNK_CHARS`, overlapping by `CHUNK_OVERLAP`, at most
/// `MAX_CHUNKS`; each ends on a char boundary, preferably after whitespace.
pub fn chunks(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() && out.len() < MAX_CHUNKS {
        let mut end = floor_boundary(text, (start + CHUNK_CHARS).min(text.len()));
        if end < text.len()
            && let Some(ws) = text[start..end].rfind(char::is_whitespace)
            && ws > CHUNK_CHARS / 2
        {
            end = start + ws;
        }
        out.push(Span { start, end });
        if end >= text.len() {
            break;
        }
        start = floor_boundary(text, end.saturating_sub(CHUNK_OVERLAP).max(start + 1));
        // Start on a word.
        if let Some(ws) = text[start..end].find(char::is_whitespace) {
            start += ws + 1;
        }
    }
    out
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

static SPEAKER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:\[\d{1,2}:\d{2}(?::\d{2})?\]\s*)?([^:\n\[\]]{1,80}):\s+").expect("regex")
});
static TIMESTAMPED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*\[\d{1,2}:\d{2}(?::\d{2})?\]").expect("regex"));
/// A sentence ends after `.`, `!` or `?` (and closing quotes or brackets) before whitespace.
static END: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"[.!?]+["')\]]*\s+"#).expect("regex"));

/// The sentences of `text` up to `limit` bytes, trimmed, with their spans. Lines are split
/// first (chat messages and emails break lines between thoughts); a transcript line's
/// `[time] Speaker:` prefix is left out of the sentence and kept as its speaker. Quoted
/// replies (`>` lines) and signatures after `-- ` are not the sender's words and are skipped.
pub fn sentences(text: &str, limit: usize, transcript: bool) -> Vec<Sentence> {
    let limit = floor_boundary(text, limit.min(text.len()));
    let mut out = Vec::new();
    let mut offset = 0;
    for line in text[..limit].split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let trimmed = line.trim_end();
        if trimmed.trim_start().starts_with('>') {
            continue;
        }
        if trimmed == "--" || trimmed == "-- " {
            break;
        }
        let (mut start, mut speaker) = (0, None);
        if (transcript || TIMESTAMPED.is_match(trimmed))
            && let Some(c) = SPEAKER.captures(trimmed)
        {
            speaker = Some(c[1].trim().to_owned());
            start = c.get(0).map(|m| m.end()).unwrap_or(0);
        }
        let body = &trimmed[start..];
        let mut from = 0;
        let mut push = |a: usize, b: usize| {
            let piece = &body[a..b];
            let lead = piece.len() - piece.trim_start().len();
            let piece = piece.trim();
            // Words with a letter: "- Kevin Nguyen" under a message is a name, not a thought.
            let words = piece
                .split_whitespace()
                .filter(|w| w.chars().any(char::is_alphabetic))
                .count();
            if words < MIN_WORDS {
                return;
            }
            let s = line_start + start + a + lead;
            let mut e = s + piece.len();
            if piece.len() > MAX_QUOTE_CHARS {
                let cut = floor_boundary(piece, MAX_QUOTE_CHARS);
                let cut = piece[..cut].rfind(char::is_whitespace).unwrap_or(cut);
                e = s + cut;
            }
            out.push(Sentence {
                span: Span { start: s, end: e },
                speaker: speaker.clone(),
            });
        };
        for m in END.find_iter(body) {
            // Keep the punctuation, drop the whitespace after it.
            let end = m.start() + m.as_str().trim_end().len();
            push(from, end);
            from = m.end();
        }
        if from < body.len() {
            push(from, body.len());
        }
    }
    out
}

/// Whether `quote` occurs in `source`; if not exactly, the span of `source` that matches it
/// when both are compared with runs of whitespace collapsed and case ignored (a model that
/// reflowed a line). `None`: the quote is not in the source and must not be stored.
pub fn locate_quote(source: &str, quote: &str) -> Option<Span> {
    let quote = quote.trim().trim_matches('"').trim();
    if quote.is_empty() {
        return None;
    }
    if let Some(i) = source.find(quote) {
        return Some(Span {
            start: i,
            end: i + quote.len(),
        });
    }
    // Normalized search: map each kept char of the source back to its byte offset.
    let mut norm = String::new();
    let mut back = Vec::new();
    let mut last_space = true;
    for (i, c) in source.char_indices() {
        if c.is_whitespace() {
            if !last_space {
                norm.push(' ');
                back.push(i);
            }
            last_space = true;
        } else {
            for l in c.to_lowercase() {
                norm.push(l);
                back.push(i);
            }
            last_space = false;
        }
    }
    let want: String = quote
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let at = norm.find(&want)?;
    // `back` holds one entry per char of `norm`: count chars to index it.
    let first = norm[..at].chars().count();
    let last = first + want.chars().count() - 1;
    let start = back[first];
    let end_char = back[last];
    let end = end_char
        + source[end_char..]
            .chars()
            .next()
            .map(char::len_utf8)
            .unwrap_or(0);
    Some(Span { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_keep_their_spans_and_speakers() {
        let text = "[00:00:05] Dana Reyes: We love the dashboard. But the export to CSV times out on big accounts!\n\n[00:01:10] Sam: Can you add SSO with Okta?\n";
        let s = sentences(text, text.len(), true);
        let got: Vec<(&str, Option<&str>)> = s
            .iter()
            .map(|s| (s.span.of(text), s.speaker.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("We love the dashboard.", Some("Dana Reyes")),
                (
                    "But the export to CSV times out on big accounts!",
                    Some("Dana Reyes")
                ),
                ("Can you add SSO with Okta?", Some("Sam")),
            ]
        );
    }

    #[test]
    fn quoted_replies_signatures_and_short_lines_are_not_sentences() {
        let text = "Thanks!\nThe bulk edit page crashes when I select 500 rows.\n> On Monday you wrote: please add dark mode to the app\n-- \nDana Reyes, Head of Ops at Acme Corp";
        let s: Vec<&str> = sentences(text, text.len(), false)
            .iter()
            .map(|s| s.span.of(text))
            .collect();
        assert_eq!(
            s,
            vec!["The bulk edit page crashes when I select 500 rows."]
        );
    }

    #[test]
    fn chunks_overlap_cover_the_text_and_stop_at_five() {
        let text = "word ".repeat(400); // 2,000 bytes
        let c = chunks(&text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].start, 0);
        assert!(c[0].end <= CHUNK_CHARS && c[1].start < c[0].end);
        assert_eq!(c[1].end, text.len());
        let long = "éa ".repeat(10_000);
        let c = chunks(&long);
        assert_eq!(c.len(), MAX_CHUNKS);
        for s in &c {
            let _ = s.of(&long); // on char boundaries, or this panics
        }
    }

    #[test]
    fn quotes_are_found_exactly_or_after_reflowing_and_never_invented() {
        let source = "Hi team,\nthe export to CSV\ntimes out on big accounts.";
        let exact = locate_quote(source, "the export to CSV").unwrap();
        assert_eq!(exact.of(source), "the export to CSV");
        let reflowed = locate_quote(source, "The export to CSV times out").unwrap();
        assert_eq!(reflowed.of(source), "the export to CSV\ntimes out");
        assert_eq!(locate_quote(source, "the import from CSV times out"), None);
        assert_eq!(locate_quote(source, "  "), None);
    }
}
