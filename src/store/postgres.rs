//! PostgreSQL: the production store; several instances share one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::StoreError;
use super::db::Postgres;

pub(super) async fn open(
    url: &str,
    connections: u32,
    wait: Duration,
    migrator: &sqlx::migrate::Migrator,
) -> Result<Postgres, StoreError> {
    // JIT compilation pays off for long analytical queries; for these short
    // ones it costs milliseconds each time a cost estimate crosses its
    // threshold (as a growing queue's estimates do), so it is off.
    let options = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
    let pool =
        PgPoolOptions::new().max_connections(connections.max(2)).acquire_timeout(wait).connect_with(options).await?;
    // sqlx holds an advisory lock while migrating: instances starting together do not race.
    migrator.run(&pool).await?;
    Ok(Postgres { pool })
}
