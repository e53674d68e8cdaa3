//! One way to call a provider API for a user: bearer token from the connection, then
//! - 401 → refresh the token once and try again;
//! - 429 → wait `Retry-After` when it is short, else hand the delay to the caller (the
//!   consumer naks the command for exactly that long);
//! - 5xx or network trouble → up to three attempts with doubling delays;
//! - other 4xx → [`ProviderError::Status`] for the caller to interpret (404 stale cursor,
//!   410 Gone...).

use crate::tokens::access_token;
use crate::{Provider, ProviderError, Providers};
use common::UserId;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Longest `Retry-After` waited for in place; longer ones go back to the queue.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 3;

#[derive(Clone)]
pub struct Api {
    providers: Providers,
    user: UserId,
    provider: Provider,
}

impl Api {
    pub fn new(providers: Providers, user: UserId, provider: Provider) -> Self {
        Self {
            providers,
            user,
            provider,
        }
    }

    pub fn user(&self) -> UserId {
        self.user
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        url: &str,
        query: &[(&str, String)],
    ) -> Result<T, ProviderError> {
        self.call(Method::GET, url, query, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<T, ProviderError> {
        self.call(Method::POST, url, &[], Some(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<T, ProviderError> {
        self.call(Method::PATCH, url, &[], Some(body)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<T, ProviderError> {
        let mut token = access_token(&self.providers, self.user, self.provider, None).await?;
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .providers
                .http
                .request(method.clone(), url)
                .query(query)
                .bearer_auth(&token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(error = %crate::scrub(e), attempt, "provider call failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(ProviderError::Transient(crate::scrub(e))),
            };
            let status = response.status();
            metrics::counter!("provider_requests_total", "provider" => self.provider.as_str(), "status" => status.as_u16().to_string())
                .increment(1);
            if status.is_success() {
                let text = response.text().await?;
                return serde_json::from_str(if text.is_empty() { "null" } else { &text }).map_err(
                    |e| ProviderError::Refused(format!("unexpected response from {url}: {e}")),
                );
            }
            match status {
                StatusCode::UNAUTHORIZED if !refreshed => {
                    refreshed = true;
                    token = access_token(&self.providers, self.user, self.provider, Some(&token))
                        .await?;
                }
                StatusCode::UNAUTHORIZED => {
                    return Err(ProviderError::Revoked(
                        "the provider rejected a freshly refreshed token".into(),
                    ));
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(&response).unwrap_or(Duration::from_secs(30));
                    if wait > MAX_INLINE_WAIT || attempt >= ATTEMPTS {
                        return Err(ProviderError::RateLimited(wait));
                    }
                    tracing::info!(wait_ms = wait.as_millis() as u64, "rate limited; waiting");
                    tokio::time::sleep(wait).await;
                }
                s if s.is_server_error() && attempt < ATTEMPTS => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                s if s.is_server_error() => {
                    return Err(ProviderError::Transient(format!("{url} answered {s}")));
                }
                s => {
                    let detail: String = response
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect();
                    return Err(ProviderError::Status {
                        status: s.as_u16(),
                        detail,
                    });
                }
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.providers.retry_base * 2u32.pow(attempt.saturating_sub(1))
    }
}

/// `Retry-After` in seconds (the form Google, HubSpot and Slack send) or as an HTTP date.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}
