//! One statement, two backends: typed dispatch between SQLite and PostgreSQL.
//!
//! The repositories build a statement with [`query`], [`query_as`] or [`query_scalar`] (the
//! names and methods of sqlx's), bind values and run it on a [`Pool`] or in a [`Tx`]. Only
//! then is the backend known: the statement becomes sqlx's typed query for that driver
//! (`Sqlite` or `Postgres`), so rows decode monomorphically, without `sqlx::Any`'s per-value
//! conversion, and a type that does not decode on one backend fails there. Bound values wait
//! in a small enum ([`Arg`]) until then; sqlx copies them into its own argument buffers
//! anyway. Where the dialects cannot share text, [`Sql::two`] carries one text per backend.

use std::borrow::Cow;
use std::marker::PhantomData;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Arguments, AssertSqlSafe, Decode, FromRow, Postgres, Sqlite, Transaction, Type};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, the embedded default.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A pool of connections to one backend.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

impl Pool {
    /// Begins a transaction.
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
            Pool::Pg(p) => Tx::Pg(p.begin().await?),
        })
    }

    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite(p) => p.close().await,
            Pool::Pg(p) => p.close().await,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Pg(_) => Backend::Postgres,
        }
    }
}

/// A transaction on either backend; dropped without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Pg(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Pg(t) => t.commit().await,
        }
    }
}

/// Where a statement runs: a pool, or the connection of a transaction.
pub(crate) enum Conn<'e> {
    SqlitePool(&'e SqlitePool),
    PgPool(&'e PgPool),
    Sqlite(&'e mut SqliteConnection),
    Pg(&'e mut PgConnection),
}

/// What a statement can run on: `&Pool` or `&mut Tx`.
pub(crate) trait Exec<'e> {
    fn conn(self) -> Conn<'e>;
}

impl<'e> Exec<'e> for &'e Pool {
    fn conn(self) -> Conn<'e> {
        match self {
            Pool::Sqlite(p) => Conn::SqlitePool(p),
            Pool::Pg(p) => Conn::PgPool(p),
        }
    }
}

impl<'e> Exec<'e> for &'e mut Tx {
    fn conn(self) -> Conn<'e> {
        match self {
            Tx::Sqlite(t) => Conn::Sqlite(t),
            Tx::Pg(t) => Conn::Pg(t),
        }
    }
}

/// The text of a statement: one for both backends, or one each.
#[derive(Debug, Clone)]
pub(crate) enum Sql {
    Static(&'static str),
    Owned(String),
    Two {
        sqlite: &'static str,
        postgres: &'static str,
    },
}

impl Sql {
    /// A statement whose text differs between the dialects (see docs/decisions.md).
    pub(crate) const fn two(sqlite: &'static str, postgres: &'static str) -> Self {
        Sql::Two { sqlite, postgres }
    }

    fn text(self, backend: Backend) -> AssertSqlSafe<Cow<'static, str>> {
        AssertSqlSafe(match (self, backend) {
            (Sql::Static(s), _) => Cow::Borrowed(s),
            (Sql::Owned(s), _) => Cow::Owned(s),
            (Sql::Two { sqlite, .. }, Backend::Sqlite) => Cow::Borrowed(sqlite),
            (Sql::Two { postgres, .. }, Backend::Postgres) => Cow::Borrowed(postgres),
        })
    }
}

impl From<&'static str> for Sql {
    fn from(s: &'static str) -> Self {
        Sql::Static(s)
    }
}

impl From<String> for Sql {
    fn from(s: String) -> Self {
        Sql::Owned(s)
    }
}

impl<T: Into<String>> From<AssertSqlSafe<T>> for Sql {
    fn from(s: AssertSqlSafe<T>) -> Self {
        Sql::Owned(s.0.into())
    }
}

/// A bound value, until the backend is known. Integers are bound 64 bits wide: the
/// PostgreSQL columns are `BIGINT`.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'q> {
    Str(Option<&'q str>),
    String(Option<String>),
    I64(Option<i64>),
    Bool(Option<bool>),
    F64(Option<f64>),
    Bytes(Option<&'q [u8]>),
    BytesOwned(Option<Vec<u8>>),
}

macro_rules! arg_from {
    ($variant:ident: $($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(
            impl<'q> From<$t> for Arg<'q> {
                fn from($v: $t) -> Self {
                    Arg::$variant($e)
                }
            }
        )*
    };
}

arg_from!(Str:
    &'q str => |v| Some(v),
    &'q String => |v| Some(v.as_str()),
    &'q &'q str => |v| Some(*v),
    Option<&'q str> => |v| v,
    &'q Option<String> => |v| v.as_deref(),
    Option<&'q String> => |v| v.map(String::as_str),
);
arg_from!(String:
    String => |v| Some(v),
    Option<String> => |v| v,
);
arg_from!(I64:
    i64 => |v| Some(v),
    &'q i64 => |v| Some(*v),
    Option<i64> => |v| v,
    &'q Option<i64> => |v| *v,
    i32 => |v| Some(i64::from(v)),
    Option<i32> => |v| v.map(i64::from),
    u32 => |v| Some(i64::from(v)),
    Option<u32> => |v| v.map(i64::from),
    u16 => |v| Some(i64::from(v)),
    u8 => |v| Some(i64::from(v)),
);
arg_from!(Bool:
    bool => |v| Some(v),
    &'q bool => |v| Some(*v),
    Option<bool> => |v| v,
);
arg_from!(F64:
    f64 => |v| Some(v),
    Option<f64> => |v| v,
);
arg_from!(Bytes:
    &'q [u8] => |v| Some(v),
    &'q Vec<u8> => |v| Some(v.as_slice()),
    &'q Option<Vec<u8>> => |v| v.as_deref(),
    Option<&'q [u8]> => |v| v,
);
arg_from!(BytesOwned:
    Vec<u8> => |v| Some(v),
    Option<Vec<u8>> => |v| v,
);

impl<'q, const N: usize> From<&'q [u8; N]> for Arg<'q> {
    fn from(v: &'q [u8; N]) -> Self {
        Arg::Bytes(Some(v.as_slice()))
    }
}

fn sqlite_args(args: Vec<Arg<'_>>) -> Result<SqliteArguments, BoxDynError> {
    let mut out = SqliteArguments::default();
    for arg in args {
        match arg {
            Arg::Str(v) => out.add(v)?,
            Arg::String(v) => out.add(v)?,
            Arg::I64(v) => out.add(v)?,
            Arg::Bool(v) => out.add(v)?,
            Arg::F64(v) => out.add(v)?,
            Arg::Bytes(v) => out.add(v)?,
            Arg::BytesOwned(v) => out.add(v)?,
        }
    }
    Ok(out)
}

fn pg_args(args: Vec<Arg<'_>>) -> Result<PgArguments, BoxDynError> {
    let mut out = PgArguments::default();
    for arg in args {
        match arg {
            Arg::Str(v) => out.add(v)?,
            Arg::String(v) => out.add(v)?,
            Arg::I64(v) => out.add(v)?,
            Arg::Bool(v) => out.add(v)?,
            Arg::F64(v) => out.add(v)?,
            Arg::Bytes(v) => out.add(v)?,
            Arg::BytesOwned(v) => out.add(v)?,
        }
    }
    Ok(out)
}

/// A statement and its bound values.
#[derive(Debug, Clone)]
pub(crate) struct Query<'q> {
    sql: Sql,
    args: Vec<Arg<'q>>,
}

/// A statement whose rows decode as `O`.
#[derive(Debug, Clone)]
pub(crate) struct QueryAs<'q, O> {
    inner: Query<'q>,
    row: PhantomData<fn() -> O>,
}

/// A statement whose first column decodes as `O`.
#[derive(Debug, Clone)]
pub(crate) struct QueryScalar<'q, O> {
    inner: Query<'q>,
    row: PhantomData<fn() -> O>,
}

pub(crate) fn query<'q>(sql: impl Into<Sql>) -> Query<'q> {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

pub(crate) fn query_as<'q, O>(sql: impl Into<Sql>) -> QueryAs<'q, O> {
    QueryAs {
        inner: query(sql),
        row: PhantomData,
    }
}

pub(crate) fn query_scalar<'q, O>(sql: impl Into<Sql>) -> QueryScalar<'q, O> {
    QueryScalar {
        inner: query(sql),
        row: PhantomData,
    }
}

/// What a statement changed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Done {
    rows_affected: u64,
}

impl Done {
    pub(crate) fn rows_affected(&self) -> u64 {
        self.rows_affected
    }
}

/// Runs `$body` with `$q`, the typed sqlx query built by `$ctor` for the executor's backend,
/// and `$e`, the executor; `$fail` is the value when a bound value does not encode (`$err`).
macro_rules! dispatch {
    ($query:expr, $ex:expr, $ctor:path, |$q:ident, $e:ident| $body:expr, |$err:ident| $fail:expr) => {{
        let Query { sql, args } = $query;
        match $ex.conn() {
            Conn::SqlitePool($e) => match sqlite_args(args) {
                Ok(a) => {
                    let $q = $ctor(sql.text(Backend::Sqlite), a);
                    $body
                }
                Err($err) => $fail,
            },
            Conn::Sqlite($e) => match sqlite_args(args) {
                Ok(a) => {
                    let $q = $ctor(sql.text(Backend::Sqlite), a);
                    $body
                }
                Err($err) => $fail,
            },
            Conn::PgPool($e) => match pg_args(args) {
                Ok(a) => {
                    let $q = $ctor(sql.text(Backend::Postgres), a);
                    $body
                }
                Err($err) => $fail,
            },
            Conn::Pg($e) => match pg_args(args) {
                Ok(a) => {
                    let $q = $ctor(sql.text(Backend::Postgres), a);
                    $body
                }
                Err($err) => $fail,
            },
        }
    }};
}

/// Bounds for a row type: it decodes from both backends' rows.
pub(crate) trait Row:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> Row for T where T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{}

/// Bounds for a scalar: it decodes from both backends' values.
pub(crate) trait Scalar:
    for<'r> Decode<'r, Sqlite>
    + Type<Sqlite>
    + for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + Send
    + Unpin
{
}
impl<T> Scalar for T where
    T: for<'r> Decode<'r, Sqlite>
        + Type<Sqlite>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + Send
        + Unpin
{
}

impl<'q> Query<'q> {
    pub(crate) fn bind(mut self, value: impl Into<Arg<'q>>) -> Self {
        self.args.push(value.into());
        self
    }

    pub(crate) async fn execute<'e>(self, ex: impl Exec<'e>) -> Result<Done, sqlx::Error> {
        dispatch!(
            self,
            ex,
            sqlx::query_with,
            |q, e| {
                q.execute(e).await.map(|r| Done {
                    rows_affected: r.rows_affected(),
                })
            },
            |err| Err(sqlx::Error::Encode(err))
        )
    }
}

impl<'q, O: Row> QueryAs<'q, O> {
    pub(crate) fn bind(mut self, value: impl Into<Arg<'q>>) -> Self {
        self.inner.args.push(value.into());
        self
    }

    pub(crate) async fn fetch_one<'e>(self, ex: impl Exec<'e>) -> Result<O, sqlx::Error> {
        dispatch!(
            self.inner,
            ex,
            sqlx::query_as_with,
            |q, e| q.fetch_one(e).await,
            |err| Err(sqlx::Error::Encode(err))
        )
    }

    pub(crate) async fn fetch_optional<'e>(
        self,
        ex: impl Exec<'e>,
    ) -> Result<Option<O>, sqlx::Error> {
        dispatch!(
            self.inner,
            ex,
            sqlx::query_as_with,
            |q, e| q.fetch_optional(e).await,
            |err| Err(sqlx::Error::Encode(err))
        )
    }

    pub(crate) async fn fetch_all<'e>(self, ex: impl Exec<'e>) -> Result<Vec<O>, sqlx::Error> {
        dispatch!(
            self.inner,
            ex,
            sqlx::query_as_with,
            |q, e| q.fetch_all(e).await,
            |err| Err(sqlx::Error::Encode(err))
        )
    }

    /// The rows one by one, without holding them all.
    pub(crate) fn fetch<'e>(self, ex: impl Exec<'e>) -> BoxStream<'e, Result<O, sqlx::Error>>
    where
        'q: 'e,
        O: 'e,
    {
        dispatch!(
            self.inner,
            ex,
            sqlx::query_as_with,
            |q, e| q.fetch(e).boxed(),
            |err| futures_util::stream::once(async move { Err(sqlx::Error::Encode(err)) }).boxed()
        )
    }
}

impl<'q, O: Scalar> QueryScalar<'q, O> {
    pub(crate) fn bind(mut self, value: impl Into<Arg<'q>>) -> Self {
        self.inner.args.push(value.into());
        self
    }

    pub(crate) async fn fetch_one<'e>(self, ex: impl Exec<'e>) -> Result<O, sqlx::Error> {
        dispatch!(
            self.inner,
            ex,
            sqlx::query_scalar_with,
            |q, e| q.fetch_one(e).await,
            |err| Err(sqlx::Error::Encode(err))
        )
    }

    pub(crate) async fn fetch_optional<'e>(
        self,
        ex: impl Exec<'e>,
    ) -> Result<Option<O>, sqlx::Error> {
        dispatch!(
            self.inner,
            ex,
            sqlx::query_scalar_with,
            |q, e| q.fetch_optional(e).await,
            |err| Err(sqlx::Error::Encode(err))
        )
    }

    pub(crate) async fn fetch_all<'e>(self, ex: impl Exec<'e>) -> Result<Vec<O>, sqlx::Error> {
        dispatch!(
            self.inner,
            ex,
            sqlx::query_scalar_with,
            |q, e| q.fetch_all(e).await,
            |err| Err(sqlx::Error::Encode(err))
        )
    }
}
