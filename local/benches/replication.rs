//! Replication, measured on this machine through the local stand-ins:
//!
//! 1. lag from commit in one cell to visible in the other, both ways, with
//!    the clouds' own polling rates (the stream read 4 times a second as
//!    Lambda does; the change feed's `feedPollDelay` of 1 s as
//!    `functions/replicate-outbound/function.json` sets it; Event Grid
//!    without batching, as by default) and no injected faults;
//! 2. events per second through `POST /replication/events` on each store
//!    (memory and the Cosmos DB emulator behind the Azure handler, moto
//!    behind the AWS `api`), in batches of 100 as Event Grid delivers
//!    them at most.
//!
//! ```sh
//! cargo build --release -p twincell-aws -p twincell-azure --bins \
//!     --features twincell-aws/contract-mode,twincell-azure/contract-mode
//! TWINCELL_MOTO_ENDPOINT=http://127.0.0.1:5000 cargo bench -p twincell-local --bench replication
//! ```
//!
//! Binaries come from `TWINCELL_BENCH_BIN_DIR` (default `target/release`).
//! Bounded: 60 lag samples per direction, 3 rounds of 2 000 events per
//! store.
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

use serde_json::Value;
use twincell_local::matrix::{AWS_KEY, AZURE_KEY, Matrix, Options, Process, spawn};

mod ingest;

use ingest::{BATCH, EVENTS, bin_dir, deliveries, throughput};

const LAG_SAMPLES: usize = 60;
const ROUNDS: usize = 3;

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Commits a receipt in `from` and waits until `to` shows it.
async fn lag(client: &reqwest::Client, from: &str, to: &str, origin: &str, sku: &str) -> Duration {
    let r = client
        .post(format!("{from}/inventory/{sku}/receipts"))
        .header("content-type", "application/json")
        .body(r#"{"quantity":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let committed = Instant::now();
    loop {
        let view: Value = client
            .get(format!("{to}/inventory/{sku}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view["cells"][origin]["on_hand"] == 1 {
            return committed.elapsed();
        }
        assert!(
            committed.elapsed() < Duration::from_secs(60),
            "{sku} never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn handler(cosmos: bool) -> Process {
    let mut c = Command::new(bin_dir().join("handler"));
    c.env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_AUTH", "disabled")
        .env("TWINCELL_CELL", "azure")
        .env("TWINCELL_PEERS", "aws")
        .env("TWINCELL_REPLICATION_KEY", AZURE_KEY)
        // Unsigned deliveries: the cost of the store and the router
        // (benches/signed_ingest.rs measures what checking signatures adds).
        .env("TWINCELL_ORIGIN_KEYS", "none")
        .env("RUST_LOG", "warn");
    if cosmos {
        c.env("TWINCELL_STORE", "cosmos")
            .env("TWINCELL_COSMOS_EMULATOR", "true");
    } else {
        c.env("TWINCELL_STORE", "memory");
    }
    spawn(c, "handler").unwrap()
}

#[tokio::main]
async fn main() {
    twincell_local::install_crypto();
    let moto = twincell_dynamodb::testing::shared_endpoint().unwrap_or_else(|e| panic!("{e}"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let local_bins = (
        PathBuf::from(env!("CARGO_BIN_EXE_twincell-eventgrid")),
        PathBuf::from(env!("CARGO_BIN_EXE_twincell-aws-local")),
    );

    // 1. Lag, both ways, interleaved.
    let run = twincell_dynamodb::testing::unique_table("bench-lag");
    let mut options = Options::new(&moto, &bin_dir(), local_bins.clone(), &run);
    options.max_events_per_batch = 1;
    let matrix = Matrix::start(&options)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let (mut to_azure, mut to_aws) = (Vec::new(), Vec::new());
    for i in 0..LAG_SAMPLES {
        let a = &format!("lag-a-{i}");
        to_azure.push(lag(&client, &matrix.aws.url, &matrix.azure.url, "aws", a).await);
        let b = &format!("lag-b-{i}");
        to_aws.push(lag(&client, &matrix.azure.url, &matrix.aws.url, "azure", b).await);
    }
    drop(matrix);
    println!(
        "\nreplication lag, commit → visible in the other cell ({LAG_SAMPLES} samples each, interleaved)\n"
    );
    println!("| direction | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, mut samples) in [
        ("AWS → Azure (stream polled every 250 ms)", to_azure),
        ("Azure → AWS (change feed polled every 1 s)", to_aws),
    ] {
        samples.sort_unstable();
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(percentile(&samples, 50)),
            ms(percentile(&samples, 90)),
            ms(percentile(&samples, 99)),
            ms(*samples.last().unwrap())
        );
    }

    // 2. Events per second through /replication/events, per store.
    let memory = handler(false);
    let cosmos = handler(true);
    let table = twincell_dynamodb::testing::unique_table("bench-ingest");
    let mut aws = Command::new(&local_bins.1);
    aws.args(["--api", &bin_dir().join("api").display().to_string()])
        .env("TWINCELL_AUTH", "disabled")
        .env("TWINCELL_CELL", "aws")
        .env("TWINCELL_PEERS", "azure")
        .env("TWINCELL_STORE", "dynamodb")
        .env("TWINCELL_DYNAMODB_TABLE", &table)
        .env("TWINCELL_DYNAMODB_CREATE_TABLE", "true")
        .env("AWS_ENDPOINT_URL", &moto)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("TWINCELL_REPLICATION_KEY", AWS_KEY)
        .env("TWINCELL_ORIGIN_KEYS", "none")
        .env("RUST_LOG", "warn");
    let dynamodb = spawn(aws, "twincell-aws-local").unwrap();
    let targets = [
        ("Azure handler, in memory", &memory.url, AZURE_KEY, "aws"),
        (
            "Azure handler, Cosmos DB emulator",
            &cosmos.url,
            AZURE_KEY,
            "aws",
        ),
        (
            "AWS api behind the gateway stand-in, DynamoDB on moto",
            &dynamodb.url,
            AWS_KEY,
            "azure",
        ),
    ];
    let mut rates: Vec<Vec<u64>> = vec![Vec::new(); targets.len()];
    for round in 0..ROUNDS {
        for (i, (_, url, key, origin)) in targets.iter().enumerate() {
            let batches = deliveries(origin, &format!("tp-{round}"), None);
            rates[i].push(throughput(&client, url, key, batches).await);
        }
    }
    println!(
        "\nevents per second through POST /replication/events, batches of {BATCH}, {EVENTS} events per round, {ROUNDS} rounds interleaved\n"
    );
    println!("| cell and store | rounds (events/s) | median |");
    println!("|---|---|---|");
    for ((name, ..), mut r) in targets.iter().zip(rates) {
        let shown = r.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        r.sort_unstable();
        println!("| {name} | {shown} | {} |", r[r.len() / 2]);
    }
}
