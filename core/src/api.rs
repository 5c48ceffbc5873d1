//! The inbound port: every use case of one cell, as an inbound adapter
//! (the HTTP router both clouds serve) calls it.
//!
//! [`Service`](crate::Service) implements it over any store, clock and
//! ids; an adapter holds one `Arc<dyn CellApi>` and needs no generics, and
//! its tests can drive it with a stub. The methods answer boxed futures
//! so that the trait is object-safe (an `async fn` in a trait is not);
//! one allocation per call is small beside a store round trip.

use std::future::Future;
use std::pin::Pin;

use crate::error::ServiceError;
use crate::event::{EventMetadata, RecordedEvent, StreamId};
use crate::ids::{IdempotencyKey, Sku, TransactionId};
use crate::inventory::{InventoryCommand, InventoryOutcome, InventoryView};
use crate::ports::{EventPage, Listing};
use crate::replication::{BatchReport, StreamProgress};
use crate::timestamp::Timestamp;
use crate::topology::Topology;
use crate::transaction::Transaction;
use crate::validation::CreateTransaction;

/// What a [`CellApi`] call answers, later.
pub type Reply<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A created (or replayed) transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTransaction {
    /// The transaction.
    pub transaction: Transaction,
    /// `true` when an earlier request with the same key created it.
    pub replayed: bool,
}

/// Every use case of one cell. Each method's errors are those of the
/// [`Service`](crate::Service) method of the same name.
pub trait CellApi: Send + Sync {
    /// The deployment's cells.
    fn topology(&self) -> &Topology;

    /// The time on this cell's clock.
    fn now(&self) -> Timestamp;

    /// Whether the store answers.
    fn health(&self) -> Reply<'_, Result<(), ServiceError>>;

    /// Creates a transaction, or replays it when `key` was seen before
    /// with the same payload in any cell; the events it appends keep
    /// `metadata`.
    fn create_transaction<'a>(
        &'a self,
        cmd: &'a CreateTransaction,
        key: Option<&'a IdempotencyKey>,
        metadata: &'a EventMetadata,
    ) -> Reply<'a, Result<CreatedTransaction, ServiceError>>;

    /// The merged transaction.
    fn transaction(&self, id: TransactionId) -> Reply<'_, Result<Transaction, ServiceError>>;

    /// The SKU's stock as this cell sees it.
    fn inventory<'a>(&'a self, sku: &'a Sku) -> Reply<'a, Result<InventoryView, ServiceError>>;

    /// Runs one inventory command; the events it appends keep `metadata`.
    fn execute<'a>(
        &'a self,
        sku: &'a Sku,
        command: &'a InventoryCommand,
        metadata: &'a EventMetadata,
    ) -> Reply<'a, Result<InventoryOutcome, ServiceError>>;

    /// Stores a batch of events other cells wrote and reconciles what
    /// they touch; never fails as a whole.
    fn apply_replicated_batch<'a>(&'a self, events: &'a [RecordedEvent]) -> Reply<'a, BatchReport>;

    /// How far `stream` (of another cell) has arrived in this cell.
    fn stream_progress<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> Reply<'a, Result<StreamProgress, ServiceError>>;

    /// One page of this cell's own events, for a resync (the listing's
    /// origin is this cell whatever it names).
    fn own_events<'a>(&'a self, listing: &'a Listing)
    -> Reply<'a, Result<EventPage, ServiceError>>;
}
