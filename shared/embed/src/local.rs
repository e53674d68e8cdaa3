//! all-MiniLM-L6-v2 on the CPU: the BERT encoder of [`crate::bert`], mean pooling over each text's tokens and
//! L2 normalization, exactly as sentence-transformers configures this model.

use crate::EmbedError;
use crate::bert::{Config, Encoder, Kernel, Text};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// The model was trained on sequences of at most 256 word pieces.
pub const MAX_TOKENS: usize = 256;

/// Most tokens in one forward pass. Texts are packed without padding, so this only bounds the
/// pass's working memory (about 40 KB per token: 10 MB at this budget) while giving the matrix
/// products enough rows to keep every core busy.
pub const TOKEN_BUDGET: usize = 2048;

pub struct LocalModel {
    encoder: Encoder,
    tokenizer: Tokenizer,
}

fn load_err(path: &Path, e: impl Into<crate::BoxError>) -> EmbedError {
    EmbedError::Load {
        path: path.display().to_string(),
        source: e.into(),
    }
}

impl LocalModel {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        Self::load_with(dir, Kernel::detect())
    }

    /// [`LocalModel::load`] with the kernels chosen: the portable ones run on any CPU (tests
    /// compare both).
    pub fn load_with(dir: &Path, kernel: Kernel) -> Result<Self, EmbedError> {
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(&config_path).map_err(|e| load_err(&config_path, e))?,
        )
        .map_err(|e| load_err(&config_path, e))?;
        let tokenizer = Self::load_tokenizer(dir)?;
        let weights_path = dir.join("model.safetensors");
        let weights = std::fs::read(&weights_path).map_err(|e| load_err(&weights_path, e))?;
        let encoder =
            Encoder::load(&config, &weights, kernel).map_err(|e| load_err(&weights_path, e))?;
        Ok(Self { encoder, tokenizer })
    }

    /// The model's tokenizer, truncating to [`MAX_TOKENS`] (padding is done per forward pass).
    pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, EmbedError> {
        let path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| load_err(&path, e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load_err(&path, e))?;
        Ok(tokenizer)
    }

    pub fn dimensions(&self) -> usize {
        self.encoder.hidden_size()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embeds a batch. CPU-bound: call from a blocking thread.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // One hand-over to the worker threads per call, not one per operation: the pass runs on
        // a worker, where each parallel step finds the other workers still awake.
        rayon::scope(|_| self.forward(texts)).map_err(EmbedError::Model)
    }

    fn forward(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, crate::BoxError> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        let mut out = Vec::with_capacity(encodings.len());
        let mut start = 0;
        while start < encodings.len() {
            let mut end = start + 1;
            let mut tokens = encodings[start].get_ids().len();
            while end < encodings.len() && tokens + encodings[end].get_ids().len() <= TOKEN_BUDGET {
                tokens += encodings[end].get_ids().len();
                end += 1;
            }
            let pass: Vec<Text<'_>> = encodings[start..end]
                .iter()
                .map(|e| Text {
                    ids: e.get_ids(),
                    types: e.get_type_ids(),
                })
                .collect();
            out.extend(self.encoder.embed(&pass)?);
            start = end;
        }
        Ok(out)
    }
}
