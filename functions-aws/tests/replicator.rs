//! The replicator's handler on real DynamoDB stream event shapes (parsed
//! by `aws_lambda_events`) against a real HTTP target on 127.0.0.1: own
//! events published in order, replicated ones skipped, and on failure the
//! first record not published named in `batchItemFailures`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use twincell_aws::replicator::Replicator;
use twincell_core::event::{AggregateId, DomainEvent, RecordedEvent, StreamId};
use twincell_core::{CellId, Quantity, Sku, Timestamp};
use twincell_replication::publish::Publisher;
use twincell_replication::wire::decode_body;
use twincell_replication::{Secret, Target, TargetKind};

#[derive(Default)]
struct Recorded {
    received: Vec<RecordedEvent>,
    /// Batches to refuse with 503 after this many were accepted.
    accept: Option<usize>,
}

async fn receive(State(t): State<Arc<Mutex<Recorded>>>, body: Bytes) -> StatusCode {
    let mut t = t.lock().unwrap();
    if t.accept == Some(0) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Some(n) = &mut t.accept {
        *n -= 1;
    }
    let events = decode_body(serde_json::from_slice(&body).unwrap()).unwrap();
    t.received
        .extend(events.into_iter().map(|i| i.event.unwrap()));
    StatusCode::OK
}

async fn target(accept: Option<usize>) -> (Publisher, Arc<Mutex<Recorded>>) {
    let state = Arc::new(Mutex::new(Recorded {
        received: Vec::new(),
        accept,
    }));
    let app = axum::Router::new()
        .route("/replication/events", axum::routing::post(receive))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/replication/events",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let key = Secret::new("peer-key-0123456789abcdef0123456789").unwrap();
    // One event per request, so a failure falls between records.
    let publisher = Publisher::new(Target::new(TargetKind::Webhook, &url, key).unwrap())
        .unwrap()
        .with_batch_limits(usize::MAX, 1);
    (publisher, state)
}

fn event(origin: &str, version: u64) -> RecordedEvent {
    RecordedEvent::new(
        StreamId::new(
            AggregateId::inventory(&Sku::new("sku-1").unwrap()),
            CellId::new(origin).unwrap(),
        ),
        version,
        Timestamp::from_unix_millis(1_795_320_745_007).unwrap(),
        DomainEvent::StockReceived {
            quantity: Quantity::new(version).unwrap(),
        },
    )
    .unwrap()
}

/// A stream record as DynamoDB Streams delivers an item the store wrote.
fn record(e: &RecordedEvent, sequence: &str) -> Value {
    let pk = format!("inventory#{}", e.stream().aggregate.id());
    let sk = format!("{}#{:020}", e.origin(), e.version());
    json!({
        "eventID": format!("id-{sequence}"),
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_795_320_745,
            "Keys": {"pk": {"S": pk}, "sk": {"S": sk}},
            "NewImage": {
                "pk": {"S": pk}, "sk": {"S": sk},
                "origin": {"S": e.origin().as_str()},
                "version": {"N": e.version().to_string()},
                "type": {"S": e.event().type_name()},
                "event": {"S": serde_json::to_string(e).unwrap()},
                "origin_shard": {"S": format!("{}#03", e.origin())},
                "recorded_at": {"N": e.recorded_at().unix_millis().to_string()}
            },
            "SequenceNumber": sequence,
            "SizeBytes": 300,
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/events/stream/2026-11-22T00:00:00.000"
    })
}

fn batch(records: Vec<Value>) -> aws_lambda_events::dynamodb::Event {
    serde_json::from_value(json!({"Records": records})).unwrap()
}

fn failures(response: &aws_lambda_events::streams::DynamoDbEventResponse) -> Vec<String> {
    let json = serde_json::to_value(response).unwrap();
    json["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn own_events_are_published_in_order_and_replicated_ones_never_echo() {
    let (publisher, state) = target(None).await;
    let replicator = Replicator::new(CellId::new("aws").unwrap(), publisher);
    let records = vec![
        record(&event("aws", 1), "100"),
        record(&event("azure", 1), "101"),
        record(&event("aws", 2), "102"),
    ];
    let response = replicator.handle(batch(records), None).await.unwrap();
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        json!({"batchItemFailures": []})
    );
    assert_eq!(
        state.lock().unwrap().received,
        [event("aws", 1), event("aws", 2)]
    );
}

#[tokio::test]
async fn a_failed_publish_names_the_first_record_not_published() {
    let (publisher, state) = target(Some(1)).await;
    let replicator = Replicator::new(CellId::new("aws").unwrap(), publisher);
    let records = vec![
        record(&event("aws", 1), "200"),
        record(&event("azure", 4), "201"),
        record(&event("aws", 2), "202"),
        record(&event("aws", 3), "203"),
    ];
    let response = replicator.handle(batch(records), None).await.unwrap();
    assert_eq!(failures(&response), ["202"], "v1 went out, v2 did not");
    assert_eq!(state.lock().unwrap().received, [event("aws", 1)]);
}

#[tokio::test]
async fn a_record_that_does_not_decode_stops_the_batch_there() {
    let (publisher, state) = target(None).await;
    let replicator = Replicator::new(CellId::new("aws").unwrap(), publisher);
    let mut broken = record(&event("aws", 2), "301");
    broken["dynamodb"]["NewImage"]["event"]["S"] = "{not json".into();
    let records = vec![
        record(&event("aws", 1), "300"),
        broken,
        record(&event("aws", 3), "302"),
    ];
    let response = replicator.handle(batch(records), None).await.unwrap();
    assert_eq!(failures(&response), ["301"]);
    assert_eq!(
        state.lock().unwrap().received,
        [event("aws", 1)],
        "nothing after it"
    );
}

#[tokio::test]
async fn snapshot_items_are_never_published() {
    let (publisher, state) = target(None).await;
    let replicator = Replicator::new(CellId::new("aws").unwrap(), publisher);
    let sku = AggregateId::inventory(&Sku::new("sku-1").unwrap());
    let pk = twincell_dynamodb::snapshot_partition_key(&sku);
    // A snapshot part as the store writes it: first an insert, then the
    // next save overwriting it.
    let snapshot = |name: &str, sequence: &str| {
        json!({
            "eventID": format!("id-{sequence}"),
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-west-1",
            "dynamodb": {
                "Keys": {"pk": {"S": pk}, "sk": {"S": "aws#00"}},
                "NewImage": {
                    "pk": {"S": pk}, "sk": {"S": "aws#00"},
                    "kind": {"S": twincell_dynamodb::SNAPSHOT_KIND},
                    "version": {"N": "1000"}, "format": {"N": "1"}, "parts": {"N": "1"},
                    "body": {"S": "{}"}
                },
                "SequenceNumber": sequence,
                "SizeBytes": 100,
                "StreamViewType": "NEW_IMAGE"
            },
            "eventSourceARN": "arn:aws:dynamodb:eu-west-1:123456789012:table/events/stream/2026-11-22T00:00:00.000"
        })
    };
    let records = vec![
        record(&event("aws", 1), "400"),
        snapshot("INSERT", "401"),
        snapshot("MODIFY", "402"),
        record(&event("aws", 2), "403"),
    ];
    let response = replicator.handle(batch(records), None).await.unwrap();
    assert_eq!(
        failures(&response),
        Vec::<String>::new(),
        "nothing to retry"
    );
    assert_eq!(
        state.lock().unwrap().received,
        [event("aws", 1), event("aws", 2)]
    );
}
