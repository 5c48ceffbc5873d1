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

use std::process::Command;
use std::time::Duration;

use twincell_local::matrix::{AZURE_KEY, Process, spawn};
use twincell_replication::signing::Signer;

mod ingest;

use ingest::{BATCH, EVENTS, bin_dir, deliveries, throughput};

const ROUNDS: usize = 5;

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
        let plain = deliveries("aws", &format!("off-{round}"), None);
        let sealed = deliveries("aws", &format!("on-{round}"), Some(&signer));
        if round % 2 == 0 {
            off.push(throughput(&client, &unsigned.url, AZURE_KEY, plain).await);
            on.push(throughput(&client, &signed.url, AZURE_KEY, sealed).await);
        } else {
            on.push(throughput(&client, &signed.url, AZURE_KEY, sealed).await);
            off.push(throughput(&client, &unsigned.url, AZURE_KEY, plain).await);
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
