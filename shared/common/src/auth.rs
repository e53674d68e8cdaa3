//! API tokens: HS256 JWTs signed with `SECRET_KEY`, naming the user they act for.

use crate::ids::UserId;
use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub email: String,
    pub iat: i64,
    pub exp: i64,
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
}

impl Tokens {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn issue(&self, user: UserId, email: &str, ttl: Duration) -> Result<String, TokenError> {
        let now = Utc::now();
        let claims = Claims {
            sub: user.0,
            email: email.to_owned(),
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
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
        let tokens = Tokens::new("a-secret-of-at-least-thirty-two-bytes!!");
        let user = UserId(Uuid::new_v4());
        let token = tokens
            .issue(user, "a@example.com", Duration::days(1))
            .unwrap();
        assert_eq!(tokens.verify(&token).unwrap().sub, user.0);

        let other = Tokens::new("another-secret-of-at-least-thirty-two-b");
        assert!(other.verify(&token).is_err(), "wrong key accepted");
        let expired = tokens
            .issue(user, "a@example.com", Duration::days(-1))
            .unwrap();
        assert!(tokens.verify(&expired).is_err(), "expired token accepted");
    }
}
