//! Verifies the OIDC token Pub/Sub push puts in `Authorization: Bearer`: RS256 only, a key
//! id found in Google's key set (fetched and cached per `Cache-Control`, or configured),
//! `aud` and `email` equal to the configured values, `iss` Google, `email_verified`, `exp`.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// An unknown key id refetches the set at most this often (Google rotates keys rarely).
const REFETCH_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("missing bearer token")]
    Missing,
    #[error("token is malformed or uses an algorithm other than RS256")]
    Malformed,
    #[error("unknown key id")]
    UnknownKey,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("email is not the configured push service account")]
    WrongEmail,
    #[error("Google's key set could not be fetched")]
    KeysUnavailable,
}

#[derive(Debug, Deserialize)]
struct Claims {
    email: Option<String>,
    email_verified: Option<bool>,
}

struct Cached {
    keys: JwkSet,
    fresh_until: Instant,
    fetched_at: Instant,
}

/// Google's signing keys and what a push token must say.
#[derive(Clone)]
pub struct PushVerifier {
    audience: String,
    service_account: String,
    jwks_url: String,
    http: reqwest::Client,
    fixed: Option<Arc<JwkSet>>,
    cache: Arc<RwLock<Option<Cached>>>,
    refetch_every: Duration,
}

impl PushVerifier {
    pub fn new(config: &common::Config, http: reqwest::Client) -> Result<Self, String> {
        let fixed = if config.google_jwks.trim().is_empty() {
            None
        } else {
            Some(Arc::new(
                serde_json::from_str(&config.google_jwks)
                    .map_err(|e| format!("GOOGLE_JWKS: {e}"))?,
            ))
        };
        let audience = if config.gmail_push_audience.is_empty() {
            format!(
                "{}/api/webhooks/gmail",
                config.public_url.trim_end_matches('/')
            )
        } else {
            config.gmail_push_audience.clone()
        };
        Ok(Self {
            audience,
            service_account: config.gmail_push_service_account.clone(),
            jwks_url: config.google_jwks_url.clone(),
            http,
            fixed,
            cache: Arc::new(RwLock::new(None)),
            refetch_every: REFETCH_EVERY,
        })
    }

    /// How soon an unknown key id may fetch the key set again (default one minute).
    pub fn with_refetch_interval(mut self, every: Duration) -> Self {
        self.refetch_every = every;
        self
    }

    pub fn configured(&self) -> bool {
        !self.service_account.is_empty()
    }

    pub async fn verify(&self, authorization: Option<&str>) -> Result<(), JwtError> {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(JwtError::Missing)?;
        // `alg: none` and every other algorithm fail here or on the check below.
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(JwtError::Malformed);
        }
        let kid = header.kid.ok_or(JwtError::UnknownKey)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&ISSUERS);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| JwtError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.email_verified != Some(true) {
            return Err(JwtError::Invalid("email_verified is not true".into()));
        }
        if claims.email.as_deref() != Some(self.service_account.as_str()) {
            return Err(JwtError::WrongEmail);
        }
        Ok(())
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, JwtError> {
        let find = |set: &JwkSet| {
            set.find(kid)
                .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
        };
        if let Some(fixed) = &self.fixed {
            return find(fixed).ok_or(JwtError::UnknownKey);
        }
        // What the cache can answer without a fetch: a fresh key, or a recent miss.
        let cached = |c: &Option<Cached>| -> Option<Result<DecodingKey, JwtError>> {
            let c = c.as_ref()?;
            match find(&c.keys) {
                Some(key) if Instant::now() < c.fresh_until => Some(Ok(key)),
                None if c.fetched_at.elapsed() < self.refetch_every => {
                    Some(Err(JwtError::UnknownKey))
                }
                _ => None,
            }
        };
        if let Some(answer) = cached(&*self.cache.read().await) {
            return answer;
        }
        let mut cache = self.cache.write().await;
        // Another request may have fetched while this one waited for the lock.
        if let Some(answer) = cached(&cache) {
            return answer;
        }
        let fetched = self.fetch().await;
        match fetched {
            Ok(c) => {
                let key = find(&c.keys);
                *cache = Some(c);
                key.ok_or(JwtError::UnknownKey)
            }
            // Keep using a stale set while Google's endpoint is down.
            Err(e) => cache.as_ref().and_then(|c| find(&c.keys)).ok_or(e),
        }
    }

    async fn fetch(&self) -> Result<Cached, JwtError> {
        let response = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|_| JwtError::KeysUnavailable)?;
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
            })
            .unwrap_or(3600);
        let keys: JwkSet = response
            .json()
            .await
            .map_err(|_| JwtError::KeysUnavailable)?;
        let now = Instant::now();
        Ok(Cached {
            keys,
            fresh_until: now + Duration::from_secs(max_age),
            fetched_at: now,
        })
    }
}
