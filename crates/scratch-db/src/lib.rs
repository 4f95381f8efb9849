//! Databases of their own for the tests and the benchmark: a SQLite file in a
//! temporary folder, a fresh database on a PostgreSQL server, or a fresh
//! schema in a database that exists (a Citus coordinator's), removed when
//! dropped. Not used by the service itself.

use std::time::Duration;

const SQLITE_FILE: &str = "scratch.db";

/// Which database engine a scratch database is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    /// A fresh database on the PostgreSQL server this URL reaches (as a
    /// user that may create databases).
    Postgres,
}

/// A database and a folder of its own (the SQLite file's, and the data
/// folder of a service run on it), both removed when dropped.
pub struct ScratchDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
    /// The schema's database URL and its name, for a scratch schema.
    schema: Option<(String, String)>,
}

impl ScratchDb {
    /// A fresh database: on SQLite a file in a new folder; on PostgreSQL a
    /// database named `{prefix}_{random}` created through `server_url`.
    pub async fn create(engine: Engine, server_url: &str, prefix: &str) -> Result<ScratchDb, sqlx::Error> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        match engine {
            Engine::Sqlite => {
                let url = format!("sqlite://{}?mode=rwc", dir.path().join(SQLITE_FILE).display());
                Ok(ScratchDb { url, dir, postgres: None, schema: None })
            }
            Engine::Postgres => {
                let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
                run_on_server(server_url, &format!("CREATE DATABASE \"{name}\"")).await?;
                let url = url_with_database(server_url, &name);
                Ok(ScratchDb { url, dir, postgres: Some((server_url.to_owned(), name)), schema: None })
            }
        }
    }

    /// A schema named `{prefix}_{random}` in the database `database_url`
    /// reaches, which the URL it gives puts first on the `search_path`: where
    /// a database per test would need more than `CREATE DATABASE` (on Citus,
    /// the extension and the workers in each).
    pub async fn create_schema(database_url: &str, prefix: &str) -> Result<ScratchDb, sqlx::Error> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        run_on_server(database_url, &format!("CREATE SCHEMA \"{name}\"")).await?;
        let separator = if database_url.contains('?') { '&' } else { '?' };
        let url = format!("{database_url}{separator}options=-c%20search_path%3D{name}");
        Ok(ScratchDb { url, dir, postgres: None, schema: Some((database_url.to_owned(), name)) })
    }

    /// The SQLite file (on PostgreSQL, where it would be: nothing is there).
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.dir.path().join(SQLITE_FILE)
    }

    /// A database that exists and stays (an HA lab's, say), with a folder of its own.
    pub fn existing(url: &str) -> std::io::Result<ScratchDb> {
        Ok(ScratchDb { url: url.to_owned(), dir: tempfile::tempdir()?, postgres: None, schema: None })
    }

    /// On PostgreSQL, runs `statement` on the server, from another database:
    /// what an operator or an HA manager would do to it.
    pub async fn on_server(&self, statement: &str) -> Result<(), sqlx::Error> {
        let (server_url, _) = self.postgres.as_ref().expect("a PostgreSQL scratch database");
        run_on_server(server_url, statement).await
    }

    /// The PostgreSQL database's name.
    pub fn name(&self) -> &str {
        &self.postgres.as_ref().expect("a PostgreSQL scratch database").1
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let (url, drop) = match (self.postgres.take(), self.schema.take()) {
            (Some((server_url, name)), _) => (server_url, format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")),
            (None, Some((database_url, name))) => (database_url, format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")),
            (None, None) => return,
        };
        // Drop runs outside any runtime's async context: use a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _ = runtime.block_on(run_on_server(&url, &drop));
        })
        .join();
    }
}

/// Runs one statement on the server at `url`, on a connection of its own.
pub async fn run_on_server(url: &str, statement: &str) -> Result<(), sqlx::Error> {
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
