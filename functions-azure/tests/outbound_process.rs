//! The `replicate-outbound` function as the Functions host invokes it
//! (`POST /replicate-outbound` with `{"Data": {"documents": …}}`) on the
//! `handler` process: only this cell's events are published, and only as
//! the store holds them; a failed publish fails the invocation so the host
//! retries it; a request that is no invocation gets the 404 of any
//! unknown path.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "peer-replication-key-0123456789abcdef";

struct Handler {
    child: Child,
    base: String,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The key the handler signs with, new for the run.
static SIGNER: std::sync::LazyLock<(twincell_replication::signing::Signer, String)> =
    std::sync::LazyLock::new(|| {
        twincell_replication::signing::Signer::generate_setting("azure-test").unwrap()
    });

fn start(target: &str) -> Handler {
    let mut child = Command::new(env!("CARGO_BIN_EXE_handler"))
        .env("TWINCELL_SIGNING_KEY", &SIGNER.1)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_STORE", "memory")
        // No identity provider here: the API routes are open on purpose.
        .env("TWINCELL_AUTH", "disabled")
        .env("TWINCELL_CELL", "azure")
        .env("TWINCELL_PEERS", "aws")
        .env("TWINCELL_REPLICATION_TARGET", target)
        .env("TWINCELL_REPLICATION_TARGET_KIND", "webhook")
        .env("TWINCELL_REPLICATION_TARGET_KEY", KEY)
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");
    Handler { child, base }
}

#[derive(Default)]
struct Peer {
    batches: Vec<Value>,
    fail: bool,
}

async fn receive(State(peer): State<Arc<Mutex<Peer>>>, body: Bytes) -> StatusCode {
    let mut peer = peer.lock().unwrap();
    if peer.fail {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    peer.batches.push(serde_json::from_slice(&body).unwrap());
    StatusCode::OK
}

async fn peer() -> (String, Arc<Mutex<Peer>>) {
    let state = Arc::new(Mutex::new(Peer::default()));
    let app = axum::Router::new()
        .route("/replication/events", axum::routing::post(receive))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/replication/events",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// A change-feed document of event `version` of `sku` from `origin`, with
/// a receipt of `quantity` (what the document claims, not what is stored).
fn document(origin: &str, sku: &str, version: u64, quantity: u64) -> Value {
    json!({
        "id": format!("{origin}.{version:020}"),
        "pk": format!("inventory#{sku}"),
        "origin": origin,
        "version": version,
        "type": "twincell.inventory.stock-received.v1",
        "recorded_at": 1,
        "event": {
            "stream": {"aggregate": {"type": "inventory", "id": sku}, "origin": origin},
            "version": version,
            "recorded_at": "2026-11-22T04:12:25.007Z",
            "event": {"type": "twincell.inventory.stock-received.v1", "data": {"quantity": quantity}}
        },
        "_rid": "abc", "_ts": 1_795_320_745, "_lsn": 7
    })
}

fn invocation(documents: &[Value]) -> String {
    // The host sends the binding's value as a JSON string of the array.
    json!({
        "Data": {"documents": Value::Array(documents.to_vec()).to_string()},
        "Metadata": {"sys": {"MethodName": "replicate-outbound"}}
    })
    .to_string()
}

fn client() -> reqwest::Client {
    twincell_replication::publish::install_crypto();
    reqwest::Client::new()
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> (u16, Value) {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_publishes_the_stored_own_events_it_names_and_nothing_else() {
    let (target, peer) = peer().await;
    let handler = start(&target);
    let client = client();
    let (status, _) = post(
        &client,
        &format!("{}/inventory/sku-1/receipts", handler.base),
        r#"{"quantity":5}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 200);
    let url = format!("{}/replicate-outbound", handler.base);
    let docs = [
        // Stored, but the document claims 500 units: the stored 5 go out.
        document("azure", "sku-1", 1, 500),
        // Never stored in this cell: not published.
        document("azure", "sku-1", 2, 7),
        // Another cell's event, replicated here: never echoed back.
        document("aws", "sku-1", 1, 3),
        // A snapshot part this cell saved: local, never replicated.
        json!({
            "id": "azure.00", "pk": "snapshot#inventory#sku-1", "kind": "snapshot",
            "cell": "azure", "version": 1, "format": 1, "parts": 1, "part": 0,
            "body": "{}", "_rid": "abd", "_ts": 1_795_320_746, "_lsn": 8
        }),
    ];
    let (status, answer) = post(&client, &url, invocation(&docs)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ReturnValue"], Value::Null);
    assert_eq!(answer["Outputs"], json!({}));
    assert!(
        answer["Logs"][0].as_str().unwrap().contains(
            "published 1 of 4 documents (1 replicated from other cells, 1 snapshots, 1 refused)"
        ),
        "{answer}"
    );
    let batches = peer.lock().unwrap().batches.clone();
    assert_eq!(batches.len(), 1);
    let events = batches[0].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["source"], "urn:twincell:cell:azure");
    assert_eq!(events[0]["subject"], "inventory/sku-1/azure");
    assert_eq!(events[0]["data"], json!({"quantity": 5}));
    // Signed by the cell's key.
    let incoming = twincell_replication::wire::decode_body(Value::Array(events.clone())).unwrap();
    let keys = twincell_replication::signing::OriginKeys::default()
        .with(&twincell_core::CellId::new("azure").unwrap(), &SIGNER.0);
    let (kid, signature) = &incoming[0].signature;
    assert_eq!(
        keys.verify(
            incoming[0].event.as_ref().unwrap(),
            kid.as_deref(),
            signature.as_deref()
        ),
        Ok(())
    );

    // The documents as an array rather than a string are an invocation too.
    let array = json!({"Data": {"documents": [document("azure", "sku-1", 1, 5)]}, "Metadata": {}});
    let (status, _) = post(&client, &url, array.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(peer.lock().unwrap().batches.len(), 2);

    // The target fails: so does the invocation, and the host retries it.
    peer.lock().unwrap().fail = true;
    let (status, answer) = post(&client, &url, invocation(&docs[..1])).await;
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer["Logs"][0]
            .as_str()
            .unwrap()
            .contains("publishing failed")
    );

    // Not an invocation: the 404 of any unknown path.
    for body in ["{}", "not json", r#"{"Data":{"other":[]}}"#] {
        let (status, answer) = post(&client, &url, body.to_owned()).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(answer["type"], "urn:twincell:problem:not-found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_target_the_function_path_is_an_unknown_path() {
    let handler = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_handler"))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
            .env("TWINCELL_STORE", "memory")
            .env("TWINCELL_AUTH", "disabled")
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Handler {
            child,
            base: line.trim().rsplit(' ').next().unwrap().to_owned(),
        }
    };
    let (status, answer) = post(
        &client(),
        &format!("{}/replicate-outbound", handler.base),
        invocation(&[document("azure", "sku-1", 1, 5)]),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(answer["type"], "urn:twincell:problem:not-found");
}
