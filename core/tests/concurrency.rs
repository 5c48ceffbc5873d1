//! Many concurrent requests on one SKU through one store: optimistic appends
//! with retries must never oversell, and every request must end in either a
//! reservation or a clean insufficient-stock refusal. Within one service
//! (one process) they take turns and never race; between two services over
//! one store (two processes of a cell) the conditional append decides.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use twincell_core::inventory::{InventoryError, InventoryOutcome};
use twincell_core::testing::Counted;
use twincell_core::{
    CellId, InMemoryEventStore, OrderId, Quantity, RandomIds, ReserveStock, Service, ServiceError,
    Sku, SystemClock, Topology,
};

const TASKS: usize = 32;

/// The real in-memory store, counting the version conflicts it reports (so
/// the test proves the retry path was exercised and not merely present),
/// yielding in every load so tasks interleave on one worker too.
type CountingStore = Counted<InMemoryEventStore>;

/// `TASKS` tasks reserving one unit each of `sku` at once, spread over
/// `services` (sharing one store); checks every answer and the stock, and
/// gives the conflicts the store reported.
async fn reserve_at_once(
    services: &[Arc<Service<CountingStore, SystemClock, RandomIds>>],
    sku: &Sku,
    stock: u64,
    round: u64,
) -> u64 {
    services[0]
        .receive(sku, Quantity::new(stock).unwrap())
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let service = services[i % services.len()].clone();
            let (barrier, sku) = (barrier.clone(), sku.clone());
            tokio::spawn(async move {
                let order = ReserveStock {
                    order_id: OrderId::new(format!("order-{i}")).unwrap(),
                    quantity: Quantity::new(1).unwrap(),
                };
                barrier.wait().await;
                service.reserve(&sku, order).await
            })
        })
        .collect();
    let (mut reserved, mut refused) = (0u64, 0u64);
    for task in tasks {
        match task.await.unwrap() {
            Ok(InventoryOutcome::Reserved {
                replayed: false, ..
            }) => reserved += 1,
            Err(ServiceError::Inventory(InventoryError::InsufficientStock {
                requested: 1,
                available: 0,
            })) => {
                refused += 1;
            }
            other => panic!("round {round}: unexpected answer {other:?}"),
        }
    }
    assert_eq!(
        reserved, stock,
        "round {round}: every unit is reserved once"
    );
    assert_eq!(refused, u64::try_from(TASKS).unwrap() - stock);
    let view = services[0].inventory(sku).await.unwrap();
    assert_eq!(
        (view.on_hand, view.reserved, view.available),
        (stock, stock, 0)
    );
    // What each process kept through its lost races (its decisions taken
    // back out, the winners' events read in) is what a process that keeps
    // nothing folds from the store.
    let folded = fresh(services[0].store()).inventory(sku).await.unwrap();
    for (i, service) in services.iter().enumerate() {
        assert_eq!(
            service.inventory(sku).await.unwrap(),
            folded,
            "round {round}: process {i}"
        );
    }
    services[0].store().conflicts()
}

fn service(store: &CountingStore) -> Arc<Service<CountingStore, SystemClock, RandomIds>> {
    let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
    Arc::new(Service::new(
        topology,
        store.clone(),
        SystemClock,
        RandomIds,
    ))
}

/// A process of the cell that keeps nothing between commands.
fn fresh(store: &CountingStore) -> Service<CountingStore, SystemClock, RandomIds> {
    let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
    Service::new(topology, store.clone(), SystemClock, RandomIds).with_cache_capacity(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_tasks_in_one_process_take_turns_and_never_oversell() {
    let sku = Sku::new("hot-sku").unwrap();
    for round in 0..20u64 {
        let store = Counted::new(InMemoryEventStore::new()).yielding();
        // Stock for fewer than all of them: 20 to 27 units, 1 unit each.
        let conflicts = reserve_at_once(&[service(&store)], &sku, 20 + round % 8, round).await;
        assert_eq!(conflicts, 0, "round {round}: commands of one process raced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_tasks_in_two_processes_race_and_never_oversell() {
    let sku = Sku::new("hot-sku").unwrap();
    let mut conflicts = 0;
    for round in 0..50u64 {
        let store = Counted::new(InMemoryEventStore::new()).yielding();
        let services = [service(&store), service(&store)];
        conflicts += reserve_at_once(&services, &sku, 20 + round % 8, round).await;
    }
    assert!(
        conflicts > 0,
        "no append ever conflicted: the race was not exercised"
    );
}
