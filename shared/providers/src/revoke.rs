//! Disconnecting at the provider: push channels stopped (Calendar `channels.stop`, Gmail
//! `users.stop`) and the grant withdrawn — Google's revocation endpoint (RFC 7009, the
//! refresh token revokes its access tokens too), HubSpot's refresh-token deletion, Slack's
//! `auth.revoke`. Each step is best effort: a provider that cannot be reached must not keep
//! a user from disconnecting, so failures are reported, not raised.

use crate::{Provider, ProviderError, Providers};
use common::{Config, UserId};
use db::connections::{self, TokenSet};
use serde_json::{Value, json};

/// What a disconnect managed to undo at the provider.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Withdrawn {
    /// The provider confirmed the grant is gone.
    pub grant_revoked: bool,
    pub channels_stopped: usize,
    /// Steps that failed, for the log and the response.
    pub failures: Vec<String>,
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Undoes the connection at `provider` for `user` (tokens are still stored; the caller
/// deletes them afterwards).
pub async fn withdraw(
    providers: &Providers,
    config: &Config,
    user: UserId,
    provider: Provider,
) -> Result<Withdrawn, ProviderError> {
    let mut out = Withdrawn::default();
    let name = provider.as_str();
    // Revoked connections have no tokens left: nothing to undo there.
    let Some(tokens) = connections::tokens(&providers.db, &providers.ring, user, name).await?
    else {
        return Ok(out);
    };
    if provider == Provider::Google {
        stop_push(providers, config, user, &mut out).await?;
    }
    let revoked = match provider {
        Provider::Google => revoke_google(providers, config, &tokens).await,
        Provider::Hubspot => revoke_hubspot(providers, config, &tokens).await,
        // A token another user's connection also holds (a workspace-wide app token from
        // before per-person access) stays: revoking it would disconnect them too.
        Provider::Slack
            if connections::token_shared(
                &providers.db,
                &providers.ring,
                user,
                name,
                &tokens.access_token,
            )
            .await? =>
        {
            Err(ProviderError::Refused(
                "the token is shared with another user's connection; left in place".into(),
            ))
        }
        Provider::Slack => revoke_slack(providers, config, &tokens).await,
    };
    match revoked {
        Ok(()) => out.grant_revoked = true,
        Err(e) => out.failures.push(format!("revoking the grant: {e}")),
    }
    Ok(out)
}

/// Stops the Calendar channels and the Gmail watch, so Google stops pushing.
async fn stop_push(
    providers: &Providers,
    config: &Config,
    user: UserId,
    out: &mut Withdrawn,
) -> Result<(), ProviderError> {
    let api = providers.api(user, Provider::Google);
    let stop = format!("{}/channels/stop", base(&config.calendar_api_base));
    for channel in db::sync_state::channels_of(&providers.db, user, "calendar").await? {
        let body = json!({ "id": channel.id, "resourceId": channel.resource_id });
        match api.post::<Value>(&stop, &body).await {
            Ok(_) => out.channels_stopped += 1,
            Err(e) => out
                .failures
                .push(format!("stopping calendar channel {}: {e}", channel.id)),
        }
    }
    if !db::sync_state::channels_of(&providers.db, user, "gmail")
        .await?
        .is_empty()
    {
        let url = format!("{}/gmail/v1/users/me/stop", base(&config.gmail_api_base));
        match api.post::<Value>(&url, &json!({})).await {
            Ok(_) => out.channels_stopped += 1,
            Err(e) => out.failures.push(format!("stopping the Gmail watch: {e}")),
        }
    }
    Ok(())
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, ProviderError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let detail: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    Err(ProviderError::Status {
        status: status.as_u16(),
        detail,
    })
}

/// `POST revoke` with `token` form-encoded; Google answers 200, or 400 `invalid_token`
/// when the token is already gone (which is what we want).
async fn revoke_google(
    providers: &Providers,
    config: &Config,
    tokens: &TokenSet,
) -> Result<(), ProviderError> {
    let token = tokens
        .refresh_token
        .as_deref()
        .unwrap_or(&tokens.access_token);
    let response = providers
        .http
        .post(&config.google_revoke_url)
        .form(&[("token", token)])
        .send()
        .await?;
    if response.status() == reqwest::StatusCode::BAD_REQUEST {
        let body: Value = response.json().await.unwrap_or_default();
        return if body["error"] == "invalid_token" {
            Ok(())
        } else {
            Err(ProviderError::Refused(body.to_string()))
        };
    }
    check(response).await.map(|_| ())
}

/// `DELETE /oauth/v1/refresh-tokens/{token}`: 204, or 404 when HubSpot no longer knows it.
async fn revoke_hubspot(
    providers: &Providers,
    config: &Config,
    tokens: &TokenSet,
) -> Result<(), ProviderError> {
    let Some(refresh) = &tokens.refresh_token else {
        return Err(ProviderError::Refused("no refresh token to revoke".into()));
    };
    let url = format!(
        "{}/oauth/v1/refresh-tokens/{}",
        base(&config.hubspot_api_base),
        url::form_urlencoded::byte_serialize(refresh.as_bytes()).collect::<String>()
    );
    let response = providers.http.delete(url).send().await?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(());
    }
    check(response).await.map(|_| ())
}

/// `auth.revoke` with the token itself; Slack answers `{"ok": true, "revoked": true}`, or
/// `ok: false` with `invalid_auth`/`token_revoked` when it is already gone.
async fn revoke_slack(
    providers: &Providers,
    config: &Config,
    tokens: &TokenSet,
) -> Result<(), ProviderError> {
    let url = format!("{}/auth.revoke", base(&config.slack_api_base));
    let response = providers
        .http
        .post(url)
        .bearer_auth(&tokens.access_token)
        .send()
        .await?;
    let body: Value = check(response).await?.json().await?;
    if body["ok"] == true
        || ["invalid_auth", "token_revoked", "account_inactive"]
            .contains(&body["error"].as_str().unwrap_or_default())
    {
        return Ok(());
    }
    Err(ProviderError::Refused(format!(
        "auth.revoke: {}",
        body["error"].as_str().unwrap_or("unknown_error")
    )))
}
