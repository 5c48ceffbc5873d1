//! The connection thread: the one thread that owns the store's connection
//! and runs every operation, so that no SQLite call ever blocks a tokio
//! worker.
//!
//! Operations arrive on a channel and run in groups: the thread takes every
//! operation waiting (up to [`MAX_GROUP`]), runs each in a savepoint of one
//! transaction (an operation that fails rolls back to its savepoint and
//! takes nothing of the others with it), commits once, and only then
//! answers each caller. One commit — one fsync of the WAL — serves the whole
//! group, so a burst of appends costs about one disk flush, not one each;
//! and no caller hears of a write before it is durable. When the commit
//! fails, every operation of the group is answered unavailable (a read
//! too: it may have seen the group's uncommitted writes).

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};

use rusqlite::{Connection, ErrorCode};
use twincell_core::StoreError;

use crate::ops::unavailable;
use crate::schema::{self, OpenFailure};

/// The most operations one transaction runs: bounds how long the first of
/// them waits for the commit.
pub(crate) const MAX_GROUP: usize = 64;

/// How an operation's answer reaches its caller once its group's commit
/// is known.
pub(crate) type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// An operation: given the connection (or why there is none), it runs and
/// returns its reply, to be sent after the commit.
pub(crate) type Job = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> Reply + Send>;

/// Runs `op` in a savepoint of the group's transaction: a failure rolls
/// back only what `op` wrote.
pub(crate) fn in_savepoint<T>(
    connection: &Connection,
    op: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    connection
        .execute_batch("SAVEPOINT op")
        .map_err(|e| unavailable(&e))?;
    let result = op(connection);
    let end = if result.is_ok() {
        "RELEASE op"
    } else {
        "ROLLBACK TO op; RELEASE op"
    };
    match connection.execute_batch(end) {
        Ok(()) => result,
        Err(e) => Err(unavailable(&e)),
    }
}

/// What the thread reports once it has opened the file.
pub(crate) enum Opened {
    /// Ready (or, when the file could not be opened for a reason that may
    /// pass, answering unavailable and trying again with each group).
    Serving,
    /// Written by a newer twincell: the thread has stopped.
    Newer(i64),
}

/// The thread's body: opens `path`, reports through `opened`, then serves
/// `jobs` until every sender is gone.
pub(crate) fn run(
    path: PathBuf,
    jobs: Receiver<Job>,
    opened: tokio::sync::oneshot::Sender<Opened>,
) {
    let mut connection = match schema::open(&path) {
        Ok(c) => Some(c),
        Err(OpenFailure::Newer(found)) => {
            let _ = opened.send(Opened::Newer(found));
            return;
        }
        Err(OpenFailure::Sqlite(e)) => {
            tracing::error!(path = %path.display(), error = %e, "the SQLite store cannot open its file; it answers unavailable until it can");
            None
        }
    };
    let _ = opened.send(Opened::Serving);
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if connection.is_none() {
            connection = reopen(&path);
        }
        let healthy = match &connection {
            Some(c) => run_group(c, group),
            None => {
                let err = StoreError::Unavailable(format!(
                    "sqlite: {} cannot be opened (see the log)",
                    path.display()
                ));
                for job in group {
                    job(Err(&err))(Err(err.clone()));
                }
                false
            }
        };
        if !healthy {
            // A failed begin or commit: the next group starts on a fresh
            // connection (the file may have been repaired or freed).
            connection = None;
        }
    }
}

fn reopen(path: &std::path::Path) -> Option<Connection> {
    match schema::open(path) {
        Ok(c) => {
            tracing::info!(path = %path.display(), "the SQLite store opened its file again");
            Some(c)
        }
        Err(OpenFailure::Newer(found)) => {
            tracing::error!(path = %path.display(), found, supported = schema::SCHEMA_VERSION, "the file was replaced by one of a newer schema; it is not read");
            None
        }
        Err(OpenFailure::Sqlite(e)) => {
            tracing::error!(path = %path.display(), error = %e, "the SQLite store still cannot open its file");
            None
        }
    }
}

/// One transaction for `group`; `false` when it could not begin or commit.
fn run_group(connection: &Connection, group: Vec<Job>) -> bool {
    // IMMEDIATE takes the write lock at once, so that what an operation
    // reads is what it writes on (another process on the same file waits
    // for it). A file that cannot be written still serves reads.
    let begun = connection.execute_batch("BEGIN IMMEDIATE").or_else(|e| {
        if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
            connection.execute_batch("BEGIN")
        } else {
            Err(e)
        }
    });
    if let Err(e) = begun {
        tracing::error!(error = %e, "the SQLite store cannot begin a transaction");
        let err = unavailable(&e);
        for job in group {
            job(Err(&err))(Err(err.clone()));
        }
        return false;
    }
    // SQLite rolls a whole transaction back on some errors (a full disk,
    // an I/O error); the operations after that one are not run outside it.
    let rolled_back = StoreError::Unavailable(
        "sqlite: the transaction was rolled back by an earlier failure".to_owned(),
    );
    let replies: Vec<Reply> = group
        .into_iter()
        .map(|job| {
            if connection.is_autocommit() {
                job(Err(&rolled_back))
            } else {
                job(Ok(connection))
            }
        })
        .collect();
    let committed = connection.execute_batch("COMMIT").map_err(|e| {
        tracing::error!(error = %e, "the SQLite store cannot commit; the group's operations are answered unavailable");
        let _ = connection.execute_batch("ROLLBACK");
        unavailable(&e)
    });
    let healthy = committed.is_ok();
    for reply in replies {
        reply(committed.clone());
    }
    healthy
}
