//! What a reservation costs through the Azure handler (a real process,
//! real HTTP over one kept-alive connection, the in-memory store) after
//! 1 000 and after 20 000 prior events of its SKU, measured interleaved in
//! one run, in three configurations of one handler each: the default
//! (kept state and snapshots), snapshots only (`TWINCELL_CACHE_SKUS=0`:
//! every request starts from the SKU's snapshot, as a fresh process
//! would), and neither (every request folds the whole history, as before
//! either existed).
//!
//! Then the first two again on the embedded store (`TWINCELL_STORE=sqlite`,
//! a file of their own).
//!
//! `cargo bench -p twincell-azure --bench history` (`ROUNDS`, default 10,
//! of 100 requests per SKU).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

const PER_BLOCK: usize = 100;

fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    sorted[(sorted.len().saturating_sub(1) * per_mille + 500) / 1000]
}

struct Sku {
    name: &'static str,
    prior: usize,
    next_order: usize,
    samples: Vec<Duration>,
}

async fn reserve(client: &reqwest::Client, base: &str, sku: &mut Sku) -> Duration {
    let order = sku.next_order;
    sku.next_order += 1;
    let start = Instant::now();
    let response = client
        .post(format!("{base}/inventory/{}/reservations", sku.name))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"order_id":"order-{order:010}","quantity":1}}"#
        ))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.bytes().await.unwrap();
    let took = start.elapsed();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    took
}

async fn seed(client: &reqwest::Client, base: &str, sku: &mut Sku) {
    let response = client
        .post(format!("{base}/inventory/{}/receipts", sku.name))
        .header("content-type", "application/json")
        .body(r#"{"quantity":1000000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for _ in 1..sku.prior {
        reserve(client, base, sku).await;
    }
}

fn summary(samples: &[Duration]) -> (Duration, Duration, Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let total: Duration = sorted.iter().sum();
    let mean = total / u32::try_from(sorted.len().max(1)).unwrap();
    (
        percentile(&sorted, 500),
        percentile(&sorted, 900),
        percentile(&sorted, 990),
        mean,
    )
}

/// `a / b` with two decimals, in integers (no floats in this workspace).
fn ratio(a: Duration, b: Duration) -> String {
    let hundredths = a.as_micros() * 100 / b.as_micros().max(1);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

fn us(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

async fn run(label: &str, env: &[(&str, &str)], rounds: usize) {
    let handler = common::start(env);
    let base = format!("http://{}", handler.address);
    twincell_replication::publish::install_crypto();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let seeding = Instant::now();
    let mut skus = [
        Sku {
            name: "history-1k",
            prior: 1_000,
            next_order: 0,
            samples: Vec::new(),
        },
        Sku {
            name: "history-20k",
            prior: 20_000,
            next_order: 0,
            samples: Vec::new(),
        },
    ];
    for sku in &mut skus {
        seed(&client, &base, sku).await;
    }
    let seeded = seeding.elapsed();
    for round in 0..rounds {
        // A B, then B A: neither side always runs first.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            for _ in 0..PER_BLOCK {
                let took = reserve(&client, &base, &mut skus[i]).await;
                skus[i].samples.push(took);
            }
        }
    }
    let [small, large] = &skus;
    let (p50a, p90a, p99a, meana) = summary(&small.samples);
    let (p50b, p90b, p99b, meanb) = summary(&large.samples);
    println!(
        "{label} (seeded in {:.1} s; {} requests per SKU)",
        seeded.as_secs_f64(),
        small.samples.len()
    );
    println!(
        "  after  1 000 events: p50 {} p90 {} p99 {} mean {}",
        us(p50a),
        us(p90a),
        us(p99a),
        us(meana)
    );
    println!(
        "  after 20 000 events: p50 {} p90 {} p99 {} mean {}",
        us(p50b),
        us(p90b),
        us(p99b),
        us(meanb)
    );
    println!(
        "  20 000 / 1 000: p50 {}x, mean {}x",
        ratio(p50b, p50a),
        ratio(meanb, meana)
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    run("default: kept state and snapshots", &[], rounds).await;
    run(
        "snapshots only (TWINCELL_CACHE_SKUS=0)",
        &[("TWINCELL_CACHE_SKUS", "0")],
        rounds,
    )
    .await;
    run(
        "neither (TWINCELL_CACHE_SKUS=0 TWINCELL_SNAPSHOT_EVERY=0)",
        &[
            ("TWINCELL_CACHE_SKUS", "0"),
            ("TWINCELL_SNAPSHOT_EVERY", "0"),
        ],
        rounds,
    )
    .await;
    // The same on the embedded store, each run on a file of its own.
    for (label, extra) in [
        ("SQLite: kept state and snapshots", None),
        (
            "SQLite, snapshots only (TWINCELL_CACHE_SKUS=0)",
            Some(("TWINCELL_CACHE_SKUS", "0")),
        ),
    ] {
        let file = std::env::temp_dir().join(format!(
            "twincell-history-{}-{}.sqlite",
            std::process::id(),
            label.len()
        ));
        let path = file.display().to_string();
        let mut env = vec![
            ("TWINCELL_STORE", "sqlite"),
            ("TWINCELL_SQLITE_PATH", path.as_str()),
        ];
        env.extend(extra);
        run(label, &env, rounds).await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}
