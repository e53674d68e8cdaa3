//! all-MiniLM-L6-v2 with candle on the CPU: BERT encoder, attention-masked mean pooling and
//! L2 normalization, exactly as sentence-transformers configures this model.

use crate::EmbedError;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use tokenizers::{Encoding, Tokenizer, TruncationParams};

/// The model was trained on sequences of at most 256 word pieces.
pub const MAX_TOKENS: usize = 256;

/// Most padded tokens in one forward pass. Texts are sorted by length and grouped under this
/// budget: short texts share a pass, long ones do not pay for a large batch. Measured on 2
/// cores (BENCHMARKS.md): 213-token texts run fastest one per pass and 32 of them in one pass
/// 0.7x as fast; 44-token texts run fastest about 8 per pass.
pub const TOKEN_BUDGET: usize = 512;

pub struct LocalModel {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dimensions: usize,
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
        let device = Device::Cpu;
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_str(
            &std::fs::read_to_string(&config_path).map_err(|e| load_err(&config_path, e))?,
        )
        .map_err(|e| load_err(&config_path, e))?;
        let tokenizer = Self::load_tokenizer(dir)?;
        let weights_path = dir.join("model.safetensors");
        let weights = std::fs::read(&weights_path).map_err(|e| load_err(&weights_path, e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| load_err(&weights_path, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| load_err(&weights_path, e))?;
        Ok(Self {
            model,
            tokenizer,
            device,
            dimensions: config.hidden_size,
        })
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
        self.dimensions
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embeds a batch. CPU-bound: call from a blocking thread.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.forward(texts).map_err(EmbedError::Model)
    }

    fn forward(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, crate::BoxError> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out = vec![Vec::new(); encodings.len()];
        let mut start = 0;
        while start < order.len() {
            // Sorted ascending, so the group's padded width is its last member's length.
            let mut end = start + 1;
            while end < order.len()
                && (end + 1 - start) * encodings[order[end]].get_ids().len() <= TOKEN_BUDGET
            {
                end += 1;
            }
            let group: Vec<&Encoding> = order[start..end].iter().map(|&i| &encodings[i]).collect();
            for (vector, &i) in self
                .forward_padded(&group)?
                .into_iter()
                .zip(&order[start..end])
            {
                out[i] = vector;
            }
            start = end;
        }
        Ok(out)
    }

    fn forward_padded(&self, group: &[&Encoding]) -> Result<Vec<Vec<f32>>, crate::BoxError> {
        let rows = group.len();
        let cols = group
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let padded = |f: &dyn Fn(&Encoding) -> &[u32]| -> Vec<u32> {
            let mut flat = Vec::with_capacity(rows * cols);
            for e in group {
                let values = f(e);
                flat.extend_from_slice(values);
                flat.resize(flat.len() + cols - values.len(), 0);
            }
            flat
        };
        let ids = Tensor::from_vec(padded(&|e| e.get_ids()), (rows, cols), &self.device)?;
        let types = Tensor::from_vec(padded(&|e| e.get_type_ids()), (rows, cols), &self.device)?;
        let mask = Tensor::from_vec(
            padded(&|e| e.get_attention_mask()),
            (rows, cols),
            &self.device,
        )?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (rows, cols, dims)
        // Mean over real tokens only: padding must not pull the average.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, cols, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, dims)
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // (rows, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let unit = mean.broadcast_div(&norms)?;
        Ok(unit.to_vec2::<f32>()?)
    }
}
