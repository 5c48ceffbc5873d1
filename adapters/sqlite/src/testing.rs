//! Test support (feature `test-util`): SQLite's own failures on demand, and
//! fresh files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use twincell_core::StoreError;

use crate::SqliteEventStore;
use crate::ops::unavailable;

/// A path no other test uses, in the system's temporary directory, with
/// no file there yet.
#[must_use]
pub fn fresh_path(prefix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "twincell-{prefix}-{}-{nanos}-{}.sqlite",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A store on a fresh file.
///
/// # Panics
/// When the store cannot be opened (a test set-up failure).
#[allow(clippy::panic)]
pub async fn fresh_store(prefix: &str) -> SqliteEventStore {
    match SqliteEventStore::open(fresh_path(prefix)).await {
        Ok(store) => store,
        Err(e) => panic!("opening a fresh SQLite store: {e}"),
    }
}

impl SqliteEventStore {
    /// Makes every write fail as SQLite fails on a read-only file
    /// (`PRAGMA query_only`, `SQLITE_READONLY`), reads going on, until
    /// called with `false`. (File permissions would not do: tests run as
    /// root, who may write any file.)
    ///
    /// # Errors
    /// When the pragma cannot be set.
    pub async fn set_read_only(&self, on: bool) -> Result<(), StoreError> {
        self.call(move |c| {
            c.pragma_update(None, "query_only", on)
                .map_err(|e| unavailable(&e))
        })
        .await
    }

    /// Caps the file at its current number of pages (`PRAGMA
    /// max_page_count`), so that the next write needing a page fails with
    /// `SQLITE_FULL`, as on a full disk; `false` lifts the cap.
    ///
    /// # Errors
    /// When the pragma cannot be set.
    pub async fn set_full(&self, on: bool) -> Result<(), StoreError> {
        self.call(move |c| {
            let pages: i64 = if on {
                c.query_row("PRAGMA page_count", [], |r| r.get(0))
                    .map_err(|e| unavailable(&e))?
            } else {
                i64::from(u32::MAX)
            };
            c.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|_| ())
            .map_err(|e| unavailable(&e))
        })
        .await
    }
}

/// Sets the schema version of the file at `path` (no store may have it
/// open), as a newer or older twincell would have left it.
///
/// # Errors
/// SQLite's, as text.
pub fn set_schema_version(path: &std::path::Path, version: i64) -> Result<(), String> {
    let connection = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    connection
        .pragma_update(None, "user_version", version)
        .map_err(|e| e.to_string())
}

/// The schema version of the file at `path`.
///
/// # Errors
/// SQLite's, as text.
pub fn schema_version(path: &std::path::Path) -> Result<i64, String> {
    let connection = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
    connection
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())
}
