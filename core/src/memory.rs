//! A thread-safe in-memory [`EventStore`]: for tests, examples and the local
//! development server. It holds the same contract as the durable stores.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::event::{AggregateId, RecordedEvent, StreamId};
use crate::ids::CellId;
use crate::ports::{EventStore, ReplicatedApply, StoreError};

type Streams = BTreeMap<AggregateId, BTreeMap<(CellId, u64), RecordedEvent>>;

/// Events in a map behind one mutex; every operation is atomic.
#[derive(Debug, Default)]
pub struct InMemoryEventStore {
    streams: Mutex<Streams>,
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
            .flat_map(|stream| stream.values())
            .filter(|e| e.origin() == cell)
            .cloned()
            .collect()
    }

    /// How many events are stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().values().map(BTreeMap::len).sum()
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
        let mut streams = self.lock();
        let aggregate = streams.entry(stream.aggregate.clone()).or_default();
        let current = aggregate
            .range((stream.origin.clone(), 0)..=(stream.origin.clone(), u64::MAX))
            .next_back()
            .map_or(0, |((_, v), _)| *v);
        if current != expected_version {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected: expected_version,
            });
        }
        for e in events {
            aggregate.insert((stream.origin.clone(), e.version()), e.clone());
        }
        Ok(())
    }

    fn load_now(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
        self.ensure_available()?;
        Ok(self
            .lock()
            .get(aggregate)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default())
    }

    fn apply_now(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        self.ensure_available()?;
        let mut streams = self.lock();
        let aggregate = streams.entry(event.stream().aggregate.clone()).or_default();
        let key = (event.origin().clone(), event.version());
        match aggregate.get(&key) {
            Some(stored) if stored == event => Ok(ReplicatedApply::AlreadyPresent),
            Some(_) => Err(StoreError::Diverged {
                stream: event.stream().clone(),
                version: event.version(),
            }),
            None => {
                aggregate.insert(key, event.clone());
                Ok(ReplicatedApply::Stored)
            }
        }
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

    async fn apply_replicated(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        self.apply_now(event)
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.ensure_available()
    }
}
