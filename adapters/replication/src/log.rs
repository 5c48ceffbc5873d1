//! What a receiving cell has seen of each peer since this process started:
//! for `GET /replication/status`.
//!
//! Counts are per process (a Lambda instance, a Functions worker); gaps are
//! the streams this process saw arrive with a version missing, re-checked
//! against the store when the status is read, so a gap another process
//! closed disappears. A resync closes every gap.

use std::collections::BTreeMap;
use std::sync::Mutex;

use twincell_core::{CellId, StreamId, StreamProgress, Timestamp};

/// The most streams with gaps remembered per peer; past it, new ones are
/// counted but not named.
pub const MAX_GAPS_PER_PEER: usize = 1_000;

/// One peer's deliveries, as this process saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// Events received from the peer (stored or already present).
    pub events_received: u64,
    /// When the last of them arrived (this cell's clock).
    pub last_received_at: Option<Timestamp>,
    /// Streams of the peer waiting on a missing version.
    pub gaps: BTreeMap<StreamId, StreamProgress>,
    /// Streams with gaps beyond [`MAX_GAPS_PER_PEER`], not named.
    pub gaps_not_named: u64,
}

/// Per peer, what arrived.
#[derive(Debug, Default)]
pub struct ReceiveLog {
    peers: Mutex<BTreeMap<CellId, PeerStatus>>,
}

impl ReceiveLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<CellId, PeerStatus>> {
        // Every update is complete before the lock is released.
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `count` events from `peer` arrived at `at`.
    pub fn received(&self, peer: &CellId, count: u64, at: Timestamp) {
        let mut peers = self.lock();
        let status = peers.entry(peer.clone()).or_default();
        status.events_received = status.events_received.saturating_add(count);
        status.last_received_at = Some(at);
    }

    /// How far a stream has arrived: remembered while it has a gap,
    /// forgotten once it has none.
    pub fn progress(&self, progress: &StreamProgress) {
        let mut peers = self.lock();
        let status = peers.entry(progress.stream.origin.clone()).or_default();
        if progress.has_gap() {
            if status.gaps.len() < MAX_GAPS_PER_PEER || status.gaps.contains_key(&progress.stream) {
                status
                    .gaps
                    .insert(progress.stream.clone(), progress.clone());
            } else {
                status.gaps_not_named = status.gaps_not_named.saturating_add(1);
            }
        } else {
            status.gaps.remove(&progress.stream);
        }
    }

    /// A copy of every peer's status.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<CellId, PeerStatus> {
        self.lock().clone()
    }
}
