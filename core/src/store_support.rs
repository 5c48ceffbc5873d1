//! Store helpers: the rules of [`EventStore`](crate::EventStore) that need no backend, shared
//! by every store so that one store refuses exactly what another does —
//! the shape and size checks of an append, replicated apply by
//! create-if-absent, and snapshots split into parts a backend item holds.

use std::future::Future;

use crate::event::{RecordedEvent, StreamId};
use crate::ports::{
    MAX_EVENT_BYTES, MAX_EVENTS_PER_APPEND, MAX_SNAPSHOT_BYTES, ReplicatedApply,
    SNAPSHOT_PART_BYTES, Snapshot, StoreError,
};

/// The bytes `c` takes inside a JSON string.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Splits `snapshot.body` into the parts a store writes: each at most
/// [`SNAPSHOT_PART_BYTES`] in its JSON string encoding, ending on a
/// character boundary, at least one (an empty body is one empty part).
///
/// # Errors
/// [`StoreError::TooLarge`] when the body is over [`MAX_SNAPSHOT_BYTES`].
pub fn snapshot_parts(snapshot: &Snapshot) -> Result<Vec<&str>, StoreError> {
    let body = snapshot.body.as_str();
    let mut parts = Vec::new();
    let (mut start, mut size, mut total) = (0usize, 0usize, 0usize);
    for (at, c) in body.char_indices() {
        let n = escaped_len(c);
        total += n;
        if total > MAX_SNAPSHOT_BYTES {
            return Err(StoreError::TooLarge(format!(
                "the snapshot of {} v{} is over {MAX_SNAPSHOT_BYTES} bytes",
                snapshot.stream, snapshot.version
            )));
        }
        if size + n > SNAPSHOT_PART_BYTES {
            parts.push(body.get(start..at).unwrap_or_default());
            (start, size) = (at, 0);
        }
        size += n;
    }
    parts.push(body.get(start..).unwrap_or_default());
    Ok(parts)
}

/// One stored part of a snapshot, as a store reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPart<'a> {
    /// Its place, from 0.
    pub index: usize,
    /// How many parts its save wrote.
    pub count: usize,
    /// The snapshot's version.
    pub version: u64,
    /// The snapshot's format.
    pub format: u32,
    /// Its share of the body.
    pub text: &'a str,
}

/// Puts the snapshot of `stream` back together from its stored parts, in
/// any order, possibly with stale parts of an earlier, larger save: the
/// parts of part 0's save are taken. `None` when there is no part 0.
///
/// # Errors
/// [`StoreError::Corrupt`] when a part of that save is missing.
pub fn join_snapshot_parts<'a>(
    stream: &StreamId,
    parts: impl IntoIterator<Item = SnapshotPart<'a>>,
) -> Result<Option<Snapshot>, StoreError> {
    let parts: Vec<SnapshotPart<'a>> = parts.into_iter().collect();
    let Some(first) = parts.iter().find(|p| p.index == 0) else {
        return Ok(None);
    };
    let mut body = String::new();
    for index in 0..first.count {
        let part = parts
            .iter()
            .find(|p| p.index == index && p.version == first.version)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "snapshot of {stream} v{} lacks part {index} of {}",
                    first.version, first.count
                ))
            })?;
        body.push_str(part.text);
    }
    Ok(Some(Snapshot {
        stream: stream.clone(),
        version: first.version,
        format: first.format,
        body,
    }))
}

/// Counts bytes written, so an event's encoded size is known without
/// keeping the encoding.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size of `event`'s JSON encoding, in bytes.
#[must_use]
pub fn encoded_size(event: &RecordedEvent) -> usize {
    let mut count = ByteCount(0);
    // Serializing into a counter only fails if serialization itself does,
    // which no event does; such an event would count as too large.
    match serde_json::to_writer(&mut count, event) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Refuses an event over [`MAX_EVENT_BYTES`].
///
/// # Errors
/// [`StoreError::TooLarge`] naming the event and its size.
pub fn check_event_size(event: &RecordedEvent) -> Result<(), StoreError> {
    check_size_within(event, MAX_EVENT_BYTES)
}

fn check_size_within(event: &RecordedEvent, limit: usize) -> Result<(), StoreError> {
    let size = encoded_size(event);
    if size > limit {
        return Err(StoreError::TooLarge(format!(
            "event {} v{} is {size} bytes; an event holds at most {limit}",
            event.stream(),
            event.version()
        )));
    }
    Ok(())
}

/// Checks the rules of [`EventStore::append`](crate::EventStore::append) that need no store: `events`
/// is a non-empty run of events of `stream` numbered from
/// `expected_version + 1`, at most [`MAX_EVENTS_PER_APPEND`] of them, each
/// within [`MAX_EVENT_BYTES`]. Every store applies it before writing.
///
/// # Errors
/// [`StoreError::InvalidBatch`] saying what is wrong with the shape;
/// [`StoreError::TooLarge`] for too many or too large events.
pub fn check_batch(
    stream: &StreamId,
    expected_version: u64,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidBatch("no events".to_owned()));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(StoreError::TooLarge(format!(
            "{} events in one append; at most {MAX_EVENTS_PER_APPEND} are committed atomically",
            events.len()
        )));
    }
    for (offset, e) in (1u64..).zip(events) {
        if e.stream() != stream {
            return Err(StoreError::InvalidBatch(format!(
                "event of {} in batch for {stream}",
                e.stream()
            )));
        }
        if Some(e.version()) != expected_version.checked_add(offset) {
            return Err(StoreError::InvalidBatch(format!(
                "version {} out of sequence",
                e.version()
            )));
        }
        check_event_size(e)?;
    }
    Ok(())
}

/// How a backend's create-if-absent write failed, before the adapter knows
/// which [`StoreError`] it is: stores whose writes are conditional creates
/// (DynamoDB, Cosmos DB) map their backend's errors to this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteFailure {
    /// An item at that key already exists: the version is taken.
    Taken,
    /// Over the backend's size limits.
    TooLarge(String),
    /// The event can't be written as the backend's item.
    Corrupt(String),
    /// Unreachable, throttled, 5xx, or refused for another reason.
    Unavailable(String),
}

impl WriteFailure {
    /// The port's error for an append to `stream` at `expected`.
    #[must_use]
    pub fn into_store_error(self, stream: &StreamId, expected: u64) -> StoreError {
        match self {
            Self::Taken => StoreError::Conflict {
                stream: stream.clone(),
                expected,
            },
            Self::TooLarge(m) => StoreError::TooLarge(m),
            Self::Corrupt(m) => StoreError::Corrupt(m),
            Self::Unavailable(m) => StoreError::Unavailable(m),
        }
    }
}

impl From<StoreError> for WriteFailure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge(m) => Self::TooLarge(m),
            StoreError::Corrupt(m) => Self::Corrupt(m),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// [`EventStore::apply_replicated`](crate::EventStore::apply_replicated) for stores whose writes are
/// create-if-absent: `create` the event; when its version is taken,
/// `read_back` the stored one (strongly consistent) and compare.
///
/// # Errors
/// As [`EventStore::apply_replicated`](crate::EventStore::apply_replicated): `TooLarge` for an event over
/// [`MAX_EVENT_BYTES`] (nothing is sent), `Diverged` for a different stored
/// event, `Unavailable` when the backend fails or a taken version does not
/// read back.
pub async fn apply_by_create<R>(
    event: &RecordedEvent,
    create: impl Future<Output = Result<(), WriteFailure>>,
    read_back: impl FnOnce() -> R,
) -> Result<ReplicatedApply, StoreError>
where
    R: Future<Output = Result<Option<RecordedEvent>, StoreError>>,
{
    check_event_size(event)?;
    match create.await {
        Ok(()) => Ok(ReplicatedApply::Stored),
        Err(WriteFailure::Taken) => match read_back().await? {
            Some(stored) if stored.same_fact(event) => Ok(ReplicatedApply::AlreadyPresent),
            Some(_) => Err(StoreError::Diverged {
                stream: event.stream().clone(),
                version: event.version(),
            }),
            None => Err(StoreError::Unavailable(format!(
                "{} v{} was reported stored but does not read back",
                event.stream(),
                event.version()
            ))),
        },
        Err(f) => Err(f.into_store_error(event.stream(), event.version().saturating_sub(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AggregateId, DomainEvent};
    use crate::ids::{AccountId, CellId, OrderId, Sku, TransactionId};
    use crate::money::{Currency, Money};
    use crate::quantity::Quantity;
    use crate::timestamp::Timestamp;
    use crate::write_off_reason::WriteOffReason;

    fn stream(sku: &str) -> StreamId {
        StreamId::new(
            AggregateId::inventory(&Sku::new(sku).unwrap()),
            CellId::new("c".repeat(32)).unwrap(),
        )
    }

    fn received(stream: &StreamId, version: u64) -> RecordedEvent {
        RecordedEvent::new(
            stream.clone(),
            version,
            Timestamp::from_unix_millis(Timestamp::MAX_MILLIS).unwrap(),
            DomainEvent::StockReceived {
                quantity: Quantity::new(1_000_000).unwrap(),
            },
        )
        .unwrap()
    }

    #[test]
    fn the_largest_event_of_every_type_fits_the_limit_many_times_over() {
        let long = "x".repeat(64);
        let s = stream(&long);
        let order = OrderId::new(&long).unwrap();
        let cell = CellId::new("d".repeat(32)).unwrap();
        let q = Quantity::new(1_000_000).unwrap();
        // 200 characters of four bytes each: the longest reason in bytes.
        let reason = WriteOffReason::new("\u{1D11E}".repeat(200)).unwrap();
        let events = [
            DomainEvent::StockWrittenOff {
                quantity: q,
                reason,
            },
            DomainEvent::ReservationReleased {
                order_id: order.clone(),
                quantity: q,
                cause: crate::event::ReleaseCause::Duplicate {
                    winner: cell.clone(),
                },
            },
            DomainEvent::AllocationReceived {
                from_cell: cell,
                transfer_version: u64::MAX,
                quantity: q,
            },
        ];
        for event in events {
            let e = RecordedEvent::new(s.clone(), u64::MAX, Timestamp::EPOCH, event).unwrap();
            assert!(encoded_size(&e) < 2_048, "{}", encoded_size(&e));
            assert_eq!(check_event_size(&e), Ok(()));
        }
        let tx = RecordedEvent::new(
            StreamId::new(
                AggregateId::transaction(TransactionId::from_uuid(uuid::Uuid::max())),
                CellId::new("aws").unwrap(),
            ),
            1,
            Timestamp::EPOCH,
            DomainEvent::TransactionCreated {
                transaction_id: TransactionId::from_uuid(uuid::Uuid::max()),
                account_id: AccountId::new(&long).unwrap(),
                money: Money::parse("999999999999.999", Currency::from_code("BHD").unwrap())
                    .unwrap(),
            },
        )
        .unwrap();
        assert!(encoded_size(&tx) < 2_048);
    }

    #[test]
    fn encoded_size_is_the_length_of_the_json() {
        let e = received(&stream("sku"), 7);
        assert_eq!(encoded_size(&e), serde_json::to_vec(&e).unwrap().len());
    }

    #[test]
    fn an_event_over_the_limit_is_too_large() {
        let e = received(&stream("sku"), 1);
        let size = encoded_size(&e);
        assert_eq!(check_size_within(&e, size), Ok(()));
        let refused = check_size_within(&e, size - 1);
        assert!(
            matches!(&refused, Err(StoreError::TooLarge(m)) if m.contains(&format!("is {size} bytes"))),
            "{refused:?}"
        );
    }

    #[test]
    fn a_batch_holds_at_most_a_hundred_events() {
        let s = stream("sku");
        let events: Vec<_> = (1..=101).map(|v| received(&s, v)).collect();
        assert_eq!(check_batch(&s, 0, &events[..100]), Ok(()));
        assert!(matches!(
            check_batch(&s, 0, &events),
            Err(StoreError::TooLarge(m)) if m.contains("101 events")
        ));
    }
}
