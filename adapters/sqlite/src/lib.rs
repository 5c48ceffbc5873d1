//! # twincell-sqlite
//!
//! The embedded event store: twincell's [`EventStore`] on one SQLite file
//! per cell (through `rusqlite` with SQLite compiled in, so it needs no
//! system library), for a laptop, an edge site or a CI box — and the local
//! counterpart of DynamoDB Streams and the Cosmos DB change feed, so a cell
//! on it publishes its own events the way its cloud counterparts do.
//!
//! ## The file
//! - `events`: one row per event, keyed by `(kind, aggregate, origin,
//!   version)` (unique), holding the event's JSON, with `seq`, its
//!   position in the **change feed**: assigned on commit, in commit order,
//!   never reused, with no gap (a rolled-back write takes its numbers back
//!   with it). An index on `(origin, seq)` serves a resync's listing of one
//!   origin's events.
//! - `snapshots`: each stream's latest snapshot, apart from the events, so
//!   a snapshot never appears in the feed, a load or a listing.
//! - `feed_checkpoints`: how far each feed reader has committed (the local
//!   counterpart of the Functions host's lease container).
//! - `PRAGMA user_version` is the schema version ([`SCHEMA_VERSION`]). An
//!   older file is migrated forward when it is opened, in one transaction
//!   per step; a file written by a newer twincell is refused
//!   ([`OpenError::NewerSchema`]), so the cell does not start on it.
//!
//! [`FeedPublisher`] publishes a cell's own events from its feed through
//! the same publish path as the clouds' replicators.
//!
//! ## Durability
//! The file is in WAL mode with `synchronous = FULL`: a commit returns only
//! after the write-ahead log is flushed to the disk (fsync), and an append
//! is acknowledged only after its commit. So an acknowledged append
//! survives the process being killed at any point (`tests/crash.rs` kills a
//! writer with SIGKILL over and over and checks), and, on a disk that
//! honours fsync, a power loss too; an append that was not acknowledged is
//! either whole or absent, never partial. SQLite checkpoints the WAL into
//! the main file on its own (every 1 000 pages, its default), which never
//! drops a committed transaction. `NORMAL` would be faster and would still
//! survive a process kill, but could lose the last commits on a power loss:
//! a payment acknowledged and then forgotten.
//!
//! ## Threads
//! SQLite calls block, so none runs on a tokio worker: one dedicated thread
//! owns the store's connection and runs every operation, taking each group
//! of operations waiting into one transaction with one commit
//! (`worker.rs`). One thread rather than `spawn_blocking` over a pool:
//! SQLite lets one connection write at a time anyway, a single connection
//! needs no locking between readers and writers and never waits on its own
//! busy timeout, feed positions are in commit order by construction, and
//! grouping lets one fsync serve many appends. A store value is a handle:
//! clones share the thread, which ends when the last one is dropped.
//!
//! ## Failures
//! A file that cannot be read or written (corrupt, read-only, the disk
//! full, locked by another process past 5 s) makes every operation answer
//! [`StoreError::Unavailable`] with SQLite's reason, which the cell logs
//! and answers as 503 + `Retry-After`; a failed operation rolls back to its
//! savepoint and a failed commit leaves the file as it was, so nothing
//! committed is lost, and the store serves again once the file can be used.
//! A file that cannot be opened at start is tried again with every
//! operation.

mod ops;
pub mod publisher;
mod schema;
#[cfg(feature = "test-util")]
pub mod testing;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;
use twincell_core::{
    AggregateId, CellId, EventPage, EventStore, Listing, RecordedEvent, ReplicatedApply, Snapshot,
    StoreError, StreamId, check_batch, check_event_size, snapshot_parts,
};

pub use publisher::{FeedPublisher, PUBLISHER_READER};
pub use schema::SCHEMA_VERSION;

use ops::Row;
use worker::{Job, Reply, in_savepoint};

/// Why a store file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The file was written by a newer twincell.
    #[error(
        "{path} was written by a newer twincell (schema version {found}); this build reads schema versions up to {SCHEMA_VERSION}: run a newer cell on it, or point TWINCELL_SQLITE_PATH at another file"
    )]
    NewerSchema {
        /// The file.
        path: String,
        /// The schema version it holds.
        found: i64,
    },
    /// The connection thread could not be started.
    #[error("{path}: the store's thread could not be started: {reason}")]
    Thread {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One committed event of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    /// Its position: 1 for the file's first event, then one more for each.
    pub seq: u64,
    /// The event.
    pub event: RecordedEvent,
}

/// [`EventStore`] on one SQLite file (see the [crate docs](crate)).
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
}

impl SqliteEventStore {
    /// Opens (or creates) the store at `path`, on its own thread. A file
    /// that cannot be used yet (a missing directory, a read-only or full
    /// disk, not a database) is not refused: the store answers unavailable
    /// and tries again with each operation, and the cause is logged.
    ///
    /// # Errors
    /// [`OpenError::NewerSchema`] for a file written by a newer twincell,
    /// [`OpenError::Thread`] when no thread can be started.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let (jobs, receiver) = mpsc::channel::<Job>();
        // The opening's outcome comes back through a oneshot, so the caller
        // awaits it without blocking its executor.
        let (opened, opened_rx) = tokio::sync::oneshot::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("twincell-sqlite".to_owned())
            .spawn(move || worker::run(thread_path, receiver, opened))
            .map_err(|e| OpenError::Thread {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        match opened_rx.await {
            Ok(worker::Opened::Serving) => Ok(Self {
                inner: Arc::new(Inner { jobs, path }),
            }),
            Ok(worker::Opened::Newer(found)) => Err(OpenError::NewerSchema { path: shown, found }),
            Err(_) => Err(OpenError::Thread {
                path: shown,
                reason: "the thread stopped while opening the file".to_owned(),
            }),
        }
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `op` on the connection thread, in a savepoint of its group's
    /// transaction, and answers once the group is committed.
    async fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |connection| -> Reply {
            let result = match connection {
                Ok(c) => in_savepoint(c, op),
                Err(e) => Err(e.clone()),
            };
            Box::new(move |committed| {
                let _ = answer.send(committed.and(result));
            })
        });
        self.inner.jobs.send(job).map_err(|_| {
            StoreError::Unavailable("sqlite: the store's thread has stopped".to_owned())
        })?;
        answered.await.map_err(|_| {
            StoreError::Unavailable("sqlite: the store's thread has stopped".to_owned())
        })?
    }

    /// Up to `limit` committed events after feed position `after`, in
    /// commit order: own and replicated events alike (a publisher keeps
    /// its own origin's), never snapshots.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file can't be read,
    /// [`StoreError::Corrupt`] when a row does not decode.
    pub async fn feed_after(&self, after: u64, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        let rows = self.call(move |c| ops::feed_after(c, after, limit)).await?;
        Ok(rows
            .into_iter()
            .map(|(seq, event)| FeedEvent { seq, event })
            .collect())
    }

    /// Publishes this cell's (`origin`'s) own events from the change feed
    /// through `publisher` until the process ends: the task a cell on
    /// SQLite runs in place of the clouds' replicators
    /// ([`FeedPublisher`], reader [`PUBLISHER_READER`]).
    pub fn publish_own_events(
        &self,
        origin: CellId,
        publisher: std::sync::Arc<dyn twincell_replication::Publish>,
    ) -> tokio::task::JoinHandle<()> {
        let feed = FeedPublisher::new(self.change_feed(PUBLISHER_READER), origin, publisher);
        tokio::spawn(feed.run(publisher::FEED_POLL, std::future::pending()))
    }

    /// How many of `origin`'s events follow `reader`'s checkpoint: the
    /// publisher's backlog, for `reader` [`PUBLISHER_READER`] and this
    /// cell's own origin.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file can't be read.
    pub async fn backlog(&self, reader: &str, origin: &CellId) -> Result<u64, StoreError> {
        let (reader, origin) = (reader.to_owned(), origin.as_str().to_owned());
        self.call(move |c| ops::backlog(c, &reader, &origin)).await
    }

    /// The feed position `reader` has committed (0 before its first).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file can't be read.
    pub async fn checkpoint(&self, reader: &str) -> Result<u64, StoreError> {
        let reader = reader.to_owned();
        self.call(move |c| ops::checkpoint(c, &reader)).await
    }

    /// Commits `reader`'s position at `seq`, durably; a position below the
    /// committed one changes nothing (a checkpoint never goes back).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file can't be written.
    pub async fn set_checkpoint(&self, reader: &str, seq: u64) -> Result<(), StoreError> {
        let reader = reader.to_owned();
        self.call(move |c| ops::set_checkpoint(c, &reader, seq))
            .await
    }

    /// The change feed as `reader` reads it: from its checkpoint on.
    #[must_use]
    pub fn change_feed(&self, reader: impl Into<String>) -> ChangeFeed {
        ChangeFeed {
            store: self.clone(),
            reader: reader.into(),
        }
    }
}

/// One reader of the change feed, with its own durable checkpoint: it
/// reads what follows its checkpoint, and moves the checkpoint once it has
/// done what it reads for (at least once: what it read but did not commit
/// is read again, also by its next process).
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    store: SqliteEventStore,
    reader: String,
}

impl ChangeFeed {
    /// Up to `limit` events after the reader's checkpoint, read with the
    /// checkpoint in one operation.
    ///
    /// # Errors
    /// As [`SqliteEventStore::feed_after`].
    pub async fn next(&self, limit: usize) -> Result<Vec<FeedEvent>, StoreError> {
        let reader = self.reader.clone();
        let rows = self
            .store
            .call(move |c| {
                let after = ops::checkpoint(c, &reader)?;
                ops::feed_after(c, after, limit)
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, event)| FeedEvent { seq, event })
            .collect())
    }

    /// Events of `origin` after the reader's checkpoint: what it still has
    /// to do.
    ///
    /// # Errors
    /// As [`SqliteEventStore::backlog`].
    pub async fn backlog(&self, origin: &CellId) -> Result<u64, StoreError> {
        self.store.backlog(&self.reader, origin).await
    }

    /// Commits the reader's position at `seq` (the last event it is done
    /// with).
    ///
    /// # Errors
    /// As [`SqliteEventStore::set_checkpoint`].
    pub async fn commit(&self, seq: u64) -> Result<(), StoreError> {
        self.store.set_checkpoint(&self.reader, seq).await
    }
}

impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        check_batch(stream, expected_version, events)?;
        let rows = events.iter().map(Row::of).collect::<Result<Vec<_>, _>>()?;
        self.call(move |c| ops::append(c, expected_version, &rows))
            .await
    }

    async fn load(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
        let aggregate = aggregate.clone();
        self.call(move |c| ops::load(c, &aggregate)).await
    }

    async fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &BTreeMap<CellId, u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let (aggregate, after) = (aggregate.clone(), after.clone());
        self.call(move |c| ops::load_after(c, &aggregate, &after))
            .await
    }

    async fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let stream = stream.clone();
        self.call(move |c| ops::read(c, &stream, version)).await
    }

    async fn apply_replicated(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        check_event_size(event)?;
        let row = Row::of(event)?;
        let event = event.clone();
        self.call(move |c| ops::apply_replicated(c, &event, &row))
            .await
    }

    async fn list_origin(&self, listing: &Listing) -> Result<EventPage, StoreError> {
        let listing = listing.clone();
        self.call(move |c| {
            ops::list_origin(
                c,
                &listing.origin,
                listing.since.map(|t| t.unix_millis()),
                listing.after.as_ref(),
                listing.limit,
            )
        })
        .await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        snapshot_parts(snapshot)?;
        let snapshot = snapshot.clone();
        self.call(move |c| ops::save_snapshot(c, &snapshot)).await
    }

    async fn load_snapshots(&self, aggregate: &AggregateId) -> Result<Vec<Snapshot>, StoreError> {
        let aggregate = aggregate.clone();
        self.call(move |c| ops::load_snapshots(c, &aggregate)).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.call(ops::check).await
    }
}

/// The write lock of a file, held by another connection than the cell's,
/// as a backup tool or an operator's shell holding a write transaction
/// would: while it is held, every operation of the cell's store (each
/// group of them begins by taking the write lock) waits SQLite's busy
/// timeout and then answers unavailable, `/health` included. Dropping it
/// lets go.
#[derive(Debug)]
pub struct WriteLock {
    // Held for its open transaction; closing the connection rolls it back.
    _connection: Connection,
}

impl WriteLock {
    /// Takes the write lock of the file at `path` (`BEGIN IMMEDIATE`).
    ///
    /// # Errors
    /// When the file can't be opened or another connection writes to it
    /// for longer than the busy timeout.
    pub fn take(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let connection = Connection::open(path.as_ref()).map_err(|e| ops::unavailable(&e))?;
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .and_then(|()| connection.execute_batch("BEGIN IMMEDIATE"))
            .map_err(|e| ops::unavailable(&e))?;
        Ok(Self {
            _connection: connection,
        })
    }
}
