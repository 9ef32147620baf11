//! The SQLite backend, Carafe's embedded default. One file in the data dir, in WAL mode, with a
//! single writer connection (SQLite allows one writer at a time; queueing writers in our pool is
//! cheaper than letting them fight over the lock) and a pool of read-only connections.
//! Every commit is synced (`synchronous=FULL`): an answer is never sent for a write a power cut
//! could take back.

mod audit;
mod campaigns;
mod direct;
mod files;
mod idempotency;
mod jobs;
mod keys;
mod leader;
mod mail;
mod multipart;
mod rewrap;
mod schedules;
mod templates;
mod uploads;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use carafe_core::store::{Backend, PoolStats, WakeupSink};
use carafe_core::{StoreError, StoreResult};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another process (a CLI command, say) to release the lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. Does not migrate.
    pub async fn open(path: &Path, readers: u32) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        Self::connect(options, readers).await
    }

    /// Opens from a `sqlite://` URL (as given in `CARAFE_DATABASE_URL`).
    pub async fn open_url(url: &str, readers: u32) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(map_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        Self::connect(options, readers).await
    }

    async fn connect(options: SqliteConnectOptions, readers: u32) -> StoreResult<Self> {
        // A connection is not pinged before each use (sqlx's default): a ping is one more
        // round trip to the connection's thread per transaction, and a local file does not
        // drop connections the way a server can; an error still surfaces on the statement.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .min_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await
            .map_err(map_err)?;
        Ok(SqliteStore { writer, reader })
    }
}

impl SqliteStore {
    /// A write transaction holding SQLite's write lock from its first statement
    /// (`BEGIN IMMEDIATE`), so that reading before writing never fails on a lock upgrade.
    pub(crate) async fn begin_write(
        &self,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl Backend for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Other(Box::new(e)))
    }

    async fn pending_migrations(&self) -> StoreResult<Vec<String>> {
        let table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(map_err)?;
        let applied: Vec<i64> = if table.is_some() {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.reader)
                .await
                .map_err(map_err)?
        } else {
            Vec::new()
        };
        Ok(MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{}_{}", m.version, m.description))
            .collect())
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.writer.size() + self.reader.size(),
            idle: (self.writer.num_idle() + self.reader.num_idle()) as u32,
            max: self.writer.options().get_max_connections()
                + self.reader.options().get_max_connections(),
        }
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// SQLite has no cross-process notifications; other processes are seen by polling.
    async fn listen(&self, _sink: WakeupSink) -> StoreResult<()> {
        Ok(())
    }
}

/// Maps SQLite errors into the store's few cases.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict("unique constraint")
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("5") => {
            StoreError::Unavailable(Box::new(e))
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(Box::new(e))
        }
        _ => StoreError::Other(Box::new(e)),
    }
}

pub(crate) fn ms(t: time::OffsetDateTime) -> i64 {
    carafe_core::time::unix_ms(t)
}

pub(crate) fn at(ms: i64) -> time::OffsetDateTime {
    carafe_core::time::from_unix_ms(ms)
}
