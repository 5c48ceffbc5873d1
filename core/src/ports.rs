//! Ports: what the core needs from the outside world. Stores are the only
//! port with several real implementations (memory, DynamoDB, Cosmos DB);
//! time and ids are tiny traits so tests and contract runs are deterministic.

use std::future::Future;

use uuid::Uuid;

use crate::event::{AggregateId, RecordedEvent, StreamId};
use crate::ids::CellId;
use crate::timestamp::Timestamp;

/// What became of a replicated event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicatedApply {
    /// It was new and is now stored.
    Stored,
    /// The identical event was already stored: nothing changed.
    AlreadyPresent,
}

/// Why a store operation failed. No backend type crosses this boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stream's version is not the expected one; nothing was written.
    #[error("stream {stream} is not at version {expected}")]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// The version the writer expected.
        expected: u64,
    },
    /// A replicated event differs from the one stored at its version.
    #[error("replicated event {stream} v{version} differs from the stored one")]
    Diverged {
        /// The stream.
        stream: StreamId,
        /// The version.
        version: u64,
    },
    /// The batch is not a run of events of `stream` numbered from
    /// `expected_version + 1`, or is empty; nothing was written.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// An event is larger than the backend can store in one item.
    #[error("event too large: {0}")]
    TooLarge(String),
    /// The backend cannot be reached or refused for load reasons. For an
    /// append, the write may or may not have happened: reload to find out.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back as events.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A listing cursor this store did not make (or made for another
    /// listing); nothing was read.
    #[error("invalid listing cursor: {0}")]
    InvalidCursor(String),
}

impl StoreError {
    /// The kind, as a metric dimension names it (`conflict`, `unavailable` …).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conflict { .. } => "conflict",
            Self::Diverged { .. } => "diverged",
            Self::InvalidBatch(_) => "invalid_batch",
            Self::TooLarge(_) => "too_large",
            Self::Unavailable(_) => "unavailable",
            Self::Corrupt(_) => "corrupt",
            Self::InvalidCursor(_) => "invalid_cursor",
        }
    }
}

/// Where a listing of one origin's events ([`EventStore::list_origin`])
/// resumes. Opaque text that only the kind of store that made it reads, and
/// valid in another process later: a resync can stop and continue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListCursor(String);

impl ListCursor {
    /// Wraps cursor text (from a page's `next`, possibly stored elsewhere in
    /// between). The store checks it when it is used.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text, to store or send.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ListCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a listing of one origin's events covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The cell whose events are listed.
    pub origin: CellId,
    /// Only events recorded at or after this instant (all when `None`).
    pub since: Option<Timestamp>,
    /// Resume after this cursor (from the start when `None`).
    pub after: Option<ListCursor>,
    /// The most events one page may hold (at least 1).
    pub limit: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventPage {
    /// Events of the listed origin, in no particular order.
    pub events: Vec<RecordedEvent>,
    /// Where the next page starts; `None` when the listing is complete.
    pub next: Option<ListCursor>,
}

/// The folded state of one stream at one version, saved so that a later
/// load folds only the events after it. Derived, local data: never the
/// source of truth, never replicated, never read as events; deleting every
/// snapshot changes no answer. The `body` is the core's encoding of the
/// state and `format` its version: a reader that does not know the format
/// ignores the snapshot and folds from the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream whose state this is.
    pub stream: StreamId,
    /// The last version of `stream` folded into it.
    pub version: u64,
    /// The encoding of `body`.
    pub format: u32,
    /// The encoded state.
    pub body: String,
}

/// The largest snapshot body, in bytes of its JSON string encoding
/// (quotes escaped). A store writes a snapshot atomically in parts of at
/// most [`SNAPSHOT_PART_BYTES`]: at most five DynamoDB items in one
/// `TransactWriteItems` (4 MB), or five Cosmos DB documents in one
/// transactional batch (2 MB). A state that encodes larger is not
/// snapshotted; its loads fold from the last snapshot that fit.
pub const MAX_SNAPSHOT_BYTES: usize = 1024 * 1024;

/// The largest part of a snapshot body, in bytes of its JSON string
/// encoding: within a DynamoDB item (400 KB) and a Cosmos DB document
/// (2 MB) with room for its keys.
pub const SNAPSHOT_PART_BYTES: usize = 256 * 1024;

/// The most parts one snapshot splits into. Parts end on a character
/// boundary, so all but the last hold at least `SNAPSHOT_PART_BYTES − 5`
/// bytes (the longest escaped character is six).
pub const MAX_SNAPSHOT_PARTS: usize = 5;

const _: () = assert!(MAX_SNAPSHOT_BYTES.div_ceil(SNAPSHOT_PART_BYTES - 5) <= MAX_SNAPSHOT_PARTS);

/// An append-only, per-stream versioned event log.
///
/// Every method's `# Errors` sentences are a behaviour contract: the shared
/// store contract suite checks them against every implementation.
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream` if the stream's current version (its
    /// highest stored version, 0 when empty) is `expected_version`. The events
    /// must belong to `stream` and be numbered `expected_version + 1`,
    /// `expected_version + 2`, … in order. All are stored or none.
    ///
    /// # Errors
    /// - MUST return [`StoreError::Conflict`] when the version moved, and
    ///   then write nothing; of concurrent appends at one version exactly one
    ///   succeeds.
    /// - MUST return [`StoreError::InvalidBatch`] for an empty batch, an
    ///   event of another stream, or a version out of sequence, and write
    ///   nothing.
    /// - MUST return [`StoreError::TooLarge`] for more than
    ///   [`MAX_EVENTS_PER_APPEND`] events, an event over [`MAX_EVENT_BYTES`]
    ///   or one the backend cannot hold, and write nothing.
    /// - MUST return [`StoreError::Unavailable`] when the backend can't be
    ///   reached; a partial write MUST never be visible.
    fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every stored event of every stream of `aggregate` (all origin cells),
    /// sorted by `(origin, version)`, read with strong consistency, however
    /// many pages the backend needs. Replicated streams may have gaps.
    ///
    /// # Errors
    /// - MUST return [`StoreError::Unavailable`] when the backend can't be
    ///   reached.
    /// - MUST return [`StoreError::Corrupt`] when stored data does not decode.
    fn load(
        &self,
        aggregate: &AggregateId,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The events of `aggregate` newer than what the caller holds: for
    /// each `(origin, version)` of `after`, that origin's stored events
    /// with a higher version, sorted by `(origin, version)`, read with
    /// strong consistency, however many pages the backend needs. Origins
    /// not in `after` are not read: a caller folding every cell lists every
    /// cell (version 0 for one it holds nothing of). A store reads only
    /// what is returned, so the cost follows what is new, not the history.
    ///
    /// # Errors
    /// - MUST return exactly the stored events of the listed origins above
    ///   their versions (a replicated stream's gaps stay gaps), and nothing
    ///   of other origins or other aggregates.
    /// - MUST return [`StoreError::Unavailable`] when the backend can't be
    ///   reached and [`StoreError::Corrupt`] when stored data does not decode.
    fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &std::collections::BTreeMap<CellId, u64>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The event stored at `(stream, version)`, read with strong
    /// consistency; `None` when there is none.
    ///
    /// # Errors
    /// - MUST return `Ok(None)` for a version that is not stored, and the
    ///   stored event, equal to what was written, otherwise.
    /// - MUST return [`StoreError::Unavailable`] when the backend can't be
    ///   reached and [`StoreError::Corrupt`] when stored data does not decode.
    fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, StoreError>> + Send;

    /// Stores an event another cell wrote, at its own `(stream, version)`,
    /// even if earlier versions have not arrived yet.
    ///
    /// # Errors
    /// - MUST return `Ok(`[`ReplicatedApply::AlreadyPresent`]`)` when the
    ///   identical event is already stored, and change nothing.
    /// - MUST return [`StoreError::Diverged`] when a different event is
    ///   stored at that `(stream, version)`, and never overwrite it.
    /// - MUST return [`StoreError::TooLarge`] for an event over
    ///   [`MAX_EVENT_BYTES`], and write nothing.
    /// - MUST return [`StoreError::Unavailable`] when the backend can't be
    ///   reached.
    fn apply_replicated(
        &self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<ReplicatedApply, StoreError>> + Send;

    /// One page of the events whose origin is `listing.origin` (and, with
    /// `since`, that were recorded at or after it), for a resync: a cell
    /// re-sends its own events through the replication path after an outage
    /// longer than the transports keep them. Reads an index or feed of the
    /// origin's events, never a scan of everything stored.
    ///
    /// # Errors
    /// - Following `next` from no cursor until it is `None` MUST yield every
    ///   event of the origin (and `since`) stored before the listing began,
    ///   each exactly once, and no event of another origin. A page MUST hold
    ///   at most `limit` events; it may hold fewer, even none, while `next`
    ///   is `Some`.
    /// - A cursor MUST resume the listing where its page ended, also in
    ///   another process and with another store value on the same data.
    /// - MUST return [`StoreError::InvalidCursor`] for a cursor this kind of
    ///   store did not make.
    /// - MUST return [`StoreError::Unavailable`] when the backend can't be
    ///   reached and [`StoreError::Corrupt`] when stored data does not decode.
    fn list_origin(
        &self,
        listing: &Listing,
    ) -> impl Future<Output = Result<EventPage, StoreError>> + Send;

    /// Saves `snapshot` beside the events, all of it or nothing, unless a
    /// snapshot of the same stream at the same or a higher version is
    /// stored. Snapshots are local: a store never returns them as events
    /// nor lets them reach replication.
    ///
    /// # Errors
    /// - After `Ok`, [`load_snapshots`](Self::load_snapshots) MUST return
    ///   for the stream a snapshot of at least `snapshot.version`; saving
    ///   one at or below the stored version MUST change nothing.
    /// - MUST return [`StoreError::TooLarge`] for a body over
    ///   [`MAX_SNAPSHOT_BYTES`], and write nothing.
    /// - A snapshot MUST never appear in [`load`](Self::load),
    ///   [`load_after`](Self::load_after), [`read`](Self::read) or
    ///   [`list_origin`](Self::list_origin).
    /// - MUST return [`StoreError::Unavailable`] when the backend can't be
    ///   reached; a partly written snapshot MUST never be loaded.
    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest saved snapshot of each stream of `aggregate` that has
    /// one, in one round trip where the backend allows, sorted by origin.
    ///
    /// # Errors
    /// - MUST return each stream's snapshot equal to the one saved last
    ///   with the highest version, and none of other aggregates.
    /// - MUST return [`StoreError::Unavailable`] when the backend can't be
    ///   reached and [`StoreError::Corrupt`] when stored parts do not make
    ///   one snapshot.
    fn load_snapshots(
        &self,
        aggregate: &AggregateId,
    ) -> impl Future<Output = Result<Vec<Snapshot>, StoreError>> + Send;

    /// A cheap round trip proving the backend answers.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when it does not.
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A shared reference to a store is a store: several services (the cells
/// of a test, a tool) can work on one.
impl<S: EventStore + ?Sized> EventStore for &S {
    fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).append(stream, expected_version, events)
    }

    fn load(
        &self,
        aggregate: &AggregateId,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        (**self).load(aggregate)
    }

    fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &std::collections::BTreeMap<CellId, u64>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        (**self).load_after(aggregate, after)
    }

    fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, StoreError>> + Send {
        (**self).read(stream, version)
    }

    fn apply_replicated(
        &self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<ReplicatedApply, StoreError>> + Send {
        (**self).apply_replicated(event)
    }

    fn list_origin(
        &self,
        listing: &Listing,
    ) -> impl Future<Output = Result<EventPage, StoreError>> + Send {
        (**self).list_origin(listing)
    }

    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).save_snapshot(snapshot)
    }

    fn load_snapshots(
        &self,
        aggregate: &AggregateId,
    ) -> impl Future<Output = Result<Vec<Snapshot>, StoreError>> + Send {
        (**self).load_snapshots(aggregate)
    }

    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).check()
    }
}

/// The most events one append may hold. DynamoDB's `TransactWriteItems`
/// and Cosmos DB's transactional batch both stop at 100 operations; every
/// store refuses more, the in-memory one included, so a decision that one
/// store commits every store commits. The service never asks for more: a
/// cell that owes more reconcile events than this appends them in chunks.
pub const MAX_EVENTS_PER_APPEND: usize = 100;

/// The largest event, in bytes of its JSON encoding (the form stores keep
/// and replication carries). Below every limit on the way: a DynamoDB item
/// (400 KB, the event plus its keys), an Event Grid event (1 MB) and a
/// Cosmos DB document (2 MB), and small enough that a replication request
/// of 1 MB carries at least 15 events. No event of today's types comes
/// near it (the largest, a write-off with a 200-character reason, is under
/// 2 KB); the limit keeps a future event type from being committed in one
/// cell and refused by the other. Checked on every append and every
/// replicated apply.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The current time, and waiting.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;

    /// Waits `duration`: the service's backoff after losing a version race.
    /// Every clock says how it waits: [`SystemClock`](crate::SystemClock) really waits, on any
    /// executor ([`ThreadSleep`](crate::ThreadSleep)); a clock of an async runtime uses its timer
    /// (`TokioClock` in `twincell-http`); a test clock may choose not to.
    fn pause(&self, duration: std::time::Duration) -> impl Future<Output = ()> + Send;
}

/// New ids for transactions created without an idempotency key.
pub trait IdGenerator: Send + Sync {
    /// A new, unique UUID (version 7 in production).
    fn new_id(&self) -> Uuid;
}
