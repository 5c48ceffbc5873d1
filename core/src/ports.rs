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

/// The bytes `c` takes inside a JSON string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Splits `snapshot.body` into the parts a store writes: each at most
/// [`SNAPSHOT_PART_BYTES`] in its JSON string encoding, ending on a
/// character boundary, at least one (an empty body is one empty part).
///
/// # Errors
/// [`StoreError::TooLarge`] when the body is over [`MAX_SNAPSHOT_BYTES`].
pub fn snapshot_parts(snapshot: &Snapshot) -> Result<Vec<&str>, StoreError> {
    let body = snapshot.body.as_str();
    let mut parts = Vec::new();
    let (mut start, mut size, mut total) = (0usize, 0usize, 0usize);
    for (at, c) in body.char_indices() {
        let n = escaped_len(c);
        total += n;
        if total > MAX_SNAPSHOT_BYTES {
            return Err(StoreError::TooLarge(format!(
                "the snapshot of {} v{} is over {MAX_SNAPSHOT_BYTES} bytes",
                snapshot.stream, snapshot.version
            )));
        }
        if size + n > SNAPSHOT_PART_BYTES {
            parts.push(body.get(start..at).unwrap_or_default());
            (start, size) = (at, 0);
        }
        size += n;
    }
    parts.push(body.get(start..).unwrap_or_default());
    Ok(parts)
}

/// One stored part of a snapshot, as a store reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPart<'a> {
    /// Its place, from 0.
    pub index: usize,
    /// How many parts its save wrote.
    pub count: usize,
    /// The snapshot's version.
    pub version: u64,
    /// The snapshot's format.
    pub format: u32,
    /// Its share of the body.
    pub text: &'a str,
}

/// Puts the snapshot of `stream` back together from its stored parts, in
/// any order, possibly with stale parts of an earlier, larger save: the
/// parts of part 0's save are taken. `None` when there is no part 0.
///
/// # Errors
/// [`StoreError::Corrupt`] when a part of that save is missing.
pub fn join_snapshot_parts<'a>(
    stream: &StreamId,
    parts: impl IntoIterator<Item = SnapshotPart<'a>>,
) -> Result<Option<Snapshot>, StoreError> {
    let parts: Vec<SnapshotPart<'a>> = parts.into_iter().collect();
    let Some(first) = parts.iter().find(|p| p.index == 0) else {
        return Ok(None);
    };
    let mut body = String::new();
    for index in 0..first.count {
        let part = parts
            .iter()
            .find(|p| p.index == index && p.version == first.version)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "snapshot of {stream} v{} lacks part {index} of {}",
                    first.version, first.count
                ))
            })?;
        body.push_str(part.text);
    }
    Ok(Some(Snapshot {
        stream: stream.clone(),
        version: first.version,
        format: first.format,
        body,
    }))
}

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

/// Counts bytes written, so an event's encoded size is known without
/// keeping the encoding.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size of `event`'s JSON encoding, in bytes.
#[must_use]
pub fn encoded_size(event: &RecordedEvent) -> usize {
    let mut count = ByteCount(0);
    // Serializing into a counter only fails if serialization itself does,
    // which no event does; such an event would count as too large.
    match serde_json::to_writer(&mut count, event) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Refuses an event over [`MAX_EVENT_BYTES`].
///
/// # Errors
/// [`StoreError::TooLarge`] naming the event and its size.
pub fn check_event_size(event: &RecordedEvent) -> Result<(), StoreError> {
    check_size_within(event, MAX_EVENT_BYTES)
}

fn check_size_within(event: &RecordedEvent, limit: usize) -> Result<(), StoreError> {
    let size = encoded_size(event);
    if size > limit {
        return Err(StoreError::TooLarge(format!(
            "event {} v{} is {size} bytes; an event holds at most {limit}",
            event.stream(),
            event.version()
        )));
    }
    Ok(())
}

/// Checks the rules of [`EventStore::append`] that need no store: `events`
/// is a non-empty run of events of `stream` numbered from
/// `expected_version + 1`, at most [`MAX_EVENTS_PER_APPEND`] of them, each
/// within [`MAX_EVENT_BYTES`]. Every store applies it before writing.
///
/// # Errors
/// [`StoreError::InvalidBatch`] saying what is wrong with the shape;
/// [`StoreError::TooLarge`] for too many or too large events.
pub fn check_batch(
    stream: &StreamId,
    expected_version: u64,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidBatch("no events".to_owned()));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(StoreError::TooLarge(format!(
            "{} events in one append; at most {MAX_EVENTS_PER_APPEND} are committed atomically",
            events.len()
        )));
    }
    for (offset, e) in (1u64..).zip(events) {
        if e.stream() != stream {
            return Err(StoreError::InvalidBatch(format!(
                "event of {} in batch for {stream}",
                e.stream()
            )));
        }
        if Some(e.version()) != expected_version.checked_add(offset) {
            return Err(StoreError::InvalidBatch(format!(
                "version {} out of sequence",
                e.version()
            )));
        }
        check_event_size(e)?;
    }
    Ok(())
}

/// How a backend's create-if-absent write failed, before the adapter knows
/// which [`StoreError`] it is: stores whose writes are conditional creates
/// (DynamoDB, Cosmos DB) map their backend's errors to this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFailure {
    /// An item at that key already exists: the version is taken.
    Taken,
    /// Over the backend's size limits.
    TooLarge(String),
    /// The event can't be written as the backend's item.
    Corrupt(String),
    /// Unreachable, throttled, 5xx, or refused for another reason.
    Unavailable(String),
}

impl WriteFailure {
    /// The port's error for an append to `stream` at `expected`.
    #[must_use]
    pub fn into_store_error(self, stream: &StreamId, expected: u64) -> StoreError {
        match self {
            Self::Taken => StoreError::Conflict {
                stream: stream.clone(),
                expected,
            },
            Self::TooLarge(m) => StoreError::TooLarge(m),
            Self::Corrupt(m) => StoreError::Corrupt(m),
            Self::Unavailable(m) => StoreError::Unavailable(m),
        }
    }
}

impl From<StoreError> for WriteFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge(m) => Self::TooLarge(m),
            StoreError::Corrupt(m) => Self::Corrupt(m),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// [`EventStore::apply_replicated`] for stores whose writes are
/// create-if-absent: `create` the event; when its version is taken,
/// `read_back` the stored one (strongly consistent) and compare.
///
/// # Errors
/// As [`EventStore::apply_replicated`]: `TooLarge` for an event over
/// [`MAX_EVENT_BYTES`] (nothing is sent), `Diverged` for a different stored
/// event, `Unavailable` when the backend fails or a taken version does not
/// read back.
pub async fn apply_by_create<R>(
    event: &RecordedEvent,
    create: impl Future<Output = Result<(), WriteFailure>>,
    read_back: impl FnOnce() -> R,
) -> Result<ReplicatedApply, StoreError>
where
    R: Future<Output = Result<Option<RecordedEvent>, StoreError>>,
{
    check_event_size(event)?;
    match create.await {
        Ok(()) => Ok(ReplicatedApply::Stored),
        Err(WriteFailure::Taken) => match read_back().await? {
            Some(stored) if &stored == event => Ok(ReplicatedApply::AlreadyPresent),
            Some(_) => Err(StoreError::Diverged {
                stream: event.stream().clone(),
                version: event.version(),
            }),
            None => Err(StoreError::Unavailable(format!(
                "{} v{} was reported stored but does not read back",
                event.stream(),
                event.version()
            ))),
        },
        Err(f) => Err(f.into_store_error(event.stream(), event.version().saturating_sub(1))),
    }
}

/// The current time, and waiting.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;

    /// Waits `duration`: the service's backoff after losing a version race.
    /// Every clock says how it waits: [`SystemClock`] really waits, on any
    /// executor ([`ThreadSleep`]); a clock of an async runtime uses its timer
    /// (`TokioClock` in `twincell-http`); a test clock may choose not to.
    fn pause(&self, duration: std::time::Duration) -> impl Future<Output = ()> + Send;
}

/// A wait that needs no async runtime: a thread sleeps until the deadline
/// and wakes the task. Written here because the core depends on no runtime
/// and no timer crate; a pause happens only after a lost version race, so a
/// short-lived thread per pause costs little next to the pause itself. When
/// no thread can be started, the wait ends at once (a backoff skipped, never
/// an error).
#[derive(Debug)]
pub struct ThreadSleep {
    deadline: std::time::Instant,
    shared: Option<std::sync::Arc<std::sync::Mutex<SleepState>>>,
}

#[derive(Debug, Default)]
struct SleepState {
    done: bool,
    waker: Option<std::task::Waker>,
}

impl ThreadSleep {
    /// A wait of `duration` from now.
    #[must_use]
    pub fn new(duration: std::time::Duration) -> Self {
        let now = std::time::Instant::now();
        Self {
            deadline: now.checked_add(duration).unwrap_or(now),
            shared: None,
        }
    }
}

impl Future for ThreadSleep {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::sync::{Arc, Mutex, PoisonError};
        use std::task::Poll;
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Poll::Ready(());
        }
        if let Some(shared) = &self.shared {
            let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if state.done {
                return Poll::Ready(());
            }
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let shared = Arc::new(Mutex::new(SleepState {
            done: false,
            waker: Some(cx.waker().clone()),
        }));
        let timer = Arc::clone(&shared);
        let started = std::thread::Builder::new()
            .name("twincell-pause".to_owned())
            .spawn(move || {
                std::thread::sleep(left);
                let waker = {
                    let mut state = timer.lock().unwrap_or_else(PoisonError::into_inner);
                    state.done = true;
                    state.waker.take()
                };
                if let Some(waker) = waker {
                    waker.wake();
                }
            });
        if started.is_err() {
            return Poll::Ready(());
        }
        self.shared = Some(shared);
        Poll::Pending
    }
}

/// New ids for transactions created without an idempotency key.
pub trait IdGenerator: Send + Sync {
    /// A new, unique UUID (version 7 in production).
    fn new_id(&self) -> Uuid;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        // A system clock outside 1970..=9999 is clamped rather than trusted.
        Timestamp::from_unix_millis(millis.clamp(0, Timestamp::MAX_MILLIS))
            .unwrap_or(Timestamp::EPOCH)
    }

    /// Really waits, whatever the executor ([`ThreadSleep`]).
    fn pause(&self, duration: std::time::Duration) -> impl Future<Output = ()> + Send {
        ThreadSleep::new(duration)
    }
}

/// Random, time-ordered UUIDv7 ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn new_id(&self) -> Uuid {
        Uuid::now_v7()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AggregateId, DomainEvent};
    use crate::ids::{AccountId, CellId, OrderId, Sku, TransactionId};
    use crate::money::{Currency, Money};
    use crate::quantity::Quantity;
    use crate::write_off_reason::WriteOffReason;

    /// Wakes the thread that runs [`park_on`].
    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Runs `future` on this thread, polling it only when woken (or after
    /// 5 s, so a lost wake-up fails instead of hanging); gives the output
    /// and the number of polls.
    fn park_on<F: Future>(future: F) -> (F::Output, u32) {
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        let mut polls = 0;
        loop {
            polls += 1;
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return (out, polls);
            }
            std::thread::park_timeout(std::time::Duration::from_secs(5));
        }
    }

    #[test]
    fn the_system_clock_waits_and_wakes_the_task_itself() {
        let pause = std::time::Duration::from_millis(40);
        let started = std::time::Instant::now();
        let ((), polls) = park_on(SystemClock.pause(pause));
        let waited = started.elapsed();
        assert!(waited >= pause, "waited only {waited:?}");
        // Woken by its timer thread, not found ready by a later poll: a
        // spurious unpark may add a poll, a missing wake-up would show as a
        // 5 s wait.
        assert!(polls <= 3, "{polls} polls");
        assert!(
            waited < std::time::Duration::from_secs(5),
            "no wake-up: {waited:?}"
        );
        let ((), polls) = park_on(ThreadSleep::new(std::time::Duration::ZERO));
        assert_eq!(polls, 1, "no wait is ready at once");
    }

    fn stream(sku: &str) -> StreamId {
        StreamId::new(
            AggregateId::inventory(&Sku::new(sku).unwrap()),
            CellId::new("c".repeat(32)).unwrap(),
        )
    }

    fn received(stream: &StreamId, version: u64) -> RecordedEvent {
        RecordedEvent::new(
            stream.clone(),
            version,
            Timestamp::from_unix_millis(Timestamp::MAX_MILLIS).unwrap(),
            DomainEvent::StockReceived {
                quantity: Quantity::new(1_000_000).unwrap(),
            },
        )
        .unwrap()
    }

    #[test]
    fn the_largest_event_of_every_type_fits_the_limit_many_times_over() {
        let long = "x".repeat(64);
        let s = stream(&long);
        let order = OrderId::new(&long).unwrap();
        let cell = CellId::new("d".repeat(32)).unwrap();
        let q = Quantity::new(1_000_000).unwrap();
        // 200 characters of four bytes each: the longest reason in bytes.
        let reason = WriteOffReason::new("\u{1D11E}".repeat(200)).unwrap();
        let events = [
            DomainEvent::StockWrittenOff {
                quantity: q,
                reason,
            },
            DomainEvent::ReservationReleased {
                order_id: order.clone(),
                quantity: q,
                cause: crate::event::ReleaseCause::Duplicate {
                    winner: cell.clone(),
                },
            },
            DomainEvent::AllocationReceived {
                from_cell: cell,
                transfer_version: u64::MAX,
                quantity: q,
            },
        ];
        for event in events {
            let e = RecordedEvent::new(s.clone(), u64::MAX, Timestamp::EPOCH, event).unwrap();
            assert!(encoded_size(&e) < 2_048, "{}", encoded_size(&e));
            assert_eq!(check_event_size(&e), Ok(()));
        }
        let tx = RecordedEvent::new(
            StreamId::new(
                AggregateId::transaction(TransactionId::from_uuid(uuid::Uuid::max())),
                CellId::new("aws").unwrap(),
            ),
            1,
            Timestamp::EPOCH,
            DomainEvent::TransactionCreated {
                transaction_id: TransactionId::from_uuid(uuid::Uuid::max()),
                account_id: AccountId::new(&long).unwrap(),
                money: Money::parse("999999999999.999", Currency::from_code("BHD").unwrap())
                    .unwrap(),
            },
        )
        .unwrap();
        assert!(encoded_size(&tx) < 2_048);
    }

    #[test]
    fn encoded_size_is_the_length_of_the_json() {
        let e = received(&stream("sku"), 7);
        assert_eq!(encoded_size(&e), serde_json::to_vec(&e).unwrap().len());
    }

    #[test]
    fn an_event_over_the_limit_is_too_large() {
        let e = received(&stream("sku"), 1);
        let size = encoded_size(&e);
        assert_eq!(check_size_within(&e, size), Ok(()));
        let refused = check_size_within(&e, size - 1);
        assert!(
            matches!(&refused, Err(StoreError::TooLarge(m)) if m.contains(&format!("is {size} bytes"))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_batch_holds_at_most_a_hundred_events() {
        let s = stream("sku");
        let events: Vec<_> = (1..=101).map(|v| received(&s, v)).collect();
        assert_eq!(check_batch(&s, 0, &events[..100]), Ok(()));
        assert!(matches!(
            check_batch(&s, 0, &events),
            Err(StoreError::TooLarge(m)) if m.contains("101 events")
        ));
    }
}
