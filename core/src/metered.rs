//! A store that counts and times its calls on the `metrics` facade, around
//! any other: what an operator needs to see a store slow down or fail
//! before the cells' answers do. The binaries install the recorder (the
//! cells write CloudWatch EMF lines); without one, recording does nothing.
//!
//! | metric | unit | dimensions |
//! |---|---|---|
//! | [`STORE_CALLS`] | Count | `op` (`append`, `load`, …) |
//! | [`STORE_ERRORS`] | Count | `op`, `error` ([`StoreError::kind`]; a `conflict` is a lost race, retried) |
//! | [`STORE_LATENCY`] | Microseconds | `op` |

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Instant;

use crate::event::{AggregateId, RecordedEvent, StreamId};
use crate::ids::CellId;
use crate::ports::{EventPage, EventStore, Listing, ReplicatedApply, Snapshot, StoreError};

/// Store calls made.
pub const STORE_CALLS: &str = "store_calls";
/// Store calls that failed, by kind.
pub const STORE_ERRORS: &str = "store_errors";
/// How long a store call took.
pub const STORE_LATENCY: &str = "store_latency";

/// `S`, its calls counted and timed.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
}

impl<S> Metered<S> {
    /// Counts and times the calls to `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = call.await;
    let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
    metrics::counter!(STORE_CALLS, "op" => op).increment(1);
    metrics::histogram!(STORE_LATENCY, "op" => op).record(micros);
    if let Err(e) = &result {
        metrics::counter!(STORE_ERRORS, "op" => op, "error" => e.kind()).increment(1);
    }
    result
}

impl<S: EventStore> EventStore for Metered<S> {
    fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed(
            "append",
            self.inner.append(stream, expected_version, events),
        )
    }

    fn load(
        &self,
        aggregate: &AggregateId,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        timed("load", self.inner.load(aggregate))
    }

    fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &BTreeMap<CellId, u64>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        timed("load_after", self.inner.load_after(aggregate, after))
    }

    fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, StoreError>> + Send {
        timed("read", self.inner.read(stream, version))
    }

    fn apply_replicated(
        &self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<ReplicatedApply, StoreError>> + Send {
        timed("apply_replicated", self.inner.apply_replicated(event))
    }

    fn list_origin(
        &self,
        listing: &Listing,
    ) -> impl Future<Output = Result<EventPage, StoreError>> + Send {
        timed("list_origin", self.inner.list_origin(listing))
    }

    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("save_snapshot", self.inner.save_snapshot(snapshot))
    }

    fn load_snapshots(
        &self,
        aggregate: &AggregateId,
    ) -> impl Future<Output = Result<Vec<Snapshot>, StoreError>> + Send {
        timed("load_snapshots", self.inner.load_snapshots(aggregate))
    }

    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        timed("check", self.inner.check())
    }
}
