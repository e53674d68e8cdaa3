//! Generic webhook endpoints: one `whsec_` secret per endpoint, which belongs to one user and
//! source. Deliveries are addressed to the endpoint's id, so exactly one secret is tried. The
//! secret is stored encrypted under TOKEN_ENCRYPTION_KEYS, bound to the endpoint's id; rows
//! from before encryption (plain `whsec_...`) still verify and are encrypted by `ctl keys
//! rotate`.

use crate::Result;
use crate::entities::webhook_endpoint;
use common::UserId;
use common::ids::Source;
use common::secrets::{KeyRing, SecretError};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Set, Statement,
};
use uuid::Uuid;

const PURPOSE: &str = "webhook-endpoint";

pub async fn find(db: &DatabaseConnection, id: Uuid) -> Result<Option<webhook_endpoint::Model>> {
    Ok(webhook_endpoint::Entity::find_by_id(id).one(db).await?)
}

/// The endpoint's secret in clear, for verifying a delivery.
pub fn secret(
    ring: Option<&KeyRing>,
    endpoint: &webhook_endpoint::Model,
) -> std::result::Result<String, SecretError> {
    if endpoint.secret.starts_with("whsec_") {
        return Ok(endpoint.secret.clone());
    }
    ring.ok_or(SecretError::Malformed)?
        .decrypt(&endpoint.secret, &endpoint.id.to_string(), PURPOSE)
}

pub async fn create(
    db: &DatabaseConnection,
    ring: &KeyRing,
    user: UserId,
    source: &Source,
    secret: &str,
) -> Result<webhook_endpoint::Model> {
    let id = Uuid::new_v4();
    let model = webhook_endpoint::ActiveModel {
        id: Set(id),
        user_id: Set(user.0),
        source: Set(source.as_str().to_owned()),
        secret: Set(ring.encrypt(secret, &id.to_string(), PURPOSE)),
        created_at: Set(chrono::Utc::now().fixed_offset()),
    };
    Ok(model.insert(db).await?)
}

/// Encrypts plain secrets and re-encrypts those under an older key; returns how many rows
/// changed. Each row is rewritten only if it still holds what was read.
pub async fn rotate_keys(db: &DatabaseConnection, ring: &KeyRing) -> Result<u64> {
    let mut changed = 0;
    for endpoint in webhook_endpoint::Entity::find().all(db).await? {
        let plain = endpoint.secret.starts_with("whsec_");
        if !plain && !ring.needs_rotation(&endpoint.secret) {
            continue;
        }
        let Ok(clear) = secret(Some(ring), &endpoint) else {
            continue;
        };
        let sealed = ring.encrypt(&clear, &endpoint.id.to_string(), PURPOSE);
        let result = db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "UPDATE webhook_endpoints SET secret = $1 WHERE id = $2 AND secret = $3",
                [
                    sealed.into(),
                    endpoint.id.into(),
                    endpoint.secret.clone().into(),
                ],
            ))
            .await?;
        changed += result.rows_affected();
    }
    Ok(changed)
}
