//! One SKU's stock as one cell sees it: every cell's ledger, folded from
//! every stream replication has delivered.

use std::collections::BTreeMap;

use super::keys::KeyEntry;
use super::ledger::{CellLedger, LedgerError, ReservationState, ReservationStatus};
use crate::event::RecordedEvent;
use crate::ids::{CellId, OrderId, Sku};
use crate::timestamp::Timestamp;
use crate::topology::Topology;

/// Why the cell's own ledger could not be folded: its stream is corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inventory stream of {cell} is corrupt at version {version}: {error}")]
pub struct InventoryFoldError {
    /// The cell.
    pub cell: CellId,
    /// The offending version.
    pub version: u64,
    /// What is wrong.
    pub error: LedgerError,
}

/// One SKU's stock from one cell's point of view: its own ledger in full and
/// every other cell's ledger as far as replication has delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub(super) sku: Sku,
    pub(super) this: CellId,
    pub(super) ledgers: BTreeMap<CellId, CellLedger>,
    pub(super) void_scan: VoidScan,
}

/// What the last search for this cell's keyed writes to void found
/// nothing in: each ledger's newest remembered keyed write (by version).
/// A copy to void can only appear with a new keyed write in some ledger,
/// which changes this; voids, evictions and other events cannot make one.
/// So a command on a SKU whose keys did not change skips the search (up
/// to 2 048 look-ups). Not part of the state: never compared, and cleared
/// whenever a decision is taken back out.
#[derive(Debug, Clone, Default)]
pub(super) struct VoidScan(Option<Vec<u64>>);

impl PartialEq for VoidScan {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for VoidScan {}

impl VoidScan {
    pub(super) fn fingerprint(ledgers: &BTreeMap<CellId, CellLedger>) -> Vec<u64> {
        ledgers.values().map(|l| l.keys.newest()).collect()
    }

    pub(super) fn clean(&self, fingerprint: &[u64]) -> bool {
        self.0.as_deref() == Some(fingerprint)
    }

    pub(super) fn set(&mut self, fingerprint: Vec<u64>) {
        self.0 = Some(fingerprint);
    }

    pub(super) fn clear(&mut self) {
        self.0 = None;
    }
}

impl Inventory {
    /// Folds every event of `sku` (all origins) as seen by `topology.this()`.
    /// Each stream contributes its contiguous prefix from version 1; an event
    /// another cell wrote that does not fit its ledger stops that ledger there
    /// (see [`CellLedger::stalled`]).
    ///
    /// # Errors
    /// [`InventoryFoldError`] when this cell's own stream does not fold.
    pub fn fold(
        sku: &Sku,
        topology: &Topology,
        events: &[RecordedEvent],
    ) -> Result<Self, InventoryFoldError> {
        let mut inventory = Self::empty(sku, topology);
        inventory.advance(events)?;
        Ok(inventory)
    }

    /// `sku` before any event: an empty ledger per cell of `topology`.
    #[must_use]
    pub fn empty(sku: &Sku, topology: &Topology) -> Self {
        Self {
            sku: sku.clone(),
            this: topology.this().clone(),
            ledgers: topology
                .cells()
                .map(|c| (c.clone(), CellLedger::new(c.clone())))
                .collect(),
            void_scan: VoidScan::default(),
        }
    }

    /// What this state holds of each stream: every ledger's version (the
    /// end of its contiguous prefix). The events to [`advance`](Self::advance)
    /// with are the ones above these versions
    /// ([`EventStore::load_after`](crate::ports::EventStore::load_after)).
    #[must_use]
    pub fn held(&self) -> BTreeMap<CellId, u64> {
        self.ledgers
            .iter()
            .map(|(cell, ledger)| (cell.clone(), ledger.version))
            .collect()
    }

    /// Folds newer events into this state, by the rules of
    /// [`fold`](Self::fold): per origin, the events that continue its
    /// ledger's contiguous prefix, in version order; events it already
    /// holds, and those after a gap, are left for later; a stalled ledger
    /// takes no more. `fold(all)` equals any earlier fold advanced with the
    /// events it did not hold.
    ///
    /// # Errors
    /// [`InventoryFoldError`] when this cell's own stream does not fold;
    /// the state is then part-way and must be dropped.
    pub fn advance(&mut self, events: &[RecordedEvent]) -> Result<(), InventoryFoldError> {
        let mut by_origin: BTreeMap<&CellId, Vec<&RecordedEvent>> = BTreeMap::new();
        for e in events {
            by_origin.entry(e.origin()).or_default().push(e);
        }
        for (origin, mut stream) in by_origin {
            stream.sort_by_key(|e| e.version());
            let ledger = self
                .ledgers
                .entry(origin.clone())
                .or_insert_with(|| CellLedger::new(origin.clone()));
            if ledger.stalled.is_some() {
                continue;
            }
            for e in stream {
                if e.version() <= ledger.version {
                    // Already held.
                    continue;
                }
                if e.version() != ledger.version + 1 {
                    // A gap: later events wait for the missing one.
                    break;
                }
                if let Err(error) = ledger.apply(e.version(), e.recorded_at(), e.event()) {
                    if *origin == self.this {
                        return Err(InventoryFoldError {
                            cell: origin.clone(),
                            version: e.version(),
                            error,
                        });
                    }
                    ledger.stalled = Some((e.version(), error));
                    break;
                }
            }
        }
        Ok(())
    }

    /// The SKU.
    #[must_use]
    pub fn sku(&self) -> &Sku {
        &self.sku
    }

    /// Every ledger this cell knows, by cell.
    #[must_use]
    pub fn ledgers(&self) -> &BTreeMap<CellId, CellLedger> {
        &self.ledgers
    }

    /// This cell's own ledger.
    #[must_use]
    pub fn own(&self) -> Option<&CellLedger> {
        self.ledgers.get(&self.this)
    }

    pub(super) fn others(&self) -> impl Iterator<Item = &CellLedger> {
        self.ledgers.values().filter(|l| l.cell != self.this)
    }

    /// The order's reservations held in other cells, best tie-break first.
    pub(super) fn other_holders(&self, order: &OrderId) -> Vec<(&CellLedger, ReservationState)> {
        let mut holders: Vec<_> = self
            .others()
            .filter_map(|l| l.held(order).map(|r| (l, *r)))
            .collect();
        holders
            .sort_by(|(a, ra), (b, rb)| (ra.reserved_at, &a.cell).cmp(&(rb.reserved_at, &b.cell)));
        holders
    }

    /// The first write under the key of `digest` that still counts at
    /// `now`, in any ledger, with its cell: the earliest
    /// `(recorded_at, cell)`.
    pub(super) fn keyed(&self, digest: u64, now: Timestamp) -> Option<(&CellId, &KeyEntry)> {
        self.ledgers
            .values()
            .filter_map(|l| l.keys.latest(digest).map(|(_, e)| (&l.cell, e)))
            .filter(|(_, e)| e.live_at(now))
            .min_by(|(a, ea), (b, eb)| (ea.at, a).cmp(&(eb.at, b)))
    }

    /// The closed state of an order anywhere: `Fulfilled` wins over
    /// `Released` (a released duplicate of a shipped order is shipped).
    pub(super) fn closed_status(&self, order: &OrderId) -> Option<ReservationStatus> {
        self.ledgers
            .values()
            .filter_map(|l| l.reservations.get(order).map(|r| r.status))
            .filter(|s| *s != ReservationStatus::Held)
            .max()
    }
}
