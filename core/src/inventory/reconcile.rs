//! What a cell owes other cells' streams: the events it appends so that
//! what they ask of it (a transfer in, a release or fulfilment of one of
//! its reservations, a duplicate that lost the tie-break) is done.

use super::aggregate::Inventory;
use super::ledger::{RequestKind, ReservationState, ReservationStatus};
use crate::event::{DomainEvent, FulfilCause, ReleaseCause};
use crate::ids::OrderId;

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
