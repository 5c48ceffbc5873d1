//! What a cell owes other cells' streams: the events it appends so that
//! what they ask of it (a transfer in, a release or fulfilment of one of
//! its reservations, a duplicate that lost the tie-break) is done.

use super::aggregate::{Inventory, VoidScan};
use super::keys::{KEY_RETENTION_MS, WriteKind};
use super::ledger::{CellLedger, RequestKind, ReservationState, ReservationStatus};
use crate::event::{DomainEvent, FulfilCause, ReleaseCause};
use crate::ids::{CellId, OrderId};
use crate::quantity::Quantity;

impl Inventory {
    /// Events this cell owes to what it sees in other cells' streams:
    /// transfers sent to it, requests for its reservations, and its own
    /// reservations that lose the duplicate tie-break.
    pub(super) fn reconcile(&self) -> Vec<DomainEvent> {
        let Some(own) = self.own() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        for other in self.others() {
            for (version, (to, quantity)) in &other.transfers_out {
                if *to == own.cell
                    && !own.received(&other.cell, *version)
                    && !other.transfer_voided(*version)
                {
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

/// Of `units`, what `available` cannot take back out.
fn short(units: u64, available: u64) -> u64 {
    units.saturating_sub(available)
}

/// `units` as a quantity of at most [`Quantity::MAX`] units, or `None` for 0.
fn some_units(units: u64) -> Option<Quantity> {
    Quantity::new(units.min(u64::from(Quantity::MAX))).ok()
}

impl Inventory {
    /// The next event that settles a keyed write counted in two cells, on
    /// the state as it is (see `docs/domain.md`), in this order:
    /// 1. this cell's own copy of a keyed write that another cell recorded
    ///    earlier (within [`KEY_RETENTION_MS`]) is voided;
    /// 2. a transfer this cell took in that its sender voided goes back out;
    /// 3. what 1 and 2 could not take out (the shortage) is taken out of
    ///    available stock as it becomes available;
    /// 4. another cell's shortage is covered by a transfer of this cell's
    ///    available stock, less what this cell's transfers to it not yet
    ///    taken in will bring.
    pub(super) fn settlement(&mut self) -> Option<DomainEvent> {
        let fingerprint = VoidScan::fingerprint(&self.ledgers);
        let void = if self.void_scan.clean(&fingerprint) {
            None
        } else {
            let void = self.void_own(self.own()?);
            if void.is_none() {
                self.void_scan.set(fingerprint);
            }
            void
        };
        let own = self.own()?;
        void.or_else(|| self.void_received(own))
            .or_else(|| {
                let settled = own.shortage.min(own.available());
                some_units(settled).map(|quantity| DomainEvent::ShortageSettled { quantity })
            })
            .or_else(|| self.cover(own))
    }

    fn void_own(&self, own: &CellLedger) -> Option<DomainEvent> {
        if own.keys.is_empty() || self.others().all(|o| o.keys.is_empty()) {
            return None;
        }
        for (version, mine) in own.keys.iter().filter(|(_, e)| !e.voided) {
            let winner = self
                .others()
                .filter_map(|o| o.keys.latest(mine.digest).map(|(_, e)| (e.at, &o.cell)))
                .filter(|(at, cell)| {
                    (*at, *cell) < (mine.at, &own.cell)
                        && mine.at.unix_millis().saturating_sub(at.unix_millis()) < KEY_RETENTION_MS
                })
                .min();
            if let Some((_, winner)) = winner {
                let shortage = match mine.write.kind {
                    WriteKind::Receive => short(mine.write.quantity.get(), own.available()),
                    WriteKind::WriteOff | WriteKind::Transfer => 0,
                };
                return Some(DomainEvent::DuplicateWriteVoided {
                    version,
                    winner: winner.clone(),
                    shortage,
                });
            }
        }
        None
    }

    fn void_received(&self, own: &CellLedger) -> Option<DomainEvent> {
        for other in self.others() {
            for version in &other.transfers_voided {
                let taken_back = own
                    .transfers_in_voided
                    .contains(&(other.cell.clone(), *version));
                if !own.received(&other.cell, *version) || taken_back {
                    continue;
                }
                let (_, quantity) = other.transfers_out.get(version)?;
                return Some(DomainEvent::ReceivedTransferVoided {
                    from_cell: other.cell.clone(),
                    transfer_version: *version,
                    quantity: *quantity,
                    shortage: short(quantity.get(), own.available()),
                });
            }
        }
        None
    }

    fn cover(&self, own: &CellLedger) -> Option<DomainEvent> {
        if own.available() == 0 {
            return None;
        }
        for other in self.others().filter(|o| o.shortage > 0) {
            let coming: u64 = own
                .transfers_out
                .iter()
                .filter(|(v, (to, _))| {
                    *to == other.cell
                        && !own.transfers_voided.contains(v)
                        && !other.received(&own.cell, **v)
                })
                .map(|(_, (_, q))| q.get())
                .sum();
            let units = other.shortage.saturating_sub(coming).min(own.available());
            if let Some(quantity) = some_units(units) {
                return Some(DomainEvent::AllocationTransferred {
                    to_cell: CellId::clone(&other.cell),
                    quantity,
                });
            }
        }
        None
    }
}
