//! Stores on the Cosmos DB SDK's in-process emulator (feature `emulator`).
//!
//! The emulator is `azure_data_cosmos`'s internal test transport: the whole
//! SDK pipeline runs (routing, retries, sessions, batches) and only the HTTP
//! exchange is answered in memory. It is internal to the SDK and may change
//! in any release, which is why `azure_data_cosmos` is pinned exactly and
//! this feature is only ever enabled for tests and contract-mode builds,
//! never in a package.
//!
//! [`Emulated`] adds an outage switch: a fault rule on the SDK's transport
//! that, while on, fails every request as an unreachable endpoint would.

use std::sync::Arc;

use azure_data_cosmos::{
    AccountReference, CosmosClientBuilder, CosmosRuntimeBuilder, RoutingStrategy,
};
use azure_data_cosmos_driver::fault_injection::{
    FaultInjectionConditionBuilder, FaultInjectionErrorType, FaultInjectionResultBuilder,
    FaultInjectionRule, FaultInjectionRuleBuilder,
};
use azure_data_cosmos_driver::in_memory_emulator::{
    ConsistencyLevel, ContainerConfig, InMemoryEmulatorHttpClient, VirtualAccountConfig,
    VirtualRegion,
};
use twincell_core::StoreError;

use crate::CosmosEventStore;

/// Physical partitions of an emulated container: a change-feed reader
/// visits this many partition ranges in turn.
pub const PARTITIONS: u32 = 4;

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
    Ok(Emulated::start().await?.store)
}

/// An emulated account with a store on it and an outage switch.
#[derive(Debug)]
pub struct Emulated {
    /// The store.
    pub store: CosmosEventStore,
    outage: Arc<FaultInjectionRule>,
}

impl Emulated {
    /// A new, empty account (as [`fresh_store`]), reachable.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the emulator can't be set up.
    pub async fn start() -> Result<Self, StoreError> {
        crate::install_crypto();
        let url = azure_core::http::Url::parse(GATEWAY).map_err(|e| failed("url", e))?;
        let config = VirtualAccountConfig::new(vec![VirtualRegion::new(REGION, url)])
            .map_err(|e| failed("account", e))?
            .with_consistency(ConsistencyLevel::Strong);
        let emulator = Arc::new(InMemoryEmulatorHttpClient::new(config));
        let store = emulator.store();
        store.create_database(DATABASE);
        let pk = serde_json::from_value(
            serde_json::json!({"paths": ["/pk"], "kind": "Hash", "version": 2}),
        )
        .map_err(|e| failed("partition key", e))?;
        let container = ContainerConfig::new()
            .with_partition_count(PARTITIONS)
            .build()
            .map_err(|e| failed("container config", e))?;
        store.create_container_with_config(DATABASE, CONTAINER, pk, container);
        let outage = Arc::new(
            FaultInjectionRuleBuilder::new(
                "outage",
                FaultInjectionResultBuilder::new()
                    .with_error(FaultInjectionErrorType::ConnectionError)
                    .build(),
            )
            .with_condition(FaultInjectionConditionBuilder::new().build())
            .build(),
        );
        outage.disable();
        let account = AccountReference::with_authentication_key(
            GATEWAY.parse().map_err(|e| failed("endpoint", e))?,
            azure_core::credentials::Secret::new("dGVzdGtleQ=="),
        );
        let runtime = CosmosRuntimeBuilder::from(
            emulator.runtime_builder_with_fault_rules(vec![Arc::clone(&outage)]),
        )
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
        Ok(Self {
            store: CosmosEventStore::with_container(container),
            outage,
        })
    }

    /// From now on every request fails to connect.
    pub fn go_down(&self) {
        self.outage.enable();
    }

    /// From now on requests reach the account again; its data is intact.
    pub fn come_back(&self) {
        self.outage.disable();
    }
}
