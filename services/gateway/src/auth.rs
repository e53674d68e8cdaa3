//! Who a request acts for: a bearer JWT (programmatic clients) or a session cookie (the
//! browser). A cookie-authenticated request that changes state must come from our own
//! origin (`Origin`, else `Referer`), which with SameSite=Lax stops cross-site forgery.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use common::UserId;

/// The user a request acts for.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(value) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or(ApiError::Unauthorized)?;
            let claims = state
                .tokens
                .verify(token.trim())
                .map_err(|_| ApiError::Unauthorized)?;
            let user = UserId(claims.sub);
            // The signature says who issued it; only the database knows whether the user
            // still exists and the token was not revoked since (remembered for a moment, and
            // forgotten when the database announces a revocation: see `validity`).
            if !state
                .validity
                .token_allowed(&state.db, user, claims.jti, claims.iat)
                .await?
            {
                return Err(ApiError::Unauthorized);
            }
            state.limiters.user(user)?;
            return Ok(AuthUser(user));
        }
        let secret = cookie(
            &parts.headers,
            session_cookie_name(&state.config.public_url),
        )
        .ok_or(ApiError::Unauthorized)?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe && !from_our_frontend(&parts.headers, &state.config) {
            return Err(ApiError::Forbidden(
                "cross-origin request with a session cookie",
            ));
        }
        let user = db::sessions::find(&state.db, secret)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        state.limiters.user(user)?;
        Ok(AuthUser(user))
    }
}

/// The verified claims of the request's bearer token, if it has one.
pub fn bearer_claims(parts_headers: &HeaderMap, state: &AppState) -> Option<common::auth::Claims> {
    let value = parts_headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    state.tokens.verify(token.trim()).ok()
}

/// `__Host-session` over HTTPS (Secure, Path=/, no Domain), `session` over plain HTTP
/// (local development, where browsers refuse `Secure` cookies).
pub fn session_cookie_name(public_url: &str) -> &'static str {
    if is_https(public_url) {
        "__Host-session"
    } else {
        "session"
    }
}

pub fn is_https(public_url: &str) -> bool {
    public_url.starts_with("https://")
}

/// A `Set-Cookie` value with the attributes every cookie of ours carries.
pub fn set_cookie(public_url: &str, name: &str, value: &str, path: &str, max_age: i64) -> String {
    let secure = if is_https(public_url) { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    Some(parsed.origin().ascii_serialization())
}

/// Whether a browser request comes from a page of ours: `PUBLIC_URL`'s origin or one listed in
/// `CORS_ALLOWED_ORIGINS`. Cookie writes and sign-ins need it (cross-site forgery).
pub fn from_our_frontend(headers: &HeaderMap, config: &common::Config) -> bool {
    same_origin(headers, &config.public_url) || listed_origin(headers, &config.cors_allowed_origins)
}

/// Whether the request's `Origin` is one of the browser frontends allowed by CORS.
pub fn listed_origin(headers: &HeaderMap, cors_allowed_origins: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    crate::edge::allowed_origins(cors_allowed_origins)
        .iter()
        .any(|o| o == origin)
}

/// Whether the request's `Origin` (or, when a browser omits it, `Referer`) is ours.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    let Some(ours) = origin_of(public_url) else {
        return false;
    };
    let theirs = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            headers
                .get(header::REFERER)
                .and_then(|v| v.to_str().ok())
                .and_then(origin_of)
        });
    theirs.is_some_and(|t| t == ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origin_must_match_scheme_host_and_port() {
        let ours = "https://app.example.com";
        let with = |name, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            h
        };
        assert!(same_origin(
            &with(header::ORIGIN, "https://app.example.com"),
            ours
        ));
        assert!(!same_origin(
            &with(header::ORIGIN, "https://evil.example"),
            ours
        ));
        assert!(!same_origin(
            &with(header::ORIGIN, "http://app.example.com"),
            ours
        ));
        assert!(!same_origin(
            &with(header::ORIGIN, "https://app.example.com:8443"),
            ours
        ));
        assert!(same_origin(
            &with(header::REFERER, "https://app.example.com/settings?x=1"),
            ours
        ));
        assert!(
            !same_origin(&HeaderMap::new(), ours),
            "no origin at all is refused"
        );
    }

    #[test]
    fn cookies_are_host_prefixed_and_secure_over_https() {
        assert_eq!(session_cookie_name("https://a.example"), "__Host-session");
        let c = set_cookie("https://a.example", "__Host-session", "abc", "/", 60);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"));
        assert!(!set_cookie("http://localhost:8000", "session", "abc", "/", 60).contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, "session"), Some("xyz"));
        assert_eq!(cookie(&h, "sess"), None);
    }
}
