//! Which cells exist and which one this process is.

use std::collections::BTreeSet;

use crate::ids::CellId;

/// The cells of a deployment and the one this process runs in. Every cell
/// must be configured with the same set, or their views disagree about where
/// stock may be transferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    this: CellId,
    cells: BTreeSet<CellId>,
}

impl Topology {
    /// `this` cell plus its `peers` (duplicates and `this` among the peers are
    /// harmless).
    #[must_use]
    pub fn new(this: CellId, peers: impl IntoIterator<Item = CellId>) -> Self {
        let mut cells: BTreeSet<CellId> = peers.into_iter().collect();
        cells.insert(this.clone());
        Self { this, cells }
    }

    /// The cell this process runs in: the only stream origin it writes.
    #[must_use]
    pub fn this(&self) -> &CellId {
        &self.this
    }

    /// Every cell, this one included, in order.
    pub fn cells(&self) -> impl Iterator<Item = &CellId> {
        self.cells.iter()
    }

    /// Whether `cell` is part of the deployment.
    #[must_use]
    pub fn contains(&self, cell: &CellId) -> bool {
        self.cells.contains(cell)
    }
}
