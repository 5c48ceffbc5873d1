//! The router against a stub of the inbound port: no store, no rule, only
//! what the router itself does — parse, convert to a command, call the
//! port, render what it answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use twincell_core::{
    BatchReport, CellApi, CellId, CreateTransaction, CreatedTransaction, EventMetadata, EventPage,
    IdempotencyKey, InventoryCommand, InventoryOutcome, InventoryView, Listing, Quantity,
    RecordedEvent, Reply, ServiceError, Sku, StreamId, StreamProgress, Timestamp, Topology,
    Transaction, TransactionId,
};

/// Records every command it is asked to run; answers with what it is set
/// to answer.
struct Stub {
    topology: Topology,
    healthy: bool,
    commands: Mutex<Vec<(Sku, InventoryCommand)>>,
    /// The metadata each command was asked to keep with its events.
    metadata: Mutex<Vec<EventMetadata>>,
}

impl Stub {
    fn new(healthy: bool) -> Arc<Self> {
        Arc::new(Self {
            topology: Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]),
            healthy,
            commands: Mutex::new(Vec::new()),
            metadata: Mutex::new(Vec::new()),
        })
    }

    fn view(sku: &Sku, on_hand: u64) -> InventoryView {
        InventoryView {
            sku: sku.clone(),
            on_hand,
            reserved: 0,
            available: on_hand,
            shortage: 0,
            cells: BTreeMap::new(),
        }
    }
}

fn unused<'a, T: Send + 'a>() -> Reply<'a, Result<T, ServiceError>> {
    Box::pin(async { Err(ServiceError::Internal("not used by this test".to_owned())) })
}

impl CellApi for Stub {
    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn now(&self) -> Timestamp {
        Timestamp::EPOCH
    }

    fn health(&self) -> Reply<'_, Result<(), ServiceError>> {
        let healthy = self.healthy;
        Box::pin(async move {
            if healthy {
                Ok(())
            } else {
                Err(ServiceError::Unavailable(
                    "the stub's store is down".to_owned(),
                ))
            }
        })
    }

    fn create_transaction<'a>(
        &'a self,
        _: &'a CreateTransaction,
        _: Option<&'a IdempotencyKey>,
        _: &'a EventMetadata,
    ) -> Reply<'a, Result<CreatedTransaction, ServiceError>> {
        unused()
    }

    fn transaction(&self, id: TransactionId) -> Reply<'_, Result<Transaction, ServiceError>> {
        Box::pin(async move { Err(ServiceError::TransactionNotFound(id)) })
    }

    fn inventory<'a>(&'a self, sku: &'a Sku) -> Reply<'a, Result<InventoryView, ServiceError>> {
        Box::pin(async move { Ok(Self::view(sku, 42)) })
    }

    fn execute<'a>(
        &'a self,
        sku: &'a Sku,
        command: &'a InventoryCommand,
        metadata: &'a EventMetadata,
    ) -> Reply<'a, Result<InventoryOutcome, ServiceError>> {
        self.commands
            .lock()
            .unwrap()
            .push((sku.clone(), command.clone()));
        self.metadata.lock().unwrap().push(metadata.clone());
        Box::pin(async move { Ok(InventoryOutcome::Applied(Self::view(sku, 7))) })
    }

    fn apply_replicated_batch<'a>(&'a self, _: &'a [RecordedEvent]) -> Reply<'a, BatchReport> {
        Box::pin(async {
            BatchReport {
                outcomes: Vec::new(),
                streams: Vec::new(),
                follow_up: Ok(()),
            }
        })
    }

    fn stream_progress<'a>(
        &'a self,
        _: &'a StreamId,
    ) -> Reply<'a, Result<StreamProgress, ServiceError>> {
        unused()
    }

    fn own_events<'a>(&'a self, _: &'a Listing) -> Reply<'a, Result<EventPage, ServiceError>> {
        unused()
    }
}

async fn send(stub: &Arc<Stub>, request: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let response = twincell_http::router(Arc::clone(stub))
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_receipt_reaches_the_port_as_one_command_and_its_answer_is_rendered() {
    let stub = Stub::new(true);
    let request = Request::post("/inventory/sku-1/receipts")
        .header("content-type", "application/json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::from(json!({"quantity": 5}).to_string()))
        .unwrap();
    let (status, headers, body) = send(&stub, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-twincell-cell"], "aws");
    assert_eq!(body["on_hand"], 7, "the stub's answer, not a store's");
    // The events keep the request's own span, the one its response names.
    let kept = stub.metadata.lock().unwrap().clone();
    let answered = headers["traceparent"].to_str().unwrap();
    assert!(answered.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_eq!(
        kept.iter()
            .map(|m| m.traceparent.map(|t| t.to_string()))
            .collect::<Vec<_>>(),
        [Some(answered.to_owned())]
    );
    let commands = stub.commands.lock().unwrap().clone();
    assert_eq!(
        commands,
        [(
            Sku::new("sku-1").unwrap(),
            InventoryCommand::Receive(Quantity::new(5).unwrap(), None)
        )]
    );
}

#[tokio::test]
async fn an_invalid_payload_never_reaches_the_port() {
    let stub = Stub::new(true);
    let request = Request::post("/inventory/sku-1/receipts")
        .header("content-type", "application/json")
        .body(Body::from(json!({"quantity": 0}).to_string()))
        .unwrap();
    let (status, _, body) = send(&stub, request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["pointer"], "/quantity");
    assert!(stub.commands.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_ports_errors_become_their_problems() {
    let stub = Stub::new(false);
    let (status, headers, body) =
        send(&stub, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert!(
        !body.to_string().contains("stub's store"),
        "the cause is logged, never sent: {body}"
    );
    let (status, _, body) = send(
        &stub,
        Request::get("/transactions/00000000-0000-7000-8000-000000000001")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["type"], "urn:twincell:problem:not-found");
}

#[tokio::test]
async fn a_read_is_answered_from_the_port() {
    let stub = Stub::new(true);
    let (status, _, body) = send(
        &stub,
        Request::get("/inventory/sku-9")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["sku"].as_str(), body["on_hand"].as_u64()),
        (Some("sku-9"), Some(42))
    );
}
