//! Ports: what the core needs from the outside world. Stores are the only
//! port with several real implementations (memory, DynamoDB, Cosmos DB);
//! time and ids are tiny traits so tests and contract runs are deterministic.

use std::future::Future;

use uuid::Uuid;

use crate::event::{AggregateId, RecordedEvent, StreamId};
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
    /// - MUST return [`StoreError::TooLarge`] for an event the backend cannot
    ///   hold, and write nothing.
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

    /// Stores an event another cell wrote, at its own `(stream, version)`,
    /// even if earlier versions have not arrived yet.
    ///
    /// # Errors
    /// - MUST return `Ok(`[`ReplicatedApply::AlreadyPresent`]`)` when the
    ///   identical event is already stored, and change nothing.
    /// - MUST return [`StoreError::Diverged`] when a different event is
    ///   stored at that `(stream, version)`, and never overwrite it.
    /// - MUST return [`StoreError::Unavailable`] when the backend can't be
    ///   reached.
    fn apply_replicated(
        &self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<ReplicatedApply, StoreError>> + Send;

    /// A cheap round trip proving the backend answers.
    ///
    /// # Errors
    /// MUST return [`StoreError::Unavailable`] when it does not.
    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Checks the shape rule of [`EventStore::append`]: `events` is a
/// non-empty run of events of `stream` numbered from
/// `expected_version + 1`. Every store applies it before writing.
///
/// # Errors
/// [`StoreError::InvalidBatch`] saying what is wrong.
pub fn check_batch(
    stream: &StreamId,
    expected_version: u64,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidBatch("no events".to_owned()));
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
/// As [`EventStore::apply_replicated`]: `Diverged` for a different stored
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
    /// The default does not wait (the core has no timer; tests stay
    /// instant); clocks of an async runtime sleep.
    fn pause(&self, duration: std::time::Duration) -> impl Future<Output = ()> + Send {
        let _ = duration;
        std::future::ready(())
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
}

/// Random, time-ordered UUIDv7 ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn new_id(&self) -> Uuid {
        Uuid::now_v7()
    }
}
