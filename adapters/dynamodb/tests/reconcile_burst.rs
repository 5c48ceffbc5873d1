//! A burst of 150 release requests from the other cell, delivered out of
//! order to the AWS cell on DynamoDB (moto), with the first one last: when
//! it arrives the gap closes and the cell owes 150 releases at once, more
//! than one DynamoDB transaction holds (100). The cell appends them in
//! chunks, and the SKU keeps answering 200 through the router.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use http_body_util::BodyExt;
use tower::ServiceExt;
use twincell_core::{
    AggregateId, CellId, DomainEvent, EventStore, InMemoryEventStore, InventoryCommand, OrderId,
    Quantity, RandomIds, RecordedEvent, ReplicatedApply, Service, Sku, SystemClock, Topology,
};

const ORDERS: usize = 150;

/// A fixed shuffle (a linear congruential walk), so a failure replays.
fn shuffled(mut items: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = usize::try_from(state >> 33).unwrap() % (i + 1);
        items.swap(i, j);
    }
    items
}

async fn get(
    router: &axum::Router,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_150_release_requests_out_of_order_leaves_the_sku_serving() {
    let store = twincell_dynamodb::testing::fresh_store("burst").await;
    let aws = Arc::new(Service::new(
        Topology::parse("aws", "azure").unwrap(),
        store,
        SystemClock,
        RandomIds,
    ));
    let azure = Service::new(
        Topology::parse("azure", "aws").unwrap(),
        InMemoryEventStore::new(),
        SystemClock,
        RandomIds,
    );
    let sku = Sku::new("burst-sku").unwrap();
    let n = u64::try_from(ORDERS).unwrap();
    // aws holds 150 one-unit reservations (written as the service would,
    // in two appends, to keep the test's own setup off moto's slow path).
    let holder = Service::new(
        Topology::parse("aws", "azure").unwrap(),
        InMemoryEventStore::new(),
        SystemClock,
        RandomIds,
    );
    holder
        .receive(&sku, Quantity::new(n).unwrap())
        .await
        .unwrap();
    for o in 0..ORDERS {
        let cmd = InventoryCommand::Reserve(
            OrderId::new(format!("order-{o}")).unwrap(),
            Quantity::new(1).unwrap(),
        );
        holder.execute(&sku, &cmd).await.unwrap();
    }
    let held = holder.store().events_from(&CellId::new("aws").unwrap());
    let stream = held[0].stream().clone();
    aws.store().append(&stream, 0, &held[..100]).await.unwrap();
    aws.store()
        .append(&stream, 100, &held[100..])
        .await
        .unwrap();
    // azure sees aws's reservations, then asks for each to be released.
    let aggregate = AggregateId::inventory(&sku);
    for e in &held {
        azure.apply_replicated(e).await.unwrap();
    }
    for o in 0..ORDERS {
        let cmd = InventoryCommand::Release(OrderId::new(format!("order-{o}")).unwrap());
        azure.execute(&sku, &cmd).await.unwrap();
    }
    let mut burst = azure.store().events_from(&CellId::new("azure").unwrap());
    assert_eq!(burst.len(), ORDERS);
    burst.sort_by_key(RecordedEvent::version);
    let first = burst.remove(0);
    // Across the gap the service's reconcile after each of these would find
    // nothing to do (nothing folds past a missing version) and only cost a
    // reload of the SKU on moto, so they go to the store; the last one,
    // which closes the gap, goes through the service.
    for e in shuffled(burst) {
        assert_eq!(
            aws.store().apply_replicated(&e).await,
            Ok(ReplicatedApply::Stored)
        );
    }
    assert_eq!(
        aws.inventory(&sku).await.unwrap().reserved,
        n,
        "nothing folds across the gap"
    );
    assert_eq!(
        aws.apply_replicated(&first).await,
        Ok(ReplicatedApply::Stored)
    );

    let released = aws
        .store()
        .load(&aggregate)
        .await
        .unwrap()
        .iter()
        .filter(|e| {
            e.origin().as_str() == "aws"
                && matches!(e.event(), DomainEvent::ReservationReleased { .. })
        })
        .count();
    assert_eq!(released, ORDERS, "every request answered exactly once");

    let router = twincell_http::router(Arc::clone(&aws));
    let (status, view) = get(&router, "GET", "/inventory/burst-sku", "").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["cells"]["aws"]["reserved"], 0);
    assert_eq!(view["cells"]["aws"]["available"], n);
    let (status, view) = get(
        &router,
        "POST",
        "/inventory/burst-sku/receipts",
        r#"{"quantity":1}"#,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    let (status, view) = get(
        &router,
        "POST",
        "/inventory/burst-sku/reservations",
        r#"{"order_id":"after-burst","quantity":151}"#,
    )
    .await;
    assert_eq!(status, 201, "{view}");
}
