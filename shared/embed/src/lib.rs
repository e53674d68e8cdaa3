//! Text embedding. The default is all-MiniLM-L6-v2 run in-process by its own CPU encoder (384
//! dimensions, mean pooling, L2-normalized): no key and no network. Any OpenAI-compatible
//! `/embeddings` endpoint can replace it. Requests from many tasks are coalesced into model
//! batches by [`Batcher`], and [`Chunker`] splits documents on model-token boundaries.

mod batcher;
mod bert;
mod chunker;
mod local;
mod openai;

pub use batcher::{Batcher, Priority, URGENT_GRACE};
pub use bert::Kernel;
pub use chunker::Chunker;
pub use local::LocalModel;
pub use openai::OpenAiEmbedder;

use std::sync::Arc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot load the embedding model from {path}: {source}")]
    Load {
        path: String,
        #[source]
        source: BoxError,
    },
    #[error("embedding failed: {0}")]
    Model(#[source] BoxError),
    #[error("embedding endpoint failed: {0}")]
    Remote(#[source] BoxError),
    #[error("the embedder produced {got} dimensions, the index stores {expected}")]
    Dimensions { expected: usize, got: usize },
    #[error("the embedder has stopped")]
    Closed,
}

/// One way of turning a batch of texts into unit vectors.
#[derive(Clone)]
pub enum Embedder {
    Local(Arc<LocalModel>),
    OpenAi(Arc<OpenAiEmbedder>),
}

impl Embedder {
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self {
            Embedder::Local(m) => {
                let m = m.clone();
                tokio::task::spawn_blocking(move || m.embed(&texts))
                    .await
                    .map_err(|e| EmbedError::Model(e.into()))?
            }
            Embedder::OpenAi(o) => o.embed(texts).await,
        }
    }

    pub fn dimensions(&self) -> usize {
        match self {
            Embedder::Local(m) => m.dimensions(),
            Embedder::OpenAi(o) => o.dimensions(),
        }
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(f32::EPSILON)
}
