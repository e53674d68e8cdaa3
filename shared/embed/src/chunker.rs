//! Splits text into chunks of about `tokens` model tokens, consecutive chunks sharing
//! `overlap` tokens, preferring to end a chunk at a sentence or line end.

use std::path::Path;
use tokenizers::Tokenizer;

pub struct Chunker {
    tokenizer: Option<Tokenizer>,
    tokens: usize,
    overlap: usize,
}

impl Chunker {
    /// Counts tokens with the model's own tokenizer from `dir`.
    pub fn from_model_dir(
        dir: &Path,
        tokens: usize,
        overlap: usize,
    ) -> Result<Self, crate::EmbedError> {
        let path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| crate::EmbedError::Load {
            path: path.display().to_string(),
            source: e,
        })?;
        tokenizer.with_padding(None);
        let _ = tokenizer.with_truncation(None);
        Ok(Self {
            tokenizer: Some(tokenizer),
            tokens,
            overlap,
        })
    }

    /// Counts whitespace-separated words instead of tokens (no tokenizer available).
    pub fn words(tokens: usize, overlap: usize) -> Self {
        Self {
            tokenizer: None,
            tokens,
            overlap,
        }
    }

    /// Byte spans of the text's tokens.
    fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        if let Some(t) = &self.tokenizer
            && let Ok(encoding) = t.encode(text, false)
        {
            return encoding.get_offsets().to_vec();
        }
        let mut spans = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            match (c.is_whitespace(), start) {
                (true, Some(s)) => {
                    spans.push((s, i));
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(s) = start {
            spans.push((s, text.len()));
        }
        spans
    }

    /// Chunks a transcript by speaker turns (paragraphs separated by a blank line): whole
    /// consecutive turns up to the token budget, so no chunk starts mid-sentence of a speaker;
    /// a turn longer than the budget is split on its own.
    pub fn split_turns(&self, text: &str) -> Vec<String> {
        let mut chunks = Vec::new();
        let mut current: Vec<&str> = Vec::new();
        let mut used = 0;
        for turn in text.split("\n\n").map(str::trim).filter(|t| !t.is_empty()) {
            let size = self.spans(turn).len();
            if used + size > self.tokens && !current.is_empty() {
                chunks.push(current.join("\n\n"));
                current.clear();
                used = 0;
            }
            if size > self.tokens {
                chunks.extend(self.split(turn));
                continue;
            }
            current.push(turn);
            used += size;
        }
        if !current.is_empty() {
            chunks.push(current.join("\n\n"));
        }
        chunks
    }

    pub fn split(&self, text: &str) -> Vec<String> {
        let spans = self.spans(text);
        if spans.is_empty() {
            return Vec::new();
        }
        let mut chunks = Vec::new();
        let mut start = 0;
        loop {
            let mut end = (start + self.tokens).min(spans.len());
            if end < spans.len() {
                end = self.sentence_end(text, &spans, start, end);
            }
            let (from, to) = (spans[start].0, spans[end - 1].1);
            let piece = text.get(from..to).unwrap_or_default().trim();
            if !piece.is_empty() {
                chunks.push(piece.to_owned());
            }
            if end >= spans.len() {
                break;
            }
            start = (end - self.overlap).max(start + 1);
        }
        chunks
    }

    /// The end (exclusive) of the last token in the window's final quarter that closes a
    /// sentence or line; the window's own end if none does.
    fn sentence_end(
        &self,
        text: &str,
        spans: &[(usize, usize)],
        start: usize,
        end: usize,
    ) -> usize {
        let floor = start + (self.tokens * 3 / 4).max(self.overlap + 1);
        for i in (floor..end).rev() {
            let (_, to) = spans[i];
            let closes = text[..to].ends_with(['.', '!', '?']) || text[to..].starts_with('\n');
            if closes {
                return i + 1;
            }
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_overlap_and_cover_everything() {
        let text: String = (0..100).map(|i| format!("w{i} ")).collect();
        let chunks = Chunker::words(30, 10).split(&text);
        assert!(chunks.len() >= 4);
        assert!(chunks[0].starts_with("w0 "));
        assert!(chunks.last().unwrap().ends_with("w99"));
        // The second chunk starts inside the first: 10 words of overlap.
        assert!(chunks[1].starts_with("w20 "), "{}", chunks[1]);
    }

    #[test]
    fn prefers_sentence_ends() {
        let sentence = "one two three four five six seven eight nine ten.";
        let text = [sentence; 6].join(" ");
        let chunks = Chunker::words(24, 4).split(&text);
        assert!(chunks[0].ends_with("ten."), "{}", chunks[0]);
        assert_eq!(
            chunks[0].split_whitespace().count(),
            20,
            "cut after the second sentence"
        );
    }

    #[test]
    fn short_and_empty_texts() {
        assert!(Chunker::words(10, 2).split("   ").is_empty());
        assert_eq!(Chunker::words(10, 2).split("just this"), vec!["just this"]);
    }

    #[test]
    fn transcripts_split_on_speaker_turns() {
        let chunker = Chunker::words(12, 2);
        let text = "[00:00:01] Ann: We should move the bond ladder.\n\n[00:00:09] Bob: Agreed, before rates fall.\n\n[00:00:15] Ann: I will draft the proposal and send it to the client tomorrow morning first thing, with the numbers.";
        let chunks = chunker.split_turns(text);
        assert_eq!(chunks[0], "[00:00:01] Ann: We should move the bond ladder.");
        assert!(chunks[1].starts_with("[00:00:09] Bob:"), "{chunks:?}");
        // Ann's short turn (9 words) and Bob's (6) do not fit 12 together; Ann's long last
        // turn (20 words) is split on its own and never glued to Bob's.
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        assert!(!chunks[1].contains("Ann"), "{chunks:?}");
        assert!(
            chunks[2].starts_with("[00:00:15] Ann:") && !chunks[3].contains("Bob"),
            "{chunks:?}"
        );
    }
}
