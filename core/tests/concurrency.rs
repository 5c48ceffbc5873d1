//! Many concurrent requests on one SKU through one store: optimistic appends
//! with retries must never oversell, and every request must end in either a
//! reservation or a clean insufficient-stock refusal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use twincell_core::inventory::{InventoryError, InventoryOutcome};
use twincell_core::{
    AggregateId, CellId, EventStore, InMemoryEventStore, OrderId, Quantity, RandomIds,
    RecordedEvent, ReplicatedApply, ReserveStock, Service, ServiceError, Sku, StoreError, StreamId,
    SystemClock, Topology,
};

const TASKS: usize = 32;

/// The real in-memory store, counting the version conflicts it reports, so
/// the test proves the retry path was exercised and not merely present.
#[derive(Default)]
struct CountingStore {
    inner: InMemoryEventStore,
    conflicts: AtomicU64,
}

impl EventStore for CountingStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: u64,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        let result = self.inner.append(stream, expected, events).await;
        if matches!(result, Err(StoreError::Conflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
    async fn load(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
        // Yield between load and append, as a network store does, so that
        // tasks interleave on one worker too.
        let events = self.inner.load(aggregate).await;
        tokio::task::yield_now().await;
        events
    }
    async fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &std::collections::BTreeMap<twincell_core::CellId, u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.load_after(aggregate, after).await
    }
    async fn apply_replicated(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        self.inner.apply_replicated(event).await
    }
    async fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        self.inner.read(stream, version).await
    }
    async fn list_origin(
        &self,
        listing: &twincell_core::Listing,
    ) -> Result<twincell_core::EventPage, StoreError> {
        self.inner.list_origin(listing).await
    }
    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_tasks_reserving_one_sku_never_oversell() {
    let sku = Sku::new("hot-sku").unwrap();
    let mut conflicts = 0;
    for round in 0..50u64 {
        let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
        let service = Arc::new(Service::new(
            topology,
            CountingStore::default(),
            SystemClock,
            RandomIds,
        ));
        // Stock for fewer than all of them: 20 to 27 units, 1 unit each.
        let stock = 20 + round % 8;
        service
            .receive(&sku, Quantity::new(stock).unwrap())
            .await
            .unwrap();

        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let (service, barrier, sku) = (service.clone(), barrier.clone(), sku.clone());
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
        let view = service.inventory(&sku).await.unwrap();
        assert_eq!(
            (view.on_hand, view.reserved, view.available),
            (stock, stock, 0)
        );
        conflicts += service.store().conflicts.load(Ordering::Relaxed);
    }
    assert!(
        conflicts > 0,
        "no append ever conflicted: the race was not exercised"
    );
}
