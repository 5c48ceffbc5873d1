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

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("idempotency-key", "checkout-1")
        .json(&body)
        .send()
        .await
        .unwrap();
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
