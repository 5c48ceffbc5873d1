//! Two cells, in memory, through a failover: a payment retried in the other
//! cell before replication, a reservation made twice, a transfer — then
//! replication catches up and both cells agree, with nothing doubled.
//!
//! `cargo run -p twincell-core --example failover`
#![allow(clippy::print_stdout)]

use serde_json::json;
use twincell_core::inventory::InventoryOutcome;
use twincell_core::{
    CellId, CreateTransaction, IdempotencyKey, InMemoryEventStore, Quantity, RandomIds,
    ReserveStock, Service, Sku, SystemClock, Topology, TransferStock,
};

type Cell = Service<InMemoryEventStore, SystemClock, RandomIds>;

fn cell(this: &str) -> Result<Cell, Box<dyn std::error::Error>> {
    let topology = Topology::new(
        CellId::new(this)?,
        [CellId::new("aws")?, CellId::new("azure")?],
    );
    Ok(Service::new(
        topology,
        InMemoryEventStore::new(),
        SystemClock,
        RandomIds,
    ))
}

/// Delivers every event `from` wrote to `to` (what Event Grid does).
async fn replicate(from: &Cell, to: &Cell) -> Result<(), Box<dyn std::error::Error>> {
    let events = from.store().events_from(from.topology().this());
    for event in &events {
        to.apply_replicated(event).await?;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (aws, azure) = (cell("aws")?, cell("azure")?);
    let sku = Sku::new("sku-blue-mug")?;

    println!("1. both cells receive stock");
    aws.receive(&sku, Quantity::new(10)?).await?;
    azure.receive(&sku, Quantity::new(4)?).await?;

    println!(
        "2. a payment reaches aws, the client times out and retries in azure before replication"
    );
    let payment = CreateTransaction::from_json(&json!({
        "account_id": "acct-42", "amount": "19.9", "currency": "USD"
    }))?;
    let key = IdempotencyKey::new("checkout-7f3a")?;
    let a = aws.create_transaction(&payment, Some(&key)).await?;
    let b = azure.create_transaction(&payment, Some(&key)).await?;
    println!(
        "   same id in both cells: {} == {}",
        a.transaction.id(),
        b.transaction.id()
    );

    println!("3. the same order is reserved in both cells (retry overtook replication)");
    let order = || ReserveStock::from_json(&json!({"order_id": "order-1", "quantity": 3}));
    aws.reserve(&sku, order()?).await?;
    azure.reserve(&sku, order()?).await?;

    println!("4. aws moves 5 units to azure");
    aws.transfer(
        &sku,
        TransferStock::from_json(&json!({"to_cell": "azure", "quantity": 5}), aws.topology())?,
    )
    .await?;

    println!("5. replication catches up, both ways, until nothing new flows");
    let mut stored = 0;
    loop {
        replicate(&aws, &azure).await?;
        replicate(&azure, &aws).await?;
        let now = aws.store().len() + azure.store().len();
        if now == stored {
            break;
        }
        stored = now;
    }

    let (ta, tb) = (
        aws.transaction(a.transaction.id()).await?,
        azure.transaction(a.transaction.id()).await?,
    );
    println!("\npayment in aws:   {}", serde_json::to_string(&ta.view())?);
    println!("payment in azure: {}", serde_json::to_string(&tb.view())?);
    println!("canonical creation from cell {}; charged once", ta.cell());

    let (va, vb) = (aws.inventory(&sku).await?, azure.inventory(&sku).await?);
    println!("\nstock in aws:   {}", serde_json::to_string(&va)?);
    println!("stock in azure: {}", serde_json::to_string(&vb)?);
    assert_eq!(va, vb, "both cells agree");
    assert_eq!(ta, tb, "both cells agree");
    assert_eq!(va.reserved, 3, "the duplicate reservation healed to one");

    if let InventoryOutcome::Reserved {
        reservation,
        replayed,
    } = aws.reserve(&sku, order()?).await?
    {
        println!(
            "\na third retry replays the surviving reservation in {} (replayed: {replayed})",
            reservation.cell
        );
    }
    Ok(())
}
