//! Inventory in the command loop: a SKU's folded ledgers, advanced with
//! only the newer events and kept between commands in a bounded cache
//! (with a snapshot saved every so many events), and a command's decision
//! on them.

use std::collections::{BTreeMap, HashMap};

use super::Service;
use super::command_loop::{Attempt, Decided, Decider, Fold, Then};
use crate::error::ServiceError;
use crate::event::{AggregateId, DomainEvent, RecordedEvent};
use crate::ids::{CellId, Sku};
use crate::inventory::{CellLedger, Inventory, InventoryCommand, InventoryOutcome, Rewind};
use crate::ports::{Clock, EventStore, IdGenerator};
use crate::topology::Topology;

/// A SKU's ledgers, one per cell, folded from snapshots and events.
pub(super) struct InventoryFold<'a> {
    pub(super) sku: &'a Sku,
    pub(super) topology: &'a Topology,
}

impl Fold for InventoryFold<'_> {
    type State = Kept;

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

    fn rewind(&self, mut state: Kept) -> Option<Kept> {
        let undecided = std::mem::take(&mut state.undecided);
        state.inventory.rewind(undecided);
        Some(state)
    }
}

/// An inventory command, decided on the SKU's folded state: reconciles
/// what other cells asked of this cell first.
pub(super) struct InventoryDecider<'a, C> {
    pub(super) command: &'a InventoryCommand,
    pub(super) clock: &'a C,
}

impl<C: Clock> Decider for InventoryDecider<'_, C> {
    type State = Kept;
    type Answer = InventoryOutcome;

    fn decide(
        &mut self,
        Kept {
            inventory, saved, ..
        }: Kept,
    ) -> Decided<InventoryOutcome, Kept> {
        let now = self.clock.now();
        let expected = inventory.own().map_or(0, CellLedger::version);
        let (decision, inventory, undecided) = inventory.decide_rewindable(self.command, now);
        let kept = Some(Kept {
            inventory,
            saved,
            undecided,
        });
        let decision = match decision {
            Ok(decision) => decision,
            Err(e) => return (Err(e.into()), kept),
        };
        if decision.events.is_empty() {
            return (Ok(Attempt::Done(decision.outcome)), kept);
        }
        let outcome = decision.outcome;
        let attempt = Attempt::Append {
            expected,
            now,
            events: decision.events,
            then: if decision.command_pending {
                Then::DecideAgain
            } else {
                Then::Answer(Box::new(move |_: &[RecordedEvent]| Ok(outcome)))
            },
        };
        (Ok(attempt), kept)
    }
}

/// Logs what this cell appended to settle a keyed write counted in two
/// cells: every void, and at error level the units a void could not take
/// back out because they were reserved already (a shortage: reserved units
/// that no received stock backs, shown in the inventory view until
/// settled). `shortage` is a field of its own so a log query or metric
/// filter can count it.
pub(super) fn report(records: &[RecordedEvent]) {
    for r in records {
        match r.event() {
            DomainEvent::DuplicateWriteVoided {
                version,
                winner,
                shortage,
            } => {
                if *shortage > 0 {
                    tracing::error!(
                        stream = %r.stream(),
                        voided_version = version,
                        winner = %winner,
                        shortage,
                        "a keyed write made in two cells was voided here, and units of it were reserved already: a shortage until stock covers it"
                    );
                } else {
                    tracing::info!(stream = %r.stream(), voided_version = version, winner = %winner, "a keyed write made in two cells was voided here: counted once, in the winner");
                }
            }
            DomainEvent::ReceivedTransferVoided {
                from_cell,
                transfer_version,
                shortage,
                ..
            } => {
                if *shortage > 0 {
                    tracing::error!(
                        stream = %r.stream(),
                        from_cell = %from_cell,
                        transfer_version,
                        shortage,
                        "a transfer taken in was voided by its sender, and units of it were reserved already: a shortage until stock covers it"
                    );
                } else {
                    tracing::info!(stream = %r.stream(), from_cell = %from_cell, transfer_version, "a transfer taken in was voided by its sender and went back out");
                }
            }
            DomainEvent::ShortageSettled { quantity } => {
                tracing::warn!(stream = %r.stream(), settled = quantity.get(), "units of a shortage were settled from available stock");
            }
            _ => {}
        }
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
pub(super) struct InventoryCache {
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
pub(super) struct Kept {
    pub(super) inventory: Inventory,
    saved: BTreeMap<CellId, u64>,
    /// What takes the last decision's events back out of `inventory`,
    /// until the store has accepted or refused them.
    undecided: Rewind,
}

/// Every how many events of a ledger its snapshot is saved, unless
/// [`Service::with_snapshot_every`] says otherwise.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1000;

impl InventoryCache {
    pub(super) fn new(capacity: usize) -> Self {
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

    pub(super) fn take(&self, sku: &Sku) -> Option<Kept> {
        self.lock().1.remove(sku).map(|(_, state)| state)
    }

    pub(super) fn put(&self, sku: &Sku, state: Kept) {
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
    pub(super) fn len(&self) -> usize {
        self.lock().1.len()
    }
}

impl<S: EventStore, C: Clock, I: IdGenerator> Service<S, C, I> {
    /// Puts `kept` back in the cache once a read or command on it is over
    /// (accepted or refused by now: nothing left to take back), after
    /// saving the snapshots due.
    pub(super) async fn keep(&self, sku: &Sku, aggregate: &AggregateId, mut kept: Kept) {
        kept.undecided = Rewind::default();
        self.save_due_snapshots(aggregate, &mut kept).await;
        self.inventories.put(sku, kept);
    }

    /// Saves the snapshot of each ledger of `kept` that has folded
    /// [`Service::with_snapshot_every`] events since its last one. A
    /// stalled ledger has none, and a save that fails is not retried
    /// before as many events again: a snapshot is an optimisation, never
    /// a reason to fail or slow every command.
    async fn save_due_snapshots(&self, aggregate: &AggregateId, kept: &mut Kept) {
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
}
