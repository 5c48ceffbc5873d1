//! What verifying origin signatures costs a receiving cell: events per
//! second through `POST /replication/events` of two release `handler`
//! processes on the in-memory store, one without origin keys fed unsigned
//! events, one with `TWINCELL_ORIGIN_KEYS` fed events signed by that key,
//! in batches of 100 as Event Grid delivers them at most, rounds
//! interleaved.
//!
//! ```sh
//! cargo build --release -p twincell-azure --bin handler
//! cargo bench -p twincell-local --bench signed_ingest
//! ```
//!
//! Binaries come from `TWINCELL_BENCH_BIN_DIR` (default `target/release`).
//! Bounded: 5 rounds of 2 000 events per handler.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use twincell_core::event::{AggregateId, DomainEvent, RecordedEvent, StreamId};
use twincell_core::{CellId, Quantity, Sku, Timestamp};
use twincell_local::matrix::{AZURE_KEY, Process, spawn};
use twincell_replication::signing::Signer;
use twincell_replication::wire;

const EVENTS: u64 = 2_000;
const BATCH: usize = 100;
const ROUNDS: usize = 5;

fn bin_dir() -> PathBuf {
    std::env::var_os("TWINCELL_BENCH_BIN_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release")),
        PathBuf::from,
    )
}

/// `EVENTS` receipts of aws over 20 SKUs named after `prefix`, in batches.
fn deliveries(prefix: &str, signer: Option<&Signer>) -> Vec<Vec<u8>> {
    let skus = 20u64;
    let mut events = Vec::new();
    for s in 0..skus {
        let stream = StreamId::new(
            AggregateId::inventory(&Sku::new(format!("{prefix}-{s}")).unwrap()),
            CellId::new("aws").unwrap(),
        );
        for v in 1..=EVENTS / skus {
            events.push(
                RecordedEvent::new(
                    stream.clone(),
                    v,
                    Timestamp::from_unix_millis(1_795_320_745_007).unwrap(),
                    DomainEvent::StockReceived {
                        quantity: Quantity::new(1).unwrap(),
                    },
                )
                .unwrap(),
            );
        }
    }
    wire::batches(&events, None, signer, wire::MAX_BATCH_BYTES, BATCH)
        .unwrap()
        .into_iter()
        .map(|b| b.body)
        .collect()
}

async fn throughput(client: &reqwest::Client, url: &str, batches: Vec<Vec<u8>>) -> u64 {
    let start = Instant::now();
    for body in batches {
        let r = client
            .post(format!("{url}/replication/events"))
            .header("content-type", wire::BATCH_CONTENT_TYPE)
            .header("x-twincell-replication-key", AZURE_KEY)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, 200, "{}", r.text().await.unwrap());
    }
    let micros = start.elapsed().as_micros().max(1);
    u64::try_from(u128::from(EVENTS) * 1_000_000 / micros).unwrap_or(u64::MAX)
}

fn handler(origin_keys: Option<&str>) -> Process {
    let mut c = Command::new(bin_dir().join("handler"));
    c.env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_AUTH", "disabled")
        .env("TWINCELL_CELL", "azure")
        .env("TWINCELL_PEERS", "aws")
        .env("TWINCELL_STORE", "memory")
        .env("TWINCELL_REPLICATION_KEY", AZURE_KEY)
        .env("RUST_LOG", "warn");
    c.env("TWINCELL_ORIGIN_KEYS", origin_keys.unwrap_or("none"));
    spawn(c, "handler").unwrap()
}

#[tokio::main]
async fn main() {
    twincell_local::install_crypto();
    let (signer, _) = Signer::generate("aws-bench").unwrap();
    let keys = format!("aws/{}={}", signer.key_id(), signer.public_key_base64());
    let unsigned = handler(None);
    let signed = handler(Some(&keys));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Batches are built (and signed) before the clock starts: the
        // sender's cost is not the receiver's.
        let plain = deliveries(&format!("off-{round}"), None);
        let sealed = deliveries(&format!("on-{round}"), Some(&signer));
        if round % 2 == 0 {
            off.push(throughput(&client, &unsigned.url, plain).await);
            on.push(throughput(&client, &signed.url, sealed).await);
        } else {
            on.push(throughput(&client, &signed.url, sealed).await);
            off.push(throughput(&client, &unsigned.url, plain).await);
        }
    }
    println!(
        "\nevents per second through POST /replication/events of the Azure handler (memory), batches of {BATCH}, {EVENTS} events per round, {ROUNDS} rounds interleaved\n"
    );
    println!("| deliveries | rounds (events/s) | median |");
    println!("|---|---|---|");
    for (name, mut r) in [
        ("unsigned, no origin keys", off),
        ("signed, verified against TWINCELL_ORIGIN_KEYS", on),
    ] {
        let shown = r.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        r.sort_unstable();
        println!("| {name} | {shown} | {} |", r[r.len() / 2]);
    }
}
