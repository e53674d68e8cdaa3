//! Revoking API tokens: the token a request carries (a client signing out), or everything a
//! user holds, every API token and browser session (a stolen token, a lost laptop).

use crate::AppState;
use crate::auth::{AuthUser, bearer_claims};
use crate::error::{ApiError, ErrorBody};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/token", delete(revoke_current))
        .route("/api/auth/revoke-all", post(revoke_all))
}

#[utoipa::path(
    delete,
    path = "/api/auth/token",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "The bearer token of this request no longer works"),
        (status = 400, description = "The request was not made with a bearer token", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub async fn revoke_current(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let claims = bearer_claims(&headers, &state).ok_or_else(|| {
        ApiError::BadRequest("only a bearer token can be revoked this way".into())
    })?;
    let expires = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(chrono::Utc::now);
    db::users::revoke_token(&state.db, user, claims.jti, expires).await?;
    state.validity.forget(Some(user));
    tracing::info!(user.id = %user, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/auth/revoke-all",
    tag = "auth",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 204, description = "Every API token issued so far and every session of the user no longer work"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    )
)]
pub async fn revoke_all(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<StatusCode, ApiError> {
    db::users::revoke_everything(&state.db, user).await?;
    state.validity.forget(Some(user));
    tracing::info!(user.id = %user, "every token and session revoked");
    Ok(StatusCode::NO_CONTENT)
}
