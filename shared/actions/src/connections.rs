//! Disconnecting a provider: its push channels stopped and its grant revoked at the provider
//! (best effort), then its tokens, channels and sync state deleted. Indexed data stays.

use crate::{ActionError, Result};
use common::events::Resource;
use common::{Config, UserId};
use db::DatabaseConnection;
use db::sync_state;
use providers::{Provider, ProviderError, Providers};

pub async fn disconnect(
    db: &DatabaseConnection,
    providers: Option<&Providers>,
    config: &Config,
    user: UserId,
    provider: Provider,
) -> Result<()> {
    let name = provider.as_str();
    if let Some(providers) = providers {
        match providers::revoke::withdraw(providers, config, user, provider).await {
            Ok(done) if done.failures.is_empty() => {
                tracing::info!(user.id = %user, provider = %name, channels = done.channels_stopped, revoked = done.grant_revoked, "grant withdrawn at the provider");
            }
            Ok(done) => {
                tracing::warn!(user.id = %user, provider = %name, failures = ?done.failures, "disconnecting locally; the provider could not undo everything");
            }
            Err(ProviderError::Db(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(user.id = %user, provider = %name, error = %e, "disconnecting locally; the provider could not be reached");
            }
        }
    }
    if !db::connections::delete(db, user, name).await? {
        return Err(ActionError::NotFound(format!("not connected to {name}")));
    }
    let resources: Vec<&str> = Resource::of_provider(name)
        .into_iter()
        .map(Resource::as_str)
        .collect();
    sync_state::forget(db, user, &resources).await?;
    tracing::info!(user.id = %user, provider = %name, "disconnected");
    Ok(())
}
