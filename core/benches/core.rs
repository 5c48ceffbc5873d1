//! Core benchmarks: `cargo bench -p twincell-core`.
//!
//! - validate + decide of a create-transaction (target: under 2 µs);
//! - a reserve on a ledger folded from 1 000 prior events, and on a SKU
//!   whose two cells each remember 2 048 keyed receipts (target: within
//!   1.5× of the first: the search for copies to void runs only when a
//!   ledger's keys changed);
//! - folding 1 000 / 10 000 / 100 000 events (target: linear);
//! - a reservation through the service on a SKU with 1 000 or 20 000 prior
//!   events, with the warm cache and without (target: the warm cost flat
//!   in history): `cargo bench -p twincell-core -- service/`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use twincell_core::event::{AggregateId, FulfilCause, ReleaseCause, StreamId};
use twincell_core::inventory::InventoryCommand;
use twincell_core::transaction::decide_create;
use twincell_core::{
    CellId, CreateTransaction, DomainEvent, IdempotencyKey, Inventory, OrderId, Quantity,
    RecordedEvent, Sku, Timestamp, Topology, TransactionId,
};

fn create_transaction(c: &mut Criterion) {
    let body = json!({"account_id": "acct-42", "amount": "19.99", "currency": "USD"});
    let bytes = serde_json::to_vec(&body).unwrap();
    let key = IdempotencyKey::new("checkout-7f3a-2c1b").unwrap();
    c.bench_function("create_transaction/validate+decide", |b| {
        b.iter(|| {
            let cmd = CreateTransaction::from_json(black_box(&body)).unwrap();
            let id = TransactionId::for_idempotency_key(&cmd.account_id, black_box(&key));
            black_box(decide_create(None, id, &cmd).unwrap())
        });
    });
    c.bench_function("create_transaction/parse+validate+decide", |b| {
        b.iter(|| {
            let body: serde_json::Value = serde_json::from_slice(black_box(&bytes)).unwrap();
            let cmd = CreateTransaction::from_json(&body).unwrap();
            let id = TransactionId::for_idempotency_key(&cmd.account_id, &key);
            black_box(decide_create(None, id, &cmd).unwrap())
        });
    });
}

/// `n` events of one cell's stream: receipts, reservations, and releases or
/// fulfilments of half of them, always valid.
fn history(n: usize, sku: &Sku, cell: &CellId) -> Vec<RecordedEvent> {
    let stream = StreamId::new(AggregateId::inventory(sku), cell.clone());
    let q = Quantity::new(2).unwrap();
    let mut events = Vec::with_capacity(n);
    let mut open = std::collections::VecDeque::new();
    let mut next_order = 0u64;
    while events.len() < n {
        let i = events.len();
        let event = match i % 4 {
            0 => DomainEvent::StockReceived {
                quantity: Quantity::new(5).unwrap(),
            },
            1 | 2 => {
                next_order += 1;
                let order_id = OrderId::new(format!("order-{next_order}")).unwrap();
                open.push_back(order_id.clone());
                DomainEvent::StockReserved {
                    order_id,
                    quantity: q,
                }
            }
            _ => {
                let order_id = open.pop_front().unwrap();
                if next_order.is_multiple_of(2) {
                    DomainEvent::ReservationFulfilled {
                        order_id,
                        quantity: q,
                        cause: FulfilCause::Client,
                    }
                } else {
                    DomainEvent::ReservationReleased {
                        order_id,
                        quantity: q,
                        cause: ReleaseCause::Client,
                    }
                }
            }
        };
        let version = u64::try_from(i).unwrap() + 1;
        let at = Timestamp::from_unix_millis(i64::try_from(i).unwrap()).unwrap();
        events.push(RecordedEvent::new(stream.clone(), version, at, event).unwrap());
    }
    events
}

fn reserve(c: &mut Criterion) {
    let sku = Sku::new("sku-bench").unwrap();
    let aws = CellId::new("aws").unwrap();
    let topology = Topology::new(aws.clone(), [CellId::new("azure").unwrap()]);
    let events = history(1_000, &sku, &aws);
    let folded = Inventory::fold(&sku, &topology, &events).unwrap();
    let cmd = InventoryCommand::Reserve(
        OrderId::new("order-new").unwrap(),
        Quantity::new(1).unwrap(),
    );
    let now = Timestamp::from_unix_millis(10_000).unwrap();
    folded.clone().decide(&cmd, now).unwrap();
    c.bench_function("reserve/decide on ledger of 1000 events", |b| {
        b.iter_batched(
            || folded.clone(),
            // The state comes back out, to be dropped outside the timing.
            |inventory| black_box(inventory.decide_keeping(black_box(&cmd), now)),
            BatchSize::SmallInput,
        );
    });
    c.bench_function("reserve/fold 1000 events + decide", |b| {
        b.iter(|| {
            let inventory = Inventory::fold(&sku, &topology, black_box(&events)).unwrap();
            black_box(inventory.decide(&cmd, now).unwrap())
        });
    });
}

/// `n` keyed receipts of `cell`'s stream after `before` events of it, with
/// keys of their own.
fn keyed_receipts(n: u64, before: u64, sku: &Sku, cell: &CellId) -> Vec<RecordedEvent> {
    let stream = StreamId::new(AggregateId::inventory(sku), cell.clone());
    let mut events = Vec::new();
    for i in 0..n {
        let version = before + 2 * i + 1;
        let at = Timestamp::from_unix_millis(i64::try_from(version).unwrap()).unwrap();
        let receipt = DomainEvent::StockReceived {
            quantity: Quantity::new(1).unwrap(),
        };
        let key = DomainEvent::IdempotencyKeyRecorded {
            key: IdempotencyKey::new(format!("{cell}-pallet-{i}")).unwrap(),
            answer: std::collections::BTreeMap::new(),
        };
        events.push(RecordedEvent::new(stream.clone(), version, at, receipt).unwrap());
        events.push(RecordedEvent::new(stream.clone(), version + 1, at, key).unwrap());
    }
    events
}

fn reserve_keyed(c: &mut Criterion) {
    let sku = Sku::new("sku-bench").unwrap();
    let aws = CellId::new("aws").unwrap();
    let azure = CellId::new("azure").unwrap();
    let topology = Topology::new(aws.clone(), [azure.clone()]);
    let mut events = history(1_000, &sku, &aws);
    events.extend(keyed_receipts(2_048, 1_000, &sku, &aws));
    events.extend(keyed_receipts(2_048, 0, &sku, &azure));
    let folded = Inventory::fold(&sku, &topology, &events).unwrap();
    assert_eq!(folded.own().unwrap().keys().len(), 2_048);
    let now = Timestamp::from_unix_millis(10_000).unwrap();
    // What a service keeps between commands: the state after one.
    let (_, warm) = folded
        .clone()
        .decide_keeping(&InventoryCommand::Reconcile, now);
    let cmd = InventoryCommand::Reserve(
        OrderId::new("order-new").unwrap(),
        Quantity::new(1).unwrap(),
    );
    c.bench_function("reserve/decide with 2048 keys in each cell, kept", |b| {
        b.iter_batched(
            || warm.clone(),
            // The state comes back out, to be dropped outside the timing.
            |inventory| black_box(inventory.decide_keeping(black_box(&cmd), now)),
            BatchSize::SmallInput,
        );
    });
    c.bench_function(
        "reserve/decide with 2048 keys in each cell, just folded",
        |b| {
            b.iter_batched(
                || folded.clone(),
                |inventory| black_box(inventory.decide_keeping(black_box(&cmd), now)),
                BatchSize::SmallInput,
            );
        },
    );
}

fn fold(c: &mut Criterion) {
    let sku = Sku::new("sku-bench").unwrap();
    let aws = CellId::new("aws").unwrap();
    let topology = Topology::new(aws.clone(), [CellId::new("azure").unwrap()]);
    let mut group = c.benchmark_group("fold");
    for n in [1_000usize, 10_000, 100_000] {
        let events = history(n, &sku, &aws);
        group.throughput(Throughput::Elements(u64::try_from(n).unwrap()));
        group.bench_with_input(BenchmarkId::from_parameter(n), &events, |b, events| {
            b.iter(|| black_box(Inventory::fold(&sku, &topology, events).unwrap()));
        });
    }
    group.finish();
}

/// Sequential reservations through the service, on the in-memory store,
/// on a SKU with `n` prior events ([`history`], then a large receipt): with
/// the warm cache a command reads only what is new; without it
/// (`with_cache_capacity(0)`) it folds the whole history. Each sample
/// starts from a fresh store seeded with the history, warms the service
/// with one untimed command, and times the next `iters` reservations.
fn service(c: &mut Criterion) {
    use twincell_core::testing::{SequentialIds, block_on};
    use twincell_core::{EventStore, InMemoryEventStore, ReserveStock, Service, SystemClock};
    let sku = Sku::new("sku-bench").unwrap();
    let aws = CellId::new("aws").unwrap();
    let topology = Topology::new(aws.clone(), [CellId::new("azure").unwrap()]);
    let stream = StreamId::new(AggregateId::inventory(&sku), aws.clone());
    let mut group = c.benchmark_group("service/reserve");
    group.sample_size(20);
    for n in [1_000usize, 20_000] {
        let mut seed = history(n, &sku, &aws);
        let at = Timestamp::from_unix_millis(i64::try_from(n).unwrap()).unwrap();
        let receipt = DomainEvent::StockReceived {
            quantity: Quantity::new(1_000_000).unwrap(),
        };
        seed.push(
            RecordedEvent::new(stream.clone(), u64::try_from(n).unwrap() + 1, at, receipt).unwrap(),
        );
        for (cache, capacity) in [("warm", 1024), ("no-cache", 0)] {
            group.bench_function(BenchmarkId::new(cache, n), |b| {
                b.iter_custom(|iters| {
                    let store = InMemoryEventStore::new();
                    for (chunk, after) in seed.chunks(100).zip((0u64..).step_by(100)) {
                        block_on(store.append(&stream, after, chunk)).unwrap();
                    }
                    let service = Service::new(
                        topology.clone(),
                        store,
                        SystemClock,
                        SequentialIds::default(),
                    )
                    .with_cache_capacity(capacity);
                    let reserve = |i: u64| ReserveStock {
                        order_id: OrderId::new(format!("bench-{i}")).unwrap(),
                        quantity: Quantity::new(1).unwrap(),
                    };
                    block_on(service.reserve(&sku, reserve(0))).unwrap();
                    let started = std::time::Instant::now();
                    for i in 1..=iters {
                        black_box(block_on(service.reserve(&sku, reserve(i))).unwrap());
                    }
                    started.elapsed()
                });
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    create_transaction,
    reserve,
    reserve_keyed,
    fold,
    service
);
criterion_main!(benches);
