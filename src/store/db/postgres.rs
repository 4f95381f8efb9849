//! PostgreSQL under the SQL layer: sqlx's pool, statements bound from
//! [`Value`]s, rows read by position.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, TypeInfo};

use super::{Dialect, FromRow, Row, Sql, Value};
use crate::store::StoreError;

#[derive(Clone)]
pub struct Postgres {
    pub pool: PgPool,
}

impl Postgres {
    pub async fn all<T: FromRow>(&self, sql: &'static Sql, params: Vec<Value>) -> Result<Vec<T>, StoreError> {
        let rows = bound(sql, &params).fetch_all(&self.pool).await?;
        rows.iter().map(|row| T::from_row(row)).collect()
    }

    pub async fn execute(&self, sql: &'static Sql, params: Vec<Value>) -> Result<u64, StoreError> {
        Ok(bound(sql, &params).execute(&self.pool).await?.rows_affected())
    }

    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

pub async fn execute_on(
    connection: &mut PgConnection,
    sql: &'static Sql,
    params: Vec<Value>,
) -> Result<u64, StoreError> {
    Ok(bound(sql, &params).execute(connection).await?.rows_affected())
}

pub async fn all_on<T: FromRow>(
    connection: &mut PgConnection,
    sql: &'static Sql,
    params: Vec<Value>,
) -> Result<Vec<T>, StoreError> {
    let rows = bound(sql, &params).fetch_all(connection).await?;
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
    fn int(&self, column: usize) -> Result<i64, StoreError> {
        self.opt_int(column)?.ok_or_else(|| null(column))
    }

    fn opt_int(&self, column: usize) -> Result<Option<i64>, StoreError> {
        use sqlx::Row as _;
        // Counters and statuses are `integer`, times and ids `bigint`.
        Ok(match sqlx::Column::type_info(sqlx::Row::column(self, column)).name() {
            "INT4" => self.try_get::<Option<i32>, _>(column)?.map(i64::from),
            "INT2" => self.try_get::<Option<i16>, _>(column)?.map(i64::from),
            _ => self.try_get::<Option<i64>, _>(column)?,
        })
    }

    fn text(&self, column: usize) -> Result<String, StoreError> {
        self.opt_text(column)?.ok_or_else(|| null(column))
    }

    fn opt_text(&self, column: usize) -> Result<Option<String>, StoreError> {
        use sqlx::Row as _;
        Ok(self.try_get(column)?)
    }

    fn bool(&self, column: usize) -> Result<bool, StoreError> {
        use sqlx::Row as _;
        Ok(self.try_get(column)?)
    }
}

fn null(column: usize) -> StoreError {
    StoreError::Corrupt(format!("column {column} is NULL where a value was expected"))
}
