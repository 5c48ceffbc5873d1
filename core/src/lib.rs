//! # twincell-core
//!
//! The commerce domain twincell runs in every cell — payment transactions and
//! a per-cell inventory escrow ledger — with no cloud, runtime or HTTP
//! dependency. Adapters (HTTP, DynamoDB, Cosmos DB) wrap it; they never hold
//! a business rule.
//!
//! - [`validation`]: untrusted JSON → typed commands, or every violation.
//! - [`transaction`], [`inventory`]: pure `decide` / fold of the aggregates.
//! - [`event`]: events, streams `(aggregate, id, origin cell)`, event ids.
//! - Value types: [`money`], [`quantity`], [`ids`], [`timestamp`],
//!   [`write_off_reason`].
//! - [`ports`]: the [`EventStore`], [`Clock`] and [`IdGenerator`] traits
//!   and their contracts; [`store_support`]: the rules every store applies
//!   alike; [`system`]: the production clock and ids.
//! - [`CellApi`]: the inbound port, every use case of one cell as an
//!   adapter calls it.
//! - [`Service`]: load → decide → append with bounded retries; commands on
//!   one aggregate take turns inside a service, and the store's conditional
//!   append decides between processes.
//! - [`replication`]: what a batch of other cells' events did, and the
//!   gaps a cell is waiting on.
//! - [`InMemoryEventStore`]: the store for tests and local runs.
//!
//! ## Example
//!
//! A library user creates a transaction with an idempotency key, retries it,
//! and reserves stock:
//!
//! ```
//! use serde_json::json;
//! use twincell_core::{
//!     CellId, CreateTransaction, IdempotencyKey, InMemoryEventStore, InventoryOutcome,
//!     Quantity, RandomIds, ReserveStock, Service, Sku, SystemClock, Topology,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let topology = Topology::new(CellId::new("aws")?, [CellId::new("azure")?]);
//! let service = Service::new(topology, InMemoryEventStore::new(), SystemClock, RandomIds);
//!
//! // Payloads are validated in one place; every violation is reported.
//! let payment = CreateTransaction::from_json(&json!({
//!     "account_id": "acct-42", "amount": "19.9", "currency": "USD"
//! }))?;
//! let key = IdempotencyKey::new("checkout-7f3a")?;
//! let first = service.create_transaction(&payment, Some(&key)).await?;
//! assert_eq!(first.transaction.view().amount, "19.90");
//!
//! // A retry (in this cell or the other one) is the same transaction.
//! let retry = service.create_transaction(&payment, Some(&key)).await?;
//! assert!(retry.replayed);
//! assert_eq!(retry.transaction.id(), first.transaction.id());
//!
//! // Stock: receive 10 units, reserve 3 for an order.
//! let sku = Sku::new("sku-blue-mug")?;
//! service.receive(&sku, Quantity::new(10)?).await?;
//! let order = ReserveStock::from_json(&json!({"order_id": "order-1", "quantity": 3}))?;
//! let InventoryOutcome::Reserved { reservation, replayed } = service.reserve(&sku, order).await? else {
//!     unreachable!("a reservation answers with the reservation");
//! };
//! assert_eq!((reservation.cell.as_str(), replayed), ("aws", false));
//! assert_eq!(service.inventory(&sku).await?.available, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

pub mod api;
pub mod error;
pub mod event;
mod gate;
pub mod ids;
pub mod inventory;
pub mod memory;
pub mod metered;
pub mod money;
pub mod ports;
pub mod quantity;
pub mod replication;
pub mod service;
pub mod store_support;
pub mod system;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod timestamp;
pub mod topology;
pub mod trace;
pub mod transaction;
pub mod validation;
pub mod write_off_reason;

pub use api::{CellApi, CreatedTransaction, Reply};
pub use error::ServiceError;
pub use event::{AggregateId, AggregateType, DomainEvent, EventMetadata, RecordedEvent, StreamId};
pub use ids::{AccountId, CellId, IdempotencyKey, IdentifierError, OrderId, Sku, TransactionId};
pub use inventory::{
    Inventory, InventoryCommand, InventoryError, InventoryOutcome, InventoryView, ReservationView,
};
pub use memory::InMemoryEventStore;
pub use metered::Metered;
pub use money::{Currency, Money};
pub use ports::{
    Clock, EventPage, EventStore, IdGenerator, ListCursor, Listing, MAX_EVENT_BYTES,
    MAX_EVENTS_PER_APPEND, MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_PARTS, ReplicatedApply,
    SNAPSHOT_PART_BYTES, Snapshot, StoreError,
};
pub use quantity::Quantity;
pub use replication::{BatchReport, StreamProgress};
pub use service::Service;
pub use store_support::{
    SnapshotPart, WriteFailure, apply_by_create, check_batch, check_event_size,
    join_snapshot_parts, snapshot_parts,
};
pub use system::{RandomIds, SystemClock, ThreadSleep};
pub use timestamp::Timestamp;
pub use topology::{Topology, TopologyError};
pub use trace::TraceParent;
pub use transaction::{Transaction, TransactionView};
pub use validation::{
    CreateTransaction, InventoryRequest, ReceiveStock, ReserveStock, TransferStock, Violation,
    ViolationCode, Violations, WriteOffStock,
};
pub use write_off_reason::WriteOffReason;

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../docs/library.md")]
struct LibraryDoctests;
