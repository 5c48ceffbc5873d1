//! The command loop: load → decide → append on one aggregate, with the
//! lost version race taken back out and retried after a jittered backoff.
//! Every command of every aggregate runs through [`Service::run`]; what
//! differs between them is a [`Fold`] (how the state is built and kept)
//! and a [`Decider`] (what the command decides on it).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use super::Service;
use crate::error::ServiceError;
use crate::event::{AggregateId, DomainEvent, EventMetadata, RecordedEvent, StreamId};
use crate::ids::CellId;
use crate::ports::{Clock, EventStore, IdGenerator, StoreError};
use crate::timestamp::Timestamp;

/// Attempts of load → decide → append before giving up with
/// [`ServiceError::Contention`]. Every failed attempt means another writer
/// succeeded, so this bounds the wait of one request, not the system's
/// progress. Between attempts the service waits [`backoff`] through
/// [`Clock::pause`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 64;

/// The counter (on the `metrics` facade) of lost version races, each
/// followed by a retry or by [`ServiceError::Contention`].
pub const CONTENTION_RETRIES_METRIC: &str = "contention_retries";

/// Appends of owed reconcile events one command may make before its own
/// (each holds up to [`crate::MAX_EVENTS_PER_APPEND`]): far more than any
/// history produces; reaching it means a bug, reported as
/// [`ServiceError::Internal`] rather than looping.
pub const MAX_RECONCILE_CHUNKS: u32 = 10_000;

/// The first backoff ceiling after a lost version race; it doubles with
/// every loss up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_millis(2);
/// The largest backoff ceiling.
pub const BACKOFF_CAP: Duration = Duration::from_millis(64);

/// How long to wait after the `lost`-th lost race (0-based): a uniformly
/// random time up to `min(BACKOFF_CAP, BACKOFF_BASE × 2^lost)` ("full
/// jitter"), so writers that collided spread out instead of colliding again.
#[must_use]
pub fn backoff(lost: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << lost.min(16))
        .min(BACKOFF_CAP);
    let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    // std's per-thread random hash keys: randomness without a dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_micros(random % ceiling_us.saturating_add(1))
}

/// What one attempt of a command decided.
pub(super) enum Attempt<T> {
    /// Nothing to append: the answer.
    Done(T),
    /// Append `events` (stamped `now`) after version `expected` of this
    /// cell's stream; once appended, `then`.
    Append {
        expected: u64,
        now: Timestamp,
        events: Vec<DomainEvent>,
        then: Then<T>,
    },
}

/// A command's answer, from the records it appended.
pub(super) type Answer<T> = Box<dyn FnOnce(&[RecordedEvent]) -> Result<T, ServiceError> + Send>;

/// What follows a successful append.
pub(super) enum Then<T> {
    /// The command is done: its answer.
    Answer(Answer<T>),
    /// The append was a chunk of owed reconcile events: decide again.
    DecideAgain,
}

/// How one aggregate's state is folded from its events and kept between
/// commands: what reads and commands share.
pub(super) trait Fold: Sync {
    /// The folded state.
    type State: Send;
    /// The state to start from when none is kept: restored from what
    /// the store keeps beside the events (snapshots), or the state before
    /// any event.
    fn start<S: EventStore>(&self, store: &S) -> impl Future<Output = Self::State> + Send;
    /// What `state` holds of each stream, so that only newer events are
    /// loaded; `None` loads every event each time (and `state` is empty).
    fn held(&self, state: &Self::State) -> Option<BTreeMap<CellId, u64>>;
    /// Folds `events` into `state`.
    fn advance(
        &self,
        state: &mut Self::State,
        events: &[RecordedEvent],
    ) -> Result<(), ServiceError>;
    /// The state a decision gave back, with the decided events taken out
    /// again: the store refused them (another process appended first), so
    /// the next attempt starts from it and reads only what is newer.
    /// `None` when the fold keeps no state.
    fn rewind(&self, state: Self::State) -> Option<Self::State>;
}

/// One command's decision on its aggregate's folded state.
pub(super) trait Decider: Send {
    /// The folded state it decides on.
    type State;
    /// What the command answers.
    type Answer;
    /// Decides on `state`; gives back the state worth keeping (after the
    /// decided events, or unchanged), if any.
    fn decide(&mut self, state: Self::State) -> Decided<Self::Answer, Self::State>;
}

/// A decision, and the state worth keeping after it.
pub(super) type Decided<T, St> = (Result<Attempt<T>, ServiceError>, Option<St>);

impl<S: EventStore, C: Clock, I: IdGenerator> Service<S, C, I> {
    /// `kept` (a state kept from an earlier command), or the fold's start,
    /// advanced with what the store holds beyond it: only the newer events
    /// where the fold says what it holds, else all of them.
    pub(super) async fn refresh<F: Fold>(
        &self,
        aggregate: &AggregateId,
        kept: Option<F::State>,
        fold: &F,
    ) -> Result<F::State, ServiceError> {
        let mut state = match kept {
            Some(state) => state,
            None => fold.start(&self.store).await,
        };
        let newer = match fold.held(&state) {
            Some(held) => self.store.load_after(aggregate, &held).await,
            None => self.store.load(aggregate).await,
        }?;
        fold.advance(&mut state, &newer)?;
        Ok(state)
    }

    /// The one load → decide → append loop of every command, on this cell's
    /// stream of `aggregate`; the caller holds the aggregate's turn in this
    /// process ([`crate::gate`]). The state starts from `kept` (a state
    /// kept from an earlier command) or empty, takes what the store holds
    /// beyond it (only the newer events where the decider says what it
    /// holds), and the decider decides on it. A lost version race is
    /// followed by a [`backoff`] through [`Clock::pause`] and a new attempt
    /// on the same state with the lost decision taken back out of it
    /// ([`Fold::rewind`]), so that the attempt reads only what the
    /// winner appended, up to the service's attempts; an append of
    /// owed reconcile events is progress, bounded by
    /// [`MAX_RECONCILE_CHUNKS`] only against a bug. Gives the answer and the
    /// state worth keeping (the store's state after the command), if any.
    pub(super) async fn run<F, D>(
        &self,
        aggregate: &AggregateId,
        mut kept: Option<F::State>,
        fold: &F,
        mut decider: D,
        metadata: &EventMetadata,
    ) -> (Result<D::Answer, ServiceError>, Option<F::State>)
    where
        F: Fold,
        D: Decider<State = F::State>,
    {
        let stream = StreamId::new(aggregate.clone(), self.topology.this().clone());
        let mut lost = 0u32;
        let mut chunks = 0u32;
        loop {
            let state = match self.refresh(aggregate, kept.take(), fold).await {
                Ok(state) => state,
                Err(e) => return (Err(e), None),
            };
            let (attempt, after) = decider.decide(state);
            let (expected, now, events, then) = match attempt {
                Err(e) => return (Err(e), after),
                Ok(Attempt::Done(answer)) => return (Ok(answer), after),
                Ok(Attempt::Append {
                    expected,
                    now,
                    events,
                    then,
                }) => (expected, now, events, then),
            };
            let records = match self.records(&stream, expected, now, events, metadata) {
                Ok(records) => records,
                Err(e) => return (Err(e), None),
            };
            match self.store.append(&stream, expected, &records).await {
                Ok(()) => {
                    super::stock::report(&records);
                    match then {
                        Then::Answer(answer) => return (answer(&records), after),
                        Then::DecideAgain => {
                            kept = after;
                            chunks += 1;
                            if chunks > MAX_RECONCILE_CHUNKS {
                                return (
                                    Err(ServiceError::Internal(format!(
                                        "{stream}: still owing reconcile events after {chunks} appends"
                                    ))),
                                    None,
                                );
                            }
                        }
                    }
                }
                Err(StoreError::Conflict { .. }) => {
                    // `after` holds events that were not appended: taken
                    // back out, it is what the store held when this
                    // attempt decided, and the next attempt reads only
                    // what the winner appended since.
                    let before = after.and_then(|state| fold.rewind(state));
                    lost += 1;
                    metrics::counter!(CONTENTION_RETRIES_METRIC).increment(1);
                    if lost >= self.max_attempts {
                        return (Err(ServiceError::Contention), before);
                    }
                    kept = before;
                    self.clock.pause(backoff(lost - 1)).await;
                }
                // The events may or may not be stored (a timeout): the
                // state without them is still a prefix of the store's, and
                // the next command reads whatever is beyond it.
                Err(e) => return (Err(e.into()), after.and_then(|state| fold.rewind(state))),
            }
        }
    }

    fn records(
        &self,
        stream: &StreamId,
        after: u64,
        now: Timestamp,
        events: Vec<DomainEvent>,
        metadata: &EventMetadata,
    ) -> Result<Vec<RecordedEvent>, ServiceError> {
        (after.saturating_add(1)..)
            .zip(events)
            .map(|(version, event)| {
                Ok(RecordedEvent::new(stream.clone(), version, now, event)?
                    .with_metadata(metadata.clone()))
            })
            .collect()
    }
}
