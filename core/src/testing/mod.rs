//! Deterministic stand-ins for the clock and the id generator, and a minimal
//! executor, for tests, benchmarks and contract runs. Only compiled with the
//! `test-util` feature.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use uuid::Uuid;

pub mod store_contract;

use crate::ports::{Clock, IdGenerator};
use crate::timestamp::Timestamp;

/// A clock that starts at a fixed instant and moves `step` milliseconds
/// forward every time it is read (0 for a frozen clock).
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
    step: i64,
}

impl ManualClock {
    /// Starts at `start` and advances `step` ms per read.
    #[must_use]
    pub fn new(start: Timestamp, step: i64) -> Self {
        Self {
            millis: AtomicI64::new(start.unix_millis()),
            step,
        }
    }

    /// Moves the clock by `millis`.
    pub fn advance(&self, millis: i64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let millis = self.millis.fetch_add(self.step, Ordering::SeqCst);
        Timestamp::from_unix_millis(millis.clamp(0, Timestamp::MAX_MILLIS))
            .unwrap_or(Timestamp::EPOCH)
    }

    /// Does not wait: tests stay instant (the clock's own time is only
    /// moved by [`ManualClock::advance`] and its step).
    fn pause(&self, duration: std::time::Duration) -> impl std::future::Future<Output = ()> + Send {
        let _ = duration;
        std::future::ready(())
    }
}

/// Ids `00000000-0000-7000-8000-000000000001`, `…0002`, …: valid UUIDv7
/// layout, predictable values.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl SequentialIds {
    /// Starts after `offset` (so two cells can use disjoint ranges).
    #[must_use]
    pub fn starting_after(offset: u64) -> Self {
        Self {
            next: AtomicU64::new(offset),
        }
    }
}

impl IdGenerator for SequentialIds {
    fn new_id(&self) -> Uuid {
        let n = self.next.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
        Uuid::from_u128((0x7000_u128 << 64) | (0x8000_u128 << 48) | u128::from(n))
    }
}

/// Runs a future to completion on the current thread. For futures that are
/// ready at once or soon (the in-memory store); it spins on `Pending`.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// A store that counts what passes through it — the version conflicts it
/// reports and the events each kind of load returns — so a test can show a
/// race was really run, or how much a command read. With
/// [`yielding`](Self::yielding), every load yields once before answering,
/// as a network store does, so tasks interleave on one worker too. Clones
/// share the store and the counts (two services over one store).
#[derive(Debug)]
pub struct Counted<S> {
    inner: std::sync::Arc<S>,
    counts: std::sync::Arc<Counts>,
    yields: bool,
}

impl<S> Clone for Counted<S> {
    fn clone(&self) -> Self {
        Self {
            inner: std::sync::Arc::clone(&self.inner),
            counts: std::sync::Arc::clone(&self.counts),
            yields: self.yields,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    conflicts: AtomicU64,
    loaded: AtomicU64,
    loaded_after: AtomicU64,
    snapshots_saved: AtomicU64,
}

impl<S> Counted<S> {
    /// Counts around `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner: std::sync::Arc::new(inner),
            counts: std::sync::Arc::default(),
            yields: false,
        }
    }

    /// Yields once in every load.
    #[must_use]
    pub fn yielding(mut self) -> Self {
        self.yields = true;
        self
    }

    /// The store counted.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Version conflicts reported by appends.
    pub fn conflicts(&self) -> u64 {
        self.counts.conflicts.load(Ordering::SeqCst)
    }

    /// Events returned by `load` and by `load_after`, so far.
    pub fn reads(&self) -> (u64, u64) {
        (
            self.counts.loaded.load(Ordering::SeqCst),
            self.counts.loaded_after.load(Ordering::SeqCst),
        )
    }

    /// Snapshots the store accepted.
    pub fn snapshots_saved(&self) -> u64 {
        self.counts.snapshots_saved.load(Ordering::SeqCst)
    }

    async fn pause(&self) {
        if self.yields {
            YieldOnce(false).await;
        }
    }
}

/// Pending once (waking itself), then ready.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn count(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::SeqCst);
}

impl<S: crate::ports::EventStore> crate::ports::EventStore for Counted<S> {
    async fn append(
        &self,
        stream: &crate::event::StreamId,
        expected_version: u64,
        events: &[crate::event::RecordedEvent],
    ) -> Result<(), crate::ports::StoreError> {
        let result = self.inner.append(stream, expected_version, events).await;
        if matches!(result, Err(crate::ports::StoreError::Conflict { .. })) {
            count(&self.counts.conflicts, 1);
        }
        result
    }

    async fn load(
        &self,
        aggregate: &crate::event::AggregateId,
    ) -> Result<Vec<crate::event::RecordedEvent>, crate::ports::StoreError> {
        let events = self.inner.load(aggregate).await?;
        count(&self.counts.loaded, events.len());
        self.pause().await;
        Ok(events)
    }

    async fn load_after(
        &self,
        aggregate: &crate::event::AggregateId,
        after: &std::collections::BTreeMap<crate::ids::CellId, u64>,
    ) -> Result<Vec<crate::event::RecordedEvent>, crate::ports::StoreError> {
        let events = self.inner.load_after(aggregate, after).await?;
        count(&self.counts.loaded_after, events.len());
        self.pause().await;
        Ok(events)
    }

    async fn read(
        &self,
        stream: &crate::event::StreamId,
        version: u64,
    ) -> Result<Option<crate::event::RecordedEvent>, crate::ports::StoreError> {
        self.inner.read(stream, version).await
    }

    async fn apply_replicated(
        &self,
        event: &crate::event::RecordedEvent,
    ) -> Result<crate::ports::ReplicatedApply, crate::ports::StoreError> {
        self.inner.apply_replicated(event).await
    }

    async fn list_origin(
        &self,
        listing: &crate::ports::Listing,
    ) -> Result<crate::ports::EventPage, crate::ports::StoreError> {
        self.inner.list_origin(listing).await
    }

    async fn save_snapshot(
        &self,
        snapshot: &crate::ports::Snapshot,
    ) -> Result<(), crate::ports::StoreError> {
        self.inner.save_snapshot(snapshot).await?;
        count(&self.counts.snapshots_saved, 1);
        Ok(())
    }

    async fn load_snapshots(
        &self,
        aggregate: &crate::event::AggregateId,
    ) -> Result<Vec<crate::ports::Snapshot>, crate::ports::StoreError> {
        self.inner.load_snapshots(aggregate).await
    }

    async fn check(&self) -> Result<(), crate::ports::StoreError> {
        self.inner.check().await
    }
}
