//! The embedded store against the in-memory one, through the service (the
//! command path a cell runs), interleaved in one run:
//! - 16 clients reserving on one hot SKU, and on 1 000 SKUs: commands (each
//!   one append) per second, and the p50 and p99 of a command;
//! - the file's size per 10 000 events;
//! - opening a file of 100 000 events and answering the first command.
//!
//! `cargo bench -p twincell-sqlite --bench store` (`ROUNDS`, default 6, of
//! 100 commands per client and store; the stores alternate which goes
//! first). Files go to the system's temporary directory and are removed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use twincell_core::{
    AggregateId, CellId, DomainEvent, EventStore, InMemoryEventStore, InventoryCommand, OrderId,
    Quantity, RandomIds, RecordedEvent, Service, Sku, StreamId, Timestamp, Topology,
};
use twincell_http::TokioClock;
use twincell_sqlite::SqliteEventStore;

const CLIENTS: usize = 16;
const PER_CLIENT: usize = 100;

type Cell<S> = Service<S, TokioClock, RandomIds>;

fn topology() -> Topology {
    Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()])
}

fn cell<S: EventStore>(store: S) -> Arc<Cell<S>> {
    Arc::new(Service::new(topology(), store, TokioClock, RandomIds))
}

fn sku(n: usize) -> Sku {
    Sku::new(format!("bench-{n}")).unwrap()
}

async fn seed<S: EventStore + 'static>(cell: &Cell<S>, skus: usize) {
    for n in 0..skus {
        cell.execute(
            &sku(n),
            &InventoryCommand::Receive(Quantity::new(1_000_000).unwrap(), None),
        )
        .await
        .unwrap();
    }
}

/// One round: `CLIENTS` tasks each making `PER_CLIENT` reservations on
/// `skus` SKUs; the latencies and the round's wall time.
async fn round<S: EventStore + 'static>(
    cell: &Arc<Cell<S>>,
    skus: usize,
    round: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let cell = Arc::clone(cell);
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::with_capacity(PER_CLIENT);
            for i in 0..PER_CLIENT {
                let target = sku((client * PER_CLIENT + i) % skus);
                let order = OrderId::new(format!("r{round}-c{client}-{i}")).unwrap();
                let command = InventoryCommand::Reserve(order, Quantity::new(1).unwrap());
                let start = Instant::now();
                cell.execute(&target, &command).await.unwrap();
                took.push(start.elapsed());
            }
            took
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (all, started.elapsed())
}

#[derive(Default)]
struct Tally {
    samples: Vec<Duration>,
    wall: Duration,
}

impl Tally {
    fn add(&mut self, (samples, wall): (Vec<Duration>, Duration)) {
        self.samples.extend(samples);
        self.wall += wall;
    }

    fn per_second(&self) -> u128 {
        u128::try_from(self.samples.len()).unwrap() * 1_000_000 / self.wall.as_micros().max(1)
    }

    fn percentile(&self, per_mille: usize) -> Duration {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        sorted[(sorted.len().saturating_sub(1) * per_mille + 500) / 1000]
    }
}

/// `a / b` with two decimals, in integers (no floats in this workspace).
fn ratio(a: u128, b: u128) -> String {
    let hundredths = a * 100 / b.max(1);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

fn file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "twincell-bench-{name}-{}.sqlite",
        std::process::id()
    ))
}

fn remove(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Waits for the store's thread to close the file (SQLite folds the WAL
/// into the file and removes it on the last close).
async fn closed(path: &std::path::Path) {
    let wal = format!("{}-wal", path.display());
    for _ in 0..200 {
        if !std::path::Path::new(&wal).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn load(rounds: usize, skus: usize) {
    let path = file(&format!("load-{skus}"));
    remove(&path);
    let memory = cell(InMemoryEventStore::new());
    let sqlite = cell(SqliteEventStore::open(&path).await.unwrap());
    seed(&memory, skus).await;
    seed(&sqlite, skus).await;
    let (mut m, mut q) = (Tally::default(), Tally::default());
    for r in 0..rounds {
        if r % 2 == 0 {
            m.add(round(&memory, skus, r).await);
            q.add(round(&sqlite, skus, r).await);
        } else {
            q.add(round(&sqlite, skus, r).await);
            m.add(round(&memory, skus, r).await);
        }
    }
    let us = |d: Duration| d.as_micros();
    println!(
        "{CLIENTS} clients on {skus} SKU(s), {} commands per store:",
        m.samples.len()
    );
    println!(
        "  memory: {:>6} commands/s  p50 {:>6} µs  p99 {:>6} µs",
        m.per_second(),
        us(m.percentile(500)),
        us(m.percentile(990))
    );
    println!(
        "  sqlite: {:>6} commands/s  p50 {:>6} µs  p99 {:>6} µs",
        q.per_second(),
        us(q.percentile(500)),
        us(q.percentile(990))
    );
    println!(
        "  sqlite / memory: throughput {}x, p50 {}x, p99 {}x",
        ratio(q.per_second(), m.per_second()),
        ratio(us(q.percentile(500)), us(m.percentile(500))),
        ratio(us(q.percentile(990)), us(m.percentile(990)))
    );
    drop(sqlite);
    closed(&path).await;
    remove(&path);
}

/// 10 000 reservations through the service (with their snapshots), then
/// the file's size once closed.
async fn size() {
    let path = file("size");
    remove(&path);
    let store = SqliteEventStore::open(&path).await.unwrap();
    let sqlite = cell(store.clone());
    seed(&sqlite, 100).await;
    for r in 0..(10_000 - 100) / (CLIENTS * PER_CLIENT) + 1 {
        round(&sqlite, 100, r).await;
    }
    let events = store.feed_after(0, usize::MAX).await.unwrap().len();
    drop(sqlite);
    drop(store);
    closed(&path).await;
    let bytes = std::fs::metadata(&path).unwrap().len();
    let per_10k = u128::from(bytes) * 10_000 / u128::try_from(events).unwrap().max(1);
    println!(
        "file size: {bytes} bytes for {events} events (reservations on 100 SKUs, snapshots included): {} KiB per 10 000 events",
        per_10k / 1024
    );
    remove(&path);
}

/// A file of 100 000 events (100 SKUs of 1 000, each with its snapshot),
/// closed; then the time to open it and answer the first command.
async fn open_large() {
    let path = file("open");
    remove(&path);
    let store = SqliteEventStore::open(&path).await.unwrap();
    let origin = CellId::new("aws").unwrap();
    let at = Timestamp::from_unix_millis(1_800_000_000_000).unwrap();
    for n in 0..100 {
        let stream = StreamId::new(AggregateId::inventory(&sku(n)), origin.clone());
        let mut version = 0u64;
        while version < 1_000 {
            let batch: Vec<RecordedEvent> = (version + 1..=version + 100)
                .map(|v| {
                    let event = if v == 1 {
                        DomainEvent::StockReceived {
                            quantity: Quantity::new(1_000_000).unwrap(),
                        }
                    } else {
                        DomainEvent::StockReserved {
                            order_id: OrderId::new(format!("seed-{v}")).unwrap(),
                            quantity: Quantity::new(1).unwrap(),
                        }
                    };
                    RecordedEvent::new(stream.clone(), v, at, event).unwrap()
                })
                .collect();
            store.append(&stream, version, &batch).await.unwrap();
            version += 100;
        }
    }
    // A process that served them has saved each ledger's snapshot.
    let warm = cell(store.clone());
    for n in 0..100 {
        warm.inventory(&sku(n)).await.unwrap();
    }
    let events = store.feed_after(0, usize::MAX).await.unwrap().len();
    drop(warm);
    drop(store);
    closed(&path).await;
    let started = Instant::now();
    let store = SqliteEventStore::open(&path).await.unwrap();
    let opened = started.elapsed();
    let cold = cell(store);
    let order = OrderId::new("first").unwrap();
    cold.execute(
        &sku(42),
        &InventoryCommand::Reserve(order, Quantity::new(1).unwrap()),
    )
    .await
    .unwrap();
    let answered = started.elapsed();
    let next = Instant::now();
    let order = OrderId::new("second").unwrap();
    cold.execute(
        &sku(42),
        &InventoryCommand::Reserve(order, Quantity::new(1).unwrap()),
    )
    .await
    .unwrap();
    let warm_command = next.elapsed();
    println!(
        "a file of {events} events: opened in {} µs, first command answered {} µs after the open began (the next on the same SKU: {} µs)",
        opened.as_micros(),
        answered.as_micros(),
        warm_command.as_micros()
    );
    drop(cold);
    closed(&path).await;
    remove(&path);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    load(rounds, 1).await;
    load(rounds, 1_000).await;
    size().await;
    open_large().await;
}
