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

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::{DomainEvent, FulfilCause, RecordedEvent, ReleaseCause};
use crate::ids::{CellId, OrderId, Sku};
use crate::ports::MAX_EVENTS_PER_APPEND;
use crate::quantity::Quantity;
use crate::timestamp::Timestamp;
use crate::topology::Topology;

const REASON_MAX_CHARS: usize = 200;

/// Why stock was written off: 1–200 characters, not blank, with no
/// control characters, no format characters (bidi controls such as U+202E,
/// zero-width characters) and no line or paragraph separators, so a reason
/// always shows as the text it is, on one line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RecordedReason", into = "String")]
pub struct WriteOffReason(String);

/// A reason as events carry it, read by the rules it was recorded under
/// (see [`WriteOffReason::recorded`]).
#[derive(Deserialize)]
#[serde(transparent)]
struct RecordedReason(String);

impl TryFrom<RecordedReason> for WriteOffReason {
    type Error = WriteOffReasonError;
    fn try_from(value: RecordedReason) -> Result<Self, Self::Error> {
        Self::recorded(value.0)
    }
}

/// Why a string is not a [`WriteOffReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteOffReasonError {
    /// Empty or longer than 200 characters.
    #[error("must be 1 to {REASON_MAX_CHARS} characters long")]
    Length,
    /// Holds a control character (newline, tab, ...).
    #[error("must not contain control characters")]
    ControlCharacter,
    /// Holds a format character (a bidi control, a zero-width character) or
    /// a line or paragraph separator.
    #[error(
        "must not contain format characters (such as bidi controls) or line or paragraph separators"
    )]
    InvisibleCharacter,
    /// Only white space.
    #[error("must not be blank")]
    Blank,
}

/// Whether a write-off reason may hold `c` (see [`WriteOffReason`]).
#[must_use]
pub fn reason_allows(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    !c.is_control()
        && !matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

impl WriteOffReason {
    /// Checks a reason a client sends: length, characters, not blank.
    ///
    /// # Errors
    /// [`WriteOffReasonError`].
    pub fn new(value: impl Into<String>) -> Result<Self, WriteOffReasonError> {
        let reason = Self::recorded(value.into())?;
        if reason.0.chars().any(|c| !reason_allows(c)) {
            return Err(WriteOffReasonError::InvisibleCharacter);
        }
        if reason.0.chars().all(char::is_whitespace) {
            return Err(WriteOffReasonError::Blank);
        }
        Ok(reason)
    }

    /// Reads a reason back from a recorded event, by the rules it was
    /// recorded under: length and no control characters. The rules on
    /// format characters and blank reasons came later; an event a cell
    /// stored before them must stay readable in every cell, or its SKU
    /// could no longer be folded.
    fn recorded(value: String) -> Result<Self, WriteOffReasonError> {
        if value.is_empty() || value.chars().count() > REASON_MAX_CHARS {
            return Err(WriteOffReasonError::Length);
        }
        if value.chars().any(char::is_control) {
            return Err(WriteOffReasonError::ControlCharacter);
        }
        Ok(Self(value))
    }

    /// The reason.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WriteOffReason {
    type Error = WriteOffReasonError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<WriteOffReason> for String {
    fn from(value: WriteOffReason) -> String {
        value.0
    }
}

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
}

/// One cell's ledger for one SKU: the fold of that cell's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellLedger {
    cell: CellId,
    version: u64,
    on_hand: u64,
    reserved: u64,
    received: u64,
    written_off: u64,
    shipped: u64,
    transferred_out: u64,
    transferred_in: u64,
    // Hash maps: a fold touches these once per event, and their size grows
    // with the history, so O(1) lookups keep the fold linear. Nothing that
    // leaves the ledger depends on their iteration order.
    reservations: HashMap<OrderId, ReservationState>,
    requests: HashMap<OrderId, Vec<(CellId, RequestKind)>>,
    transfers_out: BTreeMap<u64, (CellId, Quantity)>,
    transfers_in: BTreeMap<CellId, BTreeSet<u64>>,
    stalled: Option<(u64, LedgerError)>,
}

fn add(a: u64, b: u64) -> Result<u64, LedgerError> {
    a.checked_add(b).ok_or(LedgerError::Overflow)
}

fn sub(a: u64, b: u64) -> Result<u64, LedgerError> {
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

    fn requested(&self, order: &OrderId, owner: &CellId, kind: RequestKind) -> bool {
        self.requests
            .get(order)
            .is_some_and(|asked| asked.iter().any(|(c, k)| c == owner && *k == kind))
    }

    fn received(&self, from: &CellId, transfer_version: u64) -> bool {
        self.transfers_in
            .get(from)
            .is_some_and(|versions| versions.contains(&transfer_version))
    }

    fn held(&self, order: &OrderId) -> Option<&ReservationState> {
        self.reservations
            .get(order)
            .filter(|r| r.status == ReservationStatus::Held)
    }

    fn take_held(
        &mut self,
        order: &OrderId,
        quantity: Quantity,
    ) -> Result<&mut ReservationState, LedgerError> {
        self.reservations
            .get_mut(order)
            .filter(|r| r.status == ReservationStatus::Held && r.quantity == quantity)
            .ok_or_else(|| LedgerError::NotHeld(order.clone()))
    }

    fn ensure_available(&self, quantity: Quantity) -> Result<(), LedgerError> {
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
        self.version = version;
        Ok(())
    }

    fn record_request(
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

/// What a client asks of one SKU's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryCommand {
    /// Units arrived.
    Receive(Quantity),
    /// Units are lost or damaged.
    WriteOff(Quantity, WriteOffReason),
    /// Hold units for an order.
    Reserve(OrderId, Quantity),
    /// Free an order's reservation.
    Release(OrderId),
    /// Ship an order's reservation.
    Fulfil(OrderId),
    /// Move available units to another cell.
    Transfer(CellId, Quantity),
    /// Only apply what other cells' streams ask of this cell.
    Reconcile,
}

/// Why an inventory command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// Not enough available stock in this cell.
    #[error("{requested} units requested but {available} available in this cell")]
    InsufficientStock {
        /// Units asked for.
        requested: u64,
        /// Units available in this cell.
        available: u64,
    },
    /// The order is already reserved with another quantity.
    #[error("order {order_id} is already reserved with quantity {held}")]
    ReservationMismatch {
        /// The order.
        order_id: OrderId,
        /// The quantity already held.
        held: Quantity,
    },
    /// The order's reservation was released or fulfilled already.
    #[error("the reservation of order {order_id} is already {status:?}")]
    ReservationClosed {
        /// The order.
        order_id: OrderId,
        /// `Released` or `Fulfilled`.
        status: ReservationStatus,
    },
    /// No cell has a reservation for the order (as far as this cell sees).
    #[error("no reservation for order {order_id}")]
    ReservationNotFound {
        /// The order.
        order_id: OrderId,
    },
    /// A transfer to this cell itself or to a cell outside the topology.
    #[error("cannot transfer to {0}")]
    InvalidTransferTarget(CellId),
    /// A stock counter would overflow `u64`.
    #[error("stock counter overflow")]
    StockOverflow,
    /// A decided event did not fit the ledger it was decided on: a bug,
    /// never a client error.
    #[error("decision does not fit the ledger: {0}")]
    Inconsistent(String),
}

/// A reservation as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationView {
    /// SKU.
    pub sku: Sku,
    /// Order.
    pub order_id: OrderId,
    /// Units held.
    pub quantity: Quantity,
    /// The cell holding it.
    pub cell: CellId,
}

/// One cell's numbers in an [`InventoryView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CellView {
    /// Units in the cell's allocation.
    pub on_hand: u64,
    /// Units reserved there.
    pub reserved: u64,
    /// `on_hand − reserved`.
    pub available: u64,
}

/// The stock of one SKU as a cell sees it: totals plus every cell's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryView {
    /// SKU.
    pub sku: Sku,
    /// Sum over cells.
    pub on_hand: u64,
    /// Sum over cells.
    pub reserved: u64,
    /// Sum over cells.
    pub available: u64,
    /// Per cell, in cell order.
    pub cells: BTreeMap<CellId, CellView>,
}

/// What a decided command does, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOutcome {
    /// Applied in this cell (HTTP 200 with the view).
    Applied(InventoryView),
    /// Recorded as a request for the owning cell (HTTP 202 with the view).
    Requested(InventoryView),
    /// A reservation (HTTP 201); `replayed` when it already existed.
    Reserved {
        /// The reservation.
        reservation: ReservationView,
        /// Whether this repeats an earlier reservation.
        replayed: bool,
    },
}

/// Events to append to this cell's stream and what they achieve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryDecision {
    /// New events for this cell's stream, in order (may be empty); never
    /// more than [`MAX_EVENTS_PER_APPEND`], so they fit one append.
    pub events: Vec<DomainEvent>,
    /// The result; while `command_pending`, the view after `events`.
    pub outcome: InventoryOutcome,
    /// `true` when this cell owes more reconcile events than fit one append
    /// together with the command's: `events` is the first chunk of what it
    /// owes and the command is not decided yet. The caller appends the
    /// chunk and decides again.
    pub command_pending: bool,
}

/// One SKU's stock from one cell's point of view: its own ledger in full and
/// every other cell's ledger as far as replication has delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    sku: Sku,
    this: CellId,
    ledgers: BTreeMap<CellId, CellLedger>,
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
        let mut by_origin: BTreeMap<&CellId, Vec<&RecordedEvent>> = BTreeMap::new();
        for e in events {
            by_origin.entry(e.origin()).or_default().push(e);
        }
        let mut ledgers: BTreeMap<CellId, CellLedger> = topology
            .cells()
            .map(|c| (c.clone(), CellLedger::new(c.clone())))
            .collect();
        for (origin, mut stream) in by_origin {
            stream.sort_by_key(|e| e.version());
            let ledger = ledgers
                .entry(origin.clone())
                .or_insert_with(|| CellLedger::new(origin.clone()));
            for e in stream {
                if e.version() != ledger.version + 1 {
                    // A gap: later events wait for the missing one.
                    break;
                }
                if let Err(error) = ledger.apply(e.version(), e.recorded_at(), e.event()) {
                    if origin == topology.this() {
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
        Ok(Self {
            sku: sku.clone(),
            this: topology.this().clone(),
            ledgers,
        })
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

    /// The API view.
    #[must_use]
    pub fn view(&self) -> InventoryView {
        let mut view = InventoryView {
            sku: self.sku.clone(),
            on_hand: 0,
            reserved: 0,
            available: 0,
            cells: BTreeMap::new(),
        };
        for (cell, l) in &self.ledgers {
            view.on_hand = view.on_hand.saturating_add(l.on_hand);
            view.reserved = view.reserved.saturating_add(l.reserved);
            view.available = view.available.saturating_add(l.available());
            view.cells.insert(
                cell.clone(),
                CellView {
                    on_hand: l.on_hand,
                    reserved: l.reserved,
                    available: l.available(),
                },
            );
        }
        view
    }

    fn others(&self) -> impl Iterator<Item = &CellLedger> {
        self.ledgers.values().filter(|l| l.cell != self.this)
    }

    /// The order's reservations held in other cells, best tie-break first.
    fn other_holders(&self, order: &OrderId) -> Vec<(&CellLedger, ReservationState)> {
        let mut holders: Vec<_> = self
            .others()
            .filter_map(|l| l.held(order).map(|r| (l, *r)))
            .collect();
        holders
            .sort_by(|(a, ra), (b, rb)| (ra.reserved_at, &a.cell).cmp(&(rb.reserved_at, &b.cell)));
        holders
    }

    /// The closed state of an order anywhere: `Fulfilled` wins over
    /// `Released` (a released duplicate of a shipped order is shipped).
    fn closed_status(&self, order: &OrderId) -> Option<ReservationStatus> {
        self.ledgers
            .values()
            .filter_map(|l| l.reservations.get(order).map(|r| r.status))
            .filter(|s| *s != ReservationStatus::Held)
            .max()
    }

    /// Decides `command` in this cell at time `now`. What other cells' streams
    /// ask of this cell is reconciled first and its events come first.
    ///
    /// # Errors
    /// [`InventoryError`] when the command is refused; nothing is to be
    /// appended then.
    ///
    /// A decision always fits one append ([`MAX_EVENTS_PER_APPEND`]): when
    /// what this cell owes leaves no room for the command's events (a gap
    /// in a peer's stream that closed at once can leave hundreds owed), the
    /// decision is the first chunk of what it owes, with `command_pending`
    /// set, and the command waits for the next decision.
    pub fn decide(
        self,
        command: &InventoryCommand,
        now: Timestamp,
    ) -> Result<InventoryDecision, InventoryError> {
        let mut owed = self.reconcile();
        // A command adds at most one event of its own plus one request per
        // other cell holding the order.
        let room = MAX_EVENTS_PER_APPEND.saturating_sub(1 + self.others().count());
        let command_pending = owed.len() > room;
        owed.truncate(MAX_EVENTS_PER_APPEND);
        let mut next = Pending {
            state: self,
            events: Vec::with_capacity(owed.len() + 2),
            now,
        };
        for event in owed {
            next.push(event)?;
        }
        if command_pending {
            return Ok(InventoryDecision {
                outcome: next.applied(),
                events: next.events,
                command_pending,
            });
        }
        let outcome = next.command(command)?;
        if next.events.len() > MAX_EVENTS_PER_APPEND {
            // Only a topology of more than 99 cells gets here.
            return Err(InventoryError::Inconsistent(format!(
                "a decision of {} events does not fit one append of {MAX_EVENTS_PER_APPEND}",
                next.events.len()
            )));
        }
        Ok(InventoryDecision {
            events: next.events,
            outcome,
            command_pending,
        })
    }

    /// Events this cell owes to what it sees in other cells' streams:
    /// transfers sent to it, requests for its reservations, and its own
    /// reservations that lose the duplicate tie-break.
    fn reconcile(&self) -> Vec<DomainEvent> {
        let Some(own) = self.own() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for other in self.others() {
            for (version, (to, quantity)) in &other.transfers_out {
                if *to == own.cell && !own.received(&other.cell, *version) {
                    events.push(DomainEvent::AllocationReceived {
                        from_cell: other.cell.clone(),
                        transfer_version: *version,
                        quantity: *quantity,
                    });
                }
            }
        }
        // Only orders another cell mentions (reserved or requested) can need
        // action: walk whichever side is smaller, so a command costs
        // O(min(held here, mentioned elsewhere)) rather than O(history).
        let mentioned: usize = self
            .others()
            .map(|o| o.reservations.len() + o.requests.len())
            .sum();
        let mut held: Vec<(&OrderId, &ReservationState)> = if mentioned < own.reservations.len() {
            let mut orders: Vec<&OrderId> = self
                .others()
                .flat_map(|o| o.reservations.keys().chain(o.requests.keys()))
                .collect();
            orders.sort_unstable();
            orders.dedup();
            orders
                .into_iter()
                .filter_map(|order| own.held(order).map(|r| (order, r)))
                .collect()
        } else {
            own.reservations
                .iter()
                .filter(|(_, r)| r.status == ReservationStatus::Held)
                .collect()
        };
        // Events come out in order id order, whatever the map's order.
        held.sort_unstable_by_key(|(order, _)| *order);
        for (order, mine) in held {
            let requested_by = |kind| {
                self.others()
                    .find(|o| o.requested(order, &own.cell, kind))
                    .map(|o| o.cell.clone())
            };
            let winner = self
                .others()
                .filter_map(|o| o.reservations.get(order).map(|r| (r.reserved_at, &o.cell)))
                .filter(|key| *key < (mine.reserved_at, &own.cell))
                .min()
                .map(|(_, cell)| cell.clone());
            let event = if let Some(by) = requested_by(RequestKind::Fulfil) {
                DomainEvent::ReservationFulfilled {
                    order_id: order.clone(),
                    quantity: mine.quantity,
                    cause: FulfilCause::Requested { by },
                }
            } else if let Some(by) = requested_by(RequestKind::Release) {
                DomainEvent::ReservationReleased {
                    order_id: order.clone(),
                    quantity: mine.quantity,
                    cause: ReleaseCause::Requested { by },
                }
            } else if let Some(winner) = winner {
                DomainEvent::ReservationReleased {
                    order_id: order.clone(),
                    quantity: mine.quantity,
                    cause: ReleaseCause::Duplicate { winner },
                }
            } else {
                continue;
            };
            events.push(event);
        }
        events
    }
}

/// A decision under construction: the state with the new events applied.
struct Pending {
    state: Inventory,
    events: Vec<DomainEvent>,
    now: Timestamp,
}

impl Pending {
    fn own(&self) -> Result<&CellLedger, InventoryError> {
        // `fold` creates this cell's ledger from the topology, so it exists;
        // the error keeps a broken invariant from panicking.
        self.state
            .own()
            .ok_or_else(|| InventoryError::Inconsistent("no ledger for this cell".to_owned()))
    }

    fn push(&mut self, event: DomainEvent) -> Result<(), InventoryError> {
        let this = self.state.this.clone();
        let ledger =
            self.state.ledgers.get_mut(&this).ok_or_else(|| {
                InventoryError::Inconsistent("no ledger for this cell".to_owned())
            })?;
        let version = ledger.version + 1;
        ledger
            .apply(version, self.now, &event)
            .map_err(|e| match e {
                LedgerError::Insufficient {
                    requested,
                    available,
                } => InventoryError::InsufficientStock {
                    requested,
                    available,
                },
                LedgerError::Overflow => InventoryError::StockOverflow,
                other => InventoryError::Inconsistent(other.to_string()),
            })?;
        self.events.push(event);
        Ok(())
    }

    /// Asks every other holder of `order` that this cell has not asked yet.
    fn request_from(
        &mut self,
        order: &OrderId,
        owners: &[CellId],
        kind: RequestKind,
    ) -> Result<(), InventoryError> {
        for owner in owners {
            if !self.own()?.requested(order, owner, kind) {
                let event = match kind {
                    RequestKind::Release => DomainEvent::ReleaseRequested {
                        order_id: order.clone(),
                        owner: owner.clone(),
                    },
                    RequestKind::Fulfil => DomainEvent::FulfilmentRequested {
                        order_id: order.clone(),
                        owner: owner.clone(),
                    },
                };
                self.push(event)?;
            }
        }
        Ok(())
    }

    fn applied(&self) -> InventoryOutcome {
        InventoryOutcome::Applied(self.state.view())
    }

    fn command(&mut self, command: &InventoryCommand) -> Result<InventoryOutcome, InventoryError> {
        match command {
            InventoryCommand::Reconcile => Ok(self.applied()),
            InventoryCommand::Receive(quantity) => {
                self.push(DomainEvent::StockReceived {
                    quantity: *quantity,
                })?;
                Ok(self.applied())
            }
            InventoryCommand::WriteOff(quantity, reason) => {
                self.push(DomainEvent::StockWrittenOff {
                    quantity: *quantity,
                    reason: reason.clone(),
                })?;
                Ok(self.applied())
            }
            InventoryCommand::Transfer(to_cell, quantity) => {
                if *to_cell == self.state.this || !self.state.ledgers.contains_key(to_cell) {
                    return Err(InventoryError::InvalidTransferTarget(to_cell.clone()));
                }
                self.push(DomainEvent::AllocationTransferred {
                    to_cell: to_cell.clone(),
                    quantity: *quantity,
                })?;
                Ok(self.applied())
            }
            InventoryCommand::Reserve(order, quantity) => self.reserve(order, *quantity),
            InventoryCommand::Release(order) => self.release(order),
            InventoryCommand::Fulfil(order) => self.fulfil(order),
        }
    }

    fn reservation(
        &self,
        order: &OrderId,
        quantity: Quantity,
        cell: &CellId,
        replayed: bool,
    ) -> InventoryOutcome {
        InventoryOutcome::Reserved {
            reservation: ReservationView {
                sku: self.state.sku.clone(),
                order_id: order.clone(),
                quantity,
                cell: cell.clone(),
            },
            replayed,
        }
    }

    fn reserve(
        &mut self,
        order: &OrderId,
        quantity: Quantity,
    ) -> Result<InventoryOutcome, InventoryError> {
        // Held here first, then the best holder elsewhere: a retry after a
        // failover that replication already covered replays, not duplicates.
        let own = self.own()?;
        let held = own
            .held(order)
            .map(|r| (own.cell.clone(), r.quantity))
            .or_else(|| {
                self.state
                    .other_holders(order)
                    .first()
                    .map(|(l, r)| (l.cell.clone(), r.quantity))
            });
        if let Some((cell, held)) = held {
            if held != quantity {
                return Err(InventoryError::ReservationMismatch {
                    order_id: order.clone(),
                    held,
                });
            }
            return Ok(self.reservation(order, quantity, &cell, true));
        }
        if let Some(status) = self.state.closed_status(order) {
            return Err(InventoryError::ReservationClosed {
                order_id: order.clone(),
                status,
            });
        }
        self.push(DomainEvent::StockReserved {
            order_id: order.clone(),
            quantity,
        })?;
        let this = self.state.this.clone();
        Ok(self.reservation(order, quantity, &this, false))
    }

    fn release(&mut self, order: &OrderId) -> Result<InventoryOutcome, InventoryError> {
        let others: Vec<CellId> = self
            .state
            .other_holders(order)
            .iter()
            .map(|(l, _)| l.cell.clone())
            .collect();
        if let Some(mine) = self.own()?.held(order).copied() {
            self.push(DomainEvent::ReservationReleased {
                order_id: order.clone(),
                quantity: mine.quantity,
                cause: ReleaseCause::Client,
            })?;
            self.request_from(order, &others, RequestKind::Release)?;
            return Ok(self.applied());
        }
        if !others.is_empty() {
            self.request_from(order, &others, RequestKind::Release)?;
            return Ok(InventoryOutcome::Requested(self.state.view()));
        }
        match self.state.closed_status(order) {
            Some(ReservationStatus::Released) => Ok(self.applied()),
            Some(status) => Err(InventoryError::ReservationClosed {
                order_id: order.clone(),
                status,
            }),
            None => Err(InventoryError::ReservationNotFound {
                order_id: order.clone(),
            }),
        }
    }

    fn fulfil(&mut self, order: &OrderId) -> Result<InventoryOutcome, InventoryError> {
        let others: Vec<CellId> = self
            .state
            .other_holders(order)
            .iter()
            .map(|(l, _)| l.cell.clone())
            .collect();
        if let Some(mine) = self.own()?.held(order).copied() {
            self.push(DomainEvent::ReservationFulfilled {
                order_id: order.clone(),
                quantity: mine.quantity,
                cause: FulfilCause::Client,
            })?;
            // Any duplicate elsewhere is no longer needed.
            self.request_from(order, &others, RequestKind::Release)?;
            return Ok(self.applied());
        }
        if let Some((winner, rest)) = others.split_first() {
            self.request_from(order, std::slice::from_ref(winner), RequestKind::Fulfil)?;
            self.request_from(order, rest, RequestKind::Release)?;
            return Ok(InventoryOutcome::Requested(self.state.view()));
        }
        match self.state.closed_status(order) {
            Some(ReservationStatus::Fulfilled) => Ok(self.applied()),
            Some(status) => Err(InventoryError::ReservationClosed {
                order_id: order.clone(),
                status,
            }),
            None => Err(InventoryError::ReservationNotFound {
                order_id: order.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AggregateId, StreamId};

    fn cell(name: &str) -> CellId {
        CellId::new(name).unwrap()
    }

    fn sku() -> Sku {
        Sku::new("sku-1").unwrap()
    }

    fn order(id: &str) -> OrderId {
        OrderId::new(id).unwrap()
    }

    fn q(n: u64) -> Quantity {
        Quantity::new(n).unwrap()
    }

    fn topology(this: &str) -> Topology {
        Topology::new(cell(this), [cell("aws"), cell("azure")])
    }

    /// Streams written so far: each `(cell, event)` is appended to that
    /// cell's stream at the next version, one millisecond after the last.
    fn given(history: &[(&str, DomainEvent)]) -> Vec<RecordedEvent> {
        let mut versions: BTreeMap<String, u64> = BTreeMap::new();
        history
            .iter()
            .zip(1i64..)
            .map(|((origin, event), at)| {
                let v = versions.entry((*origin).to_owned()).or_default();
                *v += 1;
                RecordedEvent::new(
                    StreamId::new(AggregateId::inventory(&sku()), cell(origin)),
                    *v,
                    Timestamp::from_unix_millis(at).unwrap(),
                    event.clone(),
                )
                .unwrap()
            })
            .collect()
    }

    fn fold(this: &str, events: &[RecordedEvent]) -> Inventory {
        Inventory::fold(&sku(), &topology(this), events).unwrap()
    }

    fn when(
        this: &str,
        history: &[(&str, DomainEvent)],
        command: InventoryCommand,
    ) -> Result<InventoryDecision, InventoryError> {
        fold(this, &given(history)).decide(&command, Timestamp::from_unix_millis(1_000).unwrap())
    }

    fn received(n: u64) -> DomainEvent {
        DomainEvent::StockReceived { quantity: q(n) }
    }

    fn reserved(o: &str, n: u64) -> DomainEvent {
        DomainEvent::StockReserved {
            order_id: order(o),
            quantity: q(n),
        }
    }

    fn view_of(outcome: &InventoryOutcome) -> &InventoryView {
        match outcome {
            InventoryOutcome::Applied(v) | InventoryOutcome::Requested(v) => v,
            InventoryOutcome::Reserved { .. } => panic!("expected a view, got {outcome:?}"),
        }
    }

    #[test]
    fn receiving_raises_on_hand_and_available() {
        let d = when(
            "aws",
            &[("aws", received(5))],
            InventoryCommand::Receive(q(3)),
        )
        .unwrap();
        assert_eq!(d.events, vec![received(3)]);
        let v = view_of(&d.outcome);
        assert_eq!((v.on_hand, v.reserved, v.available), (8, 0, 8));
        assert_eq!(v.cells[&cell("aws")].on_hand, 8);
        assert_eq!(v.cells[&cell("azure")].on_hand, 0);
    }

    #[test]
    fn unknown_sku_has_every_known_cell_at_zero() {
        let v = fold("aws", &[]).view();
        assert_eq!((v.on_hand, v.reserved, v.available), (0, 0, 0));
        assert_eq!(v.cells.len(), 2);
    }

    #[test]
    fn writing_off_more_than_available_is_refused() {
        let history = [("aws", received(5)), ("aws", reserved("o1", 4))];
        let r = when(
            "aws",
            &history,
            InventoryCommand::WriteOff(q(2), WriteOffReason::new("broken").unwrap()),
        );
        assert_eq!(
            r,
            Err(InventoryError::InsufficientStock {
                requested: 2,
                available: 1
            })
        );
    }

    #[test]
    fn reserving_within_available_stock_holds_it() {
        let d = when(
            "aws",
            &[("aws", received(5))],
            InventoryCommand::Reserve(order("o1"), q(5)),
        )
        .unwrap();
        assert_eq!(d.events, vec![reserved("o1", 5)]);
        assert!(matches!(
            d.outcome,
            InventoryOutcome::Reserved {
                replayed: false,
                ..
            }
        ));
    }

    #[test]
    fn reserving_more_than_this_cells_available_is_refused_even_if_another_cell_has_stock() {
        let history = [("aws", received(2)), ("azure", received(100))];
        let r = when(
            "aws",
            &history,
            InventoryCommand::Reserve(order("o1"), q(3)),
        );
        assert_eq!(
            r,
            Err(InventoryError::InsufficientStock {
                requested: 3,
                available: 2
            })
        );
    }

    #[test]
    fn same_order_and_quantity_again_replays_without_events() {
        let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
        let d = when(
            "aws",
            &history,
            InventoryCommand::Reserve(order("o1"), q(2)),
        )
        .unwrap();
        assert!(d.events.is_empty());
        let InventoryOutcome::Reserved {
            reservation,
            replayed,
        } = d.outcome
        else {
            panic!()
        };
        assert!(replayed);
        assert_eq!(reservation.cell, cell("aws"));
    }

    #[test]
    fn same_order_with_another_quantity_is_a_mismatch() {
        let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
        let r = when(
            "aws",
            &history,
            InventoryCommand::Reserve(order("o1"), q(3)),
        );
        assert_eq!(
            r,
            Err(InventoryError::ReservationMismatch {
                order_id: order("o1"),
                held: q(2)
            })
        );
    }

    #[test]
    fn retry_in_the_other_cell_after_replication_replays_the_owners_reservation() {
        let history = [
            ("aws", received(5)),
            ("aws", reserved("o1", 2)),
            ("azure", received(5)),
        ];
        let d = when(
            "azure",
            &history,
            InventoryCommand::Reserve(order("o1"), q(2)),
        )
        .unwrap();
        assert!(d.events.is_empty());
        let InventoryOutcome::Reserved {
            reservation,
            replayed,
        } = d.outcome
        else {
            panic!()
        };
        assert!(replayed);
        assert_eq!(reservation.cell, cell("aws"));
    }

    #[test]
    fn reserving_a_released_order_again_is_refused() {
        let history = [
            ("aws", received(5)),
            ("aws", reserved("o1", 2)),
            (
                "aws",
                DomainEvent::ReservationReleased {
                    order_id: order("o1"),
                    quantity: q(2),
                    cause: ReleaseCause::Client,
                },
            ),
        ];
        let r = when(
            "aws",
            &history,
            InventoryCommand::Reserve(order("o1"), q(2)),
        );
        assert_eq!(
            r,
            Err(InventoryError::ReservationClosed {
                order_id: order("o1"),
                status: ReservationStatus::Released
            })
        );
    }

    #[test]
    fn releasing_an_own_reservation_frees_the_units() {
        let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
        let d = when("aws", &history, InventoryCommand::Release(order("o1"))).unwrap();
        assert_eq!(
            d.events,
            vec![DomainEvent::ReservationReleased {
                order_id: order("o1"),
                quantity: q(2),
                cause: ReleaseCause::Client
            }]
        );
        let InventoryOutcome::Applied(v) = d.outcome else {
            panic!()
        };
        assert_eq!((v.reserved, v.available), (0, 5));
    }

    #[test]
    fn releasing_another_cells_reservation_records_a_request_once() {
        let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
        let d = when("azure", &history, InventoryCommand::Release(order("o1"))).unwrap();
        let request = DomainEvent::ReleaseRequested {
            order_id: order("o1"),
            owner: cell("aws"),
        };
        assert_eq!(d.events, vec![request.clone()]);
        assert!(matches!(d.outcome, InventoryOutcome::Requested(_)));
        // Asking again records nothing new and still answers "requested".
        let mut again = history.to_vec();
        again.push(("azure", request));
        let d = when("azure", &again, InventoryCommand::Release(order("o1"))).unwrap();
        assert!(d.events.is_empty());
        assert!(matches!(d.outcome, InventoryOutcome::Requested(_)));
    }

    #[test]
    fn owner_applies_a_release_request_when_it_sees_it() {
        let history = [
            ("aws", received(5)),
            ("aws", reserved("o1", 2)),
            (
                "azure",
                DomainEvent::ReleaseRequested {
                    order_id: order("o1"),
                    owner: cell("aws"),
                },
            ),
        ];
        let d = when("aws", &history, InventoryCommand::Reconcile).unwrap();
        assert_eq!(
            d.events,
            vec![DomainEvent::ReservationReleased {
                order_id: order("o1"),
                quantity: q(2),
                cause: ReleaseCause::Requested { by: cell("azure") }
            }]
        );
    }

    #[test]
    fn a_fulfilment_request_wins_over_a_release_request() {
        let history = [
            ("aws", received(5)),
            ("aws", reserved("o1", 2)),
            (
                "azure",
                DomainEvent::ReleaseRequested {
                    order_id: order("o1"),
                    owner: cell("aws"),
                },
            ),
            (
                "azure",
                DomainEvent::FulfilmentRequested {
                    order_id: order("o1"),
                    owner: cell("aws"),
                },
            ),
        ];
        let d = when("aws", &history, InventoryCommand::Reconcile).unwrap();
        assert_eq!(
            d.events,
            vec![DomainEvent::ReservationFulfilled {
                order_id: order("o1"),
                quantity: q(2),
                cause: FulfilCause::Requested { by: cell("azure") }
            }]
        );
        let v = view_of(&d.outcome);
        assert_eq!(
            v.cells[&cell("aws")],
            CellView {
                on_hand: 3,
                reserved: 0,
                available: 3
            }
        );
    }

    #[test]
    fn releasing_an_unknown_order_is_not_found() {
        let r = when(
            "aws",
            &[("aws", received(5))],
            InventoryCommand::Release(order("nope")),
        );
        assert_eq!(
            r,
            Err(InventoryError::ReservationNotFound {
                order_id: order("nope")
            })
        );
    }

    #[test]
    fn releasing_twice_is_idempotent_but_releasing_a_fulfilled_order_is_refused() {
        let released = [
            ("aws", received(5)),
            ("aws", reserved("o1", 2)),
            (
                "aws",
                DomainEvent::ReservationReleased {
                    order_id: order("o1"),
                    quantity: q(2),
                    cause: ReleaseCause::Client,
                },
            ),
        ];
        let d = when("aws", &released, InventoryCommand::Release(order("o1"))).unwrap();
        assert!(d.events.is_empty());
        assert!(matches!(d.outcome, InventoryOutcome::Applied(_)));
        let fulfilled = [
            ("aws", received(5)),
            ("aws", reserved("o1", 2)),
            (
                "aws",
                DomainEvent::ReservationFulfilled {
                    order_id: order("o1"),
                    quantity: q(2),
                    cause: FulfilCause::Client,
                },
            ),
        ];
        let r = when("aws", &fulfilled, InventoryCommand::Release(order("o1")));
        assert_eq!(
            r,
            Err(InventoryError::ReservationClosed {
                order_id: order("o1"),
                status: ReservationStatus::Fulfilled
            })
        );
        let d = when("aws", &fulfilled, InventoryCommand::Fulfil(order("o1"))).unwrap();
        assert!(d.events.is_empty(), "fulfilling twice is idempotent");
    }

    #[test]
    fn fulfilling_ships_the_reserved_units() {
        let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
        let d = when("aws", &history, InventoryCommand::Fulfil(order("o1"))).unwrap();
        let InventoryOutcome::Applied(v) = d.outcome else {
            panic!()
        };
        assert_eq!((v.on_hand, v.reserved, v.available), (3, 0, 3));
    }

    #[test]
    fn fulfilling_another_cells_reservation_records_a_request() {
        let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
        let d = when("azure", &history, InventoryCommand::Fulfil(order("o1"))).unwrap();
        assert_eq!(
            d.events,
            vec![DomainEvent::FulfilmentRequested {
                order_id: order("o1"),
                owner: cell("aws")
            }]
        );
        assert!(matches!(d.outcome, InventoryOutcome::Requested(_)));
    }

    #[test]
    fn transfer_moves_available_units_and_the_receiver_takes_them_in_once() {
        let history = [("aws", received(5))];
        let d = when(
            "aws",
            &history,
            InventoryCommand::Transfer(cell("azure"), q(4)),
        )
        .unwrap();
        let v = view_of(&d.outcome);
        assert_eq!(v.cells[&cell("aws")].on_hand, 1);
        let transferred = DomainEvent::AllocationTransferred {
            to_cell: cell("azure"),
            quantity: q(4),
        };
        assert_eq!(d.events, vec![transferred.clone()]);

        let sent = [("aws", received(5)), ("aws", transferred)];
        let d = when("azure", &sent, InventoryCommand::Reconcile).unwrap();
        let receipt = DomainEvent::AllocationReceived {
            from_cell: cell("aws"),
            transfer_version: 2,
            quantity: q(4),
        };
        assert_eq!(d.events, vec![receipt.clone()]);
        assert_eq!(view_of(&d.outcome).cells[&cell("azure")].available, 4);

        let mut taken = sent.to_vec();
        taken.push(("azure", receipt));
        let d = when("azure", &taken, InventoryCommand::Reconcile).unwrap();
        assert!(d.events.is_empty(), "a transfer is taken in once");
    }

    #[test]
    fn transfer_of_more_than_available_or_to_itself_is_refused() {
        let history = [("aws", received(5)), ("aws", reserved("o1", 3))];
        let r = when(
            "aws",
            &history,
            InventoryCommand::Transfer(cell("azure"), q(3)),
        );
        assert_eq!(
            r,
            Err(InventoryError::InsufficientStock {
                requested: 3,
                available: 2
            })
        );
        let r = when(
            "aws",
            &history,
            InventoryCommand::Transfer(cell("aws"), q(1)),
        );
        assert_eq!(r, Err(InventoryError::InvalidTransferTarget(cell("aws"))));
        let r = when(
            "aws",
            &history,
            InventoryCommand::Transfer(cell("gcp"), q(1)),
        );
        assert_eq!(r, Err(InventoryError::InvalidTransferTarget(cell("gcp"))));
    }

    #[test]
    fn a_command_sees_stock_transferred_in_before_it_decides() {
        let history = [
            ("aws", received(5)),
            (
                "aws",
                DomainEvent::AllocationTransferred {
                    to_cell: cell("azure"),
                    quantity: q(5),
                },
            ),
        ];
        let d = when(
            "azure",
            &history,
            InventoryCommand::Reserve(order("o1"), q(5)),
        )
        .unwrap();
        assert_eq!(
            d.events,
            vec![
                DomainEvent::AllocationReceived {
                    from_cell: cell("aws"),
                    transfer_version: 2,
                    quantity: q(5)
                },
                reserved("o1", 5)
            ]
        );
    }

    #[test]
    fn duplicate_reservation_is_released_by_the_cell_that_loses_the_tie_break() {
        // azure reserved first (t=2), aws later (t=3): aws loses.
        let history = [
            ("azure", received(5)),
            ("azure", reserved("o1", 2)),
            ("aws", received(5)),
            ("aws", reserved("o1", 2)),
        ];
        let events = given(&history);
        let loser = fold("aws", &events)
            .decide(&InventoryCommand::Reconcile, Timestamp::EPOCH)
            .unwrap();
        assert_eq!(
            loser.events,
            vec![DomainEvent::ReservationReleased {
                order_id: order("o1"),
                quantity: q(2),
                cause: ReleaseCause::Duplicate {
                    winner: cell("azure")
                }
            }]
        );
        let winner = fold("azure", &events)
            .decide(&InventoryCommand::Reconcile, Timestamp::EPOCH)
            .unwrap();
        assert!(winner.events.is_empty());
    }

    #[test]
    fn fold_uses_only_the_contiguous_prefix_of_another_cells_stream() {
        let mut events = given(&[
            ("azure", received(1)),
            ("azure", received(2)),
            ("azure", received(4)),
        ]);
        events.remove(1);
        let inv = fold("aws", &events);
        assert_eq!(inv.ledgers()[&cell("azure")].on_hand(), 1);
        assert_eq!(inv.ledgers()[&cell("azure")].version(), 1);
    }

    #[test]
    fn an_impossible_event_from_another_cell_stalls_only_that_ledger() {
        let events = given(&[("azure", reserved("o1", 1)), ("aws", received(3))]);
        let inv = fold("aws", &events);
        assert!(matches!(
            inv.ledgers()[&cell("azure")].stalled(),
            Some((1, LedgerError::Insufficient { .. }))
        ));
        assert_eq!(inv.view().cells[&cell("aws")].on_hand, 3);
    }

    #[test]
    fn an_impossible_event_in_the_own_stream_is_a_fold_error() {
        let events = given(&[("aws", reserved("o1", 1))]);
        let err = Inventory::fold(&sku(), &topology("aws"), &events).unwrap_err();
        assert_eq!(err.version, 1);
    }

    #[test]
    fn an_unknown_origin_cell_is_folded_and_shown() {
        let events = given(&[("gcp", received(7))]);
        assert_eq!(fold("aws", &events).view().cells[&cell("gcp")].on_hand, 7);
    }

    #[test]
    fn what_is_owed_beyond_one_append_comes_in_chunks_before_the_command() {
        let n = 150;
        let mut history = vec![("azure", received(n))];
        for o in 0..n {
            history.push(("azure", reserved(&format!("o{o}"), 1)));
        }
        for o in 0..n {
            history.push((
                "aws",
                DomainEvent::ReleaseRequested {
                    order_id: order(&format!("o{o}")),
                    owner: cell("azure"),
                },
            ));
        }
        let d = when("azure", &history, InventoryCommand::Receive(q(5))).unwrap();
        assert!(d.command_pending);
        assert_eq!(d.events.len(), MAX_EVENTS_PER_APPEND);
        assert!(
            d.events
                .iter()
                .all(|e| matches!(e, DomainEvent::ReservationReleased { .. }))
        );
        let InventoryOutcome::Applied(view) = &d.outcome else {
            panic!("a chunk answers with the view after it: {:?}", d.outcome);
        };
        assert_eq!(view.cells[&cell("azure")].reserved, 50);
        // The chunk appended, the rest and the command fit the next one.
        history.extend(d.events.into_iter().map(|e| ("azure", e)));
        let d = when("azure", &history, InventoryCommand::Receive(q(5))).unwrap();
        assert!(!d.command_pending);
        assert_eq!(d.events.len(), 51);
        assert_eq!(
            d.events.last(),
            Some(&DomainEvent::StockReceived { quantity: q(5) })
        );
    }

    #[test]
    fn owed_events_that_leave_no_room_for_the_command_go_first_alone() {
        // 99 owed and a receipt fit; with two cells a command needs room
        // for two events, so 99 owed go alone.
        let n = 99;
        let mut history = vec![("azure", received(n))];
        for o in 0..n {
            history.push(("azure", reserved(&format!("o{o}"), 1)));
        }
        for o in 0..n {
            history.push((
                "aws",
                DomainEvent::ReleaseRequested {
                    order_id: order(&format!("o{o}")),
                    owner: cell("azure"),
                },
            ));
        }
        let d = when("azure", &history, InventoryCommand::Receive(q(5))).unwrap();
        assert!(d.command_pending);
        assert_eq!(d.events.len(), 99);
        history.pop();
        let d = when("azure", &history, InventoryCommand::Receive(q(5))).unwrap();
        assert!(!d.command_pending, "98 owed leave room for the command");
        assert_eq!(d.events.len(), 99);
    }

    #[test]
    fn write_off_reason_is_bounded_and_printable() {
        assert!(WriteOffReason::new("x".repeat(200)).is_ok());
        assert_eq!(
            WriteOffReason::new("x".repeat(201)),
            Err(WriteOffReasonError::Length)
        );
        assert_eq!(WriteOffReason::new(""), Err(WriteOffReasonError::Length));
        assert_eq!(
            WriteOffReason::new("a\tb"),
            Err(WriteOffReasonError::ControlCharacter)
        );
        assert!(
            WriteOffReason::new("ü".repeat(200)).is_ok(),
            "counted in characters, not bytes"
        );
    }

    #[test]
    fn write_off_reason_is_never_blank_and_shows_as_the_text_it_is() {
        for blank in [" ", "   ", "\u{a0}", "\u{3000} \u{2003}"] {
            assert_eq!(
                WriteOffReason::new(blank),
                Err(WriteOffReasonError::Blank),
                "{blank:?}"
            );
        }
        // Bidi controls, zero-width characters, a byte order mark, soft
        // hyphen, line and paragraph separators.
        for hidden in [
            "\u{202e}gnp.exe",
            "a\u{200b}b",
            "\u{feff}x",
            "soft\u{ad}hyphen",
            "one\u{2028}two",
            "one\u{2029}two",
            "\u{2066}isolate\u{2069}",
        ] {
            assert_eq!(
                WriteOffReason::new(hidden),
                Err(WriteOffReasonError::InvisibleCharacter),
                "{hidden:?}"
            );
        }
        for fine in [
            " damaged ",
            "dañado en tránsito",
            "破損",
            "emoji 📦",
            "a\u{a0}b",
        ] {
            assert!(WriteOffReason::new(fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn a_reason_recorded_before_the_newer_rules_still_reads_back() {
        // An event stored by an older version (or another cell) with a
        // reason the newer rules refuse must not make its SKU unreadable.
        let json = serde_json::json!("\u{202e} ");
        let reason: WriteOffReason = serde_json::from_value(json).unwrap();
        assert_eq!(reason.as_str(), "\u{202e} ");
        // What was never allowed still is not.
        assert!(serde_json::from_value::<WriteOffReason>(serde_json::json!("a\nb")).is_err());
        assert!(serde_json::from_value::<WriteOffReason>(serde_json::json!("")).is_err());
    }
}
