//! Events and the streams they live in.
//!
//! A stream is `(aggregate type, aggregate id, origin cell)`. Only the origin
//! cell appends to it, versions start at 1 and are contiguous. An event's id
//! is a UUIDv5 of its `(stream, version)`, so a redelivered event has the
//! same id in every cell and dedupes.
//!
//! Event type names are stable and carry a version suffix
//! (`twincell.inventory.stock-reserved.v1`); a change of an event's shape is
//! a new name, never an edit of an old one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{AccountId, CellId, IdempotencyKey, OrderId, Sku, TransactionId};
use crate::money::Money;
use crate::quantity::Quantity;
use crate::timestamp::Timestamp;
use crate::trace::TraceParent;
use crate::write_off_reason::WriteOffReason;

/// The kinds of aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateType {
    /// A payment transaction, keyed by [`TransactionId`].
    Transaction,
    /// The stock of one SKU, keyed by [`Sku`].
    Inventory,
}

impl AggregateType {
    /// The name used in keys and event ids.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transaction => "transaction",
            Self::Inventory => "inventory",
        }
    }

    /// The type named `name` ([`AggregateType::as_str`]).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "transaction" => Some(Self::Transaction),
            "inventory" => Some(Self::Inventory),
            _ => None,
        }
    }
}

/// One aggregate: its type and id. The id is valid for the type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "AggregateIdRepr")]
pub struct AggregateId {
    #[serde(rename = "type")]
    kind: AggregateType,
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateIdRepr {
    #[serde(rename = "type")]
    kind: AggregateType,
    id: String,
}

impl TryFrom<AggregateIdRepr> for AggregateId {
    type Error = EventError;
    fn try_from(repr: AggregateIdRepr) -> Result<Self, Self::Error> {
        Self::parse(repr.kind, &repr.id)
    }
}

impl AggregateId {
    /// The aggregate of a transaction.
    #[must_use]
    pub fn transaction(id: TransactionId) -> Self {
        Self {
            kind: AggregateType::Transaction,
            id: id.to_string(),
        }
    }

    /// The aggregate of one SKU's stock.
    #[must_use]
    pub fn inventory(sku: &Sku) -> Self {
        Self {
            kind: AggregateType::Inventory,
            id: sku.as_str().to_owned(),
        }
    }

    /// Rebuilds an aggregate id read from storage.
    ///
    /// # Errors
    /// [`EventError::InvalidAggregateId`] when `id` is not valid for `kind`.
    pub fn parse(kind: AggregateType, id: &str) -> Result<Self, EventError> {
        match kind {
            AggregateType::Transaction => TransactionId::parse(id)
                .map(Self::transaction)
                .map_err(|_| EventError::InvalidAggregateId),
            AggregateType::Inventory => Sku::new(id)
                .map(|sku| Self::inventory(&sku))
                .map_err(|_| EventError::InvalidAggregateId),
        }
    }

    /// The aggregate type.
    #[must_use]
    pub fn kind(&self) -> AggregateType {
        self.kind
    }

    /// The aggregate id, as text.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A stream: one origin cell's events for one aggregate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamId {
    /// The aggregate.
    pub aggregate: AggregateId,
    /// The only cell that appends to this stream.
    pub origin: CellId,
}

impl StreamId {
    /// The stream of `aggregate` written by `origin`.
    #[must_use]
    pub fn new(aggregate: AggregateId, origin: CellId) -> Self {
        Self { aggregate, origin }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.aggregate.kind.as_str(),
            self.aggregate.id,
            self.origin
        )
    }
}

/// Why a release of stock happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReleaseCause {
    /// A client asked this cell.
    Client,
    /// Another cell recorded a release request for this cell's reservation.
    Requested {
        /// The cell that recorded the request.
        by: CellId,
    },
    /// The same order was also reserved in `winner`, whose reservation wins
    /// the tie-break, so this cell let its duplicate go.
    Duplicate {
        /// The cell whose reservation is kept.
        winner: CellId,
    },
}

/// Why a fulfilment happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FulfilCause {
    /// A client asked this cell.
    Client,
    /// Another cell recorded a fulfilment request for this cell's reservation.
    Requested {
        /// The cell that recorded the request.
        by: CellId,
    },
}

/// Declares [`DomainEvent`] with each event's stable type name written
/// once, beside its variant: the serde tag, [`DomainEvent::TYPE_NAMES`]
/// and [`DomainEvent::type_name`] all come from it.
macro_rules! domain_events {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $name:literal { $($fields:tt)* }
    ),* $(,)?) => {
        /// Everything that can happen, with its stable type name.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data", deny_unknown_fields)]
        pub enum DomainEvent {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $name)]
                $variant { $($fields)* },
            )*
        }

        impl DomainEvent {
            /// Every type name this version knows. An event of another
            /// `twincell.` type comes from a newer cell.
            pub const TYPE_NAMES: [&'static str; [$($name),*].len()] = [$($name),*];

            /// The stable type name (the CloudEvents `type`).
            #[must_use]
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $name,)*
                }
            }
        }
    };
}

domain_events! {
    /// A transaction was created in the stream's origin cell.
    TransactionCreated = "twincell.transaction.created.v1" {
        /// Its id (deterministic when an idempotency key was given).
        transaction_id: TransactionId,
        /// The paying account.
        account_id: AccountId,
        /// Amount and currency.
        money: Money,
    },
    /// Units arrived: `on_hand += quantity`.
    StockReceived = "twincell.inventory.stock-received.v1" {
        /// Units received.
        quantity: Quantity,
    },
    /// Units were written off from the available stock.
    StockWrittenOff = "twincell.inventory.stock-written-off.v1" {
        /// Units written off.
        quantity: Quantity,
        /// Why.
        reason: WriteOffReason,
    },
    /// Units were reserved for an order.
    StockReserved = "twincell.inventory.stock-reserved.v1" {
        /// The order.
        order_id: OrderId,
        /// Units held.
        quantity: Quantity,
    },
    /// A reservation of this cell was released.
    ReservationReleased = "twincell.inventory.reservation-released.v1" {
        /// The order.
        order_id: OrderId,
        /// Units freed.
        quantity: Quantity,
        /// Why.
        cause: ReleaseCause,
    },
    /// This cell asks `owner` to release its reservation for the order.
    ReleaseRequested = "twincell.inventory.release-requested.v1" {
        /// The order.
        order_id: OrderId,
        /// The cell holding the reservation.
        owner: CellId,
    },
    /// A reservation of this cell was fulfilled: the units left the building.
    ReservationFulfilled = "twincell.inventory.reservation-fulfilled.v1" {
        /// The order.
        order_id: OrderId,
        /// Units shipped.
        quantity: Quantity,
        /// Why.
        cause: FulfilCause,
    },
    /// This cell asks `owner` to fulfil its reservation for the order.
    FulfilmentRequested = "twincell.inventory.fulfilment-requested.v1" {
        /// The order.
        order_id: OrderId,
        /// The cell holding the reservation.
        owner: CellId,
    },
    /// Available units moved out of this cell towards `to_cell`.
    AllocationTransferred = "twincell.inventory.allocation-transferred.v1" {
        /// The receiving cell.
        to_cell: CellId,
        /// Units moved.
        quantity: Quantity,
    },
    /// This cell took in a transfer once it saw it in the sender's stream.
    AllocationReceived = "twincell.inventory.allocation-received.v1" {
        /// The sending cell.
        from_cell: CellId,
        /// The version of the transfer in the sender's stream.
        transfer_version: u64,
        /// Units received.
        quantity: Quantity,
    },
    /// The write just before this event in the stream (a receipt, a
    /// write-off or a transfer) was asked for with an idempotency key, and
    /// `answer` is what its request was answered: a retry with the key is
    /// answered the same, in any cell that holds this event.
    IdempotencyKeyRecorded = "twincell.inventory.idempotency-key-recorded.v1" {
        /// The key.
        key: IdempotencyKey,
        /// Every cell's stock figures in the answer.
        answer: BTreeMap<CellId, StockFigures>,
    },
    /// This cell's keyed write at `version` is voided: `winner` recorded
    /// the same key on this SKU earlier, so the write is counted there. A
    /// voided receipt takes its units back out (as many as are available;
    /// the rest is `shortage`), a voided write-off or transfer gives its
    /// units back.
    DuplicateWriteVoided = "twincell.inventory.duplicate-write-voided.v1" {
        /// The version of the voided write in this cell's stream.
        version: u64,
        /// The cell whose copy of the write stands.
        winner: CellId,
        /// Units of a voided receipt that were reserved already and could
        /// not be taken back out (0 for the other writes).
        shortage: u64,
    },
    /// A transfer this cell took in was voided by its sender (a duplicate
    /// of a keyed write counted elsewhere): its units go back out, as many
    /// as are available; the rest is `shortage`.
    ReceivedTransferVoided = "twincell.inventory.received-transfer-voided.v1" {
        /// The sending cell.
        from_cell: CellId,
        /// The version of the transfer in the sender's stream.
        transfer_version: u64,
        /// Units the transfer brought.
        quantity: Quantity,
        /// Units that were reserved already and could not be taken out.
        shortage: u64,
    },
    /// Units of this cell's shortage were taken out of its available stock
    /// as it became available.
    ShortageSettled = "twincell.inventory.shortage-settled.v1" {
        /// Units taken out.
        quantity: Quantity,
    },
}

/// One cell's stock figures as an answer showed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockFigures {
    /// Units in the cell's allocation.
    pub on_hand: u64,
    /// Units reserved there.
    pub reserved: u64,
    /// Units reserved there that no received stock backs (see
    /// `docs/domain.md`); omitted when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shortage: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl DomainEvent {
    /// The aggregate type this event belongs to.
    #[must_use]
    pub fn aggregate_type(&self) -> AggregateType {
        match self {
            Self::TransactionCreated { .. } => AggregateType::Transaction,
            _ => AggregateType::Inventory,
        }
    }
}

/// Why a recorded event is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Versions start at 1.
    #[error("event versions start at 1")]
    ZeroVersion,
    /// The event does not belong to the stream's aggregate type.
    #[error("a {event} event cannot be stored in a {aggregate} stream")]
    WrongAggregate {
        /// The event's type name.
        event: &'static str,
        /// The stream's aggregate type.
        aggregate: &'static str,
    },
    /// The aggregate id is not valid for its type.
    #[error("aggregate id is not valid for its type")]
    InvalidAggregateId,
}

/// The namespace of event ids. Fixed forever: changing it would make every
/// redelivered event look new.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x2f8c_1b7e_93d4_5a60_b1c2_7d8e_4f90_a3b5);

/// What is kept with an event besides the fact itself, as EventStoreDB
/// and cqrs-es keep correlation metadata: the trace context of the request
/// that committed it. It travels with the event to every cell (the stores,
/// the DynamoDB stream and the change feed carry the whole event; the wire
/// format carries it as the CloudEvents `traceparent` extension) and is
/// logged where the event is applied. It never takes part in whether two
/// events are the same ([`RecordedEvent::same_fact`]), nor in a signature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMetadata {
    /// The committing request's trace and span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
}

impl EventMetadata {
    /// Metadata with this trace context.
    #[must_use]
    pub fn traced(traceparent: TraceParent) -> Self {
        Self {
            traceparent: Some(traceparent),
        }
    }

    /// Whether it holds nothing (it is then not written at all).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.traceparent.is_none()
    }
}

/// An event as stored: where it lives, its version, when, and what; and
/// its [`EventMetadata`], which `==` compares but
/// [`RecordedEvent::same_fact`] does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RecordedEventRepr")]
pub struct RecordedEvent {
    stream: StreamId,
    version: u64,
    recorded_at: Timestamp,
    event: DomainEvent,
    #[serde(default, skip_serializing_if = "EventMetadata::is_empty")]
    metadata: EventMetadata,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedEventRepr {
    stream: StreamId,
    version: u64,
    recorded_at: Timestamp,
    event: DomainEvent,
    #[serde(default)]
    metadata: EventMetadata,
}

impl TryFrom<RecordedEventRepr> for RecordedEvent {
    type Error = EventError;
    fn try_from(r: RecordedEventRepr) -> Result<Self, Self::Error> {
        Ok(Self::new(r.stream, r.version, r.recorded_at, r.event)?.with_metadata(r.metadata))
    }
}

impl RecordedEvent {
    /// Checks that `event` fits `stream` and that `version` is at least 1.
    ///
    /// # Errors
    /// [`EventError::ZeroVersion`] or [`EventError::WrongAggregate`].
    pub fn new(
        stream: StreamId,
        version: u64,
        recorded_at: Timestamp,
        event: DomainEvent,
    ) -> Result<Self, EventError> {
        if version == 0 {
            return Err(EventError::ZeroVersion);
        }
        if event.aggregate_type() != stream.aggregate.kind {
            return Err(EventError::WrongAggregate {
                event: event.type_name(),
                aggregate: stream.aggregate.kind.as_str(),
            });
        }
        Ok(Self {
            stream,
            version,
            recorded_at,
            event,
            metadata: EventMetadata::default(),
        })
    }

    /// The same event with `metadata` instead of its own.
    #[must_use]
    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Its metadata.
    #[must_use]
    pub fn metadata(&self) -> &EventMetadata {
        &self.metadata
    }

    /// Whether `other` records the same fact: the same stream, version,
    /// time and event, whatever the metadata. This, not `==`, decides
    /// whether a replayed event is already present or diverged.
    #[must_use]
    pub fn same_fact(&self, other: &Self) -> bool {
        self.stream == other.stream
            && self.version == other.version
            && self.recorded_at == other.recorded_at
            && self.event == other.event
    }

    /// The stream.
    #[must_use]
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// The version in the stream, from 1.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the origin cell recorded it (its clock).
    #[must_use]
    pub fn recorded_at(&self) -> Timestamp {
        self.recorded_at
    }

    /// What happened.
    #[must_use]
    pub fn event(&self) -> &DomainEvent {
        &self.event
    }

    /// The origin cell.
    #[must_use]
    pub fn origin(&self) -> &CellId {
        &self.stream.origin
    }

    /// The deterministic id: UUIDv5 of `"{type}/{id}/{origin}/{version}"`.
    #[must_use]
    pub fn event_id(&self) -> Uuid {
        let name = format!("{}/{}", self.stream, self.version);
        Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(kind: AggregateType) -> StreamId {
        let aggregate = match kind {
            AggregateType::Inventory => AggregateId::inventory(&Sku::new("sku-1").unwrap()),
            AggregateType::Transaction => AggregateId::transaction(
                TransactionId::parse("0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b").unwrap(),
            ),
        };
        StreamId::new(aggregate, CellId::new("aws").unwrap())
    }

    fn received(version: u64) -> RecordedEvent {
        RecordedEvent::new(
            stream(AggregateType::Inventory),
            version,
            Timestamp::from_unix_millis(1_000).unwrap(),
            DomainEvent::StockReceived {
                quantity: Quantity::new(5).unwrap(),
            },
        )
        .unwrap()
    }

    #[test]
    fn event_id_is_deterministic_per_stream_and_version() {
        assert_eq!(received(1).event_id(), received(1).event_id());
        assert_ne!(received(1).event_id(), received(2).event_id());
        assert_eq!(received(1).event_id().get_version_num(), 5);
    }

    #[test]
    fn every_event_type_name_is_its_serde_tag_and_unique() {
        use crate::ids::{AccountId, OrderId};
        use crate::money::{Currency, Money};
        let q = Quantity::new(1).unwrap();
        let order = OrderId::new("o").unwrap();
        let cell = CellId::new("azure").unwrap();
        let all = [
            DomainEvent::TransactionCreated {
                transaction_id: TransactionId::parse("0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b")
                    .unwrap(),
                account_id: AccountId::new("a").unwrap(),
                money: Money::parse("1", Currency::from_code("USD").unwrap()).unwrap(),
            },
            DomainEvent::StockReceived { quantity: q },
            DomainEvent::StockWrittenOff {
                quantity: q,
                reason: WriteOffReason::new("r").unwrap(),
            },
            DomainEvent::StockReserved {
                order_id: order.clone(),
                quantity: q,
            },
            DomainEvent::ReservationReleased {
                order_id: order.clone(),
                quantity: q,
                cause: ReleaseCause::Client,
            },
            DomainEvent::ReleaseRequested {
                order_id: order.clone(),
                owner: cell.clone(),
            },
            DomainEvent::ReservationFulfilled {
                order_id: order.clone(),
                quantity: q,
                cause: FulfilCause::Client,
            },
            DomainEvent::FulfilmentRequested {
                order_id: order,
                owner: cell.clone(),
            },
            DomainEvent::AllocationTransferred {
                to_cell: cell.clone(),
                quantity: q,
            },
            DomainEvent::AllocationReceived {
                from_cell: cell.clone(),
                transfer_version: 1,
                quantity: q,
            },
            DomainEvent::IdempotencyKeyRecorded {
                key: crate::ids::IdempotencyKey::new("k").unwrap(),
                answer: BTreeMap::from([(
                    cell.clone(),
                    StockFigures {
                        on_hand: 1,
                        reserved: 0,
                        shortage: 0,
                    },
                )]),
            },
            DomainEvent::DuplicateWriteVoided {
                version: 1,
                winner: cell.clone(),
                shortage: 0,
            },
            DomainEvent::ReceivedTransferVoided {
                from_cell: cell,
                transfer_version: 1,
                quantity: q,
                shortage: 0,
            },
            DomainEvent::ShortageSettled { quantity: q },
        ];
        let mut names = std::collections::BTreeSet::new();
        assert_eq!(
            all.len(),
            DomainEvent::TYPE_NAMES.len(),
            "every type is tried"
        );
        for e in all {
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["type"], e.type_name());
            assert!(e.type_name().ends_with(".v1"));
            assert!(names.insert(e.type_name()));
            assert!(DomainEvent::TYPE_NAMES.contains(&e.type_name()));
            assert_eq!(serde_json::from_value::<DomainEvent>(json).unwrap(), e);
        }
    }

    #[test]
    fn version_zero_is_rejected() {
        let e = RecordedEvent::new(
            stream(AggregateType::Inventory),
            0,
            Timestamp::from_unix_millis(0).unwrap(),
            DomainEvent::StockReceived {
                quantity: Quantity::new(1).unwrap(),
            },
        );
        assert_eq!(e, Err(EventError::ZeroVersion));
    }

    #[test]
    fn inventory_event_in_a_transaction_stream_is_rejected() {
        let e = RecordedEvent::new(
            stream(AggregateType::Transaction),
            1,
            Timestamp::from_unix_millis(0).unwrap(),
            DomainEvent::StockReceived {
                quantity: Quantity::new(1).unwrap(),
            },
        );
        assert!(matches!(e, Err(EventError::WrongAggregate { .. })));
    }

    #[test]
    fn recorded_event_serializes_with_its_stable_type_name_and_round_trips() {
        let e = received(3);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json["event"]["type"],
            "twincell.inventory.stock-received.v1"
        );
        assert_eq!(json["event"]["type"], e.event().type_name());
        assert_eq!(json["stream"]["aggregate"]["type"], "inventory");
        let back: RecordedEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn deserializing_goes_through_the_checks() {
        let mut json = serde_json::to_value(received(1)).unwrap();
        json["version"] = 0.into();
        assert!(serde_json::from_value::<RecordedEvent>(json).is_err());
        let mut json = serde_json::to_value(received(1)).unwrap();
        json["stream"]["aggregate"]["id"] = "not a sku".into();
        assert!(serde_json::from_value::<RecordedEvent>(json).is_err());
        let mut json = serde_json::to_value(received(1)).unwrap();
        json["event"]["data"]["quantity"] = 0.into();
        assert!(serde_json::from_value::<RecordedEvent>(json).is_err());
        // A changed shape is a new type name, never extra fields.
        let mut json = serde_json::to_value(received(1)).unwrap();
        json["event"]["data"]["note"] = "new".into();
        assert!(serde_json::from_value::<RecordedEvent>(json).is_err());
    }
}
