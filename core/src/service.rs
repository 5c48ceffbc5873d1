//! The application service: load → decide → append, with bounded retries on
//! version conflicts, over any [`EventStore`], [`Clock`] and [`IdGenerator`].
//!
//! Results and errors are typed so that an HTTP adapter can map each one to a
//! status without knowing any rule.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use crate::event::{AggregateId, AggregateType, DomainEvent, EventError, RecordedEvent, StreamId};
use crate::ids::{CellId, IdempotencyKey, OrderId, Sku, TransactionId};
use crate::inventory::{
    CellLedger, Inventory, InventoryCommand, InventoryError, InventoryOutcome, InventoryView,
    Rewind,
};
use crate::ports::{Clock, EventStore, IdGenerator, ReplicatedApply, StoreError};
use crate::quantity::Quantity;
use crate::replication::{BatchReport, StreamProgress};
use crate::topology::Topology;
use crate::transaction::{self, CreateDecision, CreateError, Transaction};
use crate::validation::{CreateTransaction, ReserveStock, TransferStock, WriteOffStock};

/// Attempts of load → decide → append before giving up with
/// [`ServiceError::Contention`]. Every failed attempt means another writer
/// succeeded, so this bounds the wait of one request, not the system's
/// progress. Between attempts the service waits [`backoff`] through
/// [`Clock::pause`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 64;

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

/// Why a service call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// An inventory rule refused the command.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// No cell has created this transaction (as far as this cell sees).
    #[error("transaction {0} not found")]
    TransactionNotFound(TransactionId),
    /// The idempotency key was used with another payload.
    #[error("the idempotency key was already used with a different payload")]
    IdempotencyKeyReused,
    /// Every attempt lost a version race; the caller may retry.
    #[error("too much contention on one aggregate, retry")]
    Contention,
    /// The store can't be reached; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A replicated event differs from the one stored at its version.
    #[error("replicated event {stream} v{version} differs from the stored one")]
    ReplicaDiverged {
        /// The stream.
        stream: String,
        /// The version.
        version: u64,
    },
    /// A replicated event claims to come from this cell, which never
    /// receives its own events.
    #[error("replicated event comes from this cell ({0})")]
    OwnEventReplicated(String),
    /// A bug or corrupt data; details are for logs, not for clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::Contention,
            StoreError::Diverged { stream, version } => Self::ReplicaDiverged {
                stream: stream.to_string(),
                version,
            },
            StoreError::Unavailable(reason) => Self::Unavailable(reason),
            e @ (StoreError::InvalidBatch(_)
            | StoreError::TooLarge(_)
            | StoreError::Corrupt(_)
            | StoreError::InvalidCursor(_)) => Self::Internal(e.to_string()),
        }
    }
}

impl From<EventError> for ServiceError {
    fn from(e: EventError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// A created (or replayed) transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTransaction {
    /// The transaction.
    pub transaction: Transaction,
    /// `true` when an earlier request with the same key created it.
    pub replayed: bool,
}

/// What one attempt of a command decided.
enum Attempt<T> {
    /// Nothing to append: the answer.
    Done(T),
    /// Append `events` (stamped `now`) after version `expected` of this
    /// cell's stream; once appended, `then`.
    Append {
        expected: u64,
        now: crate::timestamp::Timestamp,
        events: Vec<DomainEvent>,
        then: Then<T>,
    },
}

/// A command's answer, from the records it appended.
type Answer<T> = Box<dyn FnOnce(&[RecordedEvent]) -> Result<T, ServiceError> + Send>;

/// What follows a successful append.
enum Then<T> {
    /// The command is done: its answer.
    Answer(Answer<T>),
    /// The append was a chunk of owed reconcile events: decide again.
    DecideAgain,
}

/// One kind of command as the loop runs it: its aggregate's folded state,
/// and the decision on it.
trait Decider: Send + Sync {
    /// The folded state.
    type State: Send;
    /// What the command answers.
    type Answer;
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
    /// Decides on `state`; gives back the state worth keeping (after the
    /// decided events, or unchanged), if any.
    fn decide(&mut self, state: Self::State) -> Decided<Self::Answer, Self::State>;
    /// The state a decision gave back, with the decided events taken out
    /// again: the store refused them (another process appended first), so
    /// the next attempt starts from it and reads only what is newer.
    /// `None` when the decider keeps no state.
    fn rewind(&self, state: Self::State) -> Option<Self::State>;
}

/// A decision, and the state worth keeping after it.
type Decided<T, St> = (Result<Attempt<T>, ServiceError>, Option<St>);

/// `POST /transactions`: a transaction's few events, loaded whole.
struct CreateTransactionDecider<'a, C> {
    id: TransactionId,
    cmd: &'a CreateTransaction,
    clock: &'a C,
}

impl<C: Clock> Decider for CreateTransactionDecider<'_, C> {
    type State = Vec<RecordedEvent>;
    type Answer = CreatedTransaction;

    async fn start<S: EventStore>(&self, _: &S) -> Self::State {
        Vec::new()
    }

    fn held(&self, _: &Self::State) -> Option<BTreeMap<CellId, u64>> {
        None
    }

    fn advance(
        &self,
        state: &mut Self::State,
        events: &[RecordedEvent],
    ) -> Result<(), ServiceError> {
        state.extend_from_slice(events);
        Ok(())
    }

    fn rewind(&self, _: Self::State) -> Option<Self::State> {
        None
    }

    fn decide(
        &mut self,
        events: Self::State,
    ) -> (
        Result<Attempt<CreatedTransaction>, ServiceError>,
        Option<Self::State>,
    ) {
        let id = self.id;
        let existing = match transaction::merge(id, &events) {
            Ok(existing) => existing,
            Err(e) => return (Err(ServiceError::Internal(e.to_string())), None),
        };
        let attempt = match transaction::decide_create(existing.as_ref(), id, self.cmd) {
            Ok(CreateDecision::Replay(transaction)) => Ok(Attempt::Done(CreatedTransaction {
                transaction,
                replayed: true,
            })),
            Ok(CreateDecision::Create(event)) => Ok(Attempt::Append {
                expected: 0,
                now: self.clock.now(),
                events: vec![event],
                then: Then::Answer(Box::new(move |records: &[RecordedEvent]| {
                    let transaction = transaction::merge(id, records)
                        .map_err(|e| ServiceError::Internal(e.to_string()))?
                        .ok_or_else(|| {
                            ServiceError::Internal("created transaction does not fold".to_owned())
                        })?;
                    Ok(CreatedTransaction {
                        transaction,
                        replayed: false,
                    })
                })),
            }),
            Err(CreateError::IdempotencyKeyReused) => Err(ServiceError::IdempotencyKeyReused),
        };
        (attempt, None)
    }
}

/// What an inventory run answers: a command's outcome, or (for a read)
/// the view.
enum InventoryAnswer {
    Outcome(InventoryOutcome),
    View(InventoryView),
}

/// An inventory command (or, without one, a read), decided on the SKU's
/// folded state, advanced with only the newer events.
struct InventoryDecider<'a, C> {
    sku: &'a Sku,
    topology: &'a Topology,
    command: Option<&'a InventoryCommand>,
    clock: &'a C,
}

impl<C: Clock> Decider for InventoryDecider<'_, C> {
    type State = Kept;
    type Answer = InventoryAnswer;

    async fn start<S: EventStore>(&self, store: &S) -> Kept {
        // A snapshot is only a starting point: one that can't be loaded or
        // read is ignored, and the ledger is folded from its events.
        let snapshots = store
            .load_snapshots(&AggregateId::inventory(self.sku))
            .await
            .unwrap_or_default();
        let (inventory, _refused) = Inventory::from_snapshots(self.sku, self.topology, &snapshots);
        Kept {
            saved: inventory.held(),
            inventory,
            undecided: Rewind::default(),
        }
    }

    fn held(&self, state: &Kept) -> Option<BTreeMap<CellId, u64>> {
        Some(state.inventory.held())
    }

    fn advance(&self, state: &mut Kept, events: &[RecordedEvent]) -> Result<(), ServiceError> {
        state
            .inventory
            .advance(events)
            .map_err(|e| ServiceError::Internal(e.to_string()))
    }

    fn decide(
        &mut self,
        Kept {
            inventory, saved, ..
        }: Kept,
    ) -> (Result<Attempt<InventoryAnswer>, ServiceError>, Option<Kept>) {
        let (attempt, inventory, undecided) = self.decide_on(inventory);
        let kept = Kept {
            inventory,
            saved,
            undecided,
        };
        (attempt, Some(kept))
    }

    fn rewind(&self, mut state: Kept) -> Option<Kept> {
        let undecided = std::mem::take(&mut state.undecided);
        state.inventory.rewind(undecided);
        Some(state)
    }
}

impl<C: Clock> InventoryDecider<'_, C> {
    /// The attempt, the state after it, and what takes its events back
    /// out of that state.
    fn decide_on(
        &self,
        inventory: Inventory,
    ) -> (
        Result<Attempt<InventoryAnswer>, ServiceError>,
        Inventory,
        Rewind,
    ) {
        let Some(command) = self.command else {
            let view = inventory.view();
            return (
                Ok(Attempt::Done(InventoryAnswer::View(view))),
                inventory,
                Rewind::default(),
            );
        };
        let now = self.clock.now();
        let expected = inventory.own().map_or(0, CellLedger::version);
        let (decision, kept, undecided) = inventory.decide_rewindable(command, now);
        let decision = match decision {
            Ok(decision) => decision,
            Err(e) => return (Err(e.into()), kept, undecided),
        };
        if decision.events.is_empty() {
            return (
                Ok(Attempt::Done(InventoryAnswer::Outcome(decision.outcome))),
                kept,
                undecided,
            );
        }
        let outcome = decision.outcome;
        let attempt = Attempt::Append {
            expected,
            now,
            events: decision.events,
            then: if decision.command_pending {
                Then::DecideAgain
            } else {
                Then::Answer(Box::new(move |_: &[RecordedEvent]| {
                    Ok(InventoryAnswer::Outcome(outcome))
                }))
            },
        };
        (Ok(attempt), kept, undecided)
    }
}

/// How many SKUs' folded stock a service keeps between commands, unless
/// [`Service::with_cache_capacity`] says otherwise.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// Folded inventories kept between commands, at most `capacity`, the
/// least recently used leaving first. A state is taken out while a command
/// runs on it (under the SKU's turn) and put back after, so it is never
/// copied; it is only ever a starting point: every command advances it with
/// what the store holds beyond it, and the store's conditional append
/// checks the version it decided on.
#[derive(Debug)]
struct InventoryCache {
    capacity: usize,
    entries: std::sync::Mutex<Entries>,
}

/// A use counter, and per SKU its state with the count at its last use.
type Entries = (u64, HashMap<Sku, (u64, Kept)>);

/// An inventory's folded state as a command runs on it and the cache
/// keeps it: the fold, and per cell the ledger version of the last
/// snapshot saved or loaded, so that the next is saved
/// [`Service::with_snapshot_every`] events later.
#[derive(Debug)]
struct Kept {
    inventory: Inventory,
    saved: BTreeMap<CellId, u64>,
    /// What takes the last decision's events back out of `inventory`,
    /// until the store has accepted or refused them.
    undecided: Rewind,
}

/// Every how many events of a ledger its snapshot is saved, unless
/// [`Service::with_snapshot_every`] says otherwise.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1000;

impl InventoryCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: std::sync::Mutex::new((0, HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, sku: &Sku) -> Option<Kept> {
        self.lock().1.remove(sku).map(|(_, state)| state)
    }

    fn put(&self, sku: &Sku, state: Option<Kept>) {
        let Some(state) = state else {
            return;
        };
        if self.capacity == 0 {
            return;
        }
        let mut guard = self.lock();
        let (tick, entries) = &mut *guard;
        *tick += 1;
        if entries.len() >= self.capacity && !entries.contains_key(sku) {
            let oldest = entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(sku, _)| sku.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        entries.insert(sku.clone(), (*tick, state));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().1.len()
    }
}

/// The service of one cell.
#[derive(Debug)]
pub struct Service<S, C, I> {
    topology: Topology,
    store: S,
    clock: C,
    ids: I,
    max_attempts: u32,
    /// One command at a time per aggregate in this process.
    gate: crate::gate::Gate<AggregateId>,
    /// Folded stock kept between commands.
    inventories: InventoryCache,
    /// Every how many events a ledger's snapshot is saved (0: never).
    snapshot_every: u64,
}

impl<S: EventStore, C: Clock, I: IdGenerator> Service<S, C, I> {
    /// A service for `topology.this()`.
    pub fn new(topology: Topology, store: S, clock: C, ids: I) -> Self {
        Self {
            topology,
            store,
            clock,
            ids,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            gate: crate::gate::Gate::default(),
            inventories: InventoryCache::new(DEFAULT_CACHE_CAPACITY),
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }

    /// Saves a snapshot of a SKU's ledger (one per cell) beside the events
    /// whenever `events` more have been folded into it since the last one
    /// (default [`DEFAULT_SNAPSHOT_EVERY`]; 0 saves none). A command on a
    /// SKU this process does not keep starts from the snapshots and reads
    /// only the events after them. Snapshots change no answer: a missing,
    /// unreadable or older-format one is ignored, and a save that fails
    /// costs only speed.
    #[must_use]
    pub fn with_snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events;
        self
    }

    /// Keeps the folded stock of at most `skus` SKUs between commands
    /// (default [`DEFAULT_CACHE_CAPACITY`]; 0 keeps none, and every command
    /// folds the SKU's whole history).
    #[must_use]
    pub fn with_cache_capacity(mut self, skus: usize) -> Self {
        self.inventories = InventoryCache::new(skus);
        self
    }

    /// Sets the number of attempts per command (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The deployment's cells.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The time on this cell's clock.
    pub fn now(&self) -> crate::timestamp::Timestamp {
        self.clock.now()
    }

    /// Whether the store answers.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`] when it does not.
    pub async fn health(&self) -> Result<(), ServiceError> {
        Ok(self.store.check().await?)
    }

    /// Creates a transaction, or replays it when `key` was seen before with
    /// the same payload in any cell.
    ///
    /// # Errors
    /// [`ServiceError::IdempotencyKeyReused`], or store failures.
    pub async fn create_transaction(
        &self,
        cmd: &CreateTransaction,
        key: Option<&IdempotencyKey>,
    ) -> Result<CreatedTransaction, ServiceError> {
        let id = match key {
            Some(key) => TransactionId::for_idempotency_key(&cmd.account_id, key),
            None => TransactionId::from_uuid(self.ids.new_id()),
        };
        let aggregate = AggregateId::transaction(id);
        let _turn = self.gate.enter(&aggregate).await;
        let decider = CreateTransactionDecider {
            id,
            cmd,
            clock: &self.clock,
        };
        self.run(&aggregate, None, decider).await.0
    }

    /// The merged transaction.
    ///
    /// # Errors
    /// [`ServiceError::TransactionNotFound`], or store failures.
    pub async fn transaction(&self, id: TransactionId) -> Result<Transaction, ServiceError> {
        let events = self.store.load(&AggregateId::transaction(id)).await?;
        transaction::merge(id, &events)
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .ok_or(ServiceError::TransactionNotFound(id))
    }

    /// The SKU's stock as this cell sees it (all zero for an unknown SKU).
    ///
    /// # Errors
    /// Store failures.
    pub async fn inventory(&self, sku: &Sku) -> Result<InventoryView, ServiceError> {
        let aggregate = AggregateId::inventory(sku);
        let _turn = self.gate.enter(&aggregate).await;
        let decider = InventoryDecider {
            sku,
            topology: &self.topology,
            command: None,
            clock: &self.clock,
        };
        let kept = self.inventories.take(sku);
        let (view, mut kept) = self.run(&aggregate, kept, decider).await;
        self.save_due_snapshots(&aggregate, kept.as_mut()).await;
        self.inventories.put(sku, kept);
        match view? {
            InventoryAnswer::View(view) => Ok(view),
            InventoryAnswer::Outcome(_) => Err(ServiceError::Internal(
                "a read answered with a command outcome".to_owned(),
            )),
        }
    }

    /// Runs one inventory command: reconciles what other cells asked of this
    /// cell, decides, and appends to this cell's stream, retrying on version
    /// conflicts.
    ///
    /// # Errors
    /// [`ServiceError::Inventory`] for refused commands,
    /// [`ServiceError::Contention`] after the last lost race, or store failures.
    pub async fn execute(
        &self,
        sku: &Sku,
        command: &InventoryCommand,
    ) -> Result<InventoryOutcome, ServiceError> {
        let aggregate = AggregateId::inventory(sku);
        let _turn = self.gate.enter(&aggregate).await;
        let decider = InventoryDecider {
            sku,
            topology: &self.topology,
            command: Some(command),
            clock: &self.clock,
        };
        let kept = self.inventories.take(sku);
        let (answer, mut kept) = self.run(&aggregate, kept, decider).await;
        if let Some(kept) = kept.as_mut() {
            // Accepted or refused by now: nothing left to take back.
            kept.undecided = Rewind::default();
        }
        self.save_due_snapshots(&aggregate, kept.as_mut()).await;
        self.inventories.put(sku, kept);
        match answer? {
            InventoryAnswer::Outcome(outcome) => Ok(outcome),
            InventoryAnswer::View(view) => Ok(InventoryOutcome::Applied(view)),
        }
    }

    /// Saves the snapshot of each ledger of `kept` that has folded
    /// [`Service::with_snapshot_every`] events since its last one. A
    /// stalled ledger has none, and a save that fails is not retried
    /// before as many events again: a snapshot is an optimisation, never
    /// a reason to fail or slow every command.
    async fn save_due_snapshots(&self, aggregate: &AggregateId, kept: Option<&mut Kept>) {
        let Some(kept) = kept else {
            return;
        };
        if self.snapshot_every == 0 {
            return;
        }
        for (cell, ledger) in kept.inventory.ledgers() {
            let saved = kept.saved.get(cell).copied().unwrap_or(0);
            if ledger.version() < saved.saturating_add(self.snapshot_every) {
                continue;
            }
            if let Some(snapshot) = ledger.snapshot(aggregate) {
                // Too large or unavailable: the next load folds more events.
                let _ = self.store.save_snapshot(&snapshot).await;
            }
            kept.saved.insert(cell.clone(), ledger.version());
        }
    }

    /// The one load → decide → append loop of every command, on this cell's
    /// stream of `aggregate`; the caller holds the aggregate's turn in this
    /// process ([`crate::gate`]). The state starts from `kept` (a state
    /// kept from an earlier command) or empty, takes what the store holds
    /// beyond it (only the newer events where the decider says what it
    /// holds), and the decider decides on it. A lost version race is
    /// followed by a [`backoff`] through [`Clock::pause`] and a new attempt
    /// on the same state with the lost decision taken back out of it
    /// ([`Decider::rewind`]), so that the attempt reads only what the
    /// winner appended, up to the service's attempts; an append of
    /// owed reconcile events is progress, bounded by
    /// [`MAX_RECONCILE_CHUNKS`] only against a bug. Gives the answer and the
    /// state worth keeping (the store's state after the command), if any.
    async fn run<D: Decider>(
        &self,
        aggregate: &AggregateId,
        mut kept: Option<D::State>,
        mut decider: D,
    ) -> (Result<D::Answer, ServiceError>, Option<D::State>) {
        let stream = StreamId::new(aggregate.clone(), self.topology.this().clone());
        let mut lost = 0u32;
        let mut chunks = 0u32;
        loop {
            let mut state = match kept.take() {
                Some(state) => state,
                None => decider.start(&self.store).await,
            };
            let newer = match decider.held(&state) {
                Some(held) => self.store.load_after(aggregate, &held).await,
                None => self.store.load(aggregate).await,
            };
            let advanced = newer
                .map_err(ServiceError::from)
                .and_then(|events| decider.advance(&mut state, &events));
            if let Err(e) = advanced {
                return (Err(e), None);
            }
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
            let records = match self.records(&stream, expected, now, events) {
                Ok(records) => records,
                Err(e) => return (Err(e), None),
            };
            match self.store.append(&stream, expected, &records).await {
                Ok(()) => match then {
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
                },
                Err(StoreError::Conflict { .. }) => {
                    // `after` holds events that were not appended: taken
                    // back out, it is what the store held when this
                    // attempt decided, and the next attempt reads only
                    // what the winner appended since.
                    let before = after.and_then(|state| decider.rewind(state));
                    lost += 1;
                    if lost >= self.max_attempts {
                        return (Err(ServiceError::Contention), before);
                    }
                    kept = before;
                    self.clock.pause(backoff(lost - 1)).await;
                }
                // The events may or may not be stored (a timeout): the
                // state without them is still a prefix of the store's, and
                // the next command reads whatever is beyond it.
                Err(e) => return (Err(e.into()), after.and_then(|state| decider.rewind(state))),
            }
        }
    }

    fn records(
        &self,
        stream: &StreamId,
        after: u64,
        now: crate::timestamp::Timestamp,
        events: Vec<DomainEvent>,
    ) -> Result<Vec<RecordedEvent>, ServiceError> {
        (after.saturating_add(1)..)
            .zip(events)
            .map(|(version, event)| Ok(RecordedEvent::new(stream.clone(), version, now, event)?))
            .collect()
    }

    /// `POST /inventory/{sku}/receipts`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn receive(
        &self,
        sku: &Sku,
        quantity: Quantity,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &InventoryCommand::Receive(quantity))
            .await
    }

    /// `POST /inventory/{sku}/write-offs`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn write_off(
        &self,
        sku: &Sku,
        cmd: WriteOffStock,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &InventoryCommand::WriteOff(cmd.quantity, cmd.reason))
            .await
    }

    /// `POST /inventory/{sku}/reservations`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn reserve(
        &self,
        sku: &Sku,
        cmd: ReserveStock,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &InventoryCommand::Reserve(cmd.order_id, cmd.quantity))
            .await
    }

    /// `DELETE /inventory/{sku}/reservations/{order_id}`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn release(
        &self,
        sku: &Sku,
        order: OrderId,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &InventoryCommand::Release(order)).await
    }

    /// `POST /inventory/{sku}/reservations/{order_id}/fulfilment`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn fulfil(
        &self,
        sku: &Sku,
        order: OrderId,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &InventoryCommand::Fulfil(order)).await
    }

    /// `POST /inventory/{sku}/transfers`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn transfer(
        &self,
        sku: &Sku,
        cmd: TransferStock,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &InventoryCommand::Transfer(cmd.to_cell, cmd.quantity))
            .await
    }

    /// Stores an event another cell wrote and, for inventory, lets this cell
    /// act on it (take in a transfer, answer a request, heal a duplicate).
    /// Safe to call again with the same event.
    ///
    /// # Errors
    /// [`ServiceError::OwnEventReplicated`], [`ServiceError::ReplicaDiverged`],
    /// or failures of the follow-up reconcile (the event stays stored; a
    /// redelivery runs the reconcile again).
    pub async fn apply_replicated(
        &self,
        event: &RecordedEvent,
    ) -> Result<ReplicatedApply, ServiceError> {
        let report = self
            .apply_replicated_batch(std::slice::from_ref(event))
            .await;
        let outcome = report.outcomes.into_iter().next().unwrap_or_else(|| {
            Err(ServiceError::Internal(
                "a batch of one had no outcome".into(),
            ))
        })?;
        report.follow_up?;
        Ok(outcome)
    }

    /// Stores a batch of events other cells wrote (in any order, with
    /// repeats), then reconciles each SKU they touch once: what one
    /// delivery of a replication transport asks. Events are stored in
    /// `(stream, version)` order, so a gap the batch itself fills closes
    /// before anything is reconciled.
    ///
    /// Never fails as a whole: the report says what became of each event
    /// (an event of this cell's own origin is refused, never stored; a
    /// diverged one never overwrites), how far each touched stream has
    /// arrived, and whether the follow-up reconciles ran. Once the store is
    /// unavailable the remaining events are not tried.
    pub async fn apply_replicated_batch(&self, events: &[RecordedEvent]) -> BatchReport {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| events.get(i).map(|e| (e.stream(), e.version())));
        let mut outcomes: Vec<Option<Result<ReplicatedApply, ServiceError>>> =
            events.iter().map(|_| None).collect();
        let mut touched: Vec<&StreamId> = Vec::new();
        let mut down: Option<String> = None;
        for i in order {
            let (Some(event), Some(slot)) = (events.get(i), outcomes.get_mut(i)) else {
                continue;
            };
            let outcome = if let Some(reason) = &down {
                Err(ServiceError::Unavailable(format!("not tried: {reason}")))
            } else if event.origin() == self.topology.this() {
                Err(ServiceError::OwnEventReplicated(event.stream().to_string()))
            } else {
                match self.store.apply_replicated(event).await {
                    Ok(applied) => {
                        if touched.last() != Some(&event.stream()) {
                            touched.push(event.stream());
                        }
                        Ok(applied)
                    }
                    Err(StoreError::Unavailable(reason)) => {
                        down = Some(reason.clone());
                        Err(ServiceError::Unavailable(reason))
                    }
                    Err(e) => Err(e.into()),
                }
            };
            *slot = Some(outcome);
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(ServiceError::Internal("event not tried".into()))))
            .collect();
        let (streams, follow_up) = match down {
            Some(reason) => (Vec::new(), Err(ServiceError::Unavailable(reason))),
            None => self.follow_up(&touched).await,
        };
        BatchReport {
            outcomes,
            streams,
            follow_up,
        }
    }

    /// Loads each aggregate the `touched` streams belong to once, records
    /// how far each stream has arrived, and reconciles each SKU.
    async fn follow_up(
        &self,
        touched: &[&StreamId],
    ) -> (Vec<StreamProgress>, Result<(), ServiceError>) {
        let mut aggregates: Vec<&AggregateId> = touched.iter().map(|s| &s.aggregate).collect();
        aggregates.sort_unstable();
        aggregates.dedup();
        let mut streams = Vec::with_capacity(touched.len());
        let mut result = Ok(());
        for aggregate in aggregates {
            let events = match self.store.load(aggregate).await {
                Ok(events) => events,
                Err(e) => {
                    result = result.and(Err(e.into()));
                    continue;
                }
            };
            streams.extend(
                touched
                    .iter()
                    .filter(|s| &s.aggregate == aggregate)
                    .map(|s| StreamProgress::of(s, &events)),
            );
            if aggregate.kind() != AggregateType::Inventory {
                continue;
            }
            let reconciled = match Sku::new(aggregate.id()) {
                Ok(sku) => self
                    .execute(&sku, &InventoryCommand::Reconcile)
                    .await
                    .map(|_| ()),
                Err(e) => Err(ServiceError::Internal(e.to_string())),
            };
            result = result.and(reconciled);
        }
        (streams, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, CellId};
    use crate::memory::InMemoryEventStore;
    use crate::money::{Currency, Money};
    use crate::testing::{ManualClock, SequentialIds, block_on};
    use crate::timestamp::Timestamp;

    type Svc = Service<InMemoryEventStore, ManualClock, SequentialIds>;

    fn service(this: &str) -> Svc {
        let topology = Topology::new(
            CellId::new(this).unwrap(),
            [CellId::new("aws").unwrap(), CellId::new("azure").unwrap()],
        );
        Service::new(
            topology,
            InMemoryEventStore::new(),
            ManualClock::new(Timestamp::from_unix_millis(1_000).unwrap(), 1),
            SequentialIds::default(),
        )
    }

    fn payment(amount: &str) -> CreateTransaction {
        CreateTransaction {
            account_id: AccountId::new("acct").unwrap(),
            money: Money::parse(amount, Currency::from_code("USD").unwrap()).unwrap(),
        }
    }

    fn sku() -> Sku {
        Sku::new("sku").unwrap()
    }

    #[test]
    fn transaction_without_key_takes_the_generated_id() {
        let s = service("aws");
        let created = block_on(s.create_transaction(&payment("1"), None)).unwrap();
        assert_eq!(
            created.transaction.id().to_string(),
            "00000000-0000-7000-8000-000000000001"
        );
        assert!(!created.replayed);
        assert_eq!(
            block_on(s.transaction(created.transaction.id())),
            Ok(created.transaction)
        );
    }

    #[test]
    fn retry_with_the_same_key_replays_and_another_payload_is_refused() {
        let s = service("aws");
        let key = IdempotencyKey::new("k").unwrap();
        let first = block_on(s.create_transaction(&payment("1"), Some(&key))).unwrap();
        let again = block_on(s.create_transaction(&payment("1.00"), Some(&key))).unwrap();
        assert!(again.replayed);
        assert_eq!(again.transaction, first.transaction);
        assert_eq!(
            block_on(s.create_transaction(&payment("2"), Some(&key))),
            Err(ServiceError::IdempotencyKeyReused)
        );
        assert_eq!(s.store().len(), 1, "nothing doubled");
    }

    #[test]
    fn unknown_transaction_is_not_found() {
        let id = TransactionId::from_uuid(uuid::Uuid::nil());
        assert_eq!(
            block_on(service("aws").transaction(id)),
            Err(ServiceError::TransactionNotFound(id))
        );
    }

    #[test]
    fn an_unreachable_store_is_unavailable_and_nothing_is_written() {
        let s = service("aws");
        s.store().set_available(false);
        assert!(matches!(
            block_on(s.health()),
            Err(ServiceError::Unavailable(_))
        ));
        assert!(matches!(
            block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
            Err(ServiceError::Unavailable(_))
        ));
        s.store().set_available(true);
        assert_eq!(block_on(s.health()), Ok(()));
        assert!(s.store().is_empty());
    }

    #[test]
    fn replicated_events_apply_once_and_a_different_replay_is_reported() {
        let aws = service("aws");
        let azure = service("azure");
        block_on(aws.receive(&sku(), Quantity::new(3).unwrap())).unwrap();
        let event = aws
            .store()
            .events_from(&CellId::new("aws").unwrap())
            .remove(0);
        assert_eq!(
            block_on(azure.apply_replicated(&event)),
            Ok(ReplicatedApply::Stored)
        );
        assert_eq!(
            block_on(azure.apply_replicated(&event)),
            Ok(ReplicatedApply::AlreadyPresent)
        );

        let forged = RecordedEvent::new(
            event.stream().clone(),
            1,
            event.recorded_at(),
            DomainEvent::StockReceived {
                quantity: Quantity::new(300).unwrap(),
            },
        )
        .unwrap();
        assert!(matches!(
            block_on(azure.apply_replicated(&forged)),
            Err(ServiceError::ReplicaDiverged { version: 1, .. })
        ));
        assert_eq!(
            block_on(azure.inventory(&sku())).unwrap().on_hand,
            3,
            "never overwritten"
        );
    }

    #[test]
    fn a_cell_refuses_its_own_events_as_replicated() {
        let aws = service("aws");
        block_on(aws.receive(&sku(), Quantity::new(3).unwrap())).unwrap();
        let event = aws
            .store()
            .events_from(&CellId::new("aws").unwrap())
            .remove(0);
        assert!(matches!(
            block_on(aws.apply_replicated(&event)),
            Err(ServiceError::OwnEventReplicated(_))
        ));
    }

    #[test]
    fn a_transfer_arrives_when_the_receiver_gets_the_event() {
        let aws = service("aws");
        let azure = service("azure");
        block_on(aws.receive(&sku(), Quantity::new(5).unwrap())).unwrap();
        let to_azure = TransferStock {
            to_cell: CellId::new("azure").unwrap(),
            quantity: Quantity::new(2).unwrap(),
        };
        block_on(aws.transfer(&sku(), to_azure)).unwrap();
        for event in aws.store().events_from(&CellId::new("aws").unwrap()) {
            block_on(azure.apply_replicated(&event)).unwrap();
        }
        let view = block_on(azure.inventory(&sku())).unwrap();
        assert_eq!(view.cells[&CellId::new("azure").unwrap()].available, 2);
        assert_eq!(view.cells[&CellId::new("aws").unwrap()].on_hand, 3);
        assert_eq!(view.on_hand, 5);
    }

    #[test]
    fn a_batch_is_stored_in_stream_order_and_each_sku_reconciled_once() {
        let aws = service("aws");
        let azure = service("azure");
        block_on(aws.receive(&sku(), Quantity::new(5).unwrap())).unwrap();
        let to_azure = TransferStock {
            to_cell: CellId::new("azure").unwrap(),
            quantity: Quantity::new(2).unwrap(),
        };
        block_on(aws.transfer(&sku(), to_azure)).unwrap();
        let sent = aws.store().events_from(&CellId::new("aws").unwrap());
        let own = {
            block_on(azure.receive(&Sku::new("mine").unwrap(), Quantity::new(1).unwrap())).unwrap();
            azure
                .store()
                .events_from(&CellId::new("azure").unwrap())
                .remove(0)
        };
        // Newest first, a repeat, and one of azure's own.
        let batch = vec![sent[1].clone(), own, sent[0].clone(), sent[1].clone()];
        let report = block_on(azure.apply_replicated_batch(&batch));
        assert_eq!(report.outcomes[0], Ok(ReplicatedApply::Stored));
        assert!(matches!(
            report.outcomes[1],
            Err(ServiceError::OwnEventReplicated(_))
        ));
        assert_eq!(report.outcomes[2], Ok(ReplicatedApply::Stored));
        assert_eq!(report.outcomes[3], Ok(ReplicatedApply::AlreadyPresent));
        assert_eq!(report.follow_up, Ok(()));
        assert!(!report.is_complete(), "the own event was refused");
        assert_eq!(report.streams.len(), 1);
        assert!(!report.streams[0].has_gap());
        assert_eq!(report.streams[0].contiguous, 2);
        let received = azure
            .store()
            .events_from(&CellId::new("azure").unwrap())
            .into_iter()
            .filter(|e| matches!(e.event(), DomainEvent::AllocationReceived { .. }))
            .count();
        assert_eq!(received, 1, "the transfer is taken in once");
    }

    #[test]
    fn a_batch_with_a_gap_reports_it_and_folds_nothing_past_it() {
        let aws = service("aws");
        let azure = service("azure");
        for n in 1..=3 {
            block_on(aws.receive(&sku(), Quantity::new(n).unwrap())).unwrap();
        }
        let sent = aws.store().events_from(&CellId::new("aws").unwrap());
        let report = block_on(azure.apply_replicated_batch(&[sent[2].clone()]));
        assert!(report.is_complete());
        assert_eq!(report.streams[0].missing, [1, 2]);
        assert_eq!(
            block_on(azure.inventory(&sku())).unwrap().on_hand,
            0,
            "nothing past the gap"
        );
        let report = block_on(azure.apply_replicated_batch(&sent[..2]));
        assert!(report.is_complete() && !report.streams[0].has_gap());
        assert_eq!(block_on(azure.inventory(&sku())).unwrap().on_hand, 6);
    }

    #[test]
    fn a_batch_on_an_unavailable_store_tries_nothing_more_and_says_so() {
        let aws = service("aws");
        let azure = service("azure");
        block_on(aws.receive(&sku(), Quantity::new(1).unwrap())).unwrap();
        block_on(aws.receive(&sku(), Quantity::new(1).unwrap())).unwrap();
        let sent = aws.store().events_from(&CellId::new("aws").unwrap());
        azure.store().set_available(false);
        let report = block_on(azure.apply_replicated_batch(&sent));
        assert!(
            report
                .outcomes
                .iter()
                .all(|o| matches!(o, Err(ServiceError::Unavailable(_))))
        );
        assert!(matches!(
            report.follow_up,
            Err(ServiceError::Unavailable(_))
        ));
        azure.store().set_available(true);
        assert!(azure.store().is_empty());
    }

    fn counting(
        capacity: usize,
    ) -> Service<crate::testing::Counted<InMemoryEventStore>, ManualClock, SequentialIds> {
        let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
        Service::new(
            topology,
            crate::testing::Counted::new(InMemoryEventStore::new()),
            ManualClock::new(Timestamp::from_unix_millis(1_000).unwrap(), 1),
            SequentialIds::default(),
        )
        .with_cache_capacity(capacity)
    }

    fn reserve(order: &str) -> ReserveStock {
        ReserveStock {
            order_id: OrderId::new(order).unwrap(),
            quantity: Quantity::new(1).unwrap(),
        }
    }

    #[test]
    fn a_warm_sku_reads_only_what_is_new_however_long_its_history() {
        let s = counting(DEFAULT_CACHE_CAPACITY);
        block_on(s.receive(&sku(), Quantity::new(300).unwrap())).unwrap();
        for n in 0..200 {
            block_on(s.reserve(&sku(), reserve(&format!("o-{n}")))).unwrap();
        }
        // Every command so far read only the events it had not seen: each
        // of its own once (the first receipt found nothing).
        let (full, after) = s.store().reads();
        assert_eq!(full, 0, "never a full load");
        assert_eq!(after, 0, "its own events are kept, not read back");
        // Another process of the cell appends; this one reads just that.
        let stream = StreamId::new(AggregateId::inventory(&sku()), CellId::new("aws").unwrap());
        let next = RecordedEvent::new(
            stream.clone(),
            202,
            Timestamp::EPOCH,
            DomainEvent::StockReceived {
                quantity: Quantity::new(5).unwrap(),
            },
        )
        .unwrap();
        block_on(s.store().inner().append(&stream, 201, &[next])).unwrap();
        let view = block_on(s.inventory(&sku())).unwrap();
        assert_eq!(view.on_hand, 305);
        assert_eq!(s.store().reads(), (0, 1), "one new event read");
        // A refusal keeps the state too.
        let too_many = ReserveStock {
            order_id: OrderId::new("big").unwrap(),
            quantity: Quantity::new(1_000).unwrap(),
        };
        assert!(matches!(
            block_on(s.reserve(&sku(), too_many)),
            Err(ServiceError::Inventory(
                InventoryError::InsufficientStock { .. }
            ))
        ));
        block_on(s.reserve(&sku(), reserve("after-refusal"))).unwrap();
        assert_eq!(s.store().reads(), (0, 1), "nothing read again");
    }

    #[test]
    fn without_a_cache_every_command_reads_the_whole_history() {
        let s = counting(0);
        block_on(s.receive(&sku(), Quantity::new(10).unwrap())).unwrap();
        for n in 0..5 {
            block_on(s.reserve(&sku(), reserve(&format!("o-{n}")))).unwrap();
        }
        // 1 + 2 + … + 5 events read by the reservations.
        assert_eq!(s.store().reads(), (0, 15));
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity_least_recently_used_first() {
        let s = counting(2);
        for name in ["a", "b", "c"] {
            block_on(s.receive(&Sku::new(name).unwrap(), Quantity::new(1).unwrap())).unwrap();
        }
        assert_eq!(s.inventories.len(), 2);
        assert!(
            s.inventories.take(&Sku::new("a").unwrap()).is_none(),
            "a left first"
        );
        assert!(s.inventories.take(&Sku::new("c").unwrap()).is_some());
    }

    /// A store shared with another process that appends first: with
    /// `wins` unset, every append loses the race (unit tests of the retry
    /// bound); with `wins` at n, the rival appends a one-unit receipt just
    /// before each of this service's next n appends, which then lose.
    struct Rival {
        store: crate::testing::Counted<InMemoryEventStore>,
        wins: Option<std::sync::atomic::AtomicU32>,
    }

    impl Rival {
        fn always() -> Self {
            Self {
                store: crate::testing::Counted::new(InMemoryEventStore::new()),
                wins: None,
            }
        }

        fn winning(n: u32) -> Self {
            Self {
                wins: Some(std::sync::atomic::AtomicU32::new(n)),
                ..Self::always()
            }
        }
    }

    impl EventStore for Rival {
        async fn append(
            &self,
            stream: &StreamId,
            expected: u64,
            events: &[RecordedEvent],
        ) -> Result<(), StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            let Some(wins) = &self.wins else {
                return Err(StoreError::Conflict {
                    stream: stream.clone(),
                    expected,
                });
            };
            if wins
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                let receipt = DomainEvent::StockReceived {
                    quantity: Quantity::new(1).unwrap(),
                };
                let first =
                    RecordedEvent::new(stream.clone(), expected + 1, Timestamp::EPOCH, receipt)
                        .unwrap();
                self.store
                    .inner()
                    .append(stream, expected, &[first])
                    .await?;
            }
            self.store.append(stream, expected, events).await
        }
        async fn load(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
            self.store.load(aggregate).await
        }
        async fn load_after(
            &self,
            aggregate: &AggregateId,
            after: &std::collections::BTreeMap<crate::ids::CellId, u64>,
        ) -> Result<Vec<RecordedEvent>, StoreError> {
            self.store.load_after(aggregate, after).await
        }
        async fn apply_replicated(
            &self,
            event: &RecordedEvent,
        ) -> Result<ReplicatedApply, StoreError> {
            self.store.apply_replicated(event).await
        }
        async fn read(
            &self,
            stream: &StreamId,
            version: u64,
        ) -> Result<Option<RecordedEvent>, StoreError> {
            self.store.read(stream, version).await
        }
        async fn list_origin(
            &self,
            listing: &crate::ports::Listing,
        ) -> Result<crate::ports::EventPage, StoreError> {
            self.store.list_origin(listing).await
        }
        async fn save_snapshot(&self, snapshot: &crate::ports::Snapshot) -> Result<(), StoreError> {
            self.store.save_snapshot(snapshot).await
        }
        async fn load_snapshots(
            &self,
            aggregate: &AggregateId,
        ) -> Result<Vec<crate::ports::Snapshot>, StoreError> {
            self.store.load_snapshots(aggregate).await
        }
        async fn check(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn a_lost_race_reads_only_what_the_winner_appended() {
        let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
        let s = Service::new(
            topology.clone(),
            Rival::winning(0),
            ManualClock::new(Timestamp::from_unix_millis(1_000).unwrap(), 1),
            SequentialIds::default(),
        );
        block_on(s.receive(&sku(), Quantity::new(300).unwrap())).unwrap();
        for n in 0..200 {
            block_on(s.reserve(&sku(), reserve(&format!("o-{n}")))).unwrap();
        }
        assert_eq!(s.store().store.reads(), (0, 0));
        // Another process of the cell wins the next two races.
        let wins = s.store().wins.as_ref().unwrap();
        wins.store(2, std::sync::atomic::Ordering::SeqCst);
        let outcome = block_on(s.reserve(&sku(), reserve("contended"))).unwrap();
        assert!(matches!(
            outcome,
            InventoryOutcome::Reserved {
                replayed: false,
                ..
            }
        ));
        assert_eq!(s.store().store.conflicts(), 2);
        assert_eq!(
            s.store().store.reads(),
            (0, 2),
            "each retry read the one event the rival appended, nothing older"
        );
        // What it kept is what the stored events fold to.
        let stored = block_on(s.store().load(&AggregateId::inventory(&sku()))).unwrap();
        let folded = Inventory::fold(&sku(), &topology, &stored).unwrap().view();
        let kept = block_on(s.inventory(&sku())).unwrap();
        assert_eq!(kept, folded);
        assert_eq!((kept.on_hand, kept.reserved), (302, 201));
    }

    #[test]
    fn losing_every_race_ends_in_contention_after_the_configured_attempts() {
        let topology = Topology::new(CellId::new("aws").unwrap(), []);
        let s = Service::new(
            topology,
            Rival::always(),
            ManualClock::new(Timestamp::EPOCH, 1),
            SequentialIds::default(),
        )
        .with_max_attempts(3);
        assert_eq!(
            block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
            Err(ServiceError::Contention)
        );
        assert_eq!(
            block_on(s.create_transaction(&payment("1"), None)),
            Err(ServiceError::Contention)
        );
    }

    /// A clock that records the pauses asked of it.
    #[derive(Default)]
    struct PauseLog(std::sync::Mutex<Vec<Duration>>);

    impl Clock for PauseLog {
        fn now(&self) -> Timestamp {
            Timestamp::EPOCH
        }
        fn pause(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
            self.0.lock().unwrap().push(duration);
            std::future::ready(())
        }
    }

    #[test]
    fn a_lost_race_is_followed_by_a_jittered_pause_that_grows_to_the_cap() {
        let topology = Topology::new(CellId::new("aws").unwrap(), []);
        let s = Service::new(
            topology,
            Rival::always(),
            PauseLog::default(),
            SequentialIds::default(),
        )
        .with_max_attempts(5);
        assert_eq!(
            block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
            Err(ServiceError::Contention)
        );
        let pauses = s.clock.0.lock().unwrap().clone();
        assert_eq!(
            pauses.len(),
            4,
            "a pause between attempts, none before the first"
        );
        for (lost, pause) in (0u32..).zip(&pauses) {
            assert!(
                *pause <= BACKOFF_BASE * 2u32.pow(lost),
                "pause {lost}: {pause:?}"
            );
        }
    }

    #[test]
    fn both_aggregates_back_off_the_same_way_in_the_one_loop() {
        let topology = Topology::new(CellId::new("aws").unwrap(), []);
        let s = Service::new(
            topology,
            Rival::always(),
            PauseLog::default(),
            SequentialIds::default(),
        )
        .with_max_attempts(4);
        assert_eq!(
            block_on(s.create_transaction(&payment("1"), None)),
            Err(ServiceError::Contention)
        );
        let after_create = s.clock.0.lock().unwrap().len();
        assert_eq!(after_create, 3, "a transaction backs off like stock does");
        assert_eq!(
            block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
            Err(ServiceError::Contention)
        );
        assert_eq!(s.clock.0.lock().unwrap().len(), after_create + 3);
    }

    /// The README's service, on the system clock, under any executor: a
    /// lost race really waits before the next attempt.
    #[test]
    fn the_system_clock_really_pauses_without_a_runtime() {
        let topology = Topology::new(CellId::new("aws").unwrap(), []);
        let s = Service::new(
            topology,
            Rival::always(),
            crate::ports::SystemClock,
            SequentialIds::default(),
        )
        .with_max_attempts(2);
        let pause = Duration::from_millis(30);
        let started = std::time::Instant::now();
        block_on(s.clock.pause(pause));
        assert!(
            started.elapsed() >= pause,
            "waited only {:?}",
            started.elapsed()
        );
        // And the service's loop goes through it (one pause, then gives up).
        assert_eq!(
            block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
            Err(ServiceError::Contention)
        );
    }

    #[test]
    fn backoff_stays_under_its_ceiling_and_uses_all_of_it() {
        for lost in [0u32, 1, 3, 5, 6, 20, u32::MAX] {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1 << lost.min(16))
                .min(BACKOFF_CAP);
            let samples: Vec<Duration> = (0..400).map(|_| backoff(lost)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "lost {lost}");
            assert!(
                samples.iter().any(|d| *d > ceiling / 2),
                "lost {lost}: no pause above half the ceiling in 400 draws"
            );
            assert!(samples.iter().any(|d| *d < ceiling / 2), "lost {lost}");
        }
        assert_eq!(
            BACKOFF_BASE.saturating_mul(1 << 16).min(BACKOFF_CAP),
            BACKOFF_CAP
        );
    }
}
