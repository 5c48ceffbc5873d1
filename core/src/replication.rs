//! Receiving other cells' events: what a batch of them did, and how far
//! each stream has arrived.
//!
//! Delivery is at least once and in any order, so a cell can hold version 7
//! of a peer's stream without version 6. Nothing folds past such a gap (see
//! [`Inventory::fold`](crate::Inventory::fold)); [`StreamProgress`] makes it
//! visible so an operator can see what the cell is waiting on.

use serde::Serialize;

use crate::error::ServiceError;
use crate::event::{RecordedEvent, StreamId};
use crate::ports::ReplicatedApply;

/// The most missing versions [`StreamProgress::missing`] names; the count
/// of all of them is [`StreamProgress::missing_count`].
pub const MISSING_LISTED: usize = 20;

/// How far one stream has arrived in this cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamProgress {
    /// The stream.
    #[serde(serialize_with = "display")]
    pub stream: StreamId,
    /// Every version up to this one is stored (0: not even the first).
    pub contiguous: u64,
    /// The highest version stored.
    pub highest: u64,
    /// The first missing versions, at most [`MISSING_LISTED`].
    pub missing: Vec<u64>,
    /// How many versions below `highest` are missing.
    pub missing_count: u64,
}

fn display<S: serde::Serializer>(stream: &StreamId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(stream)
}

impl StreamProgress {
    /// The progress of `stream` among `events` (of any streams, any order).
    #[must_use]
    pub fn of(stream: &StreamId, events: &[RecordedEvent]) -> Self {
        let mut versions: Vec<u64> = events
            .iter()
            .filter(|e| e.stream() == stream)
            .map(RecordedEvent::version)
            .collect();
        versions.sort_unstable();
        versions.dedup();
        let highest = versions.last().copied().unwrap_or(0);
        let stored = u64::try_from(versions.len()).unwrap_or(u64::MAX);
        let mut missing = Vec::new();
        let mut expected = 1u64;
        for v in &versions {
            while expected < *v && missing.len() < MISSING_LISTED {
                missing.push(expected);
                expected += 1;
            }
            expected = v.saturating_add(1);
        }
        let contiguous = versions
            .iter()
            .zip(1u64..)
            .take_while(|(v, n)| *v == n)
            .count();
        Self {
            stream: stream.clone(),
            contiguous: u64::try_from(contiguous).unwrap_or(u64::MAX),
            highest,
            missing,
            missing_count: highest.saturating_sub(stored),
        }
    }

    /// Whether a version below the highest is missing.
    #[must_use]
    pub fn has_gap(&self) -> bool {
        self.missing_count > 0
    }
}

/// What applying a batch of replicated events did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Per event of the batch, in its order: stored, already present, or
    /// why not. After the store became unavailable the rest are
    /// [`ServiceError::Unavailable`] without being tried.
    pub outcomes: Vec<Result<ReplicatedApply, ServiceError>>,
    /// Every stream the batch touched, as far as it has arrived now.
    pub streams: Vec<StreamProgress>,
    /// The reconcile each touched SKU ran afterwards (the first failure):
    /// the events stay stored, and a redelivery runs it again.
    pub follow_up: Result<(), ServiceError>,
}

impl BatchReport {
    /// Whether every event is stored and every follow-up ran.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.follow_up.is_ok() && self.outcomes.iter().all(Result::is_ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AggregateId, DomainEvent};
    use crate::ids::{CellId, Sku};
    use crate::quantity::Quantity;
    use crate::timestamp::Timestamp;

    fn stream(origin: &str) -> StreamId {
        StreamId::new(
            AggregateId::inventory(&Sku::new("sku").unwrap()),
            CellId::new(origin).unwrap(),
        )
    }

    fn events(origin: &str, versions: &[u64]) -> Vec<RecordedEvent> {
        versions
            .iter()
            .map(|v| {
                RecordedEvent::new(
                    stream(origin),
                    *v,
                    Timestamp::EPOCH,
                    DomainEvent::StockReceived {
                        quantity: Quantity::new(1).unwrap(),
                    },
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_contiguous_stream_has_no_gap() {
        let p = StreamProgress::of(&stream("aws"), &events("aws", &[3, 1, 2]));
        assert_eq!((p.contiguous, p.highest, p.missing_count), (3, 3, 0));
        assert!(!p.has_gap());
    }

    #[test]
    fn missing_versions_are_named_and_counted() {
        let mut all = events("aws", &[1, 4, 7]);
        all.extend(events("azure", &[2, 3]));
        let p = StreamProgress::of(&stream("aws"), &all);
        assert_eq!((p.contiguous, p.highest), (1, 7));
        assert_eq!(p.missing, [2, 3, 5, 6]);
        assert_eq!(p.missing_count, 4);
        assert!(p.has_gap());
        let p = StreamProgress::of(&stream("azure"), &all);
        assert_eq!((p.contiguous, p.missing), (0, vec![1]));
    }

    #[test]
    fn a_long_gap_lists_the_first_missing_versions_and_counts_all() {
        let p = StreamProgress::of(&stream("aws"), &events("aws", &[1000]));
        assert_eq!(p.missing.len(), MISSING_LISTED);
        assert_eq!(p.missing.first(), Some(&1));
        assert_eq!(p.missing_count, 999);
        assert_eq!(
            serde_json::to_value(&p).unwrap()["stream"],
            "inventory/sku/aws"
        );
    }
}
