//! PostgreSQL under the SQL layer: sqlx's pool, statements bound from
//! [`Value`]s, rows read by position. Several instances share one database.
//!
//! The pool always points at a server that accepts writes (`primary`). The
//! URL may name several hosts, as libpq's do (`postgres://u@h1:5432,h2:5432/db`):
//! the first writable one is used. When a statement fails in a way that
//! says the server went away or stopped taking writes (a failover), one
//! search probes the hosts until one is writable and moves the pool there,
//! closing the connections to the old server; requests fail (`503`)
//! meanwhile and are never retried here. A single endpoint that moves (a
//! managed database, HAProxy, a Kubernetes `-rw` Service) is one host whose
//! server changes: every connection checks on opening that it may write.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{ConnectOptions, PgExecutor, PgPool, TypeInfo};

use super::{DbError, Dialect, FromRow, Row, Sql, Value};

/// How long one probe of a host may take (connecting and asking whether it
/// takes writes) before the next host is tried.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two rounds of probes while no host takes writes.
const PROBE_PAUSE: Duration = Duration::from_millis(250);

/// What a session may be, from the URL's `target_session_attrs`.
const SESSION_ATTRS: &str = "target_session_attrs";

/// Counts of the connections to PostgreSQL, for the metrics.
#[derive(Clone, Debug, Default)]
pub struct ConnectionCounts {
    /// Connections opened (a new one replaces each that broke).
    pub opened: Counter,
    /// Times the pool moved to a new primary, or was rebuilt because the
    /// server it used stopped taking writes.
    pub failovers: Counter,
}

impl ConnectionCounts {
    /// `produktly_database_connections_opened_total` and
    /// `produktly_database_failovers_total`, read at each scrape.
    pub fn collector(&self) -> Box<dyn Collector> {
        Box::new(self.clone())
    }
}

impl Collector for ConnectionCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let series = [
            (
                "database_connections_opened",
                "Connections opened to PostgreSQL (each one that broke is replaced by a new one)",
                &self.opened,
            ),
            (
                "database_failovers",
                "Times the connections moved to a new PostgreSQL primary, or were replaced because the server \
                 stopped taking writes",
                &self.failovers,
            ),
        ];
        for (name, help, counter) in series {
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Postgres {
    primary: Arc<Primary>,
}

/// The hosts the URL names and the pool on the one that takes writes.
struct Primary {
    hosts: Vec<PgConnectOptions>,
    connections: u32,
    wait: Duration,
    current: RwLock<Current>,
    searching: AtomicBool,
    counts: ConnectionCounts,
}

struct Current {
    pool: PgPool,
    host: usize,
}

impl Postgres {
    pub(super) async fn open(
        url: &str,
        connections: u32,
        wait: Duration,
        migrations: &Migrator,
    ) -> Result<Postgres, DbError> {
        let hosts = hosts_of(url)?;
        let host = first_writable(&hosts, None).await?;
        let counts = ConnectionCounts::default();
        let pool = pool_on(&hosts[host], connections, wait, &counts);
        // sqlx holds an advisory lock while migrating: instances starting together do not race.
        migrations.run(&pool).await?;
        tracing::info!(host = %address(&hosts[host]), hosts = hosts.len(), "connected to the PostgreSQL primary");
        let current = RwLock::new(Current { pool, host });
        let primary = Primary { hosts, connections, wait, current, searching: AtomicBool::new(false), counts };
        Ok(Postgres { primary: Arc::new(primary) })
    }

    /// The pool on the current primary.
    pub fn pool(&self) -> PgPool {
        self.primary.current.read().unwrap_or_else(|p| p.into_inner()).pool.clone()
    }

    pub fn connection_counts(&self) -> &ConnectionCounts {
        &self.primary.counts
    }

    /// `result` as the SQL layer returns it; an error that says the primary
    /// went away or stopped taking writes starts the search for the new one.
    pub fn observed<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, DbError> {
        result.map_err(|e| {
            match lost_primary(&e) {
                Lost::No => {}
                Lost::Unreachable => self.search(false),
                Lost::ReadOnly => self.search(true),
            }
            DbError::from(e)
        })
    }

    /// Whether the server in use takes writes (readiness).
    pub async fn check_writable(&self) -> Result<(), DbError> {
        let read_only: String = self.observed(sqlx::query_scalar(READ_ONLY).fetch_one(&self.pool()).await)?;
        if read_only == "off" {
            Ok(())
        } else {
            self.search(true);
            Err(DbError::ReadOnly)
        }
    }

    /// Starts the search for the primary, unless one runs. `rebuild`: the
    /// server in use refused a write, so its connections go even if the same
    /// host (an endpoint that moved) is found writable again.
    fn search(&self, rebuild: bool) {
        if self.primary.searching.swap(true, Ordering::AcqRel) {
            return;
        }
        let primary = self.primary.clone();
        tokio::spawn(async move {
            primary.find(rebuild).await;
            primary.searching.store(false, Ordering::Release);
        });
    }

    /// Passes on every notification's payload on `channel` until the connection fails.
    pub async fn listen(&self, channel: &str, on_payload: impl Fn(&str)) -> Result<(), DbError> {
        let mut listener = self.observed(sqlx::postgres::PgListener::connect_with(&self.pool()).await)?;
        self.observed(listener.listen(channel).await)?;
        loop {
            let notification = self.observed(listener.recv().await)?;
            on_payload(notification.payload());
        }
    }

    pub async fn begin(&self) -> Result<PgTransaction, DbError> {
        let tx = self.observed(self.pool().begin().await)?;
        Ok(PgTransaction { tx, db: self.clone() })
    }

    pub async fn execute(&self, sql: &'static Sql, params: &[Value]) -> Result<u64, DbError> {
        self.observed(execute(&self.pool(), sql, params).await)
    }

    pub async fn all<T: FromRow>(&self, sql: &'static Sql, params: &[Value]) -> Result<Vec<T>, DbError> {
        self.observed(all(&self.pool(), sql, params).await)?
    }
}

impl Primary {
    /// Probes the hosts, in the URL's order, until one takes writes, then
    /// moves the pool there (if it is another host, or `rebuild`).
    async fn find(&self, rebuild: bool) {
        let in_use = self.current.read().unwrap_or_else(|p| p.into_inner()).host;
        let found = loop {
            match first_writable(&self.hosts, Some(in_use)).await {
                Ok(host) => break host,
                Err(e) => {
                    tracing::warn!(error = %e, "no PostgreSQL host takes writes; probing again");
                    tokio::time::sleep(PROBE_PAUSE).await;
                }
            }
        };
        if found == in_use && !rebuild {
            return;
        }
        let pool = pool_on(&self.hosts[found], self.connections, self.wait, &self.counts);
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|p| p.into_inner()),
            Current { pool, host: found },
        );
        self.counts.failovers.inc();
        tracing::warn!(
            from = %address(&self.hosts[old.host]),
            to = %address(&self.hosts[found]),
            "moved to the PostgreSQL primary; connections to the old server are closed"
        );
        // Statements in flight there finish or fail; its connections close as they come back.
        tokio::spawn(async move { old.pool.close().await });
    }
}

/// A transaction on the primary; its failures are observed as the pool's are.
pub struct PgTransaction {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    db: Postgres,
}

impl PgTransaction {
    pub async fn execute(&mut self, sql: &'static Sql, params: &[Value]) -> Result<u64, DbError> {
        let result = execute(&mut *self.tx, sql, params).await;
        self.db.observed(result)
    }

    pub async fn all<T: FromRow>(&mut self, sql: &'static Sql, params: &[Value]) -> Result<Vec<T>, DbError> {
        let result = all(&mut *self.tx, sql, params).await;
        self.db.observed(result)?
    }

    pub async fn commit(self) -> Result<(), DbError> {
        let PgTransaction { tx, db } = self;
        db.observed(tx.commit().await)
    }
}

/// Asks whether the session may write.
const READ_ONLY: &str = "SHOW transaction_read_only";

/// How a failed statement bears on the primary.
#[derive(Debug, PartialEq, Eq)]
enum Lost {
    No,
    /// The server went away or is shutting down, restarting, recovering.
    Unreachable,
    /// The server answers but refuses writes: it is a standby now.
    ReadOnly,
}

fn lost_primary(error: &sqlx::Error) -> Lost {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolTimedOut => {
            Lost::Unreachable
        }
        sqlx::Error::Database(e) => lost_by_code(e.code().as_deref().unwrap_or_default()),
        _ => Lost::No,
    }
}

/// PostgreSQL's error codes: `25006` read-only transaction; class `08`
/// connection exceptions; `57P01`–`57P03` shutdown, crash, cannot connect now.
fn lost_by_code(code: &str) -> Lost {
    match code {
        "25006" => Lost::ReadOnly,
        "57P01" | "57P02" | "57P03" => Lost::Unreachable,
        _ if code.starts_with("08") => Lost::Unreachable,
        _ => Lost::No,
    }
}

/// The first host (trying `in_use` first) that answers and takes writes,
/// with its index.
async fn first_writable(hosts: &[PgConnectOptions], in_use: Option<usize>) -> Result<usize, DbError> {
    let order = in_use.into_iter().chain((0..hosts.len()).filter(|i| Some(*i) != in_use));
    let mut last = DbError::NoPrimary(String::new());
    for host in order {
        match tokio::time::timeout(PROBE_TIMEOUT, takes_writes(&hosts[host])).await {
            Ok(Ok(true)) => return Ok(host),
            Ok(Ok(false)) => last = DbError::NoPrimary(format!("{} is read-only", address(&hosts[host]))),
            Ok(Err(e)) => last = DbError::NoPrimary(format!("{}: {e}", address(&hosts[host]))),
            Err(_) => last = DbError::NoPrimary(format!("{} did not answer in time", address(&hosts[host]))),
        }
    }
    Err(last)
}

async fn takes_writes(host: &PgConnectOptions) -> Result<bool, sqlx::Error> {
    let mut connection = host.connect().await?;
    let read_only: String = sqlx::query_scalar(READ_ONLY).fetch_one(&mut connection).await?;
    let _ = sqlx::Connection::close(connection).await;
    Ok(read_only == "off")
}

/// A pool on one host whose every connection is checked to take writes when
/// it opens (behind an endpoint that moves, a new connection may reach the
/// old server for a while).
fn pool_on(host: &PgConnectOptions, connections: u32, wait: Duration, counts: &ConnectionCounts) -> PgPool {
    let opened = counts.opened.clone();
    PgPoolOptions::new()
        .max_connections(connections.max(2))
        .acquire_timeout(wait)
        .after_connect(move |connection, _| {
            let opened = opened.clone();
            Box::pin(async move {
                let read_only: String = sqlx::query_scalar(READ_ONLY).fetch_one(&mut *connection).await?;
                if read_only != "off" {
                    return Err(sqlx::Error::Protocol("the server does not take writes".into()));
                }
                opened.inc();
                Ok(())
            })
        })
        .connect_lazy_with(host.clone())
}

/// The hosts a URL names, each as the options of a one-host URL. libpq's
/// form `postgres://user@h1:5432,h2:5433/db?…` names several; sqlx reads
/// one. `target_session_attrs` may be `any`, `read-write` or `primary`: the
/// service writes, so it always picks a host that takes writes.
fn hosts_of(url: &str) -> Result<Vec<PgConnectOptions>, DbError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("it does not start with postgres://"))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (user, host_list) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some((SESSION_ATTRS, "any" | "read-write" | "primary")) => {}
            Some((SESSION_ATTRS, _)) => {
                return Err(invalid("target_session_attrs must be any, read-write or primary: the service writes"));
            }
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
    host_list
        .split(',')
        .map(|host| {
            let one = format!("{scheme}://{user}{host}{path}{query}");
            // JIT compilation pays off for long analytical queries; for these short
            // ones it costs milliseconds each time a cost estimate crosses its
            // threshold (as a growing queue's estimates do), so it is off.
            PgConnectOptions::from_str(&one)
                .map(|options| options.options([("jit", "off")]))
                .map_err(|_| invalid("a host of it cannot be read"))
        })
        .collect()
}

/// An unreadable URL: said without the URL, which may hold a password.
fn invalid(why: &str) -> DbError {
    DbError::InvalidUrl(why.to_owned())
}

/// `host:port`, as logs name a server.
fn address(host: &PgConnectOptions) -> String {
    format!("{}:{}", host.get_host(), host.get_port())
}

/// Runs a statement on the pool or a transaction's connection; the rows it changed.
async fn execute<'c>(on: impl PgExecutor<'c>, sql: &'static Sql, params: &[Value]) -> Result<u64, sqlx::Error> {
    Ok(bound(sql, params).execute(on).await?.rows_affected())
}

/// Every row a statement returns, read into `T` (the outer error is the
/// database's, the inner the reading's).
async fn all<'c, T: FromRow>(
    on: impl PgExecutor<'c>,
    sql: &'static Sql,
    params: &[Value],
) -> Result<Result<Vec<T>, DbError>, sqlx::Error> {
    let rows = bound(sql, params).fetch_all(on).await?;
    Ok(rows.iter().map(|row| T::from_row(row)).collect())
}

/// The statement with its parameters bound.
fn bound<'q>(sql: &'static Sql, params: &'q [Value]) -> Query<'q, sqlx::Postgres, PgArguments> {
    params.iter().fold(sqlx::query(sql.text(Dialect::Postgres)), |query, value| match value {
        Value::Int(value) => query.bind(*value),
        Value::Text(value) => query.bind(value.as_deref()),
        Value::Bool(value) => query.bind(*value),
        Value::Ints(values) => query.bind(values.as_slice()),
        Value::Texts(values) => query.bind(values.as_slice()),
        Value::OptTexts(values) => query.bind(values.as_slice()),
    })
}

impl Row for PgRow {
    fn int(&self, column: usize) -> Result<i64, DbError> {
        self.opt_int(column)?.ok_or_else(|| null(column))
    }

    fn opt_int(&self, column: usize) -> Result<Option<i64>, DbError> {
        use sqlx::Row as _;
        // Counters and statuses are `integer`, times and ids `bigint`.
        Ok(match sqlx::Column::type_info(sqlx::Row::column(self, column)).name() {
            "INT4" => self.try_get::<Option<i32>, _>(column)?.map(i64::from),
            "INT2" => self.try_get::<Option<i16>, _>(column)?.map(i64::from),
            _ => self.try_get::<Option<i64>, _>(column)?,
        })
    }

    fn text(&self, column: usize) -> Result<String, DbError> {
        self.opt_text(column)?.ok_or_else(|| null(column))
    }

    fn opt_text(&self, column: usize) -> Result<Option<String>, DbError> {
        use sqlx::Row as _;
        Ok(self.try_get(column)?)
    }

    fn bool(&self, column: usize) -> Result<bool, DbError> {
        use sqlx::Row as _;
        Ok(self.try_get(column)?)
    }
}

fn null(column: usize) -> DbError {
    DbError::Corrupt(format!("column {column} is NULL where a value was expected"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(url: &str) -> Vec<String> {
        hosts_of(url).unwrap().iter().map(address).collect()
    }

    #[test]
    fn a_url_names_one_host_or_several() {
        assert_eq!(hosts("postgres://u:p@db.example:6543/app?sslmode=disable"), ["db.example:6543"]);
        assert_eq!(
            hosts("postgres://u@h1:5432,h2:5433,h3/app?target_session_attrs=read-write&sslmode=prefer"),
            ["h1:5432", "h2:5433", "h3:5432"]
        );
        assert_eq!(hosts("postgresql://h1,h2/app"), ["h1:5432", "h2:5432"]);
        let options = &hosts_of("postgres://alice:secret@h1,h2/app?application_name=x").unwrap()[1];
        assert_eq!((options.get_username(), options.get_database()), ("alice", Some("app")));
    }

    #[test]
    fn the_service_takes_only_sessions_that_may_write() {
        for attrs in ["any", "read-write", "primary"] {
            assert!(hosts_of(&format!("postgres://h1,h2/app?target_session_attrs={attrs}")).is_ok());
        }
        for attrs in ["read-only", "standby", "prefer-standby"] {
            let error = hosts_of(&format!("postgres://u:hunter2@h1/app?target_session_attrs={attrs}")).unwrap_err();
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn errors_that_mean_the_primary_is_gone_or_read_only() {
        assert_eq!(lost_by_code("25006"), Lost::ReadOnly);
        for code in ["57P01", "57P02", "57P03", "08006", "08001"] {
            assert_eq!(lost_by_code(code), Lost::Unreachable, "{code}");
        }
        for code in ["23505", "40001", "42P01", ""] {
            assert_eq!(lost_by_code(code), Lost::No, "{code}");
        }
        assert_eq!(lost_primary(&sqlx::Error::PoolTimedOut), Lost::Unreachable);
        assert_eq!(lost_primary(&sqlx::Error::RowNotFound), Lost::No);
    }
}
