//! What the API shows of a SKU's stock.

use std::collections::BTreeMap;

use serde::Serialize;

use super::aggregate::Inventory;
use crate::ids::{CellId, OrderId, Sku};
use crate::quantity::Quantity;

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

impl Inventory {
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
}
