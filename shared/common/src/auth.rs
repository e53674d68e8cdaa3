//! API tokens: HS256 JWTs signed with `SECRET_KEY`, naming the user they act for. Each carries
//! `iss` (this deployment's PUBLIC_URL), `aud` (the API) and a `jti`, so a token of another
//! deployment sharing the secret is refused and one token can be revoked. Whether the user
//! still exists and the token is not revoked is the database's to say (`db::users`).

use crate::ids::UserId;
use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The audience every API token is issued for.
pub const AUDIENCE: &str = "assistant-api";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub email: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    /// This token's id, for revoking it alone.
    pub jti: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
}

impl Tokens {
    /// Tokens signed with `secret` and issued by `issuer` (the deployment's PUBLIC_URL).
    pub fn new(secret: &str, issuer: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud", "iat"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[AUDIENCE]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            issuer: issuer.to_owned(),
        }
    }

    pub fn from_config(config: &crate::Config) -> Self {
        Self::new(&config.secret_key, &config.public_url)
    }

    pub fn issue(&self, user: UserId, email: &str, ttl: Duration) -> Result<String, TokenError> {
        let now = Utc::now();
        let claims = Claims {
            sub: user.0,
            email: email.to_owned(),
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_owned(),
            jti: Uuid::new_v4(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let tokens = Tokens::new(
            "a-secret-of-at-least-thirty-two-bytes!!",
            "https://a.example",
        );
        let user = UserId(Uuid::new_v4());
        let token = tokens
            .issue(user, "a@example.com", Duration::days(1))
            .unwrap();
        assert_eq!(tokens.verify(&token).unwrap().sub, user.0);

        let other = Tokens::new(
            "another-secret-of-at-least-thirty-two-b",
            "https://a.example",
        );
        assert!(other.verify(&token).is_err(), "wrong key accepted");
        let elsewhere = Tokens::new(
            "a-secret-of-at-least-thirty-two-bytes!!",
            "https://b.example",
        );
        assert!(
            elsewhere.verify(&token).is_err(),
            "another deployment's token accepted"
        );
        // A token without iss/aud/jti (the old shape) is refused.
        let bare = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": user.0, "email": "a@example.com", "iat": 0, "exp": Utc::now().timestamp() + 60}),
            &EncodingKey::from_secret(b"a-secret-of-at-least-thirty-two-bytes!!"),
        )
        .unwrap();
        assert!(
            tokens.verify(&bare).is_err(),
            "token without issuer and audience accepted"
        );
        let expired = tokens
            .issue(user, "a@example.com", Duration::days(-1))
            .unwrap();
        assert!(tokens.verify(&expired).is_err(), "expired token accepted");
    }
}
