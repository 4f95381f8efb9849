//! SQLite: the zero-setup default for one instance, in WAL mode. Opening it:
//! sqlx applies the migrations (its migration table is the schema's version
//! record), then the store runs on rusqlite (`db::sqlite`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::StoreError;
use super::db::Sqlite;

pub(super) async fn open(
    url: &str,
    readers: u32,
    wait: Duration,
    migrator: &sqlx::migrate::Migrator,
) -> Result<Sqlite, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
    let path = options.get_filename().to_owned();
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    }
    let migrating = SqlitePoolOptions::new().max_connections(1).acquire_timeout(wait).connect_with(options).await?;
    migrator.run(&migrating).await?;
    migrating.close().await;
    Sqlite::open(path, readers.clamp(1, 8) as usize, wait)
}
