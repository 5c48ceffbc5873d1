//! A file the store cannot use — written by a newer twincell, read-only,
//! full, corrupt — and what the cell does about it: a newer schema is
//! refused at start; the others answer unavailable (503 + `Retry-After`
//! through the router), lose nothing committed, and serve again once the
//! file can be used.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt;
use twincell_core::testing::{ManualClock, SequentialIds};
use twincell_core::{
    AggregateId, CellId, DomainEvent, EventStore, Quantity, RecordedEvent, Service, Sku,
    StoreError, StreamId, Timestamp, Topology,
};
use twincell_sqlite::testing::{fresh_path, schema_version, set_schema_version};
use twincell_sqlite::{OpenError, SCHEMA_VERSION, SqliteEventStore};

fn stream(sku: &str) -> StreamId {
    StreamId::new(
        AggregateId::inventory(&Sku::new(sku).unwrap()),
        CellId::new("aws").unwrap(),
    )
}

fn receipt(stream: &StreamId, version: u64, units: u64) -> RecordedEvent {
    RecordedEvent::new(
        stream.clone(),
        version,
        Timestamp::from_unix_millis(1_000).unwrap(),
        DomainEvent::StockReceived {
            quantity: Quantity::new(units).unwrap(),
        },
    )
    .unwrap()
}

/// Waits until no store of this process holds `path` open: its thread
/// ends once the last handle is dropped.
async fn closed(path: &std::path::Path) {
    for _ in 0..100 {
        let wal = path.with_extension("sqlite-wal");
        if !wal.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_file_written_by_a_newer_twincell_is_refused_with_a_message_saying_so() {
    let path = fresh_path("newer");
    let store = SqliteEventStore::open(&path).await.unwrap();
    let s = stream("sku-1");
    store.append(&s, 0, &[receipt(&s, 1, 3)]).await.unwrap();
    drop(store);
    closed(&path).await;
    set_schema_version(&path, SCHEMA_VERSION + 1).unwrap();
    let refused = SqliteEventStore::open(&path).await.unwrap_err();
    assert_eq!(
        refused,
        OpenError::NewerSchema {
            path: path.display().to_string(),
            found: SCHEMA_VERSION + 1
        }
    );
    let message = refused.to_string();
    assert!(message.contains("newer twincell"), "{message}");
    assert!(
        message.contains(&format!("up to {SCHEMA_VERSION}")),
        "{message}"
    );
    // Nothing was touched: back at this version, everything is there.
    set_schema_version(&path, SCHEMA_VERSION).unwrap();
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(store.load(&s.aggregate).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_blank_sqlite_file_is_set_up_by_the_migrations_and_reopens_unchanged() {
    let path = fresh_path("migrate");
    // A SQLite file at schema version 0: what any SQLite tool leaves.
    set_schema_version(&path, 0).unwrap();
    assert_eq!(schema_version(&path).unwrap(), 0);
    let store = SqliteEventStore::open(&path).await.unwrap();
    let s = stream("sku-m");
    store.append(&s, 0, &[receipt(&s, 1, 1)]).await.unwrap();
    drop(store);
    closed(&path).await;
    assert_eq!(schema_version(&path).unwrap(), SCHEMA_VERSION);
    // Reopening a current file migrates nothing and keeps everything.
    let store = SqliteEventStore::open(&path).await.unwrap();
    assert_eq!(store.load(&s.aggregate).await.unwrap().len(), 1);
}

type Cell = Service<SqliteEventStore, ManualClock, SequentialIds>;

fn cell(store: SqliteEventStore) -> Arc<Cell> {
    Arc::new(
        Service::new(
            Topology::new(CellId::new("aws").unwrap(), []),
            store,
            ManualClock::new(Timestamp::from_unix_millis(1_000).unwrap(), 1),
            SequentialIds::default(),
        )
        // No cache: every request reads the file.
        .with_cache_capacity(0),
    )
}

async fn send(cell: &Arc<Cell>, request: Request<Body>) -> (StatusCode, Option<String>) {
    let response = twincell_http::router(Arc::clone(cell))
        .oneshot(request)
        .await
        .unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), retry)
}

fn receive(units: u64) -> Request<Body> {
    Request::post("/inventory/sku-1/receipts")
        .header("content-type", "application/json")
        .body(Body::from(format!("{{\"quantity\":{units}}}")))
        .unwrap()
}

fn get_stock() -> Request<Body> {
    Request::get("/inventory/sku-1")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_read_only_file_answers_503_for_writes_keeps_reads_and_loses_nothing() {
    let store = twincell_sqlite::testing::fresh_store("read-only").await;
    let cell = cell(store.clone());
    assert_eq!(send(&cell, receive(5)).await.0, StatusCode::OK);
    store.set_read_only(true).await.unwrap();
    let (status, retry) = send(&cell, receive(1)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.is_some(), "503 with Retry-After");
    assert_eq!(
        send(&cell, get_stock()).await.0,
        StatusCode::OK,
        "reads go on"
    );
    store.set_read_only(false).await.unwrap();
    assert_eq!(send(&cell, receive(2)).await.0, StatusCode::OK);
    let events = store.load(&stream("sku-1").aggregate).await.unwrap();
    assert_eq!(
        events.len(),
        2,
        "the first receipt kept, the refused one never written"
    );
}

#[tokio::test]
async fn a_full_disk_answers_503_loses_nothing_and_serves_again_once_there_is_room() {
    let store = twincell_sqlite::testing::fresh_store("full").await;
    let cell = cell(store.clone());
    assert_eq!(send(&cell, receive(5)).await.0, StatusCode::OK);
    store.set_full(true).await.unwrap();
    // Write until a page is needed that the full file cannot give.
    let mut refused = None;
    for n in 0..500 {
        let (status, retry) = send(&cell, receive(1)).await;
        if status != StatusCode::OK {
            refused = Some((n, status, retry));
            break;
        }
    }
    let (accepted, status, retry) = refused.expect("the full file never refused a write");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry.is_some());
    let events = store.load(&stream("sku-1").aggregate).await;
    // The failed commit dropped the connection; reads work on a new one,
    // and everything acknowledged is there.
    let events = events.unwrap();
    assert_eq!(events.len(), 1 + accepted);
    store.set_full(false).await.unwrap();
    assert_eq!(send(&cell, receive(1)).await.0, StatusCode::OK);
    assert_eq!(
        store.load(&stream("sku-1").aggregate).await.unwrap().len(),
        2 + accepted
    );
}

#[tokio::test]
async fn a_corrupt_file_answers_unavailable_and_serves_again_once_it_is_repaired() {
    let path = fresh_path("corrupt");
    let store = SqliteEventStore::open(&path).await.unwrap();
    let s = stream("sku-1");
    store.append(&s, 0, &[receipt(&s, 1, 3)]).await.unwrap();
    drop(store);
    closed(&path).await;
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[..100].fill(0x5a);
    std::fs::write(&path, &bad).unwrap();
    let store = SqliteEventStore::open(&path)
        .await
        .expect("a corrupt file is not refused at start: the store answers unavailable");
    assert!(matches!(
        store.check().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.append(&s, 1, &[receipt(&s, 2, 1)]).await,
        Err(StoreError::Unavailable(_))
    ));
    let cell = cell(store.clone());
    let (status, retry) = send(&cell, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (status, retry.is_some()),
        (StatusCode::SERVICE_UNAVAILABLE, true)
    );
    // The operator restores the file: the same store serves again.
    std::fs::write(&path, &good).unwrap();
    store.check().await.unwrap();
    assert_eq!(store.load(&s.aggregate).await.unwrap(), [receipt(&s, 1, 3)]);
}

#[tokio::test]
async fn a_file_locked_by_another_process_is_unavailable_until_let_go_and_loses_nothing() {
    let store = twincell_sqlite::testing::fresh_store("locked").await;
    let s = stream("sku-1");
    store.append(&s, 0, &[receipt(&s, 1, 3)]).await.unwrap();
    let lock = twincell_sqlite::WriteLock::take(store.path()).unwrap();
    assert!(matches!(
        store.check().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.append(&s, 1, &[receipt(&s, 2, 1)]).await,
        Err(StoreError::Unavailable(_))
    ));
    drop(lock);
    store.check().await.unwrap();
    assert_eq!(store.load(&s.aggregate).await.unwrap(), [receipt(&s, 1, 3)]);
    store.append(&s, 1, &[receipt(&s, 2, 1)]).await.unwrap();
}
