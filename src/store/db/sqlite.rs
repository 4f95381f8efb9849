//! SQLite under the SQL layer, on rusqlite. SQLite lets one connection write
//! at a time, so one thread owns the writing connection and runs every write
//! as a job, in the order they come, with its prepared statements cached:
//! a write costs one hand-over to that thread and back, and a transaction
//! holds the thread until it commits. Reads run on a few read-only
//! connections on blocking threads, and in WAL mode never wait for the writer.
//! Opening it, sqlx applies the migrations (its migration table is the
//! schema's version record).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{OpenFlags, ToSql};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tokio::sync::{Semaphore, oneshot};

use super::{DbError, Dialect, FromRow, Row, Sql, Value};

/// The connection jobs run on.
pub type SqliteConnection = rusqlite::Connection;

type Job = Box<dyn FnOnce(&mut SqliteConnection) + Send>;

/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 64;
/// How long SQLite itself waits for a lock (only a checkpoint or another
/// process can hold one: this process writes from one thread).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Sqlite {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<mpsc::Sender<Job>>,
    readers: Mutex<Vec<SqliteConnection>>,
    reader_slots: Semaphore,
    path: PathBuf,
    /// How long a job may wait for its turn before it is given up.
    wait: Duration,
}

impl Sqlite {
    /// Opens (creating it if need be) and migrates the database `url` names,
    /// with a writer thread and up to `readers` read connections.
    pub(super) async fn open(
        url: &str,
        readers: u32,
        wait: Duration,
        migrations: &Migrator,
    ) -> Result<Sqlite, DbError> {
        let options = SqliteConnectOptions::from_str(url)?.create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
        let path = options.get_filename().to_owned();
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)?;
        }
        let migrating = SqlitePoolOptions::new().max_connections(1).acquire_timeout(wait).connect_with(options).await?;
        migrations.run(&migrating).await?;
        migrating.close().await;
        Sqlite::start(path, readers.clamp(1, 8) as usize, wait)
    }

    fn start(path: PathBuf, readers: usize, wait: Duration) -> Result<Sqlite, DbError> {
        let connection = SqliteConnection::open(&path)?;
        connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        prepare(&connection)?;
        let (writer, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("sqlite-writer".into()).spawn(move || {
            let mut connection = connection;
            for job in jobs {
                job(&mut connection);
            }
        })?;
        let inner = Inner {
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            reader_slots: Semaphore::new(readers),
            path,
            wait,
        };
        Ok(Sqlite { inner: Arc::new(inner) })
    }

    /// Runs `work` on the writing connection, after the writes before it.
    pub async fn write<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut SqliteConnection) -> Result<R, DbError> + Send + 'static,
    ) -> Result<R, DbError> {
        let (reply, answer) = oneshot::channel();
        let turn = Arc::new(AtomicU8::new(QUEUED));
        let job_turn = turn.clone();
        let job: Job = Box::new(move |connection| {
            // A job whose caller gave up waiting for its turn does not run.
            if job_turn.compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                let _ = reply.send(work(connection));
            }
        });
        self.submit(job)?;
        let mut answer = answer;
        match tokio::time::timeout(self.inner.wait, &mut answer).await {
            Ok(answered) => answered.map_err(|_| DbError::WriterStopped)?,
            Err(_) if turn.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok() => {
                Err(DbError::Busy)
            }
            // It started meanwhile: its answer comes.
            Err(_) => answer.await.map_err(|_| DbError::WriterStopped)?,
        }
    }

    fn submit(&self, job: Job) -> Result<(), DbError> {
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner()).send(job).map_err(|_| DbError::WriterStopped)
    }

    /// Runs `work` on a read connection.
    pub async fn read<R: Send + 'static>(
        &self,
        work: impl FnOnce(&SqliteConnection) -> Result<R, DbError> + Send + 'static,
    ) -> Result<R, DbError> {
        let slot = tokio::time::timeout(self.inner.wait, self.inner.reader_slots.acquire())
            .await
            .map_err(|_| DbError::Busy)?
            .map_err(|_| DbError::WriterStopped)?;
        let inner = self.inner.clone();
        let result = tokio::task::spawn_blocking(move || {
            let connection = match inner.readers.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                Some(connection) => connection,
                None => open_reader(&inner.path)?,
            };
            let result = work(&connection);
            inner.readers.lock().unwrap_or_else(|p| p.into_inner()).push(connection);
            result
        })
        .await
        .map_err(|e| DbError::Corrupt(format!("a SQLite read failed: {e}")))?;
        drop(slot);
        result
    }

    /// Begins a transaction: it holds the writer until it commits or is dropped.
    pub async fn begin(&self) -> Result<Transaction, DbError> {
        let (steps, received) = mpsc::channel::<Step>();
        let (began, begun) = oneshot::channel();
        self.submit(Box::new(move |connection| {
            if let Err(e) = connection.execute_batch("BEGIN IMMEDIATE") {
                let _ = began.send(Err(DbError::from(e)));
                return;
            }
            if began.send(Ok(())).is_ok() {
                for step in received {
                    match step {
                        Step::Run(job) => job(connection),
                        Step::Commit(reply) => {
                            let committed = connection.execute_batch("COMMIT").map_err(DbError::from);
                            let _ = reply.send(committed);
                            if connection.is_autocommit() {
                                return;
                            }
                            break;
                        }
                    }
                }
            }
            // Given up, dropped or failed to commit: nothing of it stays.
            let _ = connection.execute_batch("ROLLBACK");
        }))?;
        let answered = tokio::time::timeout(self.inner.wait, begun).await.map_err(|_| DbError::Busy)?;
        answered.map_err(|_| DbError::WriterStopped)??;
        Ok(Transaction { steps })
    }
}

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

/// A transaction on the writer thread.
pub struct Transaction {
    steps: mpsc::Sender<Step>,
}

enum Step {
    Run(Job),
    Commit(oneshot::Sender<Result<(), DbError>>),
}

impl Transaction {
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut SqliteConnection) -> Result<R, DbError> + Send + 'static,
    ) -> Result<R, DbError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |connection| {
            let _ = reply.send(work(connection));
        });
        self.steps.send(Step::Run(job)).map_err(|_| DbError::WriterStopped)?;
        answer.await.map_err(|_| DbError::WriterStopped)?
    }

    pub async fn commit(self) -> Result<(), DbError> {
        let (reply, answer) = oneshot::channel();
        self.steps.send(Step::Commit(reply)).map_err(|_| DbError::WriterStopped)?;
        answer.await.map_err(|_| DbError::WriterStopped)?
    }
}

fn open_reader(path: &PathBuf) -> Result<SqliteConnection, DbError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let connection = SqliteConnection::open_with_flags(path, flags)?;
    prepare(&connection)?;
    Ok(connection)
}

fn prepare(connection: &SqliteConnection) -> Result<(), DbError> {
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Runs a statement; the rows it changed.
pub fn execute(connection: &SqliteConnection, sql: &Sql, params: &[Value]) -> Result<u64, DbError> {
    let started = Instant::now();
    let text = sql.text(Dialect::Sqlite);
    let mut statement = connection.prepare_cached(text)?;
    bind(&mut statement, params)?;
    let changed = statement.raw_execute()? as u64;
    traced(text, started, changed);
    Ok(changed)
}

/// Every row a statement returns, read into `T`.
pub fn all<T: FromRow>(connection: &SqliteConnection, sql: &Sql, params: &[Value]) -> Result<Vec<T>, DbError> {
    let started = Instant::now();
    let text = sql.text(Dialect::Sqlite);
    let mut statement = connection.prepare_cached(text)?;
    bind(&mut statement, params)?;
    let mut rows = statement.raw_query();
    let mut read = Vec::new();
    while let Some(row) = rows.next()? {
        read.push(T::from_row(row)?);
    }
    traced(text, started, read.len() as u64);
    Ok(read)
}

/// Runs each statement once per row in one transaction (see [`super::Db::write_rows`]).
pub fn write_rows(c: &mut SqliteConnection, statements: &[(&Sql, Vec<Vec<Value>>)]) -> Result<Vec<u64>, DbError> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut changed = Vec::with_capacity(statements.len());
    for (sql, rows) in statements {
        let mut statement = tx.prepare_cached(sql.text(Dialect::Sqlite))?;
        let mut count = 0;
        for row in rows {
            count += statement.execute(rusqlite::params_from_iter(row))? as u64;
        }
        changed.push(count);
    }
    // Dropped on an error above, the transaction rolls back.
    tx.commit()?;
    Ok(changed)
}

/// Each statement at `trace` level, as sqlx logs PostgreSQL's: its start
/// (never its parameters, which may be secrets), time and rows.
fn traced(text: &str, started: Instant, rows: u64) {
    tracing::trace!(
        statement = text.get(..60).unwrap_or(text),
        elapsed_us = started.elapsed().as_micros() as u64,
        rows,
        "SQLite statement"
    );
}

/// Binds `params` to `$1`, `$2`, … by name: SQLite numbers named parameters
/// in the order they first appear, not by the number in their name.
pub fn bind(statement: &mut rusqlite::Statement<'_>, params: &[Value]) -> Result<(), DbError> {
    for (i, value) in params.iter().enumerate() {
        if let Some(index) = statement.parameter_index(&format!("${}", i + 1))? {
            statement.raw_bind_parameter(index, value)?;
        }
    }
    Ok(())
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Int(Some(value)) => ToSqlOutput::Borrowed(ValueRef::Integer(*value)),
            Value::Text(Some(value)) => ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes())),
            Value::Int(None) | Value::Text(None) => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Bool(value) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*value))),
            Value::Ints(values) => ToSqlOutput::from(serde_json::to_string(values).expect("ints serialize")),
            Value::Texts(values) => ToSqlOutput::from(serde_json::to_string(values).expect("strings serialize")),
            Value::OptTexts(values) => ToSqlOutput::from(serde_json::to_string(values).expect("strings serialize")),
        })
    }
}

impl Row for rusqlite::Row<'_> {
    fn int(&self, column: usize) -> Result<i64, DbError> {
        Ok(self.get(column)?)
    }

    fn opt_int(&self, column: usize) -> Result<Option<i64>, DbError> {
        Ok(self.get(column)?)
    }

    fn text(&self, column: usize) -> Result<String, DbError> {
        Ok(self.get(column)?)
    }

    fn opt_text(&self, column: usize) -> Result<Option<String>, DbError> {
        Ok(self.get(column)?)
    }

    fn bool(&self, column: usize) -> Result<bool, DbError> {
        Ok(self.get(column)?)
    }
}
