//! Load against DynamoDB on moto (or any server at
//! `TWINCELL_MOTO_ENDPOINT`, e.g. DynamoDB Local): the cost of a
//! reservation on a fresh SKU and on one with 10 000 prior events
//! (latency and `ConsumedCapacity`, warm and cold), appends per second,
//! reserve latency with 16 concurrent clients on one hot SKU (in one
//! process, and as 16 instances) and spread over 1 000 SKUs, and a
//! zero-oversell check of every SKU from the stored events.
//!
//! `cargo bench -p twincell-dynamodb --bench moto_load` (with
//! `TWINCELL_MOTO_ENDPOINT` set, or starting `scripts/tools/moto-server`
//! itself; `TWINCELL_BENCH_HISTORY=off` skips the history phase). Numbers are for a Python stand-in on the same two cores, not
//! for DynamoDB: they show the client's overhead and the behaviour under
//! contention, not the service's capacity.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use twincell_core::{
    AggregateId, CellId, Clock, DomainEvent, EventStore, InventoryError, OrderId, Quantity,
    RandomIds, RecordedEvent, ReserveStock, Service, ServiceError, Sku, StreamId, SystemClock,
    Timestamp, Topology,
};
use twincell_dynamodb::DynamoDbEventStore;
use twincell_dynamodb::testing::{MotoServer, store_at, unique_table};
use twincell_http::TokioClock;

const CLIENTS: usize = 16;

/// The `per_mille`-th per-mille of `sorted` (nearest rank).
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    let Some(last) = sorted.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    sorted[(last * per_mille + 500) / 1000]
}

fn ms(d: Duration) -> String {
    let tenths = d.as_micros() / 100;
    format!("{}.{} ms", tenths / 10, tenths % 10)
}

/// Events per second, as an integer.
fn per_second(count: usize, wall: Duration) -> u128 {
    (u128::try_from(count).unwrap_or(u128::MAX) * 1_000_000) / wall.as_micros().max(1)
}

/// 16 clients each append `per_client` single events to a stream of their own.
async fn appends(store: &Arc<DynamoDbEventStore>, per_client: u64) -> (u128, Vec<Duration>) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let stream = StreamId::new(
                    AggregateId::inventory(&Sku::new(format!("append-{c}")).unwrap()),
                    CellId::new("aws").unwrap(),
                );
                let mut latencies = Vec::new();
                for v in 1..=per_client {
                    let e = RecordedEvent::new(
                        stream.clone(),
                        v,
                        Timestamp::from_unix_millis(1).unwrap(),
                        DomainEvent::StockReceived {
                            quantity: Quantity::new(1).unwrap(),
                        },
                    )
                    .unwrap();
                    let t = Instant::now();
                    store.append(&stream, v - 1, &[e]).await.unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = per_second(all.len(), start.elapsed());
    all.sort();
    (rate, all)
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    reserved: u64,
    refused: u64,
    contended: u64,
}

/// 16 clients each make `per_client` one-unit reservations on SKUs picked by
/// `pick(client, n)`.
async fn reservations<C: Clock + 'static>(
    services: &[Arc<Service<DynamoDbEventStore, C, RandomIds>>],
    per_client: usize,
    pick: fn(usize, usize) -> String,
) -> (Tally, Duration) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let service = Arc::clone(&services[c % services.len()]);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                for n in 0..per_client {
                    let sku = Sku::new(pick(c, n)).unwrap();
                    let cmd = ReserveStock {
                        order_id: OrderId::new(format!("o-{c}-{n}")).unwrap(),
                        quantity: Quantity::new(1).unwrap(),
                    };
                    let t = Instant::now();
                    match service.reserve(&sku, cmd).await {
                        Ok(_) => tally.reserved += 1,
                        Err(ServiceError::Inventory(InventoryError::InsufficientStock {
                            ..
                        })) => tally.refused += 1,
                        Err(ServiceError::Contention) => tally.contended += 1,
                        Err(e) => panic!("reserve: {e}"),
                    }
                    tally.latencies.push(t.elapsed());
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await.unwrap();
        total.latencies.extend(t.latencies);
        total.reserved += t.reserved;
        total.refused += t.refused;
        total.contended += t.contended;
    }
    total.latencies.sort();
    (total, start.elapsed())
}

/// Sums received and reserved units per SKU from the stored events (not the
/// ledger's fold) and fails on any SKU whose reservations exceed its stock.
async fn oversell_check(store: &DynamoDbEventStore, skus: &[String]) -> (u64, u64) {
    let (mut all_received, mut all_held) = (0, 0);
    for sku in skus {
        let events = store
            .load(&AggregateId::inventory(&Sku::new(sku.clone()).unwrap()))
            .await
            .unwrap();
        let mut per: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &events {
            match e.event() {
                DomainEvent::StockReceived { quantity } => {
                    *per.entry("received").or_default() += quantity.get();
                }
                DomainEvent::StockReserved { quantity, .. } => {
                    *per.entry("held").or_default() += quantity.get();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let received = per.get("received").copied().unwrap_or(0);
        let held = per.get("held").copied().unwrap_or(0);
        assert!(
            held <= received,
            "{sku}: OVERSOLD, {held} reserved of {received}"
        );
        all_received += received;
        all_held += held;
    }
    (all_received, all_held)
}

fn report(name: &str, tally: &Tally, wall: Duration) {
    println!(
        "| {name} | {} | {} | {} | {}/s | {} / {} / {} |",
        ms(percentile(&tally.latencies, 500)),
        ms(percentile(&tally.latencies, 990)),
        ms(*tally.latencies.last().unwrap_or(&Duration::ZERO)),
        per_second(tally.latencies.len(), wall),
        tally.reserved,
        tally.refused,
        tally.contended
    );
}

/// Appends `prior` events to a new SKU's stream (a receipt, then one-unit
/// reservations), 100 per append.
async fn seed(store: &DynamoDbEventStore, sku: &Sku, prior: u64) {
    let stream = StreamId::new(AggregateId::inventory(sku), CellId::new("aws").unwrap());
    let at = Timestamp::from_unix_millis(1_795_320_745_007).unwrap();
    let mut version = 0;
    while version < prior {
        let batch: Vec<_> = (version + 1..=prior.min(version + 100))
            .map(|v| {
                let event = if v == 1 {
                    DomainEvent::StockReceived {
                        quantity: Quantity::new(1_000_000).unwrap(),
                    }
                } else {
                    DomainEvent::StockReserved {
                        order_id: OrderId::new(format!("seed-{v:010}")).unwrap(),
                        quantity: Quantity::new(1).unwrap(),
                    }
                };
                RecordedEvent::new(stream.clone(), v, at, event).unwrap()
            })
            .collect();
        let next = version + u64::try_from(batch.len()).unwrap();
        store.append(&stream, version, &batch).await.unwrap();
        version = next;
    }
}

/// Sequential reservations on a fresh SKU and on one with `prior` events,
/// in interleaved blocks, through one service (a warm Lambda instance) or,
/// with `cache` 0, a service that keeps nothing (every command as on a
/// cold instance): p50 and the read capacity each command consumed.
async fn history_phase(
    store: &DynamoDbEventStore,
    reads: &twincell_dynamodb::ReadCapacity,
    prior: u64,
    cache: usize,
    label: &str,
) {
    let tag = format!("{prior}-{cache}");
    let skus = [
        Sku::new(format!("fresh-{tag}")).unwrap(),
        Sku::new(format!("long-{tag}")).unwrap(),
    ];
    seed(store, &skus[0], 1).await;
    seed(store, &skus[1], prior).await;
    let topology = Topology::parse("aws", "azure").unwrap();
    let service =
        Service::new(topology, store.clone(), TokioClock, RandomIds).with_cache_capacity(cache);
    let mut samples: [Vec<(Duration, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut order = 0;
    for round in 0..10 {
        let sides = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in sides {
            for _ in 0..20 {
                order += 1;
                let cmd = ReserveStock {
                    order_id: OrderId::new(format!("bench-{order}")).unwrap(),
                    quantity: Quantity::new(1).unwrap(),
                };
                let before = reads.milli_units();
                let t = Instant::now();
                service.reserve(&skus[side], cmd).await.unwrap();
                samples[side].push((t.elapsed(), reads.milli_units() - before));
            }
        }
    }
    let row = |side: usize| {
        // The first command on each SKU loads it (and saves a snapshot):
        // reported apart from the steady state.
        let first = samples[side][0];
        let mut rest: Vec<_> = samples[side][1..].to_vec();
        rest.sort();
        let units: u64 = rest.iter().map(|(_, u)| u).sum();
        let per = units / u64::try_from(rest.len()).unwrap();
        (
            ms(percentile(
                &rest.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
                500,
            )),
            format!("{}.{:03}", per / 1000, per % 1000),
            format!(
                "{} ({}.{:03} RCU)",
                ms(first.0),
                first.1 / 1000,
                first.1 % 1000
            ),
        )
    };
    let (fresh, long) = (row(0), row(1));
    println!(
        "| {label} | {} / {} | {} / {} RCU | {} / {} |",
        fresh.0, long.0, fresh.1, long.1, fresh.2, long.2
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let (_own, endpoint) = match std::env::var(twincell_dynamodb::testing::ENDPOINT_VAR) {
        Ok(e) => (None, e),
        Err(_) => {
            let program = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/tools/moto-server"
            );
            let server = MotoServer::launch_program(program).unwrap();
            let e = server.endpoint();
            (Some(server), e)
        }
    };
    let (store, reads) = store_at(&endpoint, &unique_table("bench")).counting_read_capacity();
    store.create_table().await.unwrap();
    // TWINCELL_BENCH_HISTORY=off: only the concurrent phases (quicker, for
    // A/B runs of the contention path).
    if std::env::var("TWINCELL_BENCH_HISTORY").as_deref() != Ok("off") {
        println!(
            "| history (fresh / 10 000 events) | p50 | read capacity per command | first command |"
        );
        println!("|---|---|---|---|");
        history_phase(&store, &reads, 10_000, 1024, "warm instance").await;
        history_phase(&store, &reads, 10_000, 0, "every command cold").await;
        println!();
    }
    let store = Arc::new(store);

    let (rate, latencies) = appends(&store, 100).await;
    println!("moto at {endpoint}, {CLIENTS} concurrent clients\n");
    println!(
        "appends: {rate}/s (single-event conditional puts, {} total), p50 {}, p99 {}\n",
        latencies.len(),
        ms(percentile(&latencies, 500)),
        ms(percentile(&latencies, 990))
    );

    // TWINCELL_BENCH_BACKOFF=off: retry lost races at once (the core's
    // SystemClock cannot wait), to measure what the backoff buys.
    if std::env::var("TWINCELL_BENCH_BACKOFF").as_deref() == Ok("off") {
        println!("backoff after a lost race: off");
        reserve_phases(&store, SystemClock).await;
    } else {
        println!("backoff after a lost race: on (full jitter, 2 ms doubling to 64 ms)");
        reserve_phases(&store, TokioClock).await;
    }
}

async fn reserve_phases<C: Clock + Clone + 'static>(store: &Arc<DynamoDbEventStore>, clock: C) {
    let topology = Topology::parse("aws", "azure").unwrap();
    let service = Arc::new(Service::new(
        topology,
        (**store).clone(),
        clock.clone(),
        RandomIds,
    ));
    println!("| reserve | p50 | p99 | max | reserves/s | reserved / refused / contended |");
    println!("|---|---|---|---|---|---|");

    // One hot SKU: 160 units for 320 orders.
    let hot = "hot-sku".to_owned();
    service
        .receive(&Sku::new(hot.clone()).unwrap(), Quantity::new(160).unwrap())
        .await
        .unwrap();
    let (tally, wall) = reservations(std::slice::from_ref(&service), 20, |_, _| {
        "hot-sku".to_owned()
    })
    .await;
    report("1 hot SKU, one process", &tally, wall);
    let (received, held) = oversell_check(store, std::slice::from_ref(&hot)).await;
    assert_eq!(
        held, tally.reserved,
        "accepted reservations are the stored ones"
    );
    let mut hot_line = format!("hot SKU, one process: {held} reserved of {received} received");
    // The same on another hot SKU, each client its own service: 16
    // Lambda instances, which only the conditional append arbitrates.
    let instances: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let topology = Topology::parse("aws", "azure").unwrap();
            Arc::new(Service::new(
                topology,
                (**store).clone(),
                clock.clone(),
                RandomIds,
            ))
        })
        .collect();
    instances[0]
        .receive(
            &Sku::new("hot-sku-16").unwrap(),
            Quantity::new(160).unwrap(),
        )
        .await
        .unwrap();
    let (tally, wall) = reservations(&instances, 20, |_, _| "hot-sku-16".to_owned()).await;
    report("1 hot SKU, 16 instances", &tally, wall);
    let (received, held) = oversell_check(store, &["hot-sku-16".to_owned()]).await;
    assert_eq!(
        held, tally.reserved,
        "accepted reservations are the stored ones"
    );
    hot_line.push_str(&format!(
        "; hot SKU, 16 instances: {held} reserved of {received} received"
    ));

    // 1 000 SKUs, 2 units each, 1 600 orders spread over them.
    let skus: Vec<String> = (0..1000).map(|i| format!("sku-{i:04}")).collect();
    let setup: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let service = Arc::clone(&service);
            let skus: Vec<String> = skus.iter().skip(c).step_by(CLIENTS).cloned().collect();
            tokio::spawn(async move {
                for sku in skus {
                    service
                        .receive(&Sku::new(sku).unwrap(), Quantity::new(2).unwrap())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for s in setup {
        s.await.unwrap();
    }
    let (tally, wall) = reservations(std::slice::from_ref(&service), 100, |c, n| {
        // A fixed spread: every client walks the SKUs with its own stride.
        format!("sku-{:04}", (c * 7919 + n * 104_729) % 1000)
    })
    .await;
    report("1 000 SKUs", &tally, wall);
    let (received, held) = oversell_check(store, &skus).await;
    assert_eq!(
        held, tally.reserved,
        "accepted reservations are the stored ones"
    );
    println!(
        "\nzero oversell: {hot_line}; 1 000 SKUs: {held} reserved of {received} received, no SKU over its stock"
    );
}
