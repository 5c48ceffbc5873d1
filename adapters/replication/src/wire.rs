//! The wire format of replication, in one place: a [`RecordedEvent`] ↔ a
//! CloudEvents 1.0 event in the structured JSON format, and batches of them.
//!
//! ```json
//! {
//!   "specversion": "1.0",
//!   "id": "5d4c…",                            // the event's deterministic id
//!   "source": "urn:twincell:cell:aws",        // the origin cell
//!   "type": "twincell.inventory.stock-reserved.v1",
//!   "subject": "inventory/sku-1/aws",         // the stream
//!   "time": "2026-11-22T04:12:25.007Z",       // when the origin recorded it
//!   "datacontenttype": "application/json",
//!   "data": {"order_id": "o-1", "quantity": 2},
//!   "streamversion": 7,                       // the version in the stream
//!   "traceparent": "00-…-…-01",               // when there is one
//!   "twincellkid": "aws-2026-12",             // the origin's signing key
//!   "twincellsig": "q0Vt…"                    // its signature (crate::signing)
//! }
//! ```
//!
//! A batch is a JSON array of such events, sent as
//! `application/cloudevents-batch+json`. Decoding checks that every
//! attribute agrees with the others (the id is the one `(stream, version)`
//! gives, the source is the subject's origin), so an event is either the
//! one its origin recorded or refused.
//!
//! The event type is `cloudevents-sdk`'s [`Event`] (its serde is the
//! structured JSON format); the crate's HTTP bindings are not used, since
//! its axum extractor reads one event with no size limit and no batch.

use chrono::{DateTime, TimeZone, Utc};
use cloudevents::event::{ExtensionValue, SpecVersion};
use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use serde_json::Value;
use twincell_core::event::{AggregateId, AggregateType, DomainEvent, RecordedEvent, StreamId};
use twincell_core::{CellId, EventMetadata, Timestamp, TraceParent};

use crate::signing::{KEY_ID_ATTRIBUTE, SIGNATURE_ATTRIBUTE, Signer};

/// `source` is this prefix and the origin cell.
pub const SOURCE_PREFIX: &str = "urn:twincell:cell:";
/// The extension attribute holding the stream version.
pub const VERSION_ATTRIBUTE: &str = "streamversion";
/// The W3C trace context extension attribute.
pub const TRACEPARENT_ATTRIBUTE: &str = "traceparent";
/// The media type of a batch.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json; charset=utf-8";
/// The most bytes one publish request carries: Event Grid's limit per
/// request is 1 MB.
pub const MAX_BATCH_BYTES: usize = 1_000_000;
/// The most events one publish request carries (Event Grid: 5 000).
pub const MAX_BATCH_EVENTS: usize = 5_000;

/// Why an event could not be encoded (a bug, never an input error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode event {0}")]
pub struct EncodeError(pub String);

/// The CloudEvent of `event`, with the `traceparent` the event keeps
/// (the request that committed it) when it keeps one.
///
/// # Errors
/// [`EncodeError`] when the event does not serialize (never for the
/// core's events).
pub fn to_cloud_event(event: &RecordedEvent) -> Result<Event, EncodeError> {
    let fail = |e: &dyn std::fmt::Display| {
        EncodeError(format!("{} v{}: {e}", event.stream(), event.version()))
    };
    let tagged = serde_json::to_value(event.event()).map_err(|e| fail(&e))?;
    let data = tagged.get("data").cloned().unwrap_or(Value::Null);
    let time = Utc
        .timestamp_millis_opt(event.recorded_at().unix_millis())
        .single()
        .ok_or_else(|| fail(&"time out of range"))?;
    let version = i64::try_from(event.version()).map_err(|e| fail(&e))?;
    let mut builder = EventBuilderV10::new()
        .id(event.event_id().to_string())
        .source(format!("{SOURCE_PREFIX}{}", event.origin()))
        .ty(event.event().type_name())
        .subject(event.stream().to_string())
        .time(time)
        .data("application/json", data)
        .extension(VERSION_ATTRIBUTE, version);
    if let Some(trace) = event.metadata().traceparent {
        builder = builder.extension(TRACEPARENT_ATTRIBUTE, trace.to_string());
    }
    builder.build().map_err(|e| fail(&e))
}

/// [`to_cloud_event`], signed by `signer` when there is one.
///
/// # Errors
/// [`EncodeError`] when the event does not serialize (never for the
/// core's events).
pub fn to_signed_cloud_event(
    event: &RecordedEvent,
    signer: Option<&Signer>,
) -> Result<Event, EncodeError> {
    let mut ce = to_cloud_event(event)?;
    if let Some(signer) = signer {
        let signature = signer.sign(event).map_err(EncodeError)?;
        ce.set_extension(KEY_ID_ATTRIBUTE, signer.key_id());
        ce.set_extension(SIGNATURE_ATTRIBUTE, signature);
    }
    Ok(ce)
}

/// Why one event of a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a well-formed twincell CloudEvent: retrying cannot help.
    #[error("{0}")]
    Malformed(String),
    /// A `twincell.` event type this version does not know: a newer cell
    /// sent it; it can be applied once this cell runs that version.
    #[error("unknown event type {0}")]
    UnknownType(String),
}

/// One event of a delivery, decoded or refused, with the id it claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The CloudEvent `id` as sent (when it had a string one).
    pub id: Option<String>,
    /// The event, or why it was refused.
    pub event: Result<RecordedEvent, Refusal>,
    /// Its `traceparent`, when it had one (also kept in the event's
    /// metadata when it is a valid one).
    pub traceparent: Option<String>,
    /// The signing key id and signature it carried (each when it was a
    /// string).
    pub signature: (Option<String>, Option<String>),
}

/// Why a delivery body is not a batch or an event at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Neither an array nor an object.
    #[error("the body is neither a CloudEvents batch (array) nor a structured event (object)")]
    NotCloudEvents,
    /// An empty array.
    #[error("the batch is empty")]
    Empty,
    /// More than [`MAX_BATCH_EVENTS`].
    #[error("the batch holds {0} events; at most {MAX_BATCH_EVENTS}")]
    TooMany(usize),
}

/// The events of a delivery body already parsed as JSON: a batch (array)
/// or one structured event (object), each decoded or refused on its own.
///
/// # Errors
/// [`BodyError`] when the body is no batch or event at all.
pub fn decode_body(body: Value) -> Result<Vec<Incoming>, BodyError> {
    let values = match body {
        Value::Array(items) if items.is_empty() => return Err(BodyError::Empty),
        Value::Array(items) if items.len() > MAX_BATCH_EVENTS => {
            return Err(BodyError::TooMany(items.len()));
        }
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(BodyError::NotCloudEvents),
    };
    Ok(values.into_iter().map(decode_value).collect())
}

fn decode_value(value: Value) -> Incoming {
    let id = value.get("id").and_then(Value::as_str).map(str::to_owned);
    let malformed = |why: String| Incoming {
        id: id.clone(),
        event: Err(Refusal::Malformed(why)),
        traceparent: None,
        signature: (None, None),
    };
    if !value.is_object() {
        return malformed("an element of the batch is not an object".into());
    }
    if value.get("specversion").and_then(Value::as_str) != Some("1.0") {
        return malformed("specversion is not \"1.0\"".into());
    }
    if let Some(why) = value.as_object().and_then(attribute_error) {
        return malformed(why);
    }
    let event: Event = match serde_json::from_value(value) {
        Ok(e) => e,
        Err(e) => return malformed(format!("not a CloudEvent: {e}")),
    };
    let text = |name: &str| match event.extension(name) {
        Some(ExtensionValue::String(t)) => Some(t.clone()),
        _ => None,
    };
    let traceparent = text(TRACEPARENT_ATTRIBUTE);
    let signature = (text(KEY_ID_ATTRIBUTE), text(SIGNATURE_ATTRIBUTE));
    // The trace context is kept with the event when it parses; one that
    // does not is dropped, as W3C Trace Context asks, never a refusal.
    let metadata = traceparent
        .as_deref()
        .and_then(TraceParent::parse)
        .map(EventMetadata::traced)
        .unwrap_or_default();
    Incoming {
        id: Some(event.id().to_owned()),
        event: from_cloud_event(&event).map(|e| e.with_metadata(metadata)),
        traceparent,
        signature,
    }
}

/// The attributes CloudEvents 1.0 defines, and the members that carry the
/// data in the JSON format; every other member is an extension attribute.
const CONTEXT_MEMBERS: [&str; 10] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
];

/// What CloudEvents 1.0 forbids in an event's members that `cloudevents-sdk`
/// lets through: it reads any member as an extension and any empty string
/// as a value. Checked here so that such an event is refused as malformed
/// (the conformance corpus's invalid events): required attributes are
/// non-empty strings; optional ones, when present, non-empty; extension
/// names lower-case ASCII letters and digits, their values a string, a
/// boolean or an integer; never both `data` and `data_base64`.
fn attribute_error(event: &serde_json::Map<String, Value>) -> Option<String> {
    for required in ["id", "source", "type"] {
        match event.get(required) {
            Some(Value::String(v)) if !v.is_empty() => {}
            Some(_) => return Some(format!("{required} is not a non-empty string")),
            None => return Some(format!("no {required}")),
        }
    }
    for optional in ["datacontenttype", "dataschema", "subject", "time"] {
        match event.get(optional) {
            None => {}
            Some(Value::String(v)) if !v.is_empty() => {}
            Some(_) => return Some(format!("{optional} is not a non-empty string")),
        }
    }
    if event.contains_key("data") && event.contains_key("data_base64") {
        return Some("both data and data_base64".to_owned());
    }
    for (name, value) in event {
        if CONTEXT_MEMBERS.contains(&name.as_str()) {
            continue;
        }
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid_name {
            return Some(format!(
                "extension attribute {name:?}: names are lower-case ASCII letters and digits"
            ));
        }
        let valid_value = match value {
            Value::String(_) | Value::Bool(_) => true,
            Value::Number(n) => n.is_i64(),
            Value::Null | Value::Array(_) | Value::Object(_) => false,
        };
        if !valid_value {
            return Some(format!(
                "extension attribute {name}: the value is not a string, a boolean or an integer"
            ));
        }
    }
    None
}

/// The [`RecordedEvent`] a CloudEvent carries, after checking that its
/// attributes agree with each other.
///
/// # Errors
/// [`Refusal`] saying what is wrong, or that the type is unknown.
pub fn from_cloud_event(ce: &Event) -> Result<RecordedEvent, Refusal> {
    let bad = |why: &str| Refusal::Malformed(format!("event {}: {why}", ce.id()));
    if ce.specversion() != SpecVersion::V10 {
        return Err(bad("specversion is not 1.0"));
    }
    let ty = ce.ty();
    if !DomainEvent::TYPE_NAMES.contains(&ty) {
        return Err(if ty.starts_with("twincell.") {
            Refusal::UnknownType(ty.to_owned())
        } else {
            bad(&format!("type {ty:?} is not a twincell event type"))
        });
    }
    match ce.datacontenttype() {
        None => {}
        Some(media) if media.split(';').next().map(str::trim) == Some("application/json") => {}
        Some(other) => {
            return Err(bad(&format!(
                "datacontenttype {other:?} is not application/json"
            )));
        }
    }
    let origin = ce
        .source()
        .strip_prefix(SOURCE_PREFIX)
        .and_then(|cell| CellId::new(cell).ok())
        .ok_or_else(|| {
            bad(&format!(
                "source {:?} is not {SOURCE_PREFIX}<cell>",
                ce.source()
            ))
        })?;
    let subject = ce.subject().ok_or_else(|| bad("no subject"))?;
    let stream = parse_stream(subject)
        .ok_or_else(|| bad(&format!("subject {subject:?} is not a stream")))?;
    if stream.origin != origin {
        return Err(bad("the subject's origin is not the source"));
    }
    let version = match ce.extension(VERSION_ATTRIBUTE) {
        Some(ExtensionValue::Integer(v)) => u64::try_from(*v).ok(),
        Some(ExtensionValue::String(v)) => v.parse().ok(),
        _ => None,
    }
    .filter(|v| *v >= 1)
    .ok_or_else(|| bad(&format!("no {VERSION_ATTRIBUTE} of at least 1")))?;
    let time: &DateTime<Utc> = ce.time().ok_or_else(|| bad("no time"))?;
    if !time.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        return Err(bad("time is finer than a millisecond"));
    }
    let recorded_at = Timestamp::from_unix_millis(time.timestamp_millis())
        .map_err(|e| bad(&format!("time: {e}")))?;
    let data = match ce.data() {
        Some(Data::Json(v)) => v.clone(),
        _ => return Err(bad("data is not JSON")),
    };
    let event: DomainEvent = serde_json::from_value(serde_json::json!({"type": ty, "data": data}))
        .map_err(|e| bad(&format!("data: {e}")))?;
    let recorded =
        RecordedEvent::new(stream, version, recorded_at, event).map_err(|e| bad(&e.to_string()))?;
    twincell_core::check_event_size(&recorded).map_err(|e| bad(&e.to_string()))?;
    let claimed = uuid::Uuid::parse_str(ce.id()).ok();
    if claimed != Some(recorded.event_id()) {
        return Err(bad(
            "the id is not the event's id for its stream and version",
        ));
    }
    Ok(recorded)
}

/// The stream a subject names: `<aggregate type>/<aggregate id>/<origin>`.
fn parse_stream(subject: &str) -> Option<StreamId> {
    let mut parts = subject.split('/');
    let (Some(kind), Some(id), Some(origin), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let aggregate = AggregateId::parse(AggregateType::parse(kind)?, id).ok()?;
    Some(StreamId::new(aggregate, CellId::new(origin).ok()?))
}

/// One request's worth of events, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The JSON array.
    pub body: Vec<u8>,
    /// How many events it holds.
    pub events: usize,
}

/// `events` as CloudEvents batches in order, each at most `max_bytes` and
/// `max_events` (an event alone always fits: events are at most
/// [`twincell_core::MAX_EVENT_BYTES`] plus the envelope), each event signed
/// by `signer` when there is one.
///
/// # Errors
/// [`EncodeError`] when an event does not encode.
pub fn batches(
    events: &[RecordedEvent],
    signer: Option<&Signer>,
    max_bytes: usize,
    max_events: usize,
) -> Result<Vec<Batch>, EncodeError> {
    let mut out: Vec<Batch> = Vec::new();
    let mut current = Batch {
        body: b"[".to_vec(),
        events: 0,
    };
    for event in events {
        let ce = to_signed_cloud_event(event, signer)?;
        let json = serde_json::to_vec(&ce).map_err(|e| EncodeError(e.to_string()))?;
        let full = current.events >= max_events.max(1)
            || (current.events > 0 && current.body.len() + json.len() + 2 > max_bytes);
        if full {
            current.body.push(b']');
            out.push(std::mem::replace(
                &mut current,
                Batch {
                    body: b"[".to_vec(),
                    events: 0,
                },
            ));
        }
        if current.events > 0 {
            current.body.push(b',');
        }
        current.body.extend_from_slice(&json);
        current.events += 1;
    }
    if current.events > 0 {
        current.body.push(b']');
        out.push(current);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use twincell_core::event::{FulfilCause, ReleaseCause};
    use twincell_core::{
        AccountId, Currency, Money, OrderId, Quantity, Sku, TransactionId, WriteOffReason,
    };

    fn inventory(origin: &str, version: u64, event: DomainEvent) -> RecordedEvent {
        RecordedEvent::new(
            StreamId::new(
                AggregateId::inventory(&Sku::new("sku-1").unwrap()),
                CellId::new(origin).unwrap(),
            ),
            version,
            Timestamp::from_unix_millis(1_795_320_745_007).unwrap(),
            event,
        )
        .unwrap()
    }

    fn every_kind() -> Vec<RecordedEvent> {
        let q = Quantity::new(3).unwrap();
        let order = OrderId::new("o-1").unwrap();
        let azure = CellId::new("azure").unwrap();
        let id = TransactionId::parse("0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b").unwrap();
        let mut all: Vec<RecordedEvent> = [
            DomainEvent::StockReceived { quantity: q },
            DomainEvent::StockWrittenOff {
                quantity: q,
                reason: WriteOffReason::new("dropped \"twice\" ü").unwrap(),
            },
            DomainEvent::StockReserved {
                order_id: order.clone(),
                quantity: q,
            },
            DomainEvent::ReservationReleased {
                order_id: order.clone(),
                quantity: q,
                cause: ReleaseCause::Duplicate {
                    winner: azure.clone(),
                },
            },
            DomainEvent::ReleaseRequested {
                order_id: order.clone(),
                owner: azure.clone(),
            },
            DomainEvent::ReservationFulfilled {
                order_id: order.clone(),
                quantity: q,
                cause: FulfilCause::Requested { by: azure.clone() },
            },
            DomainEvent::FulfilmentRequested {
                order_id: order,
                owner: azure.clone(),
            },
            DomainEvent::AllocationTransferred {
                to_cell: azure.clone(),
                quantity: q,
            },
            DomainEvent::AllocationReceived {
                from_cell: azure,
                transfer_version: 4,
                quantity: q,
            },
        ]
        .into_iter()
        .zip(1..)
        .map(|(e, v)| inventory("aws", v, e))
        .collect();
        all.push(
            RecordedEvent::new(
                StreamId::new(AggregateId::transaction(id), CellId::new("aws").unwrap()),
                1,
                Timestamp::from_unix_millis(5).unwrap(),
                DomainEvent::TransactionCreated {
                    transaction_id: id,
                    account_id: AccountId::new("acct").unwrap(),
                    money: Money::parse("19.9", Currency::from_code("USD").unwrap()).unwrap(),
                },
            )
            .unwrap(),
        );
        all
    }

    fn round_trip(event: &RecordedEvent) -> Incoming {
        let json = serde_json::to_value(to_cloud_event(event).unwrap()).unwrap();
        decode_body(json).unwrap().remove(0)
    }

    #[test]
    fn every_event_type_round_trips_through_its_cloud_event() {
        for e in every_kind() {
            assert_eq!(
                round_trip(&e).event,
                Ok(e.clone()),
                "{}",
                e.event().type_name()
            );
        }
    }

    #[test]
    fn the_envelope_says_what_the_issue_of_the_format_says() {
        let trace =
            TraceParent::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let e = &every_kind()[2]
            .clone()
            .with_metadata(EventMetadata::traced(trace));
        let json = serde_json::to_value(to_cloud_event(e).unwrap()).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["id"], e.event_id().to_string());
        assert_eq!(json["source"], "urn:twincell:cell:aws");
        assert_eq!(json["type"], "twincell.inventory.stock-reserved.v1");
        assert_eq!(json["subject"], "inventory/sku-1/aws");
        assert_eq!(json["time"], "2026-11-22T04:12:25.007Z");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(
            json["data"],
            serde_json::json!({"order_id": "o-1", "quantity": 3})
        );
        assert_eq!(json["streamversion"], 3);
        assert_eq!(
            json["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        let incoming = decode_body(json.clone()).unwrap().remove(0);
        assert_eq!(
            incoming.traceparent.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert_eq!(incoming.event.as_ref(), Ok(e), "the trace is kept with it");
        // Without one, no `traceparent`; an invalid one is dropped, the
        // event is not refused for it.
        let plain = serde_json::to_value(to_cloud_event(&every_kind()[2]).unwrap()).unwrap();
        assert!(plain.get("traceparent").is_none());
        let mut bad = json;
        bad["traceparent"] = "00-nope".into();
        let incoming = decode_body(bad).unwrap().remove(0);
        assert_eq!(incoming.event, Ok(every_kind()[2].clone()));
    }

    fn tampered(edit: impl FnOnce(&mut Value)) -> Result<RecordedEvent, Refusal> {
        let mut json = serde_json::to_value(to_cloud_event(&every_kind()[2]).unwrap()).unwrap();
        edit(&mut json);
        decode_body(json).unwrap().remove(0).event
    }

    #[test]
    fn an_envelope_whose_attributes_disagree_is_malformed() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let edits: Vec<(&str, Edit)> = vec![
            (
                "id",
                Box::new(|j| j["id"] = "0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b".into()),
            ),
            ("not a uuid", Box::new(|j| j["id"] = "x".into())),
            (
                "source",
                Box::new(|j| j["source"] = "urn:twincell:cell:azure".into()),
            ),
            (
                "foreign source",
                Box::new(|j| j["source"] = "https://example.com".into()),
            ),
            (
                "subject",
                Box::new(|j| j["subject"] = "inventory/sku-1".into()),
            ),
            (
                "bad sku",
                Box::new(|j| j["subject"] = "inventory/a b/aws".into()),
            ),
            ("version", Box::new(|j| j["streamversion"] = 4.into())),
            ("version 0", Box::new(|j| j["streamversion"] = 0.into())),
            (
                "no version",
                Box::new(|j| {
                    j.as_object_mut().unwrap().remove("streamversion");
                }),
            ),
            (
                "no time",
                Box::new(|j| {
                    j.as_object_mut().unwrap().remove("time");
                }),
            ),
            (
                "microseconds",
                Box::new(|j| j["time"] = "2026-11-22T04:12:25.007001Z".into()),
            ),
            ("data", Box::new(|j| j["data"]["quantity"] = 0.into())),
            (
                "unknown data field",
                Box::new(|j| j["data"]["extra"] = 1.into()),
            ),
            (
                "content type",
                Box::new(|j| j["datacontenttype"] = "text/plain".into()),
            ),
            ("spec 0.3", Box::new(|j| j["specversion"] = "0.3".into())),
            (
                "foreign type",
                Box::new(|j| j["type"] = "com.example.order".into()),
            ),
            (
                "no data",
                Box::new(|j| {
                    j.as_object_mut().unwrap().remove("data");
                }),
            ),
        ];
        for (what, edit) in edits {
            assert!(
                matches!(tampered(edit), Err(Refusal::Malformed(_))),
                "{what}"
            );
        }
    }

    #[test]
    fn an_unknown_twincell_type_is_not_malformed_but_unknown() {
        let r = tampered(|j| j["type"] = "twincell.inventory.stock-counted.v1".into());
        assert_eq!(
            r,
            Err(Refusal::UnknownType(
                "twincell.inventory.stock-counted.v1".into()
            ))
        );
    }

    #[test]
    fn an_other_encoding_of_the_same_instant_and_a_string_version_are_accepted() {
        let e = every_kind()[2].clone();
        let r = tampered(|j| {
            j["time"] = "2026-11-22T04:12:25.0070000+00:00".into();
            j["streamversion"] = "3".into();
        });
        assert_eq!(r, Ok(e));
    }

    #[test]
    fn a_body_is_a_batch_or_one_event() {
        let events = every_kind();
        let batch = batches(&events, None, MAX_BATCH_BYTES, MAX_BATCH_EVENTS).unwrap();
        assert_eq!(batch.len(), 1);
        let body: Value = serde_json::from_slice(&batch[0].body).unwrap();
        let decoded: Vec<_> = decode_body(body)
            .unwrap()
            .into_iter()
            .map(|i| i.event.unwrap())
            .collect();
        assert_eq!(decoded, events);
        assert_eq!(decode_body(serde_json::json!([])), Err(BodyError::Empty));
        assert_eq!(
            decode_body(serde_json::json!("x")),
            Err(BodyError::NotCloudEvents)
        );
        let many = Value::Array(vec![serde_json::json!({}); MAX_BATCH_EVENTS + 1]);
        assert_eq!(
            decode_body(many),
            Err(BodyError::TooMany(MAX_BATCH_EVENTS + 1))
        );
        let mixed = decode_body(serde_json::json!([1, {"id": "a", "specversion": "1.0"}])).unwrap();
        assert!(mixed.iter().all(|i| i.event.is_err()));
        assert_eq!(mixed[1].id.as_deref(), Some("a"));
    }

    #[test]
    fn batches_stay_within_their_bytes_and_events_and_keep_the_order() {
        let events: Vec<RecordedEvent> = (1..=50)
            .map(|v| {
                inventory(
                    "aws",
                    v,
                    DomainEvent::StockReceived {
                        quantity: Quantity::new(v).unwrap(),
                    },
                )
            })
            .collect();
        let one = batches(&events[..1], None, usize::MAX, 1).unwrap()[0]
            .body
            .len();
        for (max_bytes, max_events) in [(one * 3, 100), (usize::MAX, 7), (one, 100), (1, 100)] {
            let out = batches(&events, None, max_bytes, max_events).unwrap();
            let mut decoded = Vec::new();
            for b in &out {
                assert!(b.events <= max_events);
                assert!(
                    b.body.len() <= max_bytes || b.events == 1,
                    "{} > {max_bytes}",
                    b.body.len()
                );
                let body: Value = serde_json::from_slice(&b.body).unwrap();
                let got = decode_body(body).unwrap();
                assert_eq!(got.len(), b.events);
                decoded.extend(got.into_iter().map(|i| i.event.unwrap()));
            }
            assert_eq!(decoded, events, "{max_bytes}/{max_events}");
        }
    }
}
