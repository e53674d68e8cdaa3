//! Any OpenAI-compatible `/embeddings` endpoint (OpenAI, Azure, Ollama, vLLM, llama.cpp).

use crate::EmbedError;
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::{CreateEmbeddingRequestArgs, EmbeddingInput};

pub struct OpenAiEmbedder {
    client: Client<OpenAIConfig>,
    model: String,
    dimensions: usize,
}

impl OpenAiEmbedder {
    pub fn new(base_url: &str, api_key: &str, model: &str, dimensions: usize) -> Self {
        let config = OpenAIConfig::new()
            .with_api_base(base_url.trim_end_matches('/'))
            .with_api_key(api_key);
        Self {
            client: Client::with_config(config),
            model: model.to_owned(),
            dimensions,
        }
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let request = CreateEmbeddingRequestArgs::default()
            .model(self.model.clone())
            .input(EmbeddingInput::StringArray(texts))
            .dimensions(self.dimensions as u32)
            .build()
            .map_err(remote)?;
        let response = self
            .client
            .embeddings()
            .create(request)
            .await
            .map_err(remote)?;
        let mut data = response.data;
        // The API may answer out of order; `index` says which input each vector belongs to.
        data.sort_by_key(|d| d.index);
        data.into_iter()
            .map(|d| {
                if d.embedding.len() != self.dimensions {
                    return Err(EmbedError::Dimensions {
                        expected: self.dimensions,
                        got: d.embedding.len(),
                    });
                }
                Ok(normalize(d.embedding))
            })
            .collect()
    }
}

fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// An endpoint's failure as users and stored rows may see it: the API error's identifiers,
/// never its message (which may echo part of the key), and transport errors without the URL.
fn remote(e: async_openai::error::OpenAIError) -> EmbedError {
    use async_openai::error::OpenAIError;
    let said = match e {
        OpenAIError::ApiError(api) => {
            let body = serde_json::json!({"error": {"type": api.r#type, "code": api.code}});
            format!(
                "the endpoint refused: {}",
                common::redact::endpoint_error(&body.to_string())
            )
        }
        OpenAIError::Reqwest(r) => r.without_url().to_string(),
        OpenAIError::JSONDeserialize(_) | OpenAIError::StreamError(_) => {
            "the endpoint's answer could not be read".into()
        }
        other => other.to_string(),
    };
    EmbedError::Remote(said.into())
}
