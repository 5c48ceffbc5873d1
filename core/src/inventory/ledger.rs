//! One cell's ledger of one SKU: the fold of the stream that cell writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::keys::{KeyEntry, KeyInsert, KeyMemory, KeyedWrite, WriteKind, key_digest};
use crate::event::DomainEvent;
use crate::ids::{CellId, OrderId};
use crate::quantity::Quantity;
use crate::timestamp::Timestamp;

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// The units are held.
    Held,
    /// The units went back to available stock.
    Released,
    /// The units were shipped.
    Fulfilled,
}

/// One reservation in one cell's ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationState {
    /// Units.
    pub quantity: Quantity,
    /// When its cell recorded it: the first half of the duplicate tie-break.
    pub reserved_at: Timestamp,
    /// Where it stands.
    pub status: ReservationStatus,
}

/// What a cell asked another cell to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    /// Release the reservation.
    Release,
    /// Fulfil the reservation.
    Fulfil,
}

/// Why an event cannot be folded into a ledger. For the cell's own ledger
/// this means corrupt storage; for another cell's it stops the fold there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Not an inventory event.
    #[error("{0} is not an inventory event")]
    NotInventory(&'static str),
    /// The event would take available stock below zero.
    #[error("needs {requested} units but {available} are available")]
    Insufficient {
        /// Units the event takes.
        requested: u64,
        /// Units available before it.
        available: u64,
    },
    /// A counter would overflow.
    #[error("stock counter overflow")]
    Overflow,
    /// The order already has a reservation in this ledger.
    #[error("order {0} is already reserved in this ledger")]
    DuplicateReservation(OrderId),
    /// The event refers to a reservation that is not held, or with another quantity.
    #[error("order {0} has no held reservation of that quantity")]
    NotHeld(OrderId),
    /// The event names its own cell where another is required.
    #[error("a cell cannot transfer to, receive from or request from itself")]
    SelfReference,
    /// The same transfer was received twice.
    #[error("transfer {1} from {0} was already received")]
    DuplicateTransfer(CellId, u64),
    /// An idempotency key that does not follow a receipt, write-off or
    /// transfer.
    #[error("an idempotency key must follow the write it was given for")]
    KeyWithoutWrite,
    /// A void of a version that is not a remembered keyed write, or one
    /// voided already, or with a shortage the write cannot have.
    #[error("version {0} is not a keyed write that can be voided so")]
    NotVoidable(u64),
    /// A void of a transfer this cell did not take in, or took back out
    /// already, or with a shortage larger than the transfer.
    #[error("transfer {1} from {0} is not one this cell holds")]
    NotHeldTransfer(CellId, u64),
    /// More units settled than the shortage.
    #[error("{settled} units settled but the shortage is {shortage}")]
    ShortageExceeded {
        /// Units the event settles.
        settled: u64,
        /// The shortage before it.
        shortage: u64,
    },
}

/// One cell's ledger for one SKU: the fold of that cell's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellLedger {
    pub(super) cell: CellId,
    pub(super) version: u64,
    pub(super) on_hand: u64,
    pub(super) reserved: u64,
    pub(super) received: u64,
    pub(super) written_off: u64,
    pub(super) shipped: u64,
    pub(super) transferred_out: u64,
    pub(super) transferred_in: u64,
    // Hash maps: a fold touches these once per event, and their size grows
    // with the history, so O(1) lookups keep the fold linear. Nothing that
    // leaves the ledger depends on their iteration order.
    pub(super) reservations: HashMap<OrderId, ReservationState>,
    pub(super) requests: HashMap<OrderId, Vec<(CellId, RequestKind)>>,
    pub(super) transfers_out: BTreeMap<u64, (CellId, Quantity)>,
    pub(super) transfers_in: BTreeMap<CellId, BTreeSet<u64>>,
    /// Transfers out that were voided (by the version of the transfer).
    pub(super) transfers_voided: BTreeSet<u64>,
    /// Transfers taken in that their sender voided and this cell took
    /// back out.
    pub(super) transfers_in_voided: BTreeSet<(CellId, u64)>,
    /// Units reserved here that no received stock backs: what voided
    /// receipts and transfers could not take back out.
    pub(super) shortage: u64,
    pub(super) keys: KeyMemory,
    /// The last write that can carry a key, with its version: what an
    /// `IdempotencyKeyRecorded` right after it keys.
    pub(super) last_write: Option<(u64, KeyedWrite)>,
    pub(super) stalled: Option<(u64, LedgerError)>,
}

pub(super) fn add(a: u64, b: u64) -> Result<u64, LedgerError> {
    a.checked_add(b).ok_or(LedgerError::Overflow)
}

pub(super) fn sub(a: u64, b: u64) -> Result<u64, LedgerError> {
    a.checked_sub(b).ok_or(LedgerError::Overflow)
}

impl CellLedger {
    /// An empty ledger of `cell`.
    #[must_use]
    pub fn new(cell: CellId) -> Self {
        Self {
            cell,
            version: 0,
            on_hand: 0,
            reserved: 0,
            received: 0,
            written_off: 0,
            shipped: 0,
            transferred_out: 0,
            transferred_in: 0,
            reservations: HashMap::new(),
            requests: HashMap::new(),
            transfers_out: BTreeMap::new(),
            transfers_in: BTreeMap::new(),
            transfers_voided: BTreeSet::new(),
            transfers_in_voided: BTreeSet::new(),
            shortage: 0,
            keys: KeyMemory::default(),
            last_write: None,
            stalled: None,
        }
    }

    /// The cell.
    #[must_use]
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// The last folded version of the cell's stream (0 when empty).
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Units physically in this cell's allocation.
    #[must_use]
    pub fn on_hand(&self) -> u64 {
        self.on_hand
    }

    /// Units held by reservations.
    #[must_use]
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// `on_hand − reserved`. Never negative by construction: every event
    /// that lowers it is checked in [`CellLedger::apply`].
    #[must_use]
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved)
    }

    /// Totals since the start: received, written off, shipped, transferred
    /// out, transferred in. For audits and invariant checks.
    #[must_use]
    pub fn totals(&self) -> LedgerTotals {
        LedgerTotals {
            received: self.received,
            written_off: self.written_off,
            shipped: self.shipped,
            transferred_out: self.transferred_out,
            transferred_in: self.transferred_in,
        }
    }

    /// Units reserved in this cell that no received stock backs: what
    /// voided duplicates of keyed writes could not take back out, less
    /// what was settled since. Zero unless a keyed write was retried in
    /// two cells before they met.
    #[must_use]
    pub fn shortage(&self) -> u64 {
        self.shortage
    }

    /// The keyed writes this ledger remembers.
    #[must_use]
    pub fn keys(&self) -> &KeyMemory {
        &self.keys
    }

    /// Whether this cell voided its transfer at `version`.
    #[must_use]
    pub fn transfer_voided(&self, version: u64) -> bool {
        self.transfers_voided.contains(&version)
    }

    /// Reservations by order.
    #[must_use]
    pub fn reservations(&self) -> &HashMap<OrderId, ReservationState> {
        &self.reservations
    }

    /// Transfers this cell sent, by the version of their event.
    #[must_use]
    pub fn transfers_out(&self) -> &BTreeMap<u64, (CellId, Quantity)> {
        &self.transfers_out
    }

    /// Where the fold of this ledger stopped on an event it could not apply
    /// (its version and why). Only ever set for another cell's ledger.
    #[must_use]
    pub fn stalled(&self) -> Option<&(u64, LedgerError)> {
        self.stalled.as_ref()
    }

    pub(super) fn requested(&self, order: &OrderId, owner: &CellId, kind: RequestKind) -> bool {
        self.requests
            .get(order)
            .is_some_and(|asked| asked.iter().any(|(c, k)| c == owner && *k == kind))
    }

    pub(super) fn received(&self, from: &CellId, transfer_version: u64) -> bool {
        self.transfers_in
            .get(from)
            .is_some_and(|versions| versions.contains(&transfer_version))
    }

    pub(super) fn held(&self, order: &OrderId) -> Option<&ReservationState> {
        self.reservations
            .get(order)
            .filter(|r| r.status == ReservationStatus::Held)
    }

    pub(super) fn take_held(
        &mut self,
        order: &OrderId,
        quantity: Quantity,
    ) -> Result<&mut ReservationState, LedgerError> {
        self.reservations
            .get_mut(order)
            .filter(|r| r.status == ReservationStatus::Held && r.quantity == quantity)
            .ok_or_else(|| LedgerError::NotHeld(order.clone()))
    }

    pub(super) fn ensure_available(&self, quantity: Quantity) -> Result<(), LedgerError> {
        if quantity.get() > self.available() {
            return Err(LedgerError::Insufficient {
                requested: quantity.get(),
                available: self.available(),
            });
        }
        Ok(())
    }

    /// Folds one event of this cell's stream at `version`, recorded `at`.
    /// Checks the event against the ledger first and changes nothing when it
    /// does not fit.
    ///
    /// # Errors
    /// [`LedgerError`] when the event does not fit the ledger.
    pub fn apply(
        &mut self,
        version: u64,
        at: Timestamp,
        event: &DomainEvent,
    ) -> Result<(), LedgerError> {
        match event {
            DomainEvent::TransactionCreated { .. } => {
                return Err(LedgerError::NotInventory(event.type_name()));
            }
            DomainEvent::StockReceived { quantity } => {
                let on_hand = add(self.on_hand, quantity.get())?;
                self.received = add(self.received, quantity.get())?;
                self.on_hand = on_hand;
            }
            DomainEvent::StockWrittenOff { quantity, .. } => {
                self.ensure_available(*quantity)?;
                self.written_off = add(self.written_off, quantity.get())?;
                self.on_hand = sub(self.on_hand, quantity.get())?;
            }
            DomainEvent::IdempotencyKeyRecorded { .. } => {
                // Applied by `apply_keyed`, which keeps what undoes it.
                let _ = self.apply_keyed(version, at, event)?;
                return Ok(());
            }
            DomainEvent::DuplicateWriteVoided {
                version: voided,
                winner,
                shortage,
            } => self.void_write(*voided, winner, *shortage)?,
            DomainEvent::ReceivedTransferVoided {
                from_cell,
                transfer_version,
                quantity,
                shortage,
            } => self.void_received(from_cell, *transfer_version, *quantity, *shortage)?,
            DomainEvent::ShortageSettled { quantity } => {
                if quantity.get() > self.shortage {
                    return Err(LedgerError::ShortageExceeded {
                        settled: quantity.get(),
                        shortage: self.shortage,
                    });
                }
                self.ensure_available(*quantity)?;
                self.on_hand = sub(self.on_hand, quantity.get())?;
                self.shortage = sub(self.shortage, quantity.get())?;
            }
            DomainEvent::StockReserved { order_id, quantity } => {
                if self.reservations.contains_key(order_id) {
                    return Err(LedgerError::DuplicateReservation(order_id.clone()));
                }
                self.ensure_available(*quantity)?;
                self.reserved = add(self.reserved, quantity.get())?;
                self.reservations.insert(
                    order_id.clone(),
                    ReservationState {
                        quantity: *quantity,
                        reserved_at: at,
                        status: ReservationStatus::Held,
                    },
                );
            }
            DomainEvent::ReservationReleased {
                order_id, quantity, ..
            } => {
                let reserved = sub(self.reserved, quantity.get())?;
                self.take_held(order_id, *quantity)?.status = ReservationStatus::Released;
                self.reserved = reserved;
            }
            DomainEvent::ReservationFulfilled {
                order_id, quantity, ..
            } => {
                let reserved = sub(self.reserved, quantity.get())?;
                let on_hand = sub(self.on_hand, quantity.get())?;
                let shipped = add(self.shipped, quantity.get())?;
                self.take_held(order_id, *quantity)?.status = ReservationStatus::Fulfilled;
                (self.reserved, self.on_hand, self.shipped) = (reserved, on_hand, shipped);
            }
            DomainEvent::ReleaseRequested { order_id, owner } => {
                self.record_request(order_id, owner, RequestKind::Release)?;
            }
            DomainEvent::FulfilmentRequested { order_id, owner } => {
                self.record_request(order_id, owner, RequestKind::Fulfil)?;
            }
            DomainEvent::AllocationTransferred { to_cell, quantity } => {
                if *to_cell == self.cell {
                    return Err(LedgerError::SelfReference);
                }
                self.ensure_available(*quantity)?;
                self.transferred_out = add(self.transferred_out, quantity.get())?;
                self.on_hand = sub(self.on_hand, quantity.get())?;
                self.transfers_out
                    .insert(version, (to_cell.clone(), *quantity));
            }
            DomainEvent::AllocationReceived {
                from_cell,
                transfer_version,
                quantity,
            } => {
                if *from_cell == self.cell {
                    return Err(LedgerError::SelfReference);
                }
                if self.received(from_cell, *transfer_version) {
                    return Err(LedgerError::DuplicateTransfer(
                        from_cell.clone(),
                        *transfer_version,
                    ));
                }
                let on_hand = add(self.on_hand, quantity.get())?;
                self.transferred_in = add(self.transferred_in, quantity.get())?;
                self.on_hand = on_hand;
                self.transfers_in
                    .entry(from_cell.clone())
                    .or_default()
                    .insert(*transfer_version);
            }
        }
        if let Some(write) = KeyedWrite::of(event) {
            self.last_write = Some((version, write));
        }
        self.version = version;
        Ok(())
    }

    /// Folds an `IdempotencyKeyRecorded` at `version`: the write right
    /// before it is remembered under its key.
    fn apply_keyed(
        &mut self,
        version: u64,
        at: Timestamp,
        event: &DomainEvent,
    ) -> Result<KeyInsert, LedgerError> {
        let DomainEvent::IdempotencyKeyRecorded { key, answer } = event else {
            return Err(LedgerError::KeyWithoutWrite);
        };
        let Some((written, write)) = self.last_write.filter(|(v, _)| v + 1 == version) else {
            return Err(LedgerError::KeyWithoutWrite);
        };
        let entry = KeyEntry {
            digest: key_digest(key),
            write,
            at,
            answer: answer.clone(),
            voided: false,
        };
        let insert = self.keys.insert(written, entry);
        self.version = version;
        Ok(insert)
    }

    fn void_write(
        &mut self,
        voided: u64,
        winner: &CellId,
        shortage: u64,
    ) -> Result<(), LedgerError> {
        if *winner == self.cell {
            return Err(LedgerError::SelfReference);
        }
        let write = self
            .keys
            .at_version(voided)
            .filter(|e| !e.voided)
            .map(|e| e.write)
            .ok_or(LedgerError::NotVoidable(voided))?;
        let q = write.quantity.get();
        match write.kind {
            WriteKind::Receive => {
                let removed = q
                    .checked_sub(shortage)
                    .ok_or(LedgerError::NotVoidable(voided))?;
                self.take_out(removed)?;
                self.received = sub(self.received, q)?;
                self.shortage = add(self.shortage, shortage)?;
            }
            WriteKind::WriteOff | WriteKind::Transfer if shortage != 0 => {
                return Err(LedgerError::NotVoidable(voided));
            }
            WriteKind::WriteOff => {
                self.written_off = sub(self.written_off, q)?;
                self.on_hand = add(self.on_hand, q)?;
            }
            WriteKind::Transfer => {
                if !self.transfers_out.contains_key(&voided) {
                    return Err(LedgerError::NotVoidable(voided));
                }
                self.transferred_out = sub(self.transferred_out, q)?;
                self.on_hand = add(self.on_hand, q)?;
                self.transfers_voided.insert(voided);
            }
        }
        self.keys.set_voided(voided, true);
        Ok(())
    }

    fn void_received(
        &mut self,
        from: &CellId,
        transfer_version: u64,
        quantity: Quantity,
        shortage: u64,
    ) -> Result<(), LedgerError> {
        let key = (from.clone(), transfer_version);
        let refuse = || LedgerError::NotHeldTransfer(from.clone(), transfer_version);
        if !self.received(from, transfer_version) || self.transfers_in_voided.contains(&key) {
            return Err(refuse());
        }
        let removed = quantity.get().checked_sub(shortage).ok_or_else(refuse)?;
        self.take_out(removed)?;
        self.transferred_in = sub(self.transferred_in, quantity.get())?;
        self.shortage = add(self.shortage, shortage)?;
        self.transfers_in_voided.insert(key);
        Ok(())
    }

    /// Takes `units` of available stock out of the allocation.
    fn take_out(&mut self, units: u64) -> Result<(), LedgerError> {
        if units > self.available() {
            return Err(LedgerError::Insufficient {
                requested: units,
                available: self.available(),
            });
        }
        self.on_hand = sub(self.on_hand, units)?;
        Ok(())
    }

    /// [`apply`](Self::apply), keeping what it takes to take the event
    /// back with [`undo`](Self::undo): the counters before it and the
    /// prior value of the one entry it touches.
    pub(super) fn apply_undoable(
        &mut self,
        version: u64,
        at: Timestamp,
        event: &DomainEvent,
    ) -> Result<Undo, LedgerError> {
        let counters = self.counters();
        let last_write = self.last_write;
        if matches!(event, DomainEvent::IdempotencyKeyRecorded { .. }) {
            let insert = self.apply_keyed(version, at, event)?;
            return Ok(Undo {
                counters,
                last_write,
                prior: Prior::Key(insert),
            });
        }
        let prior = match event {
            DomainEvent::DuplicateWriteVoided { version, .. } => Prior::Voided(*version),
            DomainEvent::ReceivedTransferVoided {
                from_cell,
                transfer_version,
                ..
            } => Prior::VoidedIn(from_cell.clone(), *transfer_version),
            DomainEvent::StockReserved { order_id, .. }
            | DomainEvent::ReservationReleased { order_id, .. }
            | DomainEvent::ReservationFulfilled { order_id, .. } => {
                Prior::Reservation(order_id.clone(), self.reservations.get(order_id).copied())
            }
            DomainEvent::ReleaseRequested { order_id, .. }
            | DomainEvent::FulfilmentRequested { order_id, .. } => {
                Prior::Requests(order_id.clone(), self.requests.get(order_id).map(Vec::len))
            }
            DomainEvent::AllocationTransferred { .. } => {
                Prior::TransferOut(version, self.transfers_out.get(&version).cloned())
            }
            DomainEvent::AllocationReceived {
                from_cell,
                transfer_version,
                ..
            } => Prior::TransferIn {
                from: from_cell.clone(),
                transfer_version: *transfer_version,
                had_cell: self.transfers_in.contains_key(from_cell),
                had_version: self.received(from_cell, *transfer_version),
            },
            DomainEvent::TransactionCreated { .. }
            | DomainEvent::StockReceived { .. }
            | DomainEvent::StockWrittenOff { .. }
            | DomainEvent::IdempotencyKeyRecorded { .. }
            | DomainEvent::ShortageSettled { .. } => Prior::Counters,
        };
        self.apply(version, at, event)?;
        Ok(Undo {
            counters,
            last_write,
            prior,
        })
    }

    /// Takes back the last event applied with
    /// [`apply_undoable`](Self::apply_undoable); events taken back in the
    /// reverse of the order they were applied leave the ledger exactly as
    /// it was before them.
    pub(super) fn undo(&mut self, undo: Undo) {
        [
            self.version,
            self.on_hand,
            self.reserved,
            self.received,
            self.written_off,
            self.shipped,
            self.transferred_out,
            self.transferred_in,
            self.shortage,
        ] = undo.counters;
        self.last_write = undo.last_write;
        match undo.prior {
            Prior::Counters => {}
            Prior::Key(insert) => self.keys.undo_insert(insert),
            Prior::Voided(version) => {
                self.keys.set_voided(version, false);
                self.transfers_voided.remove(&version);
            }
            Prior::VoidedIn(from, transfer_version) => {
                self.transfers_in_voided.remove(&(from, transfer_version));
            }
            Prior::Reservation(order, None) => {
                self.reservations.remove(&order);
            }
            Prior::Reservation(order, Some(state)) => {
                self.reservations.insert(order, state);
            }
            Prior::Requests(order, None) => {
                self.requests.remove(&order);
            }
            Prior::Requests(order, Some(len)) => {
                if let Some(asked) = self.requests.get_mut(&order) {
                    asked.truncate(len);
                }
            }
            Prior::TransferOut(version, None) => {
                self.transfers_out.remove(&version);
            }
            Prior::TransferOut(version, Some(sent)) => {
                self.transfers_out.insert(version, sent);
            }
            Prior::TransferIn {
                from,
                transfer_version,
                had_cell,
                had_version,
            } => {
                if !had_version && let Some(versions) = self.transfers_in.get_mut(&from) {
                    versions.remove(&transfer_version);
                }
                if !had_cell {
                    self.transfers_in.remove(&from);
                }
            }
        }
    }

    fn counters(&self) -> [u64; 9] {
        [
            self.version,
            self.on_hand,
            self.reserved,
            self.received,
            self.written_off,
            self.shipped,
            self.transferred_out,
            self.transferred_in,
            self.shortage,
        ]
    }

    pub(super) fn record_request(
        &mut self,
        order: &OrderId,
        owner: &CellId,
        kind: RequestKind,
    ) -> Result<(), LedgerError> {
        if *owner == self.cell {
            return Err(LedgerError::SelfReference);
        }
        // A repeated request is harmless: the owner acts once.
        if !self.requested(order, owner, kind) {
            self.requests
                .entry(order.clone())
                .or_default()
                .push((owner.clone(), kind));
        }
        Ok(())
    }
}

/// What [`CellLedger::undo`] needs to take one applied event back.
#[derive(Debug)]
pub(super) struct Undo {
    /// Version and stock counters before the event.
    counters: [u64; 9],
    /// The last keyable write before the event.
    last_write: Option<(u64, KeyedWrite)>,
    /// The entry the event touched, as it was before.
    prior: Prior,
}

/// The prior value of the one entry an event touches.
#[derive(Debug)]
enum Prior {
    /// Only counters changed.
    Counters,
    /// A keyed write was remembered.
    Key(KeyInsert),
    /// The keyed write at this version was voided.
    Voided(u64),
    /// This cell took the sender's voided transfer back out.
    VoidedIn(CellId, u64),
    /// The order's reservation, if any.
    Reservation(OrderId, Option<ReservationState>),
    /// How many requests the order had, if it had an entry.
    Requests(OrderId, Option<usize>),
    /// The transfer recorded at the event's version, if any.
    TransferOut(u64, Option<(CellId, Quantity)>),
    /// Whether the sender had an entry and this transfer was in it.
    TransferIn {
        from: CellId,
        transfer_version: u64,
        had_cell: bool,
        had_version: bool,
    },
}

/// Lifetime totals of one ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerTotals {
    /// Units received from suppliers.
    pub received: u64,
    /// Units written off.
    pub written_off: u64,
    /// Units shipped by fulfilments.
    pub shipped: u64,
    /// Units sent to other cells.
    pub transferred_out: u64,
    /// Units taken in from other cells.
    pub transferred_in: u64,
}
