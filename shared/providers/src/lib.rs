//! Reaching the providers on a user's behalf: OAuth clients, access tokens refreshed before
//! they expire (one refresh at a time per connection), and an API caller with the retry
//! policy every sync shares. Base URLs come from configuration, so tests point them at
//! local fakes. `model` is the chat-completions client that the agent and the insights
//! pipeline share.

pub mod api;
pub mod model;
pub mod oauth;
pub mod revoke;
pub mod tokens;

pub use api::Api;
pub use oauth::{OAuth, Provider};

use common::consumer::HandleError;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{0} is not configured on this server")]
    NotConfigured(&'static str),
    #[error("configuration: {0}")]
    Config(String),
    #[error("not connected to {0}")]
    NotConnected(&'static str),
    /// The grant is gone (`invalid_grant`, revoked token): the user must connect again.
    #[error("access revoked: {0}")]
    Revoked(String),
    /// The provider said no in a way retrying will not fix.
    #[error("provider refused: {0}")]
    Refused(String),
    #[error("provider answered {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
    /// Network trouble or 5xx after the retries.
    #[error("provider unavailable: {0}")]
    Transient(String),
    #[error(transparent)]
    Db(#[from] db::DbError),
}

/// A reqwest error without its URL: some provider URLs carry tokens (HubSpot's token info
/// and refresh-token paths), and errors end up in logs, dead letters and responses.
pub fn scrub(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

impl From<reqwest::Error> for ProviderError {
    fn from(e: reqwest::Error) -> Self {
        match e.status() {
            Some(s) if s.is_client_error() => ProviderError::Status {
                status: s.as_u16(),
                detail: scrub(e),
            },
            _ => ProviderError::Transient(scrub(e)),
        }
    }
}

impl ProviderError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// For the sync consumer: come back when asked, retry transient trouble, and do not retry
/// what cannot work (revoked, misconfigured: the connection status says so instead).
impl From<ProviderError> for HandleError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::RateLimited(after) => HandleError::Later {
                after,
                source: Box::new(e),
            },
            ProviderError::Transient(_) => HandleError::retry(e),
            ProviderError::Db(e) => e.into(),
            ProviderError::Status { status, .. } if status >= 500 => HandleError::retry(e),
            _ => HandleError::poison(e),
        }
    }
}

/// Everything a provider call needs, built once per service.
#[derive(Clone)]
pub struct Providers {
    pub http: reqwest::Client,
    pub oauth: OAuth,
    pub db: db::DatabaseConnection,
    pub ring: std::sync::Arc<common::secrets::KeyRing>,
    pub retry_base: Duration,
}

impl Providers {
    pub fn new(
        config: &common::Config,
        db: db::DatabaseConnection,
        ring: common::secrets::KeyRing,
    ) -> Result<Self, ProviderError> {
        let http = http_client(config)?;
        Ok(Self {
            oauth: OAuth::new(config, http.clone())?,
            http,
            db,
            ring: std::sync::Arc::new(ring),
            retry_base: Duration::from_millis(config.retry_base_ms.min(2_000)),
        })
    }

    /// A caller acting for `user` on `provider`.
    pub fn api(&self, user: common::UserId, provider: Provider) -> Api {
        Api::new(self.clone(), user, provider)
    }
}

/// The HTTP client for provider calls. Redirects are not followed: a token endpoint that
/// redirects is misconfigured, and following would send credentials elsewhere.
pub fn http_client(config: &common::Config) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(config.provider_timeout_secs))
        .user_agent(concat!("assistant/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HubSpot puts tokens in URL paths; a failed call must not carry them into logs, dead
    /// letters or responses.
    #[tokio::test]
    async fn provider_errors_do_not_carry_the_url() {
        let url = "http://127.0.0.1:9/oauth/v1/refresh-tokens/hs-refresh-secret-1234?code=abc";
        let e = reqwest::Client::new().delete(url).send().await.unwrap_err();
        assert!(
            e.to_string().contains("hs-refresh-secret"),
            "reqwest itself shows it"
        );
        let ours = ProviderError::from(e).to_string();
        assert!(
            !ours.contains("hs-refresh-secret") && !ours.contains("code=abc"),
            "{ours}"
        );
    }
}
