//! Deciding a command: what a client may ask of one SKU's stock, the events
//! that do it, and why it may be refused.

use super::aggregate::Inventory;
use super::keys::{KeyedWrite, key_digest};
use super::ledger::{CellLedger, LedgerError, RequestKind, ReservationStatus, Undo};
use super::view::{InventoryView, ReservationView};
use crate::event::{DomainEvent, FulfilCause, ReleaseCause};
use crate::ids::{CellId, IdempotencyKey, OrderId};
use crate::ports::MAX_EVENTS_PER_APPEND;
use crate::quantity::Quantity;
use crate::timestamp::Timestamp;
use crate::write_off_reason::WriteOffReason;

/// What a client asks of one SKU's stock. A receipt, write-off or transfer
/// may carry an idempotency key: within [`KEY_RETENTION_MS`] of a write
/// with the key (in any cell this cell has heard from), the same request is
/// answered as that write was, and another request under the key is
/// refused.
///
/// [`KEY_RETENTION_MS`]: super::KEY_RETENTION_MS
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryCommand {
    /// Units arrived.
    Receive(Quantity, Option<IdempotencyKey>),
    /// Units are lost or damaged.
    WriteOff(Quantity, WriteOffReason, Option<IdempotencyKey>),
    /// Hold units for an order.
    Reserve(OrderId, Quantity),
    /// Free an order's reservation.
    Release(OrderId),
    /// Ship an order's reservation.
    Fulfil(OrderId),
    /// Move available units to another cell.
    Transfer(CellId, Quantity, Option<IdempotencyKey>),
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
    /// The idempotency key was used for another request on this SKU.
    #[error("the idempotency key was used for another request")]
    IdempotencyKeyReused,
    /// A decided event did not fit the ledger it was decided on: a bug,
    /// never a client error.
    #[error("decision does not fit the ledger: {0}")]
    Inconsistent(String),
}

/// What a decided command does, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOutcome {
    /// Applied in this cell (HTTP 200 with the view).
    Applied(InventoryView),
    /// Recorded as a request for the owning cell (HTTP 202 with the view).
    Requested(InventoryView),
    /// A keyed write asked for again: what its first request was answered
    /// (HTTP 200 with that view), nothing new applied.
    Replayed(InventoryView),
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

impl Inventory {
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
        self.decide_keeping(command, now).0
    }

    /// [`decide`](Self::decide), giving back the state as well: on a
    /// decision, the state after its events (what the store holds once they
    /// are appended); on a refusal, the state as it was. What a service
    /// keeps between commands, without copying the state.
    pub fn decide_keeping(
        self,
        command: &InventoryCommand,
        now: Timestamp,
    ) -> (Result<InventoryDecision, InventoryError>, Self) {
        let (decision, state, _) = self.decide_rewindable(command, now);
        (decision, state)
    }

    /// [`decide_keeping`](Self::decide_keeping), with what takes the
    /// decision's events back out of the state
    /// ([`rewind`](Self::rewind)) when the store refuses them (another
    /// process appended first): the state is then as it was before the
    /// decision, and only what the store holds beyond it needs reading.
    /// Empty on a refusal, where the state is already as it was.
    pub(crate) fn decide_rewindable(
        self,
        command: &InventoryCommand,
        now: Timestamp,
    ) -> (Result<InventoryDecision, InventoryError>, Self, Rewind) {
        let mut owed = self.reconcile();
        // A command adds at most two events of its own (a write and its
        // key) or one plus one request per other cell holding the order.
        let room = MAX_EVENTS_PER_APPEND.saturating_sub(1 + self.others().count().max(1));
        owed.truncate(MAX_EVENTS_PER_APPEND);
        let mut next = Pending {
            state: self,
            events: Vec::with_capacity(owed.len() + 2),
            undo: Vec::with_capacity(owed.len() + 2),
            now,
        };
        let decided = next.decide(owed, command, room);
        let Pending {
            mut state, undo, ..
        } = next;
        let rewind = Rewind(undo);
        match decided {
            Ok(decision) => (Ok(decision), state, rewind),
            Err(e) => {
                state.rewind(rewind);
                (Err(e), state, Rewind::default())
            }
        }
    }

    /// Takes a decision's events back out of the state it was decided on
    /// (see [`decide_rewindable`](Self::decide_rewindable)).
    pub(crate) fn rewind(&mut self, rewind: Rewind) {
        if rewind.0.is_empty() {
            return;
        }
        self.void_scan.clear();
        let this = self.this.clone();
        if let Some(own) = self.ledgers.get_mut(&this) {
            for undo in rewind.0.into_iter().rev() {
                own.undo(undo);
            }
        }
    }
}

/// How to take a decision's events back out of this cell's ledger, one
/// [`Undo`] per event in the order they were applied.
#[derive(Debug, Default)]
pub(crate) struct Rewind(Vec<Undo>);

/// A decision under construction: the state with the new events applied.
struct Pending {
    state: Inventory,
    events: Vec<DomainEvent>,
    /// Per event in `events`, how to take it back out of `state`.
    undo: Vec<Undo>,
    now: Timestamp,
}

impl Pending {
    /// The owed events, then what settles keyed writes counted twice,
    /// then the command's — unless what is owed takes more than `room`
    /// events: then the first chunk of it, with the command pending.
    fn decide(
        &mut self,
        owed: Vec<DomainEvent>,
        command: &InventoryCommand,
        room: usize,
    ) -> Result<InventoryDecision, InventoryError> {
        let mut command_pending = owed.len() > room;
        for event in owed {
            self.push(event)?;
        }
        // Each settlement changes what the next one is (a void takes
        // units the next may need), so they are decided one at a time on
        // the state so far.
        while !command_pending && let Some(event) = self.state.settlement() {
            if self.events.len() >= room {
                command_pending = true;
            } else {
                self.push(event)?;
            }
        }
        if command_pending {
            return Ok(InventoryDecision {
                outcome: self.applied(),
                events: std::mem::take(&mut self.events),
                command_pending,
            });
        }
        let outcome = self.command(command)?;
        if self.events.len() > MAX_EVENTS_PER_APPEND {
            // Only a topology of more than 99 cells gets here.
            return Err(InventoryError::Inconsistent(format!(
                "a decision of {} events does not fit one append of {MAX_EVENTS_PER_APPEND}",
                self.events.len()
            )));
        }
        Ok(InventoryDecision {
            events: std::mem::take(&mut self.events),
            outcome,
            command_pending,
        })
    }

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
        let undo = ledger
            .apply_undoable(version, self.now, &event)
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
        self.undo.push(undo);
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
            InventoryCommand::Receive(quantity, key) => self.write(
                DomainEvent::StockReceived {
                    quantity: *quantity,
                },
                key.as_ref(),
            ),
            InventoryCommand::WriteOff(quantity, reason, key) => self.write(
                DomainEvent::StockWrittenOff {
                    quantity: *quantity,
                    reason: reason.clone(),
                },
                key.as_ref(),
            ),
            InventoryCommand::Transfer(to_cell, quantity, key) => self.write(
                DomainEvent::AllocationTransferred {
                    to_cell: to_cell.clone(),
                    quantity: *quantity,
                },
                key.as_ref(),
            ),
            InventoryCommand::Reserve(order, quantity) => self.reserve(order, *quantity),
            InventoryCommand::Release(order) => self.release(order),
            InventoryCommand::Fulfil(order) => self.fulfil(order),
        }
    }

    /// A receipt, write-off or transfer, with its key when it has one: a
    /// request already made under the key is answered as it was then.
    fn write(
        &mut self,
        event: DomainEvent,
        key: Option<&IdempotencyKey>,
    ) -> Result<InventoryOutcome, InventoryError> {
        let write = KeyedWrite::of(&event).ok_or_else(|| {
            InventoryError::Inconsistent(format!("{} cannot carry a key", event.type_name()))
        })?;
        if let Some(key) = key
            && let Some((_, first)) = self.state.keyed(key_digest(key), self.now)
        {
            if first.write.request != write.request {
                return Err(InventoryError::IdempotencyKeyReused);
            }
            return Ok(InventoryOutcome::Replayed(InventoryView::of_figures(
                self.state.sku.clone(),
                &first.answer,
            )));
        }
        if let DomainEvent::AllocationTransferred { to_cell, .. } = &event
            && (*to_cell == self.state.this || !self.state.ledgers.contains_key(to_cell))
        {
            return Err(InventoryError::InvalidTransferTarget(to_cell.clone()));
        }
        self.push(event)?;
        if let Some(key) = key {
            let answer = self.state.figures();
            self.push(DomainEvent::IdempotencyKeyRecorded {
                key: key.clone(),
                answer,
            })?;
        }
        Ok(self.applied())
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
