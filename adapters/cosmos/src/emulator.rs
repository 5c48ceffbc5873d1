//! Stores on the Cosmos DB SDK's in-process emulator (feature `emulator`).
//!
//! The emulator is `azure_data_cosmos`'s internal test transport: the whole
//! SDK pipeline runs (routing, retries, sessions, batches) and only the HTTP
//! exchange is answered in memory. It is internal to the SDK and may change
//! in any release, which is why `azure_data_cosmos` is pinned exactly and
//! this feature is only ever enabled for tests and contract-mode builds,
//! never in a package.

use std::sync::Arc;

use azure_data_cosmos::{
    AccountReference, CosmosClientBuilder, CosmosRuntimeBuilder, RoutingStrategy,
};
use azure_data_cosmos_driver::in_memory_emulator::{
    ConsistencyLevel, InMemoryEmulatorHttpClient, VirtualAccountConfig, VirtualRegion,
};
use twincell_core::StoreError;

use crate::CosmosEventStore;

const GATEWAY: &str = "https://westeurope.emulator.local";
const REGION: &str = "West Europe";
const DATABASE: &str = "twincell";
const CONTAINER: &str = "events";

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("emulator {what}: {e}"))
}

/// A store on a new, empty emulated account: one region, strong
/// consistency, database `twincell`, container `events` partitioned on
/// `/pk` as in production.
///
/// # Errors
/// [`StoreError::Unavailable`] when the emulator can't be set up.
pub async fn fresh_store() -> Result<CosmosEventStore, StoreError> {
    crate::install_crypto();
    let url = azure_core::http::Url::parse(GATEWAY).map_err(|e| failed("url", e))?;
    let config = VirtualAccountConfig::new(vec![VirtualRegion::new(REGION, url)])
        .map_err(|e| failed("account", e))?
        .with_consistency(ConsistencyLevel::Strong);
    let emulator = Arc::new(InMemoryEmulatorHttpClient::new(config));
    let store = emulator.store();
    store.create_database(DATABASE);
    let pk =
        serde_json::from_value(serde_json::json!({"paths": ["/pk"], "kind": "Hash", "version": 2}))
            .map_err(|e| failed("partition key", e))?;
    store.create_container(DATABASE, CONTAINER, pk);
    let account = AccountReference::with_authentication_key(
        GATEWAY.parse().map_err(|e| failed("endpoint", e))?,
        azure_core::credentials::Secret::new("dGVzdGtleQ=="),
    );
    let runtime = CosmosRuntimeBuilder::from(emulator.runtime_builder())
        .build()
        .await
        .map_err(|e| failed("runtime", e))?;
    let client = CosmosClientBuilder::new()
        .with_runtime(runtime)
        .build(account, RoutingStrategy::ProximityTo(REGION.into()))
        .await
        .map_err(|e| failed("client", e))?;
    let container = client
        .database_client(DATABASE)
        .container_client(CONTAINER, None)
        .await
        .map_err(|e| failed("container", e))?;
    Ok(CosmosEventStore::with_container(container))
}
