//! The application service of one cell: the public API of the core's use
//! cases over any [`EventStore`], [`Clock`] and [`IdGenerator`].
//!
//! By concern:
//! - `command_loop`: load → decide → append with bounded retries, the
//!   one loop every command runs through;
//! - `payment`: the transaction's fold and create-or-replay decision;
//! - `stock`: the inventory's fold, its decision, and the cache of folded
//!   SKUs with their snapshots;
//! - `replicated`: applying a batch of other cells' events, and its
//!   [`BatchReport`];
//! - [`ServiceError`] (in [`crate::error`]): why a
//!   call failed.
//!
//! Reads are served outside the command loop: they fold what the store
//! holds and decide nothing.

mod command_loop;
mod payment;
mod replicated;
mod stock;
#[cfg(test)]
mod tests;

use crate::api::{CellApi, CreatedTransaction, Reply};
use crate::event::{AggregateId, EventMetadata, RecordedEvent, StreamId};
use crate::ids::{IdempotencyKey, OrderId, Sku, TransactionId};
use crate::inventory::{InventoryCommand, InventoryOutcome, InventoryView};
use crate::ports::{Clock, EventPage, EventStore, IdGenerator, Listing};
use crate::quantity::Quantity;
use crate::replication::{BatchReport, StreamProgress};
use crate::timestamp::Timestamp;
use crate::topology::Topology;
use crate::transaction::{self, Transaction};
use crate::validation::{
    CreateTransaction, InventoryRequest, ReserveStock, TransferStock, WriteOffStock,
};

pub use crate::error::ServiceError;
pub use command_loop::{
    BACKOFF_BASE, BACKOFF_CAP, CONTENTION_RETRIES_METRIC, DEFAULT_MAX_ATTEMPTS,
    MAX_RECONCILE_CHUNKS, backoff,
};
pub use stock::{DEFAULT_CACHE_CAPACITY, DEFAULT_SNAPSHOT_EVERY};

use payment::{CreateTransactionDecider, TransactionFold};
use stock::{InventoryCache, InventoryDecider, InventoryFold};

/// The service of one cell.
#[derive(Debug)]
pub struct Service<S, C, I> {
    topology: Topology,
    store: S,
    clock: C,
    ids: I,
    max_attempts: u32,
    /// One command at a time per aggregate in this process.
    gate: crate::gate::Gate<AggregateId>,
    /// Folded stock kept between commands.
    inventories: InventoryCache,
    /// Every how many events a ledger's snapshot is saved (0: never).
    snapshot_every: u64,
}

impl<S: EventStore, C: Clock, I: IdGenerator> Service<S, C, I> {
    /// A service for `topology.this()`.
    pub fn new(topology: Topology, store: S, clock: C, ids: I) -> Self {
        Self {
            topology,
            store,
            clock,
            ids,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            gate: crate::gate::Gate::default(),
            inventories: InventoryCache::new(DEFAULT_CACHE_CAPACITY),
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }

    /// Saves a snapshot of a SKU's ledger (one per cell) beside the events
    /// whenever `events` more have been folded into it since the last one
    /// (default [`DEFAULT_SNAPSHOT_EVERY`]; 0 saves none). A command on a
    /// SKU this process does not keep starts from the snapshots and reads
    /// only the events after them. Snapshots change no answer: a missing,
    /// unreadable or older-format one is ignored, and a save that fails
    /// costs only speed.
    #[must_use]
    pub fn with_snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events;
        self
    }

    /// Keeps the folded stock of at most `skus` SKUs between commands
    /// (default [`DEFAULT_CACHE_CAPACITY`]; 0 keeps none, and every command
    /// folds the SKU's whole history).
    #[must_use]
    pub fn with_cache_capacity(mut self, skus: usize) -> Self {
        self.inventories = InventoryCache::new(skus);
        self
    }

    /// Sets the number of attempts per command (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The deployment's cells.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The time on this cell's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Whether the store answers.
    ///
    /// # Errors
    /// [`ServiceError::Unavailable`] when it does not.
    pub async fn health(&self) -> Result<(), ServiceError> {
        Ok(self.store.check().await?)
    }

    /// Creates a transaction, or replays it when `key` was seen before with
    /// the same payload in any cell.
    ///
    /// # Errors
    /// [`ServiceError::IdempotencyKeyReused`], or store failures.
    pub async fn create_transaction(
        &self,
        cmd: &CreateTransaction,
        key: Option<&IdempotencyKey>,
    ) -> Result<CreatedTransaction, ServiceError> {
        self.create_transaction_with(cmd, key, &EventMetadata::default())
            .await
    }

    /// [`Service::create_transaction`], keeping `metadata` (the request's
    /// trace context) with the events it appends.
    ///
    /// # Errors
    /// As [`Service::create_transaction`].
    pub async fn create_transaction_with(
        &self,
        cmd: &CreateTransaction,
        key: Option<&IdempotencyKey>,
        metadata: &EventMetadata,
    ) -> Result<CreatedTransaction, ServiceError> {
        let id = match key {
            Some(key) => TransactionId::for_idempotency_key(&cmd.account_id, key),
            None => TransactionId::from_uuid(self.ids.new_id()),
        };
        let aggregate = AggregateId::transaction(id);
        let _turn = self.gate.enter(&aggregate).await;
        let decider = CreateTransactionDecider {
            id,
            cmd,
            clock: &self.clock,
        };
        self.run(&aggregate, None, &TransactionFold, decider, metadata)
            .await
            .0
    }

    /// The merged transaction.
    ///
    /// # Errors
    /// [`ServiceError::TransactionNotFound`], or store failures.
    pub async fn transaction(&self, id: TransactionId) -> Result<Transaction, ServiceError> {
        let events = self.store.load(&AggregateId::transaction(id)).await?;
        transaction::merge(id, &events)
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .ok_or(ServiceError::TransactionNotFound(id))
    }

    /// The SKU's stock as this cell sees it (all zero for an unknown SKU).
    ///
    /// # Errors
    /// Store failures.
    pub async fn inventory(&self, sku: &Sku) -> Result<InventoryView, ServiceError> {
        let aggregate = AggregateId::inventory(sku);
        let _turn = self.gate.enter(&aggregate).await;
        let fold = InventoryFold {
            sku,
            topology: &self.topology,
        };
        let kept = self
            .refresh(&aggregate, self.inventories.take(sku), &fold)
            .await?;
        let view = kept.inventory.view();
        self.keep(sku, &aggregate, kept).await;
        Ok(view)
    }

    /// Runs one inventory command: reconciles what other cells asked of this
    /// cell, decides, and appends to this cell's stream, retrying on version
    /// conflicts.
    ///
    /// # Errors
    /// [`ServiceError::Inventory`] for refused commands,
    /// [`ServiceError::Contention`] after the last lost race, or store failures.
    pub async fn execute(
        &self,
        sku: &Sku,
        command: &InventoryCommand,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute_with(sku, command, &EventMetadata::default())
            .await
    }

    /// [`Service::execute`], keeping `metadata` (the request's trace
    /// context) with the events it appends, reconciles included.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn execute_with(
        &self,
        sku: &Sku,
        command: &InventoryCommand,
        metadata: &EventMetadata,
    ) -> Result<InventoryOutcome, ServiceError> {
        let aggregate = AggregateId::inventory(sku);
        let _turn = self.gate.enter(&aggregate).await;
        let fold = InventoryFold {
            sku,
            topology: &self.topology,
        };
        let decider = InventoryDecider {
            command,
            clock: &self.clock,
        };
        let kept = self.inventories.take(sku);
        let (answer, kept) = self.run(&aggregate, kept, &fold, decider, metadata).await;
        if let Some(kept) = kept {
            self.keep(sku, &aggregate, kept).await;
        }
        answer
    }

    /// `POST /inventory/{sku}/receipts`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn receive(
        &self,
        sku: &Sku,
        quantity: Quantity,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &InventoryCommand::Receive(quantity, None))
            .await
    }

    /// `POST /inventory/{sku}/write-offs`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn write_off(
        &self,
        sku: &Sku,
        cmd: WriteOffStock,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &cmd.into_command(None)).await
    }

    /// `POST /inventory/{sku}/reservations`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn reserve(
        &self,
        sku: &Sku,
        cmd: ReserveStock,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &cmd.into_command(None)).await
    }

    /// `DELETE /inventory/{sku}/reservations/{order_id}`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn release(
        &self,
        sku: &Sku,
        order: OrderId,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &InventoryCommand::Release(order)).await
    }

    /// `POST /inventory/{sku}/reservations/{order_id}/fulfilment`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn fulfil(
        &self,
        sku: &Sku,
        order: OrderId,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &InventoryCommand::Fulfil(order)).await
    }

    /// `POST /inventory/{sku}/transfers`.
    ///
    /// # Errors
    /// As [`Service::execute`].
    pub async fn transfer(
        &self,
        sku: &Sku,
        cmd: TransferStock,
    ) -> Result<InventoryOutcome, ServiceError> {
        self.execute(sku, &cmd.into_command(None)).await
    }
}

/// The inbound port, as the adapters call it: each method is the one of
/// the same name above.
impl<S: EventStore, C: Clock, I: IdGenerator> CellApi for Service<S, C, I> {
    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn health(&self) -> Reply<'_, Result<(), ServiceError>> {
        Box::pin(Service::health(self))
    }

    fn create_transaction<'a>(
        &'a self,
        cmd: &'a CreateTransaction,
        key: Option<&'a IdempotencyKey>,
        metadata: &'a EventMetadata,
    ) -> Reply<'a, Result<CreatedTransaction, ServiceError>> {
        Box::pin(Service::create_transaction_with(self, cmd, key, metadata))
    }

    fn transaction(&self, id: TransactionId) -> Reply<'_, Result<Transaction, ServiceError>> {
        Box::pin(Service::transaction(self, id))
    }

    fn inventory<'a>(&'a self, sku: &'a Sku) -> Reply<'a, Result<InventoryView, ServiceError>> {
        Box::pin(Service::inventory(self, sku))
    }

    fn execute<'a>(
        &'a self,
        sku: &'a Sku,
        command: &'a InventoryCommand,
        metadata: &'a EventMetadata,
    ) -> Reply<'a, Result<InventoryOutcome, ServiceError>> {
        Box::pin(Service::execute_with(self, sku, command, metadata))
    }

    fn apply_replicated_batch<'a>(&'a self, events: &'a [RecordedEvent]) -> Reply<'a, BatchReport> {
        Box::pin(Service::apply_replicated_batch(self, events))
    }

    fn stream_progress<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> Reply<'a, Result<StreamProgress, ServiceError>> {
        Box::pin(async move {
            let events = self.store.load(&stream.aggregate).await?;
            Ok(StreamProgress::of(stream, &events))
        })
    }

    fn own_events<'a>(
        &'a self,
        listing: &'a Listing,
    ) -> Reply<'a, Result<EventPage, ServiceError>> {
        Box::pin(async move {
            let own = Listing {
                origin: self.topology.this().clone(),
                ..listing.clone()
            };
            Ok(self.store.list_origin(&own).await?)
        })
    }
}
