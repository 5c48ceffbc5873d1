//! What the API shows of a SKU's stock.

use std::collections::BTreeMap;

use serde::Serialize;

use super::aggregate::Inventory;
use crate::event::StockFigures;
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
    /// Units reserved there that no received stock backs (the part of a
    /// keyed write retried in two cells that could not be taken back out;
    /// see `docs/domain.md`). Omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub shortage: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
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
    /// Sum over cells; omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub shortage: u64,
    /// Per cell, in cell order.
    pub cells: BTreeMap<CellId, CellView>,
}

impl InventoryView {
    /// The view of `sku` with each cell's `figures`.
    #[must_use]
    pub fn of_figures(sku: Sku, figures: &BTreeMap<CellId, StockFigures>) -> Self {
        Self::of(sku, figures.iter().map(|(cell, f)| (cell, *f)))
    }

    fn of<'a>(sku: Sku, figures: impl Iterator<Item = (&'a CellId, StockFigures)>) -> Self {
        let mut view = Self {
            sku,
            on_hand: 0,
            reserved: 0,
            available: 0,
            shortage: 0,
            cells: BTreeMap::new(),
        };
        for (cell, f) in figures {
            let cell_view = CellView {
                on_hand: f.on_hand,
                reserved: f.reserved,
                available: f.on_hand.saturating_sub(f.reserved),
                shortage: f.shortage,
            };
            view.on_hand = view.on_hand.saturating_add(cell_view.on_hand);
            view.reserved = view.reserved.saturating_add(cell_view.reserved);
            view.available = view.available.saturating_add(cell_view.available);
            view.shortage = view.shortage.saturating_add(cell_view.shortage);
            view.cells.insert(cell.clone(), cell_view);
        }
        view
    }
}

impl Inventory {
    /// The API view.
    #[must_use]
    pub fn view(&self) -> InventoryView {
        InventoryView::of(self.sku.clone(), self.each_figures())
    }

    /// Every cell's stock figures: what an answer to a keyed write records.
    #[must_use]
    pub fn figures(&self) -> BTreeMap<CellId, StockFigures> {
        self.each_figures()
            .map(|(cell, f)| (cell.clone(), f))
            .collect()
    }

    fn each_figures(&self) -> impl Iterator<Item = (&CellId, StockFigures)> {
        self.ledgers.iter().map(|(cell, l)| {
            (
                cell,
                StockFigures {
                    on_hand: l.on_hand,
                    reserved: l.reserved,
                    shortage: l.shortage,
                },
            )
        })
    }
}
