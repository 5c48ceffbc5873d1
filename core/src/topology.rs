//! Which cells exist and which one this process is.

use std::collections::BTreeSet;

use crate::ids::{CellId, IdentifierError};

/// Why configuration text does not name a topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// This cell's id is not valid.
    #[error("this cell's id {0:?}: {1}")]
    Cell(String, IdentifierError),
    /// An entry of the peer list is not a valid cell id.
    #[error("peer entry {0:?}: {1}")]
    Peer(String, IdentifierError),
}

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

    /// Parses configuration text: this cell's id and a comma-separated list
    /// of peers (spaces around entries are ignored).
    ///
    /// # Errors
    /// [`TopologyError`] naming the first invalid id.
    pub fn parse(this: &str, peers: &str) -> Result<Self, TopologyError> {
        let this = CellId::new(this.trim()).map_err(|e| TopologyError::Cell(this.to_owned(), e))?;
        let peers = peers
            .split(',')
            .map(|p| CellId::new(p.trim()).map_err(|e| TopologyError::Peer(p.to_owned(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(this, peers))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_text_parses_with_spaces_and_names_a_bad_entry() {
        let t = Topology::parse(" aws ", "azure, gcp").unwrap();
        assert_eq!(t.this().as_str(), "aws");
        assert_eq!(t.cells().count(), 3);
        assert!(matches!(
            Topology::parse("AWS", "azure"),
            Err(TopologyError::Cell(..))
        ));
        assert!(
            matches!(Topology::parse("aws", "azure,,gcp"), Err(TopologyError::Peer(p, _)) if p.is_empty())
        );
    }
}
