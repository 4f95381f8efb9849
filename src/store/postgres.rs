//! PostgreSQL: the production store; several instances share one database.
//! Opening it, and the databases of tests and the benchmark.

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

/// Creates an empty database `name` through the server at `url` (for tests
/// and the benchmark, which each use a database of their own).
pub async fn create_database(url: &str, name: &str) -> Result<(), sqlx::Error> {
    run_admin(url, &format!("CREATE DATABASE \"{name}\"")).await
}

/// Drops database `name`, disconnecting its sessions.
pub async fn drop_database(url: &str, name: &str) -> Result<(), sqlx::Error> {
    run_admin(url, &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
}

async fn run_admin(url: &str, statement: &str) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let connect = sqlx::PgConnection::connect(url);
    let mut connection =
        tokio::time::timeout(Duration::from_secs(5), connect).await.map_err(|_| sqlx::Error::PoolTimedOut)??;
    sqlx::query(statement).execute(&mut connection).await?;
    connection.close().await
}

/// `url` with its database replaced by `name`.
pub fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}
