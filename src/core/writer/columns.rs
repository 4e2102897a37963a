//! Rows as columns, written by one statement: as `VALUES` lists, chunked
//! under SQLite's bind-parameter limit; and on PostgreSQL, once there are
//! many rows, as arrays through `unnest`, so the statement keeps one text
//! and a handful of parameters (a `VALUES` list of thousands of parameters
//! costs PostgreSQL more to parse and plan than to run; a short one is
//! cheaper than arrays, measured with `examples/loadgen`). NULLs travel as
//! sentinels (`''`, `-1`) that no stored value can take, because the array
//! encoding has no NULL elements.

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseTransaction, Statement, Value, sea_query::ArrayType,
};

use std::collections::HashSet;
use uuid::Uuid;

use crate::error::Result;

/// Rows per `VALUES` statement (9 parameters at most, under SQLite's
/// 32,766 and PostgreSQL's 65,535).
const CHUNK: usize = 1000;
/// From this many rows, PostgreSQL takes arrays (`unnest`) instead.
const ARRAYS_FROM: usize = 256;

/// Column kinds: the PostgreSQL element type and the array type.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Uuid,
    Time,
    Text,
    Float,
    Int,
}

impl Kind {
    fn pg(self) -> (&'static str, ArrayType) {
        match self {
            Kind::Uuid => ("uuid", ArrayType::Uuid),
            Kind::Time => ("timestamptz", ArrayType::ChronoDateTimeUtc),
            Kind::Text => ("text", ArrayType::String),
            Kind::Float => ("float8", ArrayType::Double),
            Kind::Int => ("int8", ArrayType::BigInt),
        }
    }
}

/// Rows as columns `column1 … columnN` of a source `v`.
pub(crate) struct Columns {
    kinds: Vec<Kind>,
    data: Vec<Vec<Value>>,
}

impl Columns {
    pub(crate) fn new(kinds: &[Kind]) -> Self {
        Self {
            kinds: kinds.to_vec(),
            data: kinds.iter().map(|_| Vec::new()).collect(),
        }
    }

    pub(crate) fn row(&mut self, values: Vec<Value>) {
        for (column, value) in self.data.iter_mut().zip(values) {
            column.push(value);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.data.first().map_or(0, Vec::len)
    }

    /// Runs `before {source} after` over every row: once on PostgreSQL,
    /// per chunk on SQLite. Returns the rows the statements affected, and
    /// (when `rows_back`) the rows they answered.
    pub(crate) async fn run(
        &self,
        conn: &DatabaseTransaction,
        before: &str,
        after: &str,
        tail: &[Value],
        rows_back: bool,
    ) -> Result<(u64, Vec<sea_orm::QueryResult>)> {
        let backend = conn.get_database_backend();
        let (mut affected, mut back) = (0, Vec::new());
        let arrays = backend == DatabaseBackend::Postgres && self.len() >= ARRAYS_FROM;
        let ranges: Vec<(usize, usize)> = if arrays {
            vec![(0, self.len())]
        } else {
            (0..self.len())
                .step_by(CHUNK)
                .map(|s| (s, (s + CHUNK).min(self.len())))
                .collect()
        };
        for (start, end) in ranges {
            if start == end {
                continue;
            }
            let mut sql = String::from(before);
            let mut values: Vec<Value> = Vec::new();
            if arrays {
                sql.push_str("unnest(");
                for (n, (kind, column)) in self.kinds.iter().zip(&self.data).enumerate() {
                    let (pg, array) = kind.pg();
                    values.push(Value::Array(array, Some(Box::new(column.clone()))));
                    sql.push_str(&format!(
                        "{}${}::{pg}[]",
                        if n == 0 { "" } else { ", " },
                        n + 1
                    ));
                }
                let names: Vec<String> = (1..=self.kinds.len())
                    .map(|n| format!("column{n}"))
                    .collect();
                sql.push_str(&format!(") AS v({})", names.join(", ")));
            } else {
                sql.push_str("(VALUES ");
                for row in start..end {
                    sql.push_str(if row == start { "(" } else { ", (" });
                    for (n, (kind, column)) in self.kinds.iter().zip(&self.data).enumerate() {
                        values.push(column[row].clone());
                        sql.push_str(if n == 0 { "" } else { ", " });
                        if backend == DatabaseBackend::Postgres {
                            // Typed, as nothing else types a VALUES list.
                            sql.push_str(&format!("${}::{}", values.len(), kind.pg().0));
                        } else {
                            sql.push('?');
                        }
                    }
                    sql.push(')');
                }
                if backend == DatabaseBackend::Postgres {
                    let names: Vec<String> = (1..=self.kinds.len())
                        .map(|n| format!("column{n}"))
                        .collect();
                    sql.push_str(&format!(") AS v({})", names.join(", ")));
                } else {
                    // SQLite names a VALUES list's columns column1, column2, ...
                    sql.push_str(") AS v");
                }
            }
            let after = placeholders(backend, after, values.len());
            sql.push_str(&after);
            values.extend(tail.iter().cloned());
            let statement = Statement::from_sql_and_values(backend, sql, values);
            if rows_back {
                back.extend(conn.query_all_raw(statement).await?);
            } else {
                affected += conn.execute_raw(statement).await?.rows_affected();
            }
        }
        Ok((affected, back))
    }
}

impl Columns {
    /// [`Columns::run`] for a statement that ends `RETURNING id`: the ids
    /// of the rows it wrote.
    pub(crate) async fn returning_ids(
        &self,
        conn: &DatabaseTransaction,
        before: &str,
        after: &str,
    ) -> Result<HashSet<Uuid>> {
        let (_, back) = self.run(conn, before, after, &[], true).await?;
        back.iter()
            .map(|row| Ok(row.try_get::<Uuid>("", "id")?))
            .collect()
    }
}

/// Numbers the `$` placeholders of `text` after the first `used` ones
/// (PostgreSQL); SQLite takes `?` as written.
pub(crate) fn placeholders(backend: DatabaseBackend, text: &str, used: usize) -> String {
    if backend != DatabaseBackend::Postgres {
        return text.replace('$', "?");
    }
    let mut out = String::new();
    let mut n = used;
    for c in text.chars() {
        if c == '$' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// An optional text as its sentinel: none is `''`.
pub(crate) fn text(v: &Option<String>) -> Value {
    Value::from(v.clone().unwrap_or_default())
}
