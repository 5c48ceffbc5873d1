//! The replication routes in-process: the handshake, the key, what each
//! kind of delivery is answered and what it changes, the status of gaps,
//! and resync through a recording publisher.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use twincell_core::testing::{ManualClock, SequentialIds};
use twincell_core::{
    CellId, InMemoryEventStore, Quantity, RecordedEvent, Service, Sku, Timestamp, Topology,
};
use twincell_http::{Replication, router, router_with_replication};
use twincell_replication::wire::to_cloud_event;
use twincell_replication::{BoxFuture, Publish, PublishError, Secret};

const KEY: &str = "replication-key-0123456789abcdef0123";

type Svc = Service<InMemoryEventStore, ManualClock, SequentialIds>;

fn cell(this: &str, peer: &str) -> Arc<Svc> {
    Arc::new(Service::new(
        Topology::new(CellId::new(this).unwrap(), [CellId::new(peer).unwrap()]),
        InMemoryEventStore::new(),
        ManualClock::new(Timestamp::from_unix_millis(1_795_320_745_000).unwrap(), 1),
        SequentialIds::default(),
    ))
}

/// Records what it is asked to publish; fails from the `fail_after`-th
/// call on.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<RecordedEvent>>,
    calls: Mutex<usize>,
    fail_after: Option<usize>,
}

impl Publish for Recorder {
    fn publish<'a>(
        &'a self,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<usize, PublishError>> {
        Box::pin(async move {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            if self.fail_after.is_some_and(|n| *calls > n) {
                return Err(PublishError {
                    published: 0,
                    retryable: true,
                    reason: "target down".into(),
                });
            }
            self.events.lock().unwrap().extend_from_slice(events);
            Ok(events.len())
        })
    }
}

fn app(svc: &Arc<Svc>, publisher: Option<Arc<dyn Publish>>) -> axum::Router {
    router_with_replication(
        svc.clone(),
        Some(Replication {
            key: Secret::new(KEY).unwrap(),
            publisher,
            delivery_tokens: None,
            origin_keys: twincell_replication::signing::OriginKeys::default(),
        }),
    )
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

async fn send(app: &axum::Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let raw = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
    }
}

fn deliver(body: &Value, key: Option<&str>) -> Request<Body> {
    let mut r = Request::post("/replication/events").header(
        "content-type",
        "application/cloudevents-batch+json; charset=utf-8",
    );
    if let Some(key) = key {
        r = r.header("x-twincell-replication-key", key);
    }
    r.body(Body::from(body.to_string())).unwrap()
}

fn batch(events: &[RecordedEvent]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| serde_json::to_value(to_cloud_event(e).unwrap()).unwrap())
            .collect(),
    )
}

fn sku() -> Sku {
    Sku::new("sku-1").unwrap()
}

/// azure's events for sku-1: three receipts of 1, 2 and 3 units.
async fn azure_receipts() -> Vec<RecordedEvent> {
    let azure = cell("azure", "aws");
    for n in 1..=3 {
        azure
            .receive(&sku(), Quantity::new(n).unwrap())
            .await
            .unwrap();
    }
    azure.store().events_from(&CellId::new("azure").unwrap())
}

async fn on_hand_seen_of_azure(aws: &Arc<Svc>) -> u64 {
    aws.inventory(&sku()).await.unwrap().cells[&CellId::new("azure").unwrap()].on_hand
}

#[tokio::test]
async fn without_a_key_every_replication_route_is_404() {
    let aws = cell("aws", "azure");
    let off = router(aws.clone());
    for (method, path) in [
        ("POST", "/replication/events"),
        ("OPTIONS", "/replication/events"),
        ("GET", "/replication/status"),
        ("POST", "/replication/resync"),
        ("GET", "/replication/events"),
    ] {
        let r = Request::builder()
            .method(method)
            .uri(path)
            .header("webhook-request-origin", "eventgrid.azure.net")
            .header("x-twincell-replication-key", KEY)
            .header("content-type", "application/cloudevents-batch+json")
            .body(Body::from(batch(&azure_receipts().await).to_string()))
            .unwrap();
        let a = send(&off, r).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(a.body["type"], "urn:twincell:problem:not-found");
    }
    assert_eq!(on_hand_seen_of_azure(&aws).await, 0, "nothing applied");
}

#[tokio::test]
async fn the_event_grid_handshake_echoes_the_origin_without_a_key() {
    let app = app(&cell("aws", "azure"), None);
    let r = Request::options("/replication/events")
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .body(Body::empty())
        .unwrap();
    let a = send(&app, r).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["webhook-allowed-origin"], "eventgrid.azure.net");
    assert_eq!(
        a.headers["webhook-allowed-rate"], "*",
        "no rate asked: none imposed"
    );
    // A sender that asks for a rate is always told the rate granted.
    let r = Request::options("/replication/events")
        .header("WebHook-Request-Origin", "eventgrid.azure.net")
        .header("WebHook-Request-Rate", "120")
        .body(Body::empty())
        .unwrap();
    let a = send(&app, r).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["webhook-allowed-rate"], "120");
    for bad in ["0", "-1", "fast", "1.5", "0120", "1000000000"] {
        let r = Request::options("/replication/events")
            .header("WebHook-Request-Origin", "eventgrid.azure.net")
            .header("WebHook-Request-Rate", bad)
            .body(Body::empty())
            .unwrap();
        let a = send(&app, r).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(a.body["type"], "urn:twincell:problem:invalid-header");
    }
    let r = Request::options("/replication/events")
        .body(Body::empty())
        .unwrap();
    let a = send(&app, r).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["type"], "urn:twincell:problem:invalid-header");
    let r = Request::get("/replication/events")
        .body(Body::empty())
        .unwrap();
    let a = send(&app, r).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.body["type"], "urn:twincell:problem:method-not-allowed");
}

#[tokio::test]
async fn a_delivery_without_the_right_key_is_401_and_changes_nothing() {
    let aws = cell("aws", "azure");
    let app = app(&aws, None);
    let events = batch(&azure_receipts().await);
    let wrong = "replication-key-0123456789abcdef0124";
    for key in [None, Some(wrong), Some(""), Some(&KEY[..KEY.len() - 1])] {
        let a = send(&app, deliver(&events, key)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(a.body["type"], "urn:twincell:problem:unauthorized");
        assert_eq!(
            a.headers["www-authenticate"],
            "TwincellReplicationKey header=\"x-twincell-replication-key\""
        );
        assert!(!a.body.to_string().contains(KEY));
    }
    for (first, last) in [(KEY, wrong), (KEY, "")] {
        let twice = Request::post("/replication/events")
            .header("content-type", "application/cloudevents-batch+json")
            .header("x-twincell-replication-key", first)
            .header("x-twincell-replication-key", last)
            .body(Body::from(events.to_string()))
            .unwrap();
        assert_eq!(
            send(&app, twice).await.status,
            StatusCode::UNAUTHORIZED,
            "the last key counts"
        );
    }
    let joined = Request::post("/replication/events")
        .header("content-type", "application/cloudevents-batch+json")
        .header("x-twincell-replication-key", format!("{KEY}, {wrong}"))
        .body(Body::from(events.to_string()))
        .unwrap();
    assert_eq!(send(&app, joined).await.status, StatusCode::UNAUTHORIZED);
    let status = Request::get("/replication/status")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, status).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(on_hand_seen_of_azure(&aws).await, 0);
}

#[tokio::test]
async fn a_batch_is_stored_once_whatever_the_order_and_repeats() {
    let aws = cell("aws", "azure");
    let app = app(&aws, None);
    let mut events = azure_receipts().await;
    events.reverse();
    let a = send(&app, deliver(&batch(&events), Some(KEY))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body,
        json!({"received": 3, "stored": 3, "already_present": 0})
    );
    assert_eq!(on_hand_seen_of_azure(&aws).await, 6);
    let a = send(&app, deliver(&batch(&events), Some(KEY))).await;
    assert_eq!(
        a.body,
        json!({"received": 3, "stored": 0, "already_present": 3})
    );
    // One structured event alone is a delivery too.
    let single = serde_json::to_value(to_cloud_event(&events[0]).unwrap()).unwrap();
    let r = Request::post("/replication/events")
        .header("content-type", "application/cloudevents+json")
        .header("x-twincell-replication-key", KEY)
        .body(Body::from(single.to_string()))
        .unwrap();
    let a = send(&app, r).await;
    assert_eq!(
        a.body,
        json!({"received": 1, "stored": 0, "already_present": 1})
    );
    assert_eq!(on_hand_seen_of_azure(&aws).await, 6);
}

#[tokio::test]
async fn diverged_and_own_events_are_409_by_id_and_never_applied() {
    let aws = cell("aws", "azure");
    let app = app(&aws, None);
    let events = azure_receipts().await;
    send(&app, deliver(&batch(&events[..1]), Some(KEY))).await;
    let forged = RecordedEvent::new(
        events[0].stream().clone(),
        1,
        events[0].recorded_at(),
        twincell_core::DomainEvent::StockReceived {
            quantity: Quantity::new(500).unwrap(),
        },
    )
    .unwrap();
    aws.receive(&sku(), Quantity::new(1).unwrap())
        .await
        .unwrap();
    let own = aws
        .store()
        .events_from(&CellId::new("aws").unwrap())
        .remove(0);
    let a = send(
        &app,
        deliver(
            &batch(&[forged.clone(), own.clone(), events[1].clone()]),
            Some(KEY),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert_eq!(a.body["type"], "urn:twincell:problem:replication-conflict");
    let ids: Vec<&str> = a.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [forged.event_id().to_string(), own.event_id().to_string()]
    );
    assert_eq!(
        on_hand_seen_of_azure(&aws).await,
        3,
        "v1 (1) and v2 (2) kept, the forgery not applied"
    );
}

#[tokio::test]
async fn malformed_events_are_400_after_the_good_ones_are_applied() {
    let aws = cell("aws", "azure");
    let app = app(&aws, None);
    let events = azure_receipts().await;
    let mut body = batch(&events);
    body[1]["streamversion"] = 9.into();
    let a = send(&app, deliver(&body, Some(KEY))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["type"], "urn:twincell:problem:malformed-body");
    assert_eq!(a.body["events"][0]["id"], events[1].event_id().to_string());
    let status = send(
        &app,
        Request::get("/replication/status")
            .header("x-twincell-replication-key", KEY)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status.body["peers"][0]["events_received"], 2);
    for (body, expected) in [
        ("not json", "malformed-body"),
        ("[]", "malformed-body"),
        ("\"x\"", "malformed-body"),
        ("{\"a\":1,\"a\":2}", "malformed-body"),
    ] {
        let r = Request::post("/replication/events")
            .header("content-type", "application/cloudevents-batch+json")
            .header("x-twincell-replication-key", KEY)
            .body(Body::from(body))
            .unwrap();
        let a = send(&app, r).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(a.body["type"], format!("urn:twincell:problem:{expected}"));
    }
}

#[tokio::test]
async fn an_unknown_twincell_type_is_422_so_the_deliverer_retries() {
    let app = app(&cell("aws", "azure"), None);
    let mut body = batch(&azure_receipts().await[..1]);
    body[0]["type"] = "twincell.inventory.stock-counted.v1".into();
    let a = send(&app, deliver(&body, Some(KEY))).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert_eq!(
        a.body["type"],
        "urn:twincell:problem:unsupported-event-type"
    );
}

#[tokio::test]
async fn an_unavailable_store_is_503_with_retry_after_and_a_redelivery_applies() {
    let aws = cell("aws", "azure");
    let app = app(&aws, None);
    let events = batch(&azure_receipts().await);
    aws.store().set_available(false);
    let a = send(&app, deliver(&events, Some(KEY))).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers["retry-after"], "1");
    aws.store().set_available(true);
    let a = send(&app, deliver(&events, Some(KEY))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(on_hand_seen_of_azure(&aws).await, 6);
}

#[tokio::test]
async fn media_type_and_size_limits() {
    let app = app(&cell("aws", "azure"), None);
    let r = Request::post("/replication/events")
        .header("content-type", "text/plain")
        .header("x-twincell-replication-key", KEY)
        .body(Body::from("[]"))
        .unwrap();
    assert_eq!(
        send(&app, r).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let big = format!(
        "[\"{}\"]",
        "x".repeat(twincell_http::replication::REPLICATION_BODY_LIMIT)
    );
    let r = Request::post("/replication/events")
        .header("content-type", "application/cloudevents-batch+json")
        .header("x-twincell-replication-key", KEY)
        .body(Body::from(big))
        .unwrap();
    assert_eq!(send(&app, r).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    let many = Value::Array(vec![json!({}); 5_001]);
    let a = send(&app, deliver(&many, Some(KEY))).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_status_shows_a_gap_until_it_closes() {
    let aws = cell("aws", "azure");
    let app = app(&aws, None);
    let events = azure_receipts().await;
    let status = || {
        Request::get("/replication/status")
            .header("x-twincell-replication-key", KEY)
            .body(Body::empty())
            .unwrap()
    };
    let a = send(&app, status()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["cell"], "aws");
    assert_eq!(
        a.body["peers"][0],
        json!({"cell": "azure", "events_received": 0, "last_received_at": null, "streams_with_gaps": [], "streams_with_gaps_not_listed": 0})
    );
    send(&app, deliver(&batch(&events[2..]), Some(KEY))).await;
    let a = send(&app, status()).await;
    let peer = &a.body["peers"][0];
    assert_eq!(peer["events_received"], 1);
    assert!(peer["last_received_at"].is_string());
    assert_eq!(
        peer["streams_with_gaps"],
        json!([{"stream": "inventory/sku-1/azure", "contiguous": 0, "highest": 3, "missing": [1, 2], "missing_count": 2}])
    );
    send(&app, deliver(&batch(&events[..2]), Some(KEY))).await;
    let a = send(&app, status()).await;
    assert_eq!(a.body["peers"][0]["streams_with_gaps"], json!([]));
    assert_eq!(a.body["peers"][0]["events_received"], 3);
}

fn resync_request(body: &Value) -> Request<Body> {
    Request::post("/replication/resync")
        .header("content-type", "application/json")
        .header("x-twincell-replication-key", KEY)
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn resync_re_sends_every_own_event_resumably_and_only_own_ones() {
    let aws = cell("aws", "azure");
    for n in 1..=25 {
        aws.receive(
            &Sku::new(format!("sku-{}", n % 4)).unwrap(),
            Quantity::new(n).unwrap(),
        )
        .await
        .unwrap();
    }
    let recorder = Arc::new(Recorder::default());
    let app = app(&aws, Some(recorder.clone()));
    send(&app, deliver(&batch(&azure_receipts().await), Some(KEY))).await;
    let mut cursor = Value::Null;
    let mut calls = 0;
    loop {
        let a = send(
            &app,
            resync_request(&json!({"cursor": cursor, "max_events": 10})),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.body["published"].as_u64().unwrap() <= 10);
        calls += 1;
        cursor = a.body["next"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(calls, 3, "25 events, 10 per call");
    let own = aws.store().events_from(&CellId::new("aws").unwrap());
    let mut sent = recorder.events.lock().unwrap().clone();
    sent.sort_by_key(|e| (e.stream().clone(), e.version()));
    assert_eq!(sent, own, "every own event once, none of azure's");

    let mut times: Vec<Timestamp> = own.iter().map(RecordedEvent::recorded_at).collect();
    times.sort_unstable();
    let since = times[20];
    let later = own.iter().filter(|e| e.recorded_at() >= since).count();
    assert!(later < own.len());
    recorder.events.lock().unwrap().clear();
    let a = send(&app, resync_request(&json!({"since": since.to_string()}))).await;
    assert_eq!(a.body["next"], Value::Null);
    assert_eq!(a.body["published"].as_u64(), u64::try_from(later).ok());
    assert!(
        recorder
            .events
            .lock()
            .unwrap()
            .iter()
            .all(|e| e.recorded_at() >= since)
    );
    for bad in [
        json!({"since": "yesterday"}),
        json!({"cursor": "nope"}),
        json!({"extra": 1}),
    ] {
        let a = send(&app, resync_request(&bad)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn resync_without_a_target_is_404_and_a_failed_publish_is_502_with_the_cursor() {
    let aws = cell("aws", "azure");
    for n in 1..=3 {
        aws.receive(&sku(), Quantity::new(n).unwrap())
            .await
            .unwrap();
    }
    let a = send(&app(&aws, None), resync_request(&json!({}))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let failing = Arc::new(Recorder {
        fail_after: Some(0),
        ..Recorder::default()
    });
    let a = send(&app(&aws, Some(failing)), resync_request(&json!({}))).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        a.body["type"],
        "urn:twincell:problem:replication-target-failed"
    );
    assert_eq!(a.body["published"], 0);
    assert!(a.body["next"].is_null(), "from the start again");
}

/// What makes a valid event invalid.
type Defect = fn(&mut serde_json::Map<String, Value>);

/// Each of the 25 kinds of invalid event of the CloudEvents conformance
/// corpus (`cloudevents/conformance`, `format/json/invalid-events.json`),
/// applied to a valid twincell event: missing or empty required
/// attributes, malformed times and offsets, an unknown spec version, empty
/// optional attributes, ids that are no strings, extension names and
/// values the specification forbids, and `data` beside `data_base64`.
fn conformance_defects() -> Vec<(&'static str, Defect)> {
    vec![
        ("invalidNoSpecVersion", |e| {
            e.remove("specversion");
        }),
        ("invalidNoId", |e| {
            e.remove("id");
        }),
        ("invalidNoType", |e| {
            e.remove("type");
        }),
        ("invalidNoSource", |e| {
            e.remove("source");
        }),
        ("invalidTimeGarbage", |e| {
            e.insert("time".into(), "lunchtime".into());
        }),
        ("invalidTimeToMinute", |e| {
            e.insert("time".into(), "2018-04-05T18:31Z".into());
        }),
        ("invalidTimeOffsetX", |e| {
            e.insert("time".into(), "2018-04-05T18:31:00X".into());
        }),
        ("invalidTimeOffsetOutOfRange", |e| {
            e.insert("time".into(), "2018-04-05T18:31:00+25:00".into());
        }),
        ("invalidTimeOffsetNonInteger", |e| {
            e.insert("time".into(), "2018-04-05T18:31:00+xx:00".into());
        }),
        ("invalidTimeOffsetHourOnly", |e| {
            e.insert("time".into(), "2018-04-05T18:31:00+05".into());
        }),
        ("invalidEmptyId", |e| {
            e.insert("id".into(), "".into());
        }),
        ("invalidEmptyType", |e| {
            e.insert("type".into(), "".into());
        }),
        ("invalidEmptySource", |e| {
            e.insert("source".into(), "".into());
        }),
        ("invalidEmptySpecVersion", |e| {
            e.insert("specversion".into(), "".into());
        }),
        ("invalidUnknownSpecVersion", |e| {
            e.insert("specversion".into(), "0.9".into());
        }),
        ("invalidNonRfc2046DataContentType", |e| {
            e.insert("datacontenttype".into(), "xyz".into());
        }),
        ("invalidEmptyDataContentType", |e| {
            e.insert("datacontenttype".into(), "".into());
        }),
        ("invalidEmptyDataSchema", |e| {
            e.insert("dataschema".into(), "".into());
        }),
        ("invalidEmptySubject", |e| {
            e.insert("subject".into(), "".into());
        }),
        ("invalidNumericId", |e| {
            e.insert("id".into(), 25.into());
        }),
        ("invalidObjectId", |e| {
            e.insert("id".into(), json!({"xyz": "abc"}));
        }),
        ("invalidCapitalizedExtension", |e| {
            e.insert("MyExtension".into(), "bad".into());
        }),
        ("invalidPunctuatedExtension", |e| {
            e.insert("my.extension".into(), "bad".into());
        }),
        ("invalidNonIntegerExtensionValue", |e| {
            e.insert("myextension".into(), json!(1.5));
        }),
        ("invalidBothDataAndDataBase64", |e| {
            e.insert("data_base64".into(), "eyAieHl6IjogMTIzIH0=".into());
        }),
    ]
}

#[tokio::test]
async fn every_invalid_event_of_the_cloudevents_conformance_corpus_is_400_and_applies_nothing() {
    let aws = cell("aws", "azure");
    let app = app(&aws, None);
    let events = azure_receipts().await;
    let valid = batch(&events[..1])[0].clone();
    let defects = conformance_defects();
    assert_eq!(defects.len(), 25, "the corpus has 25 invalid events");
    for (name, defect) in defects {
        let mut event = valid.as_object().unwrap().clone();
        defect(&mut event);
        for body in [json!([event.clone()]), Value::Object(event)] {
            let a = send(&app, deliver(&body, Some(KEY))).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name}: {}", a.body);
            assert_eq!(
                a.body["type"], "urn:twincell:problem:malformed-body",
                "{name}"
            );
            assert_eq!(on_hand_seen_of_azure(&aws).await, 0, "{name} applied");
        }
    }
    // The same event untouched is applied: the refusals were the defects'.
    let a = send(&app, deliver(&json!([valid]), Some(KEY))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(on_hand_seen_of_azure(&aws).await, 1);
}

fn signed_app(svc: &Arc<Svc>, keys: twincell_replication::signing::OriginKeys) -> axum::Router {
    router_with_replication(
        svc.clone(),
        Some(Replication {
            key: Secret::new(KEY).unwrap(),
            publisher: None,
            delivery_tokens: None,
            origin_keys: keys,
        }),
    )
}

fn signed_batch(events: &[RecordedEvent], signer: &twincell_replication::signing::Signer) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                serde_json::to_value(
                    twincell_replication::wire::to_signed_cloud_event(e, Some(signer)).unwrap(),
                )
                .unwrap()
            })
            .collect(),
    )
}

#[tokio::test]
async fn with_origin_keys_only_events_signed_by_their_origin_are_applied() {
    use twincell_replication::signing::{OriginKeys, Signer};
    let azure = CellId::new("azure").unwrap();
    let (key, _) = Signer::generate("azure-1").unwrap();
    let (forger, _) = Signer::generate("azure-1").unwrap();
    let aws = cell("aws", "azure");
    let app = signed_app(&aws, OriginKeys::default().with(&azure, &key));
    let events = azure_receipts().await;

    // Unsigned, and signed by a key that is not azure's: refused with a
    // final status, nothing applied, each event named.
    for body in [batch(&events), signed_batch(&events, &forger)] {
        let a = send(&app, deliver(&body, Some(KEY))).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        assert_eq!(a.body["type"], "urn:twincell:problem:untrusted-event");
        assert_eq!(a.body["events"].as_array().unwrap().len(), 3, "{}", a.body);
        assert_eq!(on_hand_seen_of_azure(&aws).await, 0);
    }
    // A signed event whose data was changed on the way.
    let mut tampered = signed_batch(&events[..1], &key);
    tampered[0]["data"]["quantity"] = json!(1_000);
    let a = send(&app, deliver(&tampered, Some(KEY))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(on_hand_seen_of_azure(&aws).await, 0);
    // One forged event among signed ones: the others are applied.
    let mut mixed = signed_batch(&events, &key);
    mixed[2] = signed_batch(&events[2..], &forger)[0].clone();
    let a = send(&app, deliver(&mixed, Some(KEY))).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(
        a.body["events"][0]["id"],
        events[2].event_id().to_string(),
        "{}",
        a.body
    );
    assert_eq!(on_hand_seen_of_azure(&aws).await, 3);
    // Signed by azure's key: applied.
    let a = send(&app, deliver(&signed_batch(&events, &key), Some(KEY))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(on_hand_seen_of_azure(&aws).await, 6);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_beside_the_old_one_until_the_old_one_is_dropped() {
    use twincell_replication::signing::{OriginKeys, Signer};
    let azure = CellId::new("azure").unwrap();
    let (old, _) = Signer::generate("azure-2026-11").unwrap();
    let (new, _) = Signer::generate("azure-2026-12").unwrap();
    let events = azure_receipts().await;
    // Rotation: the receiver lists both keys, the sender moves to the new
    // one (events in flight still carry the old one), then the old key is
    // dropped.
    let aws = cell("aws", "azure");
    let both = signed_app(
        &aws,
        OriginKeys::default().with(&azure, &old).with(&azure, &new),
    );
    let a = send(&both, deliver(&signed_batch(&events[..1], &old), Some(KEY))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = send(
        &both,
        deliver(&signed_batch(&events[1..2], &new), Some(KEY)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // The first event again, signed by the new key (a resync re-signs):
    // the same event, stored already; a signature is no part of it.
    let a = send(&both, deliver(&signed_batch(&events[..1], &new), Some(KEY))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["already_present"], 1, "{}", a.body);
    let only_new = signed_app(&aws, OriginKeys::default().with(&azure, &new));
    let a = send(
        &only_new,
        deliver(&signed_batch(&events[2..], &old), Some(KEY)),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let a = send(
        &only_new,
        deliver(&signed_batch(&events[2..], &new), Some(KEY)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(on_hand_seen_of_azure(&aws).await, 6);
}

#[tokio::test]
async fn events_of_a_cell_that_is_not_a_peer_are_refused_signed_or_not() {
    use twincell_replication::signing::{OriginKeys, Signer};
    let (gcp_key, _) = Signer::generate("gcp-1").unwrap();
    let gcp = cell("gcp", "azure");
    gcp.receive(&sku(), Quantity::new(4).unwrap())
        .await
        .unwrap();
    let events = gcp.store().events_from(&CellId::new("gcp").unwrap());
    let aws = cell("aws", "azure");
    for app in [
        app(&aws, None),
        signed_app(
            &aws,
            OriginKeys::default().with(&CellId::new("gcp").unwrap(), &gcp_key),
        ),
    ] {
        let a = send(&app, deliver(&signed_batch(&events, &gcp_key), Some(KEY))).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        assert_eq!(a.body["type"], "urn:twincell:problem:untrusted-event");
    }
    let view = aws.inventory(&sku()).await.unwrap();
    assert_eq!(view.on_hand, 0);
    assert!(!view.cells.contains_key(&CellId::new("gcp").unwrap()));
}
