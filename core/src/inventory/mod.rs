//! Inventory as a per-cell escrow ledger.
//!
//! Every SKU has one ledger per cell, and a ledger is the fold of exactly one
//! stream: the one its cell writes. Nothing another cell does changes a
//! ledger directly. When a cell sees something in another cell's stream that
//! concerns it — a transfer sent to it, a release or fulfilment request for
//! one of its reservations, a duplicate of one of its reservations that wins
//! the tie-break — it *reconciles*: it appends its own event
//! (`AllocationReceived`, `ReservationReleased`, `ReservationFulfilled`).
//!
//! That single-writer shape is what makes the escrow invariant hold under any
//! replication order: each ledger's `available = on_hand − reserved` is
//! checked against that ledger's exact state at the moment its own cell
//! appends, and any other cell only ever folds a contiguous prefix of it.
//!
//! The duplicate tie-break: of two reservations of one order in different
//! cells, the one with the earlier `(reserved_at, cell)` wins; the loser's
//! cell releases its own.
//!
//! The same idempotency key used for a receipt, write-off or transfer in
//! two cells (a retry that overtook replication) is counted once: the copy
//! with the earlier `(recorded_at, cell)` stands, and the other cell voids
//! its own (`DuplicateWriteVoided`; see `docs/domain.md` for the shortage
//! a voided receipt can leave).
//!
//! The parts: [`ledger`] (one cell's ledger), [`keys`] (the keyed writes it
//! remembers), [`aggregate`] (the fold of
//! every cell's ledger), `reconcile` (what this cell owes the others),
//! `decide` (a command's events and errors), [`snapshot`] (a ledger saved
//! and read back) and [`view`] (what the API shows).

pub mod aggregate;
mod decide;
pub mod keys;
pub mod ledger;
mod reconcile;
pub mod snapshot;
pub mod view;

pub use aggregate::{Inventory, InventoryFoldError};
pub(crate) use decide::Rewind;
pub use decide::{InventoryCommand, InventoryDecision, InventoryError, InventoryOutcome};
pub use keys::{KEY_RETENTION_MS, KEYS_REMEMBERED};
pub use ledger::{
    CellLedger, LedgerError, LedgerTotals, RequestKind, ReservationState, ReservationStatus,
};
pub use snapshot::{LEDGER_SNAPSHOT_FORMAT, SnapshotError};
pub use view::{CellView, InventoryView, ReservationView};

#[cfg(test)]
mod tests;
