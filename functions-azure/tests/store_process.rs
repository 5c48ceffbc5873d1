//! The store a real `handler` process runs on: it refuses to start without
//! being told which, keeps everything across a restart on a SQLite file,
//! and refuses a file written by a newer twincell.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use serde_json::{Value, json};

fn fresh_file(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "twincell-handler-{name}-{}-{nanos}.sqlite",
        std::process::id()
    ))
}

#[test]
fn without_a_store_setting_the_handler_does_not_start_and_names_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_handler"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_AUTH", "disabled")
        .env_remove("TWINCELL_STORE")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TWINCELL_STORE is not set"), "{stderr}");
    assert!(stderr.contains("cosmos, sqlite, memory"), "{stderr}");
    assert!(
        output.stdout.is_empty(),
        "it never said it was listening: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// POSTs `body`; a payment goes with the idempotency key `checkout-1`
/// (the other writes without one: each is a new write).
async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("{base}{path}"));
    if path == "/transactions" {
        request = request.header("idempotency-key", "checkout-1");
    }
    let response = request.json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_restarted_handler_reads_back_everything_it_wrote() {
    twincell_replication::publish::install_crypto();
    let path = fresh_file("restart");
    let env = [
        ("TWINCELL_STORE", "sqlite"),
        ("TWINCELL_SQLITE_PATH", path.to_str().unwrap()),
    ];
    let (payment, stock) = {
        let handler = common::start(&env);
        let base = format!("http://{}", handler.address);
        let (status, payment) = post(
            &base,
            "/transactions",
            json!({"account_id": "acct-1", "amount": "19.9", "currency": "USD"}),
        )
        .await;
        assert_eq!(status, 201, "{payment}");
        assert_eq!(
            post(&base, "/inventory/sku-1/receipts", json!({"quantity": 10}))
                .await
                .0,
            200
        );
        let (status, _) = post(
            &base,
            "/inventory/sku-1/reservations",
            json!({"order_id": "order-1", "quantity": 3}),
        )
        .await;
        assert_eq!(status, 201);
        let (_, stock) = get(&base, "/inventory/sku-1").await;
        (payment, stock)
        // The handler process is killed here (SIGKILL), mid-life.
    };
    let handler = common::start(&env);
    let base = format!("http://{}", handler.address);
    let id = payment["transaction_id"].as_str().unwrap();
    assert_eq!(
        get(&base, &format!("/transactions/{id}")).await,
        (200, payment.clone())
    );
    assert_eq!(get(&base, "/inventory/sku-1").await, (200, stock.clone()));
    assert_eq!(
        (stock["on_hand"].as_u64(), stock["reserved"].as_u64()),
        (Some(10), Some(3))
    );
    // The retried payment is the same one: its key was kept too.
    let (status, replay) = post(
        &base,
        "/transactions",
        json!({"account_id": "acct-1", "amount": "19.9", "currency": "USD"}),
    )
    .await;
    assert_eq!((status, replay), (201, payment));
    // And the reservation is still held: the same order again replays.
    let (status, reservation) = post(
        &base,
        "/inventory/sku-1/reservations",
        json!({"order_id": "order-1", "quantity": 3}),
    )
    .await;
    assert_eq!(status, 201, "{reservation}");
    assert_eq!(get(&base, "/inventory/sku-1").await.1["reserved"], 3);
}

#[test]
fn a_file_written_by_a_newer_twincell_stops_the_handler_saying_so() {
    let path = fresh_file("newer");
    twincell_sqlite::testing::set_schema_version(&path, twincell_sqlite::SCHEMA_VERSION + 1)
        .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_handler"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_AUTH", "disabled")
        .env("TWINCELL_STORE", "sqlite")
        .env("TWINCELL_SQLITE_PATH", &path)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("was written by a newer twincell"),
        "{stderr}"
    );
}

/// A peer's `/replication/events`: what it received, in order.
async fn peer() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = std::sync::Arc::clone(&received);
    let app = axum::Router::new().route(
        "/replication/events",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = std::sync::Arc::clone(&store);
            async move {
                let batch: Value = serde_json::from_slice(&body).unwrap();
                store
                    .lock()
                    .unwrap()
                    .extend(batch.as_array().unwrap().iter().cloned());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/replication/events",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_the_handler_publishes_its_own_events_from_the_change_feed() {
    twincell_replication::publish::install_crypto();
    let (target, received) = peer().await;
    let path = fresh_file("publish");
    let key = "peer-replication-key-0123456789abcdef";
    let (_, signing) =
        twincell_replication::signing::Signer::generate_setting("azure-test").unwrap();
    let env = [
        ("TWINCELL_STORE", "sqlite"),
        ("TWINCELL_SQLITE_PATH", path.to_str().unwrap()),
        ("TWINCELL_REPLICATION_TARGET", target.as_str()),
        ("TWINCELL_REPLICATION_TARGET_KIND", "webhook"),
        ("TWINCELL_REPLICATION_TARGET_KEY", key),
        ("TWINCELL_SIGNING_KEY", &signing),
    ];
    let handler = common::start(&env);
    let base = format!("http://{}", handler.address);
    for n in 1..=3 {
        assert_eq!(
            post(&base, "/inventory/sku-pub/receipts", json!({"quantity": n}))
                .await
                .0,
            200
        );
    }
    let mut types = Vec::new();
    for _ in 0..100 {
        types = received
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["subject"].as_str().unwrap().to_owned(),
                    e["streamversion"].as_u64().unwrap(),
                )
            })
            .collect::<Vec<_>>();
        if types.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        types,
        [1, 2, 3].map(|v| ("inventory/sku-pub/azure".to_owned(), v)),
        "the three receipts, in order, as CloudEvents"
    );
}
