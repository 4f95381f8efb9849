//! Databases of their own for the benchmark and the tests: a SQLite file in
//! a temporary folder, or a fresh database on a PostgreSQL server, removed
//! afterwards. Not used by the service itself.

use std::path::PathBuf;
use std::time::Duration;

use super::{BenchArgs, BenchBackend, BenchError};

/// The benchmark's own database, removed afterwards.
pub(super) struct Database {
    pub url: String,
    pub dir: PathBuf,
    postgres: Option<(String, String)>,
}

impl Database {
    pub async fn create(args: &BenchArgs) -> Result<Database, BenchError> {
        let name = format!("produktly_bench_{}", uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)?;
        match args.backend {
            BenchBackend::Sqlite => {
                let url = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
                Ok(Database { url, dir, postgres: None })
            }
            BenchBackend::Postgres => {
                create_postgres_database(&args.postgres_url, &name)
                    .await
                    .map_err(|e| BenchError(format!("cannot create the database: {e}")))?;
                let url = url_with_database(&args.postgres_url, &name);
                Ok(Database { url, dir, postgres: Some((args.postgres_url.clone(), name)) })
            }
        }
    }

    pub async fn remove(self) {
        if let Some((url, name)) = &self.postgres {
            let _ = drop_postgres_database(url, name).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates an empty database `name` through the server at `url` (for tests
/// and the benchmark, which each use a database of their own).
pub async fn create_postgres_database(url: &str, name: &str) -> Result<(), sqlx::Error> {
    run_admin(url, &format!("CREATE DATABASE \"{name}\"")).await
}

/// Drops database `name`, disconnecting its sessions.
pub async fn drop_postgres_database(url: &str, name: &str) -> Result<(), sqlx::Error> {
    run_admin(url, &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await
}

/// Runs one statement on the server at `url`, on a connection of its own.
pub async fn run_admin(url: &str, statement: &str) -> Result<(), sqlx::Error> {
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
