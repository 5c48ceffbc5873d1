//! The router in-process: every route, every error class, the headers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use twincell_core::testing::{ManualClock, SequentialIds};
use twincell_core::{CellId, InMemoryEventStore, Service, Timestamp, Topology};
use twincell_http::{BODY_LIMIT, router};

type Svc = Service<InMemoryEventStore, ManualClock, SequentialIds>;

fn service() -> Arc<Svc> {
    let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
    Arc::new(Service::new(
        topology,
        InMemoryEventStore::new(),
        ManualClock::new(Timestamp::from_unix_millis(1_795_320_745_000).unwrap(), 0),
        SequentialIds::default(),
    ))
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
    raw: Vec<u8>,
}

async fn send(svc: &Arc<Svc>, request: Request<Body>) -> Answer {
    let response = router(svc.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let raw = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        raw,
    }
}

fn post_json(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn problem_type(a: &Answer) -> &str {
    assert_eq!(
        a.headers["content-type"], "application/problem+json",
        "{:?}",
        a.body
    );
    a.body["type"].as_str().unwrap()
}

#[tokio::test]
async fn health_is_ok_and_503_with_retry_after_while_the_store_is_down() {
    let svc = service();
    let a = send(&svc, get("/health")).await;
    assert_eq!(
        (a.status, a.raw.as_slice()),
        (StatusCode::OK, &br#"{"status":"ok"}"#[..])
    );
    svc.store().set_available(false);
    let a = send(&svc, get("/health")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem_type(&a), "urn:twincell:problem:service-unavailable");
    assert_eq!(a.headers["retry-after"], "1");
    assert!(
        !String::from_utf8_lossy(&a.raw).contains("switched off"),
        "no internals leak"
    );
    svc.store().set_available(true);
    assert_eq!(send(&svc, get("/health")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn create_then_get_a_transaction_with_location_and_canonical_amount() {
    let svc = service();
    let a = send(
        &svc,
        post_json(
            "/transactions",
            &json!({"account_id":"acct-1","amount":"19.9","currency":"USD"}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let id = a.body["transaction_id"].as_str().unwrap().to_owned();
    assert_eq!(
        a.headers["location"],
        format!("/transactions/{id}").as_str()
    );
    assert_eq!(a.body["amount"], "19.90");
    assert_eq!(a.body["status"], "created");
    assert!(a.headers.get("idempotent-replayed").is_none());
    let g = send(&svc, get(&format!("/transactions/{id}"))).await;
    assert_eq!(
        (g.status, &g.raw),
        (StatusCode::OK, &a.raw),
        "GET returns the same body bytes"
    );
}

#[tokio::test]
async fn idempotent_retry_replays_the_same_status_and_body_and_reuse_is_422() {
    let svc = service();
    let req = |amount: &str| {
        Request::post("/transactions")
            .header("content-type", "application/json")
            .header("idempotency-key", "key-1")
            .body(Body::from(format!(
                r#"{{"account_id":"a","amount":"{amount}","currency":"EUR"}}"#
            )))
            .unwrap()
    };
    let first = send(&svc, req("5")).await;
    let again = send(&svc, req("5.00")).await;
    assert_eq!((again.status, &again.raw), (first.status, &first.raw));
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.headers["location"], first.headers["location"]);
    let reused = send(&svc, req("6")).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem_type(&reused),
        "urn:twincell:problem:idempotency-key-reused"
    );
}

#[tokio::test]
async fn invalid_idempotency_key_is_400() {
    let svc = service();
    let req = Request::post("/transactions")
        .header("content-type", "application/json")
        .header("idempotency-key", "has space")
        .body(Body::from(
            r#"{"account_id":"a","amount":"1","currency":"EUR"}"#,
        ))
        .unwrap();
    let a = send(&svc, req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(problem_type(&a), "urn:twincell:problem:invalid-header");
}

#[tokio::test]
async fn every_violation_is_listed_in_a_422() {
    let svc = service();
    let a = send(
        &svc,
        post_json(
            "/transactions",
            &json!({"amount": 19.99, "currency": "usd", "extra": 1}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_type(&a), "urn:twincell:problem:validation-failed");
    let got: Vec<(&str, &str)> = a.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["pointer"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("/account_id", "required"),
            ("/amount", "invalid_type"),
            ("/currency", "invalid_format"),
            ("/extra", "unknown_field")
        ]
    );
    assert_eq!(a.body["status"], 422);
    assert_eq!(a.body["detail"], "the request has 4 invalid fields");
}

#[tokio::test]
async fn a_body_full_of_wrong_fields_gets_a_small_422_that_says_how_many() {
    use twincell_http::problem::{POINTER_LISTED_CHARS, VIOLATIONS_LISTED};
    let svc = service();
    // A body just under the 64 KiB limit, all unknown keys: before the cap
    // its 422 was 8 times its size.
    // Each `"k00000":1,` is 11 bytes.
    let i = (BODY_LIMIT - 100) / 11;
    let body: serde_json::Map<String, Value> =
        (0..i).map(|n| (format!("k{n:05}"), json!(1))).collect();
    let sent = serde_json::to_vec(&body).unwrap().len();
    assert!(sent > BODY_LIMIT - 200 && sent <= BODY_LIMIT, "{sent}");
    let a = send(
        &svc,
        post_json("/inventory/sku-1/receipts", &Value::Object(body)),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors = a.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), VIOLATIONS_LISTED);
    // The total: every unknown key plus the missing quantity.
    assert_eq!(
        a.body["detail"],
        format!(
            "the request has {} invalid fields; the first {VIOLATIONS_LISTED} by pointer are listed",
            i + 1
        )
    );
    assert!(
        a.raw.len() < 5_000,
        "{} bytes for a {sent}-byte body",
        a.raw.len()
    );

    // One unknown key of 60 000 characters: its pointer is cut.
    let long = "x".repeat(60_000);
    let a = send(
        &svc,
        post_json(
            "/inventory/sku-1/receipts",
            &json!({"quantity": 1, long.clone(): 1}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let pointer = a.body["errors"][0]["pointer"].as_str().unwrap();
    assert_eq!(pointer.chars().count(), POINTER_LISTED_CHARS);
    assert!(pointer.ends_with('…') && pointer.starts_with("/xxx"));
    assert_eq!(a.body["errors"][0]["code"], "unknown_field");
    assert!(a.raw.len() < 1_000, "{} bytes", a.raw.len());
}

#[tokio::test]
async fn body_rules_answer_415_413_and_400() {
    let svc = service();
    let no_type = Request::post("/transactions")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        send(&svc, no_type).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let text = Request::post("/transactions")
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        send(&svc, text).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );

    // Exactly the limit is read (and is then merely invalid); one more byte is 413.
    let padded = |len: usize| {
        let mut body = br#"{"account_id":"a","amount":"1","currency":"EUR","pad":""#.to_vec();
        body.resize(len - 2, b'x');
        body.extend_from_slice(b"\"}");
        Request::post("/transactions")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let at_limit = send(&svc, padded(BODY_LIMIT)).await;
    assert_eq!(
        at_limit.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        at_limit.body
    );
    let over = send(&svc, padded(BODY_LIMIT + 1)).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        problem_type(&over),
        "urn:twincell:problem:payload-too-large"
    );

    for bad in [&b"{"[..], b"", b"\xff\xfe", br#"{"a":1,"a":2}"#, b"[1] 2"] {
        let req = Request::post("/transactions")
            .header("content-type", "application/json")
            .body(Body::from(bad.to_vec()))
            .unwrap();
        let a = send(&svc, req).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(problem_type(&a), "urn:twincell:problem:malformed-body");
    }
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405_with_allow() {
    let svc = service();
    let a = send(&svc, get("/nope")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(problem_type(&a), "urn:twincell:problem:not-found");
    let a = send(&svc, get("/transactions/")).await;
    assert_eq!(
        a.status,
        StatusCode::NOT_FOUND,
        "trailing slash is another route"
    );
    let a = send(
        &svc,
        Request::delete("/transactions")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem_type(&a), "urn:twincell:problem:method-not-allowed");
    assert_eq!(a.headers["allow"], "POST");
    let a = send(
        &svc,
        Request::put("/inventory/sku-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.headers["allow"], "GET,HEAD");
}

#[tokio::test]
async fn invalid_ids_in_the_path_are_404() {
    let svc = service();
    for path in [
        "/transactions/not-a-uuid",
        "/inventory/bad%20sku",
        "/inventory/a%2Fb",
        "/inventory/%FF",
    ] {
        let a = send(&svc, get(path)).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(problem_type(&a), "urn:twincell:problem:not-found");
    }
    let a = send(
        &svc,
        get("/transactions/00000000-0000-7000-8000-000000000999"),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn inventory_flow_receive_reserve_conflict_release_fulfil_transfer() {
    let svc = service();
    let a = send(
        &svc,
        post_json("/inventory/sku-1/receipts", &json!({"quantity": 10})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.raw,
        br#"{"sku":"sku-1","on_hand":10,"reserved":0,"available":10,"cells":{"aws":{"on_hand":10,"reserved":0,"available":10},"azure":{"on_hand":0,"reserved":0,"available":0}}}"#
    );
    let r = send(
        &svc,
        post_json(
            "/inventory/sku-1/reservations",
            &json!({"order_id": "o-1", "quantity": 4}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.raw,
        br#"{"sku":"sku-1","order_id":"o-1","quantity":4,"cell":"aws"}"#
    );
    assert_eq!(r.headers["location"], "/inventory/sku-1/reservations/o-1");
    let again = send(
        &svc,
        post_json(
            "/inventory/sku-1/reservations",
            &json!({"order_id": "o-1", "quantity": 4}),
        ),
    )
    .await;
    assert_eq!((again.status, &again.raw), (StatusCode::CREATED, &r.raw));
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let mismatch = send(
        &svc,
        post_json(
            "/inventory/sku-1/reservations",
            &json!({"order_id": "o-1", "quantity": 5}),
        ),
    )
    .await;
    assert_eq!(mismatch.status, StatusCode::CONFLICT);
    assert_eq!(
        problem_type(&mismatch),
        "urn:twincell:problem:reservation-mismatch"
    );
    let short = send(
        &svc,
        post_json(
            "/inventory/sku-1/reservations",
            &json!({"order_id": "o-2", "quantity": 7}),
        ),
    )
    .await;
    assert_eq!(short.status, StatusCode::CONFLICT);
    assert_eq!(
        problem_type(&short),
        "urn:twincell:problem:insufficient-stock"
    );
    assert_eq!(
        short.body["detail"],
        "7 units requested but 6 available in this cell"
    );

    let f = send(
        &svc,
        Request::post("/inventory/sku-1/reservations/o-1/fulfilment")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(f.status, StatusCode::OK);
    assert_eq!(f.body["on_hand"], 6);
    let rel = send(
        &svc,
        Request::delete("/inventory/sku-1/reservations/o-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(rel.status, StatusCode::CONFLICT);
    assert_eq!(
        problem_type(&rel),
        "urn:twincell:problem:reservation-closed"
    );
    let missing = send(
        &svc,
        Request::delete("/inventory/sku-1/reservations/o-9")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let t = send(
        &svc,
        post_json(
            "/inventory/sku-1/transfers",
            &json!({"to_cell": "azure", "quantity": 2}),
        ),
    )
    .await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.body["cells"]["aws"]["on_hand"], 4);
    let self_transfer = send(
        &svc,
        post_json(
            "/inventory/sku-1/transfers",
            &json!({"to_cell": "aws", "quantity": 2}),
        ),
    )
    .await;
    assert_eq!(self_transfer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let w = send(
        &svc,
        post_json(
            "/inventory/sku-1/write-offs",
            &json!({"quantity": 1, "reason": "dropped"}),
        ),
    )
    .await;
    assert_eq!(
        (w.status, w.body["available"].clone()),
        (StatusCode::OK, json!(3))
    );
}

#[tokio::test]
async fn releasing_another_cells_reservation_answers_202() {
    let aws = service();
    let topology = Topology::new(CellId::new("azure").unwrap(), [CellId::new("aws").unwrap()]);
    let azure = Arc::new(Service::new(
        topology,
        InMemoryEventStore::new(),
        ManualClock::new(Timestamp::EPOCH, 1),
        SequentialIds::default(),
    ));
    send(
        &aws,
        post_json("/inventory/sku-1/receipts", &json!({"quantity": 3})),
    )
    .await;
    send(
        &aws,
        post_json(
            "/inventory/sku-1/reservations",
            &json!({"order_id": "o-1", "quantity": 2}),
        ),
    )
    .await;
    for e in aws.store().events_from(&CellId::new("aws").unwrap()) {
        azure.apply_replicated(&e).await.unwrap();
    }
    let a = send(
        &azure,
        Request::delete("/inventory/sku-1/reservations/o-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    assert_eq!(a.headers["x-twincell-cell"], "azure");
}

#[tokio::test]
async fn request_id_is_echoed_when_valid_and_generated_otherwise() {
    let svc = service();
    let with = Request::get("/health")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let a = send(&svc, with).await;
    assert_eq!(a.headers["x-request-id"], "abc-123");
    assert_eq!(a.headers["x-twincell-cell"], "aws");
    let bad = Request::get("/nope")
        .header("x-request-id", "x".repeat(129))
        .body(Body::empty())
        .unwrap();
    let a = send(&svc, bad).await;
    let generated = a.headers["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    assert_eq!(a.headers["x-twincell-cell"], "aws");
}

#[tokio::test]
async fn every_answer_carries_the_callers_trace_under_a_span_of_the_cells_own() {
    let svc = service();
    let traced = Request::get("/nope")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::empty())
        .unwrap();
    let a = send(&svc, traced).await;
    let out = a.headers["traceparent"].to_str().unwrap().to_owned();
    let fields: Vec<&str> = out.split('-').collect();
    assert_eq!(fields.len(), 4, "{out}");
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01")
    );
    assert_eq!(fields[2].len(), 16);
    assert_ne!(fields[2], "00f067aa0ba902b7", "a span of its own");
    // X-Ray's root, as API Gateway and Lambda send it.
    let xray = Request::get("/health")
        .header(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .body(Body::empty())
        .unwrap();
    let a = send(&svc, xray).await;
    assert!(
        a.headers["traceparent"]
            .to_str()
            .unwrap()
            .starts_with("00-5759e988bd862e3fe1be46a994272793-"),
        "{:?}",
        a.headers["traceparent"]
    );
    // None, or one that does not parse: a new trace, never refused.
    let mut seen = std::collections::BTreeSet::new();
    for header in [None, Some("00-zz-yy-01")] {
        let mut request = Request::get("/health");
        if let Some(h) = header {
            request = request.header("traceparent", h);
        }
        let a = send(&svc, request.body(Body::empty()).unwrap()).await;
        assert_eq!(a.status, 200);
        let out = a.headers["traceparent"].to_str().unwrap().to_owned();
        assert_eq!(out.len(), 55, "{out}");
        assert!(
            seen.insert(out.get(3..35).unwrap().to_owned()),
            "a new trace each time"
        );
    }
}

#[test]
fn docs_list_every_problem_type_with_its_status_and_every_route() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    for kind in twincell_http::ProblemKind::ALL {
        let row = format!("| `{}` | {} |", kind.slug(), kind.status().as_u16());
        assert!(docs.contains(&row), "docs/api.md lacks the row {row}");
    }
    for twincell_http::Route { method, path, .. } in twincell_http::ROUTES {
        let row = format!("| {method} | `{path}` |");
        assert!(docs.contains(&row), "docs/api.md lacks the route {row}");
    }
}

#[tokio::test]
async fn dot_segments_are_resolved_before_routing() {
    let svc = service();
    let a = send(&svc, get("/inventory/../health")).await;
    assert_eq!(
        (a.status, a.raw.as_slice()),
        (StatusCode::OK, &br#"{"status":"ok"}"#[..])
    );
    let a = send(&svc, get("/inventory/sku-1/%2e%2E/sku-2")).await;
    assert_eq!(
        (a.status, a.body["sku"].as_str()),
        (StatusCode::OK, Some("sku-2"))
    );
}
