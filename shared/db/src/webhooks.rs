//! Generic webhook endpoints: a `whsec_` secret per user and source. A delivery's signature
//! tells which endpoint (and so which user) it is for.

use crate::Result;
use crate::entities::webhook_endpoint;
use common::UserId;
use common::ids::Source;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

pub async fn for_source(
    db: &DatabaseConnection,
    source: &Source,
) -> Result<Vec<webhook_endpoint::Model>> {
    Ok(webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::Source.eq(source.as_str()))
        .all(db)
        .await?)
}

pub async fn create(
    db: &DatabaseConnection,
    user: UserId,
    source: &Source,
    secret: &str,
) -> Result<webhook_endpoint::Model> {
    let model = webhook_endpoint::ActiveModel {
        id: Set(Uuid::new_v4()),
        user_id: Set(user.0),
        source: Set(source.as_str().to_owned()),
        secret: Set(secret.to_owned()),
        created_at: Set(chrono::Utc::now().fixed_offset()),
    };
    Ok(model.insert(db).await?)
}
