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
use std::sync::OnceLock;
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

/// The operations, in the order of [`OPS`].
#[derive(Debug, Clone, Copy)]
enum Op {
    Append,
    Load,
    LoadAfter,
    Read,
    ApplyReplicated,
    ListOrigin,
    SaveSnapshot,
    LoadSnapshots,
    Check,
}

/// The `op` dimension of each [`Op`].
const OPS: [&str; 9] = [
    "append",
    "load",
    "load_after",
    "read",
    "apply_replicated",
    "list_origin",
    "save_snapshot",
    "load_snapshots",
    "check",
];

impl Op {
    /// Its index in [`OPS`].
    fn index(self) -> usize {
        match self {
            Op::Append => 0,
            Op::Load => 1,
            Op::LoadAfter => 2,
            Op::Read => 3,
            Op::ApplyReplicated => 4,
            Op::ListOrigin => 5,
            Op::SaveSnapshot => 6,
            Op::LoadSnapshots => 7,
            Op::Check => 8,
        }
    }

    fn name(self) -> &'static str {
        OPS.get(self.index()).copied().unwrap_or("unknown")
    }
}

/// An operation's handles: its calls and its time.
#[derive(Debug)]
struct OpHandles {
    calls: metrics::Counter,
    latency: metrics::Histogram,
}

/// `S`, its calls counted and timed.
///
/// The handles of each operation's metrics are taken from the recorder
/// installed at its first call (once per `Metered`: a call does not build a
/// key or look one up); install the recorder before the store is first
/// used.
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    handles: OnceLock<Vec<OpHandles>>,
}

impl<S> Metered<S> {
    /// Counts and times the calls to `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            handles: OnceLock::new(),
        }
    }

    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn timed<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> impl Future<Output = Result<T, StoreError>> {
        let handles = self.handles.get_or_init(|| {
            OPS.iter()
                .map(|op| OpHandles {
                    calls: metrics::counter!(STORE_CALLS, "op" => *op),
                    latency: metrics::histogram!(STORE_LATENCY, "op" => *op),
                })
                .collect()
        });
        let handles = handles.get(op.index());
        async move {
            let started = Instant::now();
            let result = call.await;
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            if let Some(handles) = handles {
                handles.calls.increment(1);
                handles.latency.record(micros);
            }
            if let Err(e) = &result {
                metrics::counter!(STORE_ERRORS, "op" => op.name(), "error" => e.kind())
                    .increment(1);
            }
            result
        }
    }
}

impl<S: EventStore> EventStore for Metered<S> {
    fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.timed(
            Op::Append,
            self.inner.append(stream, expected_version, events),
        )
    }

    fn load(
        &self,
        aggregate: &AggregateId,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        self.timed(Op::Load, self.inner.load(aggregate))
    }

    fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &BTreeMap<CellId, u64>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        self.timed(Op::LoadAfter, self.inner.load_after(aggregate, after))
    }

    fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> impl Future<Output = Result<Option<RecordedEvent>, StoreError>> + Send {
        self.timed(Op::Read, self.inner.read(stream, version))
    }

    fn apply_replicated(
        &self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<ReplicatedApply, StoreError>> + Send {
        self.timed(Op::ApplyReplicated, self.inner.apply_replicated(event))
    }

    fn list_origin(
        &self,
        listing: &Listing,
    ) -> impl Future<Output = Result<EventPage, StoreError>> + Send {
        self.timed(Op::ListOrigin, self.inner.list_origin(listing))
    }

    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.timed(Op::SaveSnapshot, self.inner.save_snapshot(snapshot))
    }

    fn load_snapshots(
        &self,
        aggregate: &AggregateId,
    ) -> impl Future<Output = Result<Vec<Snapshot>, StoreError>> + Send {
        self.timed(Op::LoadSnapshots, self.inner.load_snapshots(aggregate))
    }

    fn check(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.timed(Op::Check, self.inner.check())
    }
}
