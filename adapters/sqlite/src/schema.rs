//! The file's schema, its version (`PRAGMA user_version`) and the forward
//! migrations, and the settings every connection runs with.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

/// The schema version this build writes, and the newest it reads. A file
/// at an older version is migrated forward when it is opened; a file at a
/// newer one was written by a newer twincell and is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// Migration `n` takes a file from version `n` to `n + 1`, in one
/// transaction with the version bump.
const MIGRATIONS: [&str; 1] = [
    // 1: events with their change-feed sequence, snapshots apart from
    // them, and the feed readers' checkpoints.
    "CREATE TABLE events (
         seq INTEGER PRIMARY KEY AUTOINCREMENT,
         kind TEXT NOT NULL,
         aggregate TEXT NOT NULL,
         origin TEXT NOT NULL,
         version INTEGER NOT NULL,
         recorded_at INTEGER NOT NULL,
         event TEXT NOT NULL,
         UNIQUE (kind, aggregate, origin, version)
     );
     CREATE INDEX events_by_origin ON events (origin, seq);
     CREATE TABLE snapshots (
         kind TEXT NOT NULL,
         aggregate TEXT NOT NULL,
         origin TEXT NOT NULL,
         version INTEGER NOT NULL,
         format INTEGER NOT NULL,
         body TEXT NOT NULL,
         PRIMARY KEY (kind, aggregate, origin)
     ) WITHOUT ROWID;
     CREATE TABLE feed_checkpoints (
         reader TEXT PRIMARY KEY,
         seq INTEGER NOT NULL
     ) WITHOUT ROWID;",
];

/// How long a connection waits for another process's write lock on the
/// same file before the operation fails as unavailable.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a file could not be opened.
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// Written by a newer twincell: never read or written by this one.
    Newer(i64),
    /// SQLite could not open, set up or migrate it (missing directory,
    /// not a database, read-only, full): the store answers unavailable and
    /// tries again.
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for OpenFailure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

/// Opens `path` (creating it when absent) in WAL mode with
/// `synchronous = FULL`, and brings its schema to [`SCHEMA_VERSION`].
pub(crate) fn open(path: &Path) -> Result<Connection, OpenFailure> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    let version: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(OpenFailure::Newer(version));
    }
    let mode: String = connection.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenFailure::Sqlite(rusqlite::Error::InvalidParameterName(
            format!("the file stays in journal mode {mode}, not WAL"),
        )));
    }
    connection.pragma_update(None, "synchronous", "FULL")?;
    migrate(&connection)?;
    Ok(connection)
}

/// Applies the migrations the file lacks, each with its version bump in
/// one transaction (another process may be migrating the same file: the
/// version is read again under the write lock).
fn migrate(connection: &Connection) -> Result<(), OpenFailure> {
    loop {
        connection.execute_batch("BEGIN IMMEDIATE")?;
        let step = (|| {
            let version: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Ok(Err(OpenFailure::Newer(version)));
            }
            let Some(migration) = usize::try_from(version)
                .ok()
                .and_then(|v| MIGRATIONS.get(v))
            else {
                return Ok(Ok(false));
            };
            connection.execute_batch(migration)?;
            connection.pragma_update(None, "user_version", version + 1)?;
            Ok::<_, rusqlite::Error>(Ok(true))
        })();
        match step {
            Ok(Ok(true)) => connection.execute_batch("COMMIT")?,
            Ok(Ok(false)) => {
                connection.execute_batch("COMMIT")?;
                return Ok(());
            }
            Ok(Err(newer)) => {
                connection.execute_batch("ROLLBACK")?;
                return Err(newer);
            }
            Err(e) => {
                // The transaction is rolled back whole: the file keeps its
                // version and everything it held.
                let _ = connection.execute_batch("ROLLBACK");
                return Err(OpenFailure::Sqlite(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_is_one_migration_per_schema_version() {
        assert_eq!(usize::try_from(SCHEMA_VERSION).ok(), Some(MIGRATIONS.len()));
    }
}
