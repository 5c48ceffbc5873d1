//! The publisher against a real HTTP server on 127.0.0.1: batches within
//! their limits, in order, with the key in the target's header; transient
//! failures retried, final ones not; how many went out is always known.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use twincell_core::event::{AggregateId, DomainEvent, RecordedEvent, StreamId};
use twincell_core::{CellId, EventMetadata, Quantity, Sku, Timestamp, TraceParent};
use twincell_replication::publish::Publisher;
use twincell_replication::wire::decode_body;
use twincell_replication::{Secret, Target, TargetKind};

const KEY: &str = "peer-key-0123456789abcdef0123456789";

#[derive(Default)]
struct Seen {
    requests: Vec<(HeaderMap, Bytes)>,
    /// Statuses to answer, in order; 200 once they run out.
    script: Vec<u16>,
}

async fn receive(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut seen = seen.lock().unwrap();
    seen.requests.push((headers, body));
    let status = if seen.script.is_empty() {
        200
    } else {
        seen.script.remove(0)
    };
    StatusCode::from_u16(status).unwrap()
}

async fn server(script: Vec<u16>) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen {
        requests: Vec::new(),
        script,
    }));
    let app = axum::Router::new()
        .route("/replication/events", post(receive))
        .route("/api/events", post(receive))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), seen)
}

fn events(n: u64) -> Vec<RecordedEvent> {
    let stream = StreamId::new(
        AggregateId::inventory(&Sku::new("sku").unwrap()),
        CellId::new("aws").unwrap(),
    );
    (1..=n)
        .map(|v| {
            RecordedEvent::new(
                stream.clone(),
                v,
                Timestamp::from_unix_millis(1_000).unwrap(),
                DomainEvent::StockReceived {
                    quantity: Quantity::new(v).unwrap(),
                },
            )
            .unwrap()
        })
        .collect()
}

fn decoded(body: &Bytes) -> Vec<RecordedEvent> {
    decode_body(serde_json::from_slice(body).unwrap())
        .unwrap()
        .into_iter()
        .map(|i| i.event.unwrap())
        .collect()
}

#[tokio::test]
async fn a_webhook_gets_every_event_in_order_in_bounded_batches_with_the_key() {
    let (base, seen) = server(vec![]).await;
    let target = Target::new(
        TargetKind::Webhook,
        &format!("{base}/replication/events"),
        Secret::new(KEY).unwrap(),
    )
    .unwrap();
    let publisher = Publisher::new(target)
        .unwrap()
        .with_batch_limits(usize::MAX, 7);
    // Each event keeps the trace of the request that committed it; the
    // publish requests carry the publishing invocation's own.
    let committed = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .map(EventMetadata::traced)
        .unwrap();
    let sent: Vec<RecordedEvent> = events(30)
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            if i % 2 == 0 {
                e.with_metadata(committed.clone())
            } else {
                e
            }
        })
        .collect();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(
        publisher.publish_traced(&sent, Some(traceparent)).await,
        Ok(30)
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.requests.len(), 5, "30 events in batches of 7");
    let mut all = Vec::new();
    for (headers, body) in &seen.requests {
        assert_eq!(
            headers["content-type"],
            "application/cloudevents-batch+json; charset=utf-8"
        );
        assert_eq!(headers["x-twincell-replication-key"], KEY);
        assert_eq!(headers["traceparent"], traceparent);
        assert!(headers.get("aeg-sas-key").is_none());
        let batch = decoded(body);
        assert!(batch.len() <= 7);
        all.extend(batch);
    }
    assert_eq!(all, sent);
}

#[tokio::test]
async fn an_event_grid_topic_gets_the_sas_key_on_its_publish_path() {
    let (base, seen) = server(vec![]).await;
    let target = Target::new(TargetKind::EventGrid, &base, Secret::new(KEY).unwrap()).unwrap();
    let publisher = Publisher::new(target).unwrap();
    assert_eq!(publisher.publish_traced(&events(3), None).await, Ok(3));
    let seen = seen.lock().unwrap();
    let (headers, body) = &seen.requests[0];
    assert_eq!(headers["aeg-sas-key"], KEY);
    assert!(headers.get("x-twincell-replication-key").is_none());
    assert_eq!(decoded(body).len(), 3);
}

#[tokio::test]
async fn transient_failures_are_retried_and_final_ones_are_not() {
    let (base, seen) = server(vec![503, 429]).await;
    let url = format!("{base}/replication/events");
    let target = Target::new(TargetKind::Webhook, &url, Secret::new(KEY).unwrap()).unwrap();
    let publisher = Publisher::new(target).unwrap();
    assert_eq!(publisher.publish_traced(&events(2), None).await, Ok(2));
    assert_eq!(
        seen.lock().unwrap().requests.len(),
        3,
        "503 and 429 retried"
    );

    let (base, seen) = server(vec![200, 401]).await;
    let url = format!("{base}/replication/events");
    let target = Target::new(TargetKind::Webhook, &url, Secret::new(KEY).unwrap()).unwrap();
    let publisher = Publisher::new(target)
        .unwrap()
        .with_batch_limits(usize::MAX, 2);
    let failed = publisher
        .publish_traced(&events(6), None)
        .await
        .unwrap_err();
    assert_eq!(failed.published, 2, "the first batch went out");
    assert!(!failed.retryable);
    assert!(failed.reason.contains("401"), "{}", failed.reason);
    assert!(!failed.reason.contains(KEY));
    assert_eq!(seen.lock().unwrap().requests.len(), 2, "401 is not retried");

    let (base, seen) = server(vec![500, 500, 500]).await;
    let url = format!("{base}/replication/events");
    let target = Target::new(TargetKind::Webhook, &url, Secret::new(KEY).unwrap()).unwrap();
    let failed = Publisher::new(target)
        .unwrap()
        .publish_traced(&events(1), None)
        .await
        .unwrap_err();
    assert!(failed.retryable && failed.published == 0);
    assert_eq!(
        seen.lock().unwrap().requests.len(),
        3,
        "three attempts, then the caller retries"
    );
}

#[tokio::test]
async fn an_unreachable_target_is_a_retryable_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let target = Target::new(
        TargetKind::Webhook,
        &format!("http://{address}/replication/events"),
        Secret::new(KEY).unwrap(),
    )
    .unwrap();
    let failed = Publisher::new(target)
        .unwrap()
        .publish_traced(&events(1), None)
        .await
        .unwrap_err();
    assert!(failed.retryable, "{failed:?}");
    assert_eq!(failed.published, 0);
}

#[tokio::test]
async fn a_lazy_publisher_builds_its_client_on_the_first_publish_and_keeps_it() {
    let (base, seen) = server(vec![]).await;
    let url = format!("{base}/replication/events");
    let target = Target::new(TargetKind::Webhook, &url, Secret::new(KEY).unwrap()).unwrap();
    let lazy = twincell_replication::publish::shared(Some(target), None).unwrap();
    assert_eq!(lazy.publish(&events(2)).await, Ok(2));
    assert_eq!(lazy.publish(&events(3)).await, Ok(3));
    assert_eq!(seen.lock().unwrap().requests.len(), 2);
    assert!(twincell_replication::publish::shared(None, None).is_none());
}
