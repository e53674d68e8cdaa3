//! Schema migrations. Written as SQL because the schema leans on Postgres features
//! (pgvector HNSW, generated tsvector columns, partial indexes) that read best as SQL.

pub use sea_orm_migration::prelude::*;

/// A migration written as SQL: the module's `UP` applies it and `DOWN` reverts it.
macro_rules! sql_migration {
    () => {
        #[derive(DeriveMigrationName)]
        pub struct Migration;

        #[async_trait::async_trait]
        impl MigrationTrait for Migration {
            async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
                manager.get_connection().execute_unprepared(UP).await?;
                Ok(())
            }

            async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
                manager.get_connection().execute_unprepared(DOWN).await?;
                Ok(())
            }
        }
    };
}

mod m20261124_000001_backbone;
mod m20261124_000002_connections;
mod m20261124_000003_sync;
mod m20261129_000004_security;
mod m20261129_000005_assistant;
mod m20261129_000006_approvals;
mod m20261129_000007_rules_engine;
mod m20261129_000008_time_zone;
mod m20261129_000009_chunks_newest;
mod m20261205_000010_invocation_lease;
mod m20261205_000011_quotas;
mod m20261205_000012_insights;
mod m20261205_000013_insight_grouping;
mod m20261205_000014_auth_invalidation;
mod m20261205_000015_gin_pending;
mod m20261206_000016_sync_progress;
mod m20261206_000017_insight_curation;
mod m20261206_000018_insight_trending;
mod m20261206_000019_crm_history;
mod m20261207_000020_insight_previews;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_backbone::Migration),
            Box::new(m20261124_000002_connections::Migration),
            Box::new(m20261124_000003_sync::Migration),
            Box::new(m20261129_000004_security::Migration),
            Box::new(m20261129_000005_assistant::Migration),
            Box::new(m20261129_000006_approvals::Migration),
            Box::new(m20261129_000007_rules_engine::Migration),
            Box::new(m20261129_000008_time_zone::Migration),
            Box::new(m20261129_000009_chunks_newest::Migration),
            Box::new(m20261205_000010_invocation_lease::Migration),
            Box::new(m20261205_000011_quotas::Migration),
            Box::new(m20261205_000012_insights::Migration),
            Box::new(m20261205_000013_insight_grouping::Migration),
            Box::new(m20261205_000014_auth_invalidation::Migration),
            Box::new(m20261205_000015_gin_pending::Migration),
            Box::new(m20261206_000016_sync_progress::Migration),
            Box::new(m20261206_000017_insight_curation::Migration),
            Box::new(m20261206_000018_insight_trending::Migration),
            Box::new(m20261206_000019_crm_history::Migration),
            Box::new(m20261207_000020_insight_previews::Migration),
        ]
    }
}
