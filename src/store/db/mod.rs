//! The one SQL layer both databases sit behind, so that the store writes each
//! statement once. A statement is a [`Sql`] template in PostgreSQL's syntax
//! (`$1` parameters, which SQLite reads too), with a few markers where the
//! dialects differ (`IN_LIST($n)`, `SKIP_LOCKED`, `LOCK_ROW`), rendered once
//! per dialect. Parameters are [`Value`]s; rows are
//! read by position through [`Row`] into types that implement [`FromRow`].
//! It knows no table: the store's statements are the store's.
//!
//! PostgreSQL runs on sqlx's pool. SQLite runs on rusqlite: every write on
//! one thread that owns the writing connection and its prepared statements
//! (SQLite has one writer at a time anyway), reads on a small pool of
//! read-only connections on blocking threads (`sqlite`).

mod postgres;
mod sqlite;

use std::sync::OnceLock;
use std::time::Duration;

use sqlx::migrate::Migrator;

pub use postgres::{ConnectionCounts, Postgres};
pub use sqlite::{Sqlite, SqliteConnection};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database is busy: the statement did not get its turn in time")]
    Busy,
    #[error("the SQLite writer thread has stopped")]
    WriterStopped,
    #[error("cannot open the database: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("the database URL is not valid: {0}")]
    InvalidUrl(String),
    #[error("no PostgreSQL host takes writes: {0}")]
    NoPrimary(String),
    #[error("the database server does not take writes")]
    ReadOnly,
}

/// Which database a statement is rendered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The database a URL names: PostgreSQL's `postgres…` URLs, else SQLite.
    pub fn of_url(url: &str) -> Dialect {
        if url.starts_with("postgres") { Dialect::Postgres } else { Dialect::Sqlite }
    }
}

/// A statement, written once; rendered for each dialect the first time it runs there.
pub struct Sql {
    template: &'static str,
    postgres: OnceLock<String>,
    sqlite: OnceLock<String>,
}

impl Sql {
    pub const fn new(template: &'static str) -> Sql {
        Sql { template, postgres: OnceLock::new(), sqlite: OnceLock::new() }
    }

    /// Whether it only reads (SQLite runs it on a read connection).
    pub fn is_read(&self) -> bool {
        self.template.starts_with("SELECT")
    }

    /// The statement as `dialect` reads it.
    pub fn text(&self, dialect: Dialect) -> &str {
        let rendered = match dialect {
            Dialect::Postgres => &self.postgres,
            Dialect::Sqlite => &self.sqlite,
        };
        rendered.get_or_init(|| render(self.template, dialect))
    }
}

/// Replaces the markers where the dialects differ.
fn render(template: &str, dialect: Dialect) -> String {
    let words: &[(&str, &str, &str)] = &[("SKIP_LOCKED", "FOR UPDATE SKIP LOCKED", ""), ("LOCK_ROW", "FOR UPDATE", "")];
    let mut text = template.to_owned();
    for (marker, postgres, sqlite) in words {
        text = text.replace(marker, if dialect == Dialect::Postgres { postgres } else { sqlite });
    }
    // `IN_LIST($n)`: membership in a list parameter (an array, or a JSON array).
    while let Some(start) = text.find("IN_LIST(") {
        let rest = &text[start + "IN_LIST(".len()..];
        let end = rest.find(')').expect("IN_LIST( is closed");
        let parameter = &rest[..end];
        let membership = match dialect {
            Dialect::Postgres => format!("= ANY({parameter})"),
            Dialect::Sqlite => format!("IN (SELECT value FROM json_each({parameter}))"),
        };
        text.replace_range(start..start + "IN_LIST(".len() + end + 1, &membership);
    }
    text
}

/// A statement parameter. Nulls are typed, as PostgreSQL wants them; lists
/// are arrays on PostgreSQL and JSON arrays on SQLite (for `IN_LIST`).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(bool),
    Ints(Vec<i64>),
    Texts(Vec<String>),
    OptTexts(Vec<Option<String>>),
}

/// How each type a statement takes as a parameter becomes a [`Value`].
macro_rules! values {
    ($($from:ty => |$v:ident| $value:expr),* $(,)?) => {
        $(impl From<$from> for Value {
            fn from($v: $from) -> Value {
                $value
            }
        })*
    };
}

values! {
    i64 => |v| Value::Int(Some(v)),
    Option<i64> => |v| Value::Int(v),
    &str => |v| Value::Text(Some(v.to_owned())),
    &String => |v| Value::Text(Some(v.clone())),
    String => |v| Value::Text(Some(v)),
    Option<String> => |v| Value::Text(v),
    Option<&str> => |v| Value::Text(v.map(str::to_owned)),
    bool => |v| Value::Bool(v),
    &[i64] => |v| Value::Ints(v.to_vec()),
    &[String] => |v| Value::Texts(v.to_vec()),
    Vec<i64> => |v| Value::Ints(v),
    Vec<String> => |v| Value::Texts(v),
    Vec<Option<String>> => |v| Value::OptTexts(v),
    &crate::domain::WorkspaceId => |v| Value::Text(Some(v.as_str().to_owned())),
    crate::domain::WorkspaceId => |v| Value::Text(Some(v.into_string())),
    &[crate::domain::WorkspaceId] => |v| Value::Texts(v.iter().map(|id| id.as_str().to_owned()).collect()),
}

/// Parameters `$1`, `$2`, … of a statement.
macro_rules! params {
    ($($value:expr),* $(,)?) => { vec![$($crate::store::db::Value::from($value)),*] };
}
pub(crate) use params;

/// One row of a result, read by column position.
pub trait Row {
    fn int(&self, column: usize) -> Result<i64, DbError>;
    fn opt_int(&self, column: usize) -> Result<Option<i64>, DbError>;
    fn text(&self, column: usize) -> Result<String, DbError>;
    fn opt_text(&self, column: usize) -> Result<Option<String>, DbError>;
    fn bool(&self, column: usize) -> Result<bool, DbError>;
}

/// A type a row reads into.
pub trait FromRow: Sized + Send + 'static {
    fn from_row(row: &dyn Row) -> Result<Self, DbError>;
}

/// How each type a statement's row may read into is read.
macro_rules! from_rows {
    ($($into:ty => |$row:ident| $read:expr),* $(,)?) => {
        $(impl FromRow for $into {
            fn from_row($row: &dyn Row) -> Result<Self, DbError> {
                $read
            }
        })*
    };
}

from_rows! {
    i64 => |row| row.int(0),
    Option<i64> => |row| row.opt_int(0),
    String => |row| row.text(0),
    (String, String) => |row| Ok((row.text(0)?, row.text(1)?)),
    (i64, i64) => |row| Ok((row.int(0)?, row.int(1)?)),
}

/// The database: PostgreSQL or SQLite, behind the same calls. On SQLite a
/// statement that begins with `SELECT` runs on a read connection, any other
/// on the writer.
#[derive(Clone)]
pub enum Db {
    Postgres(Postgres),
    Sqlite(Sqlite),
}

impl Db {
    /// Opens the database `url` names and applies `migrations` (on PostgreSQL
    /// under sqlx's advisory lock, so instances starting together do not
    /// race). `connections`: the pool's size (read connections on SQLite);
    /// `wait`: how long a statement waits for a connection (on SQLite, for
    /// its turn at the writer) before it fails.
    pub async fn open(url: &str, connections: u32, wait: Duration, migrations: &Migrator) -> Result<Db, DbError> {
        Ok(match Dialect::of_url(url) {
            Dialect::Postgres => Db::Postgres(Postgres::open(url, connections, wait, migrations).await?),
            Dialect::Sqlite => Db::Sqlite(Sqlite::open(url, connections, wait, migrations).await?),
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Postgres(_) => Dialect::Postgres,
            Db::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Every row a statement returns.
    pub async fn all<T: FromRow>(&self, sql: &'static Sql, params: Vec<Value>) -> Result<Vec<T>, DbError> {
        match self {
            Db::Postgres(db) => db.all(sql, &params).await,
            Db::Sqlite(db) if sql.is_read() => db.read(move |c| sqlite::all(c, sql, &params)).await,
            Db::Sqlite(db) => db.write(move |c| sqlite::all(c, sql, &params)).await,
        }
    }

    /// The row a statement returns, if any.
    pub async fn optional<T: FromRow>(&self, sql: &'static Sql, params: Vec<Value>) -> Result<Option<T>, DbError> {
        Ok(self.all(sql, params).await?.into_iter().next())
    }

    /// The one row a statement returns.
    pub async fn one<T: FromRow>(&self, sql: &'static Sql, params: Vec<Value>) -> Result<T, DbError> {
        self.optional(sql, params).await?.ok_or_else(no_row)
    }

    /// Runs a write; the rows it changed.
    pub async fn execute(&self, sql: &'static Sql, params: Vec<Value>) -> Result<u64, DbError> {
        match self {
            Db::Postgres(db) => db.execute(sql, &params).await,
            Db::Sqlite(db) => db.write(move |c| sqlite::execute(c, sql, &params)).await,
        }
    }

    /// Runs each statement once per row of its parameters, all in one
    /// transaction; the rows each statement changed. (On SQLite each is
    /// prepared once and bound by position: its parameters must appear in
    /// the order of their numbers.)
    pub async fn write_rows(&self, statements: Vec<(&'static Sql, Vec<Vec<Value>>)>) -> Result<Vec<u64>, DbError> {
        match self {
            Db::Postgres(db) => {
                let mut tx = db.begin().await?;
                let mut changed = Vec::with_capacity(statements.len());
                for (sql, rows) in statements {
                    let mut count = 0;
                    for row in rows {
                        count += tx.execute(sql, &row).await?;
                    }
                    changed.push(count);
                }
                tx.commit().await?;
                Ok(changed)
            }
            Db::Sqlite(db) => db.write(move |c| sqlite::write_rows(c, &statements)).await,
        }
    }

    /// Calls `on_payload` with the payload of every notification on
    /// `channel` until the connection fails (PostgreSQL's LISTEN). SQLite
    /// serves one instance and has none: it returns at once.
    pub async fn listen(&self, channel: &str, on_payload: impl Fn(&str)) -> Result<(), DbError> {
        match self {
            Db::Postgres(db) => db.listen(channel, on_payload).await,
            Db::Sqlite(_) => Ok(()),
        }
    }

    /// Whether the database takes writes (on PostgreSQL, the server in use
    /// may have become a standby).
    pub async fn check_writable(&self) -> Result<(), DbError> {
        match self {
            Db::Postgres(db) => db.check_writable().await,
            Db::Sqlite(_) => Ok(()),
        }
    }

    /// A transaction: its statements run in order, and take effect together on `commit`.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match self {
            Db::Postgres(db) => Tx::Postgres(db.begin().await?),
            Db::Sqlite(db) => Tx::Sqlite(db.begin().await?),
        })
    }
}

/// A transaction; dropped without `commit`, it rolls back.
pub enum Tx {
    Postgres(postgres::PgTransaction),
    Sqlite(sqlite::Transaction),
}

impl Tx {
    pub async fn execute(&mut self, sql: &'static Sql, params: Vec<Value>) -> Result<u64, DbError> {
        match self {
            Tx::Postgres(tx) => tx.execute(sql, &params).await,
            Tx::Sqlite(tx) => tx.run(move |c| sqlite::execute(c, sql, &params)).await,
        }
    }

    pub async fn all<T: FromRow>(&mut self, sql: &'static Sql, params: Vec<Value>) -> Result<Vec<T>, DbError> {
        match self {
            Tx::Postgres(tx) => tx.all(sql, &params).await,
            Tx::Sqlite(tx) => tx.run(move |c| sqlite::all(c, sql, &params)).await,
        }
    }

    pub async fn optional<T: FromRow>(&mut self, sql: &'static Sql, params: Vec<Value>) -> Result<Option<T>, DbError> {
        Ok(self.all(sql, params).await?.into_iter().next())
    }

    pub async fn one<T: FromRow>(&mut self, sql: &'static Sql, params: Vec<Value>) -> Result<T, DbError> {
        self.optional(sql, params).await?.ok_or_else(no_row)
    }

    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }
}

fn no_row() -> DbError {
    DbError::Corrupt("a statement that returns a row returned none".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_rendered_per_dialect() {
        let template = "SELECT id FROM t WHERE id IN_LIST($4) AND x IN_LIST($2) SKIP_LOCKED";
        assert_eq!(
            render(template, Dialect::Postgres),
            "SELECT id FROM t WHERE id = ANY($4) AND x = ANY($2) FOR UPDATE SKIP LOCKED"
        );
        assert_eq!(
            render(template, Dialect::Sqlite),
            "SELECT id FROM t WHERE id IN (SELECT value FROM json_each($4)) \
             AND x IN (SELECT value FROM json_each($2)) "
        );
        assert_eq!(render("SELECT 1", Dialect::Sqlite), "SELECT 1");
    }
}
