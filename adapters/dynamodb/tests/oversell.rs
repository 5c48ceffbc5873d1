//! Concurrent reservations on one SKU through the service on DynamoDB
//! (moto) never oversell: 16 clients race for 20 units, 64 orders, through
//! two services over one table (two instances of the cell's function:
//! within one, commands on a SKU take turns; between them, the conditional
//! write decides).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use twincell_core::testing::Counted;
use twincell_core::{
    AggregateId, DomainEvent, EventStore, InventoryError, InventoryOutcome, OrderId, Quantity,
    RandomIds, ReserveStock, Service, ServiceError, Sku, SystemClock, Topology,
};

const STOCK: u64 = 20;
const CLIENTS: u64 = 16;
const ORDERS_PER_CLIENT: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_one_sku_never_oversell() {
    // Counting the conflicts it reports, so the test can show that clients
    // really raced.
    let store = Counted::new(twincell_dynamodb::testing::fresh_store("oversell").await);
    let instance = || {
        let topology = Topology::parse("aws", "azure").unwrap();
        Arc::new(Service::new(
            topology,
            store.clone(),
            SystemClock,
            RandomIds,
        ))
    };
    let instances = [instance(), instance()];
    let service = Arc::clone(&instances[0]);
    let sku = Sku::new("hot-sku").unwrap();
    service
        .receive(&sku, Quantity::new(STOCK).unwrap())
        .await
        .unwrap();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let service = Arc::clone(&instances[usize::try_from(c).unwrap() % 2]);
            let sku = sku.clone();
            tokio::spawn(async move {
                let (mut reserved, mut refused, mut contended) = (0u64, 0u64, 0u64);
                for n in 0..ORDERS_PER_CLIENT {
                    let cmd = ReserveStock {
                        order_id: OrderId::new(format!("order-{c}-{n}")).unwrap(),
                        quantity: Quantity::new(1).unwrap(),
                    };
                    match service.reserve(&sku, cmd).await {
                        Ok(InventoryOutcome::Reserved {
                            replayed: false, ..
                        }) => reserved += 1,
                        Err(ServiceError::Inventory(InventoryError::InsufficientStock {
                            ..
                        })) => {
                            refused += 1;
                        }
                        Err(ServiceError::Contention) => contended += 1,
                        other => panic!("client {c} order {n}: {other:?}"),
                    }
                }
                (reserved, refused, contended)
            })
        })
        .collect();
    let mut totals = (0, 0, 0);
    for client in clients {
        let (a, b, c) = client.await.unwrap();
        totals = (totals.0 + a, totals.1 + b, totals.2 + c);
    }
    let (reserved, refused, contended) = totals;
    assert_eq!(reserved + refused + contended, CLIENTS * ORDERS_PER_CLIENT);

    // Count from the stored events, independently of the ledger's fold.
    let events = service
        .store()
        .inner()
        .load(&AggregateId::inventory(&sku))
        .await
        .unwrap();
    let (mut received, mut held) = (0u64, 0u64);
    for e in &events {
        match e.event() {
            DomainEvent::StockReceived { quantity } => received += quantity.get(),
            DomainEvent::StockReserved { quantity, .. } => held += quantity.get(),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(received, STOCK);
    assert!(held <= received, "oversold: {held} reserved of {received}");
    assert_eq!(
        held, reserved,
        "every accepted reservation is stored, and only those"
    );
    assert_eq!(
        reserved, STOCK,
        "with more orders than stock, all stock is reserved (refused {refused}, contended {contended})"
    );
    let view = service.inventory(&sku).await.unwrap();
    assert_eq!((view.reserved, view.available), (STOCK, 0));
    let conflicts = service.store().conflicts();
    assert!(
        conflicts > 0,
        "the clients never raced: no version conflict was seen"
    );
}
