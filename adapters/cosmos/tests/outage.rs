//! The Azure cell's router on Cosmos DB (the SDK's emulator) while the
//! account becomes unreachable and comes back: `/health` and commands answer
//! 503 problem+json with `Retry-After`, then 200 again in the same process,
//! with the data written before the outage intact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use http_body_util::BodyExt;
use tower::ServiceExt;
use twincell_core::{RandomIds, Service, SystemClock, Topology};

type Request = http::Request<String>;

/// One request through the router, as the handler serves it: status,
/// `Retry-After`, body.
async fn call(router: &axum::Router, request: Request) -> (u16, Option<String>, String) {
    let response = router
        .clone()
        .oneshot(request.map(axum::body::Body::from))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8(body.to_vec()).unwrap())
}

fn get(path: &str) -> Request {
    http::Request::get(path).body(String::new()).unwrap()
}

fn post(path: &str, body: &str) -> Request {
    http::Request::post(path)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_cosmos_down_and_back_up_without_a_restart() {
    let account = twincell_cosmos::emulator::Emulated::start().await.unwrap();
    let topology = Topology::parse("azure", "aws").unwrap();
    let service = Service::new(topology, account.store.clone(), SystemClock, RandomIds);
    let router = twincell_http::router(Arc::new(service));

    assert_eq!(call(&router, get("/health")).await.0, 200);
    let (status, _, body) = call(
        &router,
        post("/inventory/sku-c/receipts", r#"{"quantity":5}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    account.go_down();
    for (what, request) in [
        ("health", get("/health")),
        (
            "a reservation",
            post(
                "/inventory/sku-c/reservations",
                r#"{"order_id":"o-1","quantity":2}"#,
            ),
        ),
    ] {
        let (status, retry, body) = call(&router, request).await;
        assert_eq!(status, 503, "{what} while Cosmos is down: {body}");
        assert_eq!(retry.as_deref(), Some("1"), "{what}");
        assert!(
            body.contains("urn:twincell:problem:service-unavailable"),
            "{what}: {body}"
        );
    }

    account.come_back();
    assert_eq!(call(&router, get("/health")).await.0, 200);
    let (status, _, body) = call(&router, get("/inventory/sku-c")).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(r#""on_hand":5"#),
        "the receipt survived the outage: {body}"
    );
    let (status, _, body) = call(
        &router,
        post(
            "/inventory/sku-c/reservations",
            r#"{"order_id":"o-1","quantity":2}"#,
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}
