//! Sign-in with Google and connecting HubSpot and Slack (OAuth 2.0 authorization code with
//! PKCE), and the session that follows.
//!
//! `state` is random, stored once and deleted when used, and bound to the browser that
//! started the flow by a cookie, so a callback URL replayed or planted in another browser
//! is refused. The PKCE verifier never leaves the server and is stored encrypted.

use crate::AppState;
use crate::auth::{AuthUser, cookie, session_cookie_name, set_cookie};
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use common::UserId;
use common::events::{Resource, SyncScope};
use db::connections::{self, Account};
use db::sessions::{self, Flow};
use db::sync_state;
use providers::{Provider, ProviderError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};

/// `__Host-oauth_flow` over HTTPS: the prefix makes browsers refuse the cookie from a
/// sibling subdomain (login CSRF by planting a flow cookie), which requires `Path=/`.
fn flow_cookie(public_url: &str) -> &'static str {
    if crate::auth::is_https(public_url) {
        "__Host-oauth_flow"
    } else {
        "oauth_flow"
    }
}
const FLOW_TTL_SECS: i64 = 600;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/{provider}/start", get(start))
        .route("/api/auth/{provider}/callback", get(callback))
        .route("/api/auth/me", get(me))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/methods", get(methods))
        .route("/api/auth/demo", post(demo_sign_in))
}

pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn provider(name: &str) -> Result<Provider, ApiError> {
    Provider::parse(name).ok_or_else(|| ApiError::NotFound(format!("no provider named {name}")))
}

pub(crate) fn providers(state: &AppState) -> Result<&providers::Providers, ApiError> {
    state.providers.as_ref().ok_or_else(|| {
        ApiError::NotConfigured("connections need TOKEN_ENCRYPTION_KEYS to be set".into())
    })
}

/// A path on this server to land on after sign-in, rebuilt from the URL a browser would
/// resolve: parsing applies the same rules browsers do (tabs and newlines dropped, `\` as
/// `/`, dot segments), so `/%09/evil.example` (`//evil.example` once the tab is gone) is seen
/// for what it is. Anything that leaves our origin, or whose rebuilt path a browser could read
/// as `//host`, lands on `/`.
pub fn safe_return_to(public_url: &str, value: Option<&str>) -> String {
    let Some(value) = value.filter(|v| v.starts_with('/')) else {
        return "/".to_owned();
    };
    let Ok(base) = url::Url::parse(public_url) else {
        return "/".to_owned();
    };
    let Ok(target) = base.join(value) else {
        return "/".to_owned();
    };
    if target.origin() != base.origin() {
        return "/".to_owned();
    }
    let path = target.path();
    if path.starts_with("//") || path.contains('\\') {
        return "/".to_owned();
    }
    let mut rebuilt = path.to_owned();
    if let Some(query) = target.query() {
        rebuilt.push('?');
        rebuilt.push_str(query);
    }
    if let Some(fragment) = target.fragment() {
        rebuilt.push('#');
        rebuilt.push_str(fragment);
    }
    rebuilt
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StartQuery {
    /// Path on this server to land on afterwards (default `/`).
    pub return_to: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/auth/{provider}/start",
    tag = "auth",
    params(
        ("provider" = String, Path, description = "`google` (sign-in, Gmail, Calendar), `hubspot` or `slack`"),
        StartQuery,
    ),
    responses(
        (status = 303, description = "Redirect to the provider's consent page"),
        (status = 401, description = "HubSpot and Slack connect need a signed-in user", body = ErrorBody),
        (status = 404, description = "Unknown provider", body = ErrorBody),
        (status = 501, description = "The provider is not configured on this server", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
    user: Result<AuthUser, ApiError>,
) -> Result<Response, ApiError> {
    let provider = provider(&name)?;
    let providers = providers(&state)?;
    if !providers.oauth.enabled(provider) {
        return Err(ApiError::NotConfigured(format!(
            "{name} is not configured: set {}_CLIENT_ID and {}_CLIENT_SECRET",
            name.to_uppercase(),
            name.to_uppercase()
        )));
    }
    // Google is the sign-in; the others attach to the signed-in user.
    let user = match (provider, user) {
        (Provider::Google, user) => user.ok().map(|u| u.0),
        (_, user) => Some(user?.0),
    };
    let flow_state = random_token();
    let browser = random_token();
    let authorization = providers
        .oauth
        .authorize(provider, &flow_state)
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let flow = Flow {
        provider: name.clone(),
        browser_hash: sessions::hash(&browser),
        verifier_enc: providers
            .ring
            .encrypt(&authorization.verifier, &flow_state, &name),
        user_id: user,
        return_to: safe_return_to(&state.config.public_url, query.return_to.as_deref()),
    };
    sessions::start_flow(
        &state.db,
        &flow_state,
        &flow,
        Utc::now() + chrono::Duration::seconds(FLOW_TTL_SECS),
    )
    .await?;
    let mut response = redirect(&authorization.url);
    add_cookie(
        &mut response,
        set_cookie(
            &state.config.public_url,
            flow_cookie(&state.config.public_url),
            &browser,
            "/",
            FLOW_TTL_SECS,
        ),
    );
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    /// Set by the provider when the user declined.
    pub error: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/auth/{provider}/callback",
    tag = "auth",
    params(("provider" = String, Path, description = "`google`, `hubspot` or `slack`"), CallbackQuery),
    responses(
        (status = 303, description = "Connected (and for Google, signed in with a new session cookie); redirect to `return_to`"),
        (status = 400, description = "Unknown, used or expired state; another browser's flow; declined; code refused", body = ErrorBody),
        (status = 502, description = "The provider could not be reached", body = ErrorBody),
    )
)]
pub async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let provider = provider(&name)?;
    let providers = providers(&state)?;
    let flow_state = query
        .state
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("state is missing".into()))?;
    // Taken (deleted) before anything else: a state works once, even when the rest fails.
    let flow = sessions::take_flow(&state.db, flow_state)
        .await?
        .filter(|f| f.provider == name)
        .ok_or_else(|| ApiError::BadRequest("unknown, used or expired state".into()))?;
    let browser = cookie(&headers, flow_cookie(&state.config.public_url)).unwrap_or_default();
    let same_browser: bool = sessions::hash(browser).ct_eq(&flow.browser_hash).into();
    if !same_browser {
        return Err(ApiError::BadRequest(
            "this sign-in was started in another browser; start again".into(),
        ));
    }
    if let Some(error) = query.error.as_deref() {
        return Err(ApiError::BadRequest(format!(
            "{name} did not grant access: {error}"
        )));
    }
    let code = query
        .code
        .as_deref()
        .ok_or_else(|| ApiError::BadRequest("code is missing".into()))?;
    let verifier = providers
        .ring
        .decrypt(&flow.verifier_enc, flow_state, &name)
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let grant = providers
        .oauth
        .exchange(provider, code, &verifier)
        .await
        .map_err(|e| match e {
            ProviderError::Transient(_) => {
                ApiError::BadGateway(format!("{name} could not be reached"))
            }
            ProviderError::Db(e) => e.into(),
            other => ApiError::BadRequest(format!("{name} refused the authorization: {other}")),
        })?;

    let (user, new_session) = match provider {
        Provider::Google => {
            let email = grant.email.as_deref().unwrap_or_default();
            let user = db::users::ensure_google(&state.db, &grant.account_id, email)
                .await?
                .ok_or_else(|| {
                    ApiError::Forbidden("this address belongs to a user of another Google account")
                })?;
            (user, true)
        }
        _ => (
            flow.user_id
                .ok_or_else(|| ApiError::BadRequest("sign in before connecting".into()))?,
            false,
        ),
    };
    connections::save_tokens(
        &state.db,
        &providers.ring,
        user,
        &name,
        &Account {
            id: grant.account_id.clone(),
            name: grant.account_name.clone(),
            scopes: grant.scopes.clone(),
            user: grant.account_user.clone(),
        },
        &grant.tokens,
    )
    .await?;
    tracing::info!(user.id = %user, provider = %name, "connected");
    start_syncing(&state, user, &name, flow_state).await?;

    let mut response = redirect(&flow.return_to);
    add_cookie(
        &mut response,
        set_cookie(
            &state.config.public_url,
            flow_cookie(&state.config.public_url),
            "",
            "/",
            0,
        ),
    );
    if new_session {
        self::new_session(&state, &headers, user, &mut response).await?;
    }
    Ok(response)
}

/// Sync state for each resource the connection grants, then the first sync and the push
/// subscription as commands. If publishing fails now, the scheduler's safety-net run (due
/// immediately) starts the sync instead.
async fn start_syncing(
    state: &AppState,
    user: UserId,
    provider: &str,
    request: &str,
) -> Result<(), ApiError> {
    let mut commands = Vec::new();
    for resource in Resource::of_provider(provider) {
        sync_state::ensure(&state.db, user, resource.as_str()).await?;
        commands.push(actions::sync::command(
            user,
            resource,
            "connect",
            format!("connect:{request}"),
            SyncScope::Changes,
        ));
        if matches!(resource, Resource::Gmail | Resource::Calendar) {
            commands.push(actions::sync::command(
                user,
                resource,
                "connect",
                format!("watch:{request}"),
                SyncScope::Watch,
            ));
        }
    }
    if let Err(e) = state.bus.publish_all(&commands).await {
        tracing::warn!(error = %e, "first sync not queued; the scheduler will start it");
    }
    Ok(())
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn add_cookie(response: &mut Response, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// A new session for `user`: the cookie to set (any session the browser had is ended).
async fn new_session(
    state: &AppState,
    headers: &HeaderMap,
    user: UserId,
    response: &mut Response,
) -> Result<(), ApiError> {
    // A new session id at every sign-in: a session fixed before login is worthless.
    let cookie_name = session_cookie_name(&state.config.public_url);
    if let Some(old) = cookie(headers, cookie_name) {
        sessions::delete(&state.db, old).await?;
    }
    let secret = random_token();
    let ttl = chrono::Duration::hours(state.config.session_ttl_hours);
    sessions::create(&state.db, &secret, user, Utc::now() + ttl).await?;
    add_cookie(
        response,
        set_cookie(
            &state.config.public_url,
            cookie_name,
            &secret,
            "/",
            ttl.num_seconds(),
        ),
    );
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignInMethods {
    /// Google sign-in is configured (`GET /api/auth/google/start`).
    pub google: bool,
    /// Demo users one can enter as (`POST /api/auth/demo`): only in development
    /// (`APP_ENV=development`), and only those the demo tenant has (`make run` loads them).
    pub demo: Vec<DemoMethod>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DemoMethod {
    /// What `POST /api/auth/demo` takes as `user`.
    #[schema(example = "advisor")]
    pub user: &'static str,
    pub email: &'static str,
    pub label: &'static str,
    pub description: &'static str,
}

/// The demo user's id, when demo sign-in is on (development only) and `make run` loaded it.
async fn demo_user(
    state: &AppState,
    demo: &common::demo::DemoUser,
) -> Result<Option<UserId>, ApiError> {
    if !state.config.is_development() {
        return Ok(None);
    }
    Ok(db::users::by_email(&state.db, demo.email).await?)
}

#[utoipa::path(
    get,
    path = "/api/auth/methods",
    tag = "auth",
    responses((status = 200, description = "How one can sign in here", body = SignInMethods))
)]
pub async fn methods(State(state): State<AppState>) -> Result<Json<SignInMethods>, ApiError> {
    let google = state
        .providers
        .as_ref()
        .is_some_and(|p| p.oauth.enabled(Provider::Google));
    let mut demo = Vec::new();
    for d in &common::demo::USERS {
        if demo_user(&state, d).await?.is_some() {
            demo.push(DemoMethod {
                user: d.key,
                email: d.email,
                label: d.label,
                description: d.description,
            });
        }
    }
    Ok(Json(SignInMethods { google, demo }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoSignIn {
    /// `advisor` or `product`.
    pub user: String,
}

#[utoipa::path(
    post,
    path = "/api/auth/demo",
    tag = "auth",
    request_body = DemoSignIn,
    responses(
        (status = 204, description = "Signed in as the demo user: a new session cookie"),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
        (status = 404, description = "No demo sign-in here (not development, or that demo user was not loaded)", body = ErrorBody),
        (status = 422, description = "`user` is not a demo user", body = ErrorBody),
    )
)]
pub async fn demo_sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // Signing someone in from another site (login CSRF) is refused like any cookie write.
    if !crate::auth::from_our_frontend(&headers, &state.config) {
        return Err(ApiError::Forbidden("cross-origin sign-in"));
    }
    let request: DemoSignIn = crate::error::parse_json(&body)?;
    let Some(wanted) = common::demo::user(&request.user) else {
        return Err(ApiError::Invalid(common::intake::FieldError::new(
            "user",
            "one of advisor, product",
        )));
    };
    let user = demo_user(&state, wanted).await?.ok_or_else(|| {
        ApiError::NotFound(
            "no demo sign-in here: it exists only in development (APP_ENV=development) \
             once `make run` has loaded the demo users"
                .into(),
        )
    })?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    new_session(&state, &headers, user, &mut response).await?;
    Ok(response)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user_id: uuid::Uuid,
    pub email: String,
    /// Providers with a connection, whatever its status.
    pub connections: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/api/auth/me",
    tag = "auth",
    security(("bearer" = []), ("session" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = Me),
        (status = 401, description = "Not signed in", body = ErrorBody),
    )
)]
pub async fn me(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<Me>, ApiError> {
    let row = db::users::find(&state.db, user)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let connections = connections::list(&state.db, user)
        .await?
        .into_iter()
        .map(|c| c.provider)
        .collect();
    Ok(Json(Me {
        user_id: user.0,
        email: row.email,
        connections,
    }))
}

#[utoipa::path(
    post,
    path = "/api/auth/logout",
    tag = "auth",
    security(("session" = [])),
    responses(
        (status = 204, description = "Session ended and cookie cleared"),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 403, description = "Cross-origin request", body = ErrorBody),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    _user: AuthUser,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = session_cookie_name(&state.config.public_url);
    if let Some(secret) = cookie(&headers, name) {
        sessions::delete(&state.db, secret).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    add_cookie(
        &mut response,
        set_cookie(&state.config.public_url, name, "", "/", 0),
    );
    Ok(response)
}
