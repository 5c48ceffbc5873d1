//! A thread-safe in-memory [`EventStore`]: for tests, examples and the local
//! development server. It holds the same contract as the durable stores.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::event::{AggregateId, AggregateType, RecordedEvent, StreamId};
use crate::ids::CellId;
use crate::ports::{
    EventPage, EventStore, ListCursor, Listing, ReplicatedApply, Snapshot, StoreError,
};
use crate::store_support::{check_batch, check_event_size, snapshot_parts};

/// Per aggregate, its events sorted by `(origin, version)`. A sorted vector,
/// not a map: most aggregates hold one event (a transaction), and a tree
/// node per aggregate would cost ten times the event itself. The outer map
/// stays a tree: a hash map's rehash of every aggregate under the lock cost
/// a tenfold p99 latency in the load test, for no throughput.
type Streams = BTreeMap<AggregateId, Vec<RecordedEvent>>;

fn key(e: &RecordedEvent) -> (&CellId, u64) {
    (e.origin(), e.version())
}

/// Events in a map behind one mutex; every operation is atomic.
#[derive(Debug, Default)]
pub struct InMemoryEventStore {
    streams: Mutex<Streams>,
    /// The latest snapshot per stream: apart from the events, as snapshots
    /// are in every store.
    snapshots: Mutex<BTreeMap<StreamId, Snapshot>>,
    #[cfg(any(test, feature = "test-util"))]
    unavailable: std::sync::atomic::AtomicBool,
}

impl InMemoryEventStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Streams> {
        // No code path panics while holding the lock, and every write is
        // complete before it is released, so a poisoned map is still sound.
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every stored event whose origin is `cell`, in `(aggregate, version)`
    /// order: what that cell would publish for replication.
    #[must_use]
    pub fn events_from(&self, cell: &CellId) -> Vec<RecordedEvent> {
        self.lock()
            .values()
            .flatten()
            .filter(|e| e.origin() == cell)
            .cloned()
            .collect()
    }

    fn lock_snapshots(&self) -> MutexGuard<'_, BTreeMap<StreamId, Snapshot>> {
        // As for the events: every write is whole before the lock is released.
        self.snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many snapshots are stored.
    #[must_use]
    pub fn snapshot_count(&self) -> usize {
        self.lock_snapshots().len()
    }

    /// Deletes every snapshot: no answer may change.
    pub fn forget_snapshots(&self) {
        self.lock_snapshots().clear();
    }

    /// How many events are stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Whether nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(any(test, feature = "test-util"))]
    /// Makes every operation fail with [`StoreError::Unavailable`] until
    /// called again with `true` (tests of outage handling).
    pub fn set_available(&self, available: bool) {
        self.unavailable
            .store(!available, std::sync::atomic::Ordering::SeqCst);
    }

    fn ensure_available(&self) -> Result<(), StoreError> {
        #[cfg(any(test, feature = "test-util"))]
        if self.unavailable.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "in-memory store switched off".to_owned(),
            ));
        }
        Ok(())
    }

    fn append_now(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        self.ensure_available()?;
        check_batch(stream, expected_version, events)?;
        let mut streams = self.lock();
        let aggregate = streams.entry(stream.aggregate.clone()).or_default();
        // The origin's run ends where the first event of a later origin starts.
        let end = aggregate.partition_point(|e| e.origin() <= &stream.origin);
        let current = end
            .checked_sub(1)
            .and_then(|i| aggregate.get(i))
            .filter(|e| e.origin() == &stream.origin)
            .map_or(0, RecordedEvent::version);
        if current != expected_version {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected: expected_version,
            });
        }
        if aggregate.is_empty() {
            // Most aggregates (transactions) never hold more than their
            // first append; a vector's first growth would reserve room for
            // four events (600 bytes) where one is stored.
            aggregate.reserve_exact(events.len());
        }
        aggregate.splice(end..end, events.iter().cloned());
        Ok(())
    }

    fn save_snapshot_now(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.ensure_available()?;
        snapshot_parts(snapshot)?;
        let mut snapshots = self.lock_snapshots();
        let newer = snapshots
            .get(&snapshot.stream)
            .is_none_or(|stored| stored.version < snapshot.version);
        if newer {
            snapshots.insert(snapshot.stream.clone(), snapshot.clone());
        }
        Ok(())
    }

    fn load_snapshots_now(&self, aggregate: &AggregateId) -> Result<Vec<Snapshot>, StoreError> {
        self.ensure_available()?;
        Ok(self
            .lock_snapshots()
            .values()
            .filter(|s| &s.stream.aggregate == aggregate)
            .cloned()
            .collect())
    }

    fn load_now(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
        self.ensure_available()?;
        Ok(self.lock().get(aggregate).cloned().unwrap_or_default())
    }

    fn apply_now(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        self.ensure_available()?;
        check_event_size(event)?;
        let mut streams = self.lock();
        let aggregate = streams.entry(event.stream().aggregate.clone()).or_default();
        match aggregate.binary_search_by(|e| key(e).cmp(&key(event))) {
            Ok(i)
                if aggregate
                    .get(i)
                    .is_some_and(|stored| stored.same_fact(event)) =>
            {
                Ok(ReplicatedApply::AlreadyPresent)
            }
            Ok(_) => Err(StoreError::Diverged {
                stream: event.stream().clone(),
                version: event.version(),
            }),
            Err(i) => {
                if aggregate.is_empty() {
                    aggregate.reserve_exact(1);
                }
                aggregate.insert(i, event.clone());
                Ok(ReplicatedApply::Stored)
            }
        }
    }
}

/// Where a listing resumes: after this event of this aggregate.
type Position = (AggregateId, CellId, u64);

/// `m1:<aggregate type>:<aggregate id>:<origin>:<version>`; no part can
/// hold a `:`.
fn cursor_of(event: &RecordedEvent) -> ListCursor {
    let aggregate = &event.stream().aggregate;
    ListCursor::new(format!(
        "m1:{}:{}:{}:{}",
        aggregate.kind().as_str(),
        aggregate.id(),
        event.origin(),
        event.version()
    ))
}

fn parse_cursor(cursor: &ListCursor) -> Result<Position, StoreError> {
    let invalid = || StoreError::InvalidCursor(format!("{cursor:?} is not an in-memory cursor"));
    let mut parts = cursor.as_str().split(':');
    let (Some("m1"), Some(kind), Some(id), Some(origin), Some(version), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid());
    };
    let kind = AggregateType::parse(kind).ok_or_else(invalid)?;
    let aggregate = AggregateId::parse(kind, id).map_err(|_| invalid())?;
    let origin = CellId::new(origin).map_err(|_| invalid())?;
    let version = version.parse().map_err(|_| invalid())?;
    Ok((aggregate, origin, version))
}

impl InMemoryEventStore {
    /// Walks every aggregate in order (memory has no index to read): fine
    /// for the sizes a process holds.
    fn list_now(&self, listing: &Listing) -> Result<EventPage, StoreError> {
        self.ensure_available()?;
        let after = listing.after.as_ref().map(parse_cursor).transpose()?;
        let limit = listing.limit.max(1);
        let streams = self.lock();
        let range = match &after {
            Some((aggregate, ..)) => streams.range(aggregate.clone()..),
            None => streams.range(..),
        };
        let mut page = EventPage::default();
        for (aggregate, events) in range {
            for event in events {
                let resumed = after.as_ref().is_none_or(|(a, origin, version)| {
                    a != aggregate || (event.origin(), event.version()) > (origin, *version)
                });
                let wanted = event.origin() == &listing.origin
                    && listing
                        .since
                        .is_none_or(|since| event.recorded_at() >= since);
                if !(resumed && wanted) {
                    continue;
                }
                if page.events.len() == limit {
                    page.next = page.events.last().map(cursor_of);
                    return Ok(page);
                }
                page.events.push(event.clone());
            }
        }
        Ok(page)
    }
}

impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        self.append_now(stream, expected_version, events)
    }

    async fn load(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
        self.load_now(aggregate)
    }

    async fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &BTreeMap<CellId, u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.ensure_available()?;
        let streams = self.lock();
        let Some(events) = streams.get(aggregate) else {
            return Ok(Vec::new());
        };
        let mut newer = Vec::new();
        for (origin, version) in after {
            // Events sort by (origin, version): one range per origin.
            let start = events.partition_point(|e| (e.origin(), e.version()) <= (origin, *version));
            newer.extend(
                events
                    .get(start..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|e| e.origin() == origin)
                    .cloned(),
            );
        }
        Ok(newer)
    }

    async fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        self.ensure_available()?;
        let streams = self.lock();
        let Some(events) = streams.get(&stream.aggregate) else {
            return Ok(None);
        };
        let found = events
            .binary_search_by(|e| (e.origin(), e.version()).cmp(&(&stream.origin, version)))
            .ok()
            .and_then(|i| events.get(i))
            .cloned();
        Ok(found)
    }

    async fn apply_replicated(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        self.apply_now(event)
    }

    async fn list_origin(&self, listing: &Listing) -> Result<EventPage, StoreError> {
        self.list_now(listing)
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.save_snapshot_now(snapshot)
    }

    async fn load_snapshots(&self, aggregate: &AggregateId) -> Result<Vec<Snapshot>, StoreError> {
        self.load_snapshots_now(aggregate)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.ensure_available()
    }
}
