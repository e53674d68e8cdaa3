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
}
