//! PostgreSQL under the SQL layer: sqlx's pool, statements bound from
//! [`Value`]s, rows read by position. Several instances share one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{PgExecutor, PgPool, TypeInfo};

use super::{DbError, Dialect, FromRow, Row, Sql, Value};

#[derive(Clone)]
pub struct Postgres {
    pub pool: PgPool,
}

impl Postgres {
    pub(super) async fn open(
        url: &str,
        connections: u32,
        wait: Duration,
        migrations: &Migrator,
    ) -> Result<Postgres, DbError> {
        // JIT compilation pays off for long analytical queries; for these short
        // ones it costs milliseconds each time a cost estimate crosses its
        // threshold (as a growing queue's estimates do), so it is off.
        let options = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(2))
            .acquire_timeout(wait)
            .connect_with(options)
            .await?;
        // sqlx holds an advisory lock while migrating: instances starting together do not race.
        migrations.run(&pool).await?;
        Ok(Postgres { pool })
    }
}

/// Runs a statement on the pool or a transaction's connection; the rows it changed.
pub async fn execute<'c>(on: impl PgExecutor<'c>, sql: &'static Sql, params: &[Value]) -> Result<u64, DbError> {
    Ok(bound(sql, params).execute(on).await?.rows_affected())
}

/// Every row a statement returns, read into `T`.
pub async fn all<'c, T: FromRow>(
    on: impl PgExecutor<'c>,
    sql: &'static Sql,
    params: &[Value],
) -> Result<Vec<T>, DbError> {
    let rows = bound(sql, params).fetch_all(on).await?;
    rows.iter().map(|row| T::from_row(row)).collect()
}

/// The statement with its parameters bound.
fn bound<'q>(sql: &'static Sql, params: &'q [Value]) -> Query<'q, sqlx::Postgres, PgArguments> {
    params.iter().fold(sqlx::query(sql.text(Dialect::Postgres)), |query, value| match value {
        Value::Int(value) => query.bind(*value),
        Value::Text(value) => query.bind(value.as_deref()),
        Value::Bool(value) => query.bind(*value),
        Value::Ints(values) => query.bind(values.as_slice()),
        Value::Texts(values) => query.bind(values.as_slice()),
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
