//! Access tokens for provider calls, refreshed before they expire. The refresh runs with the
//! connection row locked, so concurrent syncs of one connection refresh once: the others
//! wait on the lock and then find the fresh token. A rotated refresh token is stored in the
//! same transaction; `invalid_grant` marks the connection revoked.

use crate::{Provider, ProviderError, Providers};
use chrono::Utc;
use common::UserId;
use db::connections::{self, TokenSet};
use sea_orm::TransactionTrait;

/// Refresh when less than this much lifetime is left.
const REFRESH_MARGIN_SECS: i64 = 120;

fn expiring(tokens: &TokenSet) -> bool {
    tokens
        .expires_at
        .is_some_and(|t| t - Utc::now() < chrono::Duration::seconds(REFRESH_MARGIN_SECS))
}

/// A usable access token. With `force` (the provider just answered 401 to `rejected`), the
/// token is refreshed unless someone else already replaced it.
pub async fn access_token(
    providers: &Providers,
    user: UserId,
    provider: Provider,
    rejected: Option<&str>,
) -> Result<String, ProviderError> {
    let name = provider.as_str();
    let current = connections::tokens(&providers.db, &providers.ring, user, name)
        .await?
        .ok_or(ProviderError::NotConnected(name))?;
    let stale = |t: &TokenSet| match rejected {
        Some(bad) => t.access_token == bad,
        None => expiring(t),
    };
    if !stale(&current) {
        return Ok(current.access_token);
    }

    let txn = providers.db.begin().await.map_err(db::DbError::from)?;
    let locked = connections::lock_tokens(&txn, &providers.ring, user, name)
        .await?
        .ok_or(ProviderError::NotConnected(name))?;
    if !stale(&locked) {
        // Another run refreshed while we waited for the lock.
        txn.commit().await.map_err(db::DbError::from)?;
        return Ok(locked.access_token);
    }
    let Some(refresh) = locked.refresh_token.clone() else {
        // Slack bot tokens do not expire and have no refresh token: a 401 means revoked.
        let reason = "the provider rejected the access token and there is no refresh token";
        connections::mark_revoked(&txn, user, name, reason).await?;
        txn.commit().await.map_err(db::DbError::from)?;
        return Err(ProviderError::Revoked(reason.into()));
    };
    match providers.oauth.refresh(provider, &refresh).await {
        Ok(fresh) => {
            connections::update_tokens(&txn, &providers.ring, user, name, &fresh).await?;
            txn.commit().await.map_err(db::DbError::from)?;
            tracing::info!(user.id = %user, provider = name, "access token refreshed");
            metrics_refreshed(name, "ok");
            Ok(fresh.access_token)
        }
        Err(ProviderError::Revoked(reason)) => {
            connections::mark_revoked(&txn, user, name, &format!("revoked: {reason}")).await?;
            txn.commit().await.map_err(db::DbError::from)?;
            tracing::warn!(user.id = %user, provider = name, "refresh token revoked; connection marked revoked");
            metrics_refreshed(name, "revoked");
            Err(ProviderError::Revoked(reason))
        }
        Err(e) => {
            // Nothing changed; the lock goes with the transaction.
            metrics_refreshed(name, "failed");
            Err(e)
        }
    }
}

fn metrics_refreshed(provider: &'static str, outcome: &'static str) {
    metrics::counter!("provider_token_refresh_total", "provider" => provider, "outcome" => outcome)
        .increment(1);
}
