//! The AWS cell's `api` Lambda: the shared router under `lambda_http`
//! ([`main`], which the `api` binary runs, and `twincell-local` in the
//! Lambda process of its AWS cell).
//!
//! Configuration: `twincell_http::config` (one `CellConfig` for every cell
//! binary, read once during init; a bad value fails the init, naming the
//! variable), with this binary's defaults `TWINCELL_CELL=aws`,
//! `TWINCELL_PEERS=azure` and its stores: `TWINCELL_STORE=dynamodb` (the
//! table in `TWINCELL_DYNAMODB_TABLE`; `AWS_ENDPOINT_URL` for a local
//! server; `TWINCELL_DYNAMODB_CREATE_TABLE=true` creates the table at start,
//! for local servers), `sqlite` (`TWINCELL_SQLITE_PATH`: a local run's file;
//! a Lambda's disk is its instance's own) or `memory`. Without
//! `TWINCELL_STORE` the init fails. Replication keys may be named by
//! Secrets Manager secrets (`TWINCELL_REPLICATION_KEY_SECRET_ID`,
//! `…_TARGET_KEY_SECRET_ID`; see [`crate::secrets`]), read once.
//!
//! The store client is built once, and one request is made during init so
//! that the first invocation finds its connection open. A store that does
//! not answer then is logged, not fatal: `/health` reports it (503) until
//! it answers.

use std::sync::Arc;

use anyhow::Context;
use twincell_core::{EventStore, InMemoryEventStore, RandomIds, Service};
use twincell_dynamodb::{DynamoDbEventStore, Settings};
use twincell_http::{CellConfig, CellDefaults, LogTo, StoreChoice, StoreKind};

/// This binary's part of the configuration.
const DEFAULTS: CellDefaults = CellDefaults {
    cell: "aws",
    peers: "azure",
    stores: &[StoreKind::DynamoDb, StoreKind::Sqlite, StoreKind::Memory],
    local: false,
};

fn flag(name: &str) -> anyhow::Result<bool> {
    match std::env::var(name).ok().as_deref().map(str::trim) {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => anyhow::bail!("{name} is {other:?}; expected true or false"),
    }
}

/// Builds the DynamoDB store, creates its table if asked, and warms the
/// connection.
async fn dynamodb() -> anyhow::Result<DynamoDbEventStore> {
    let settings = Settings::from_env()
        .context("TWINCELL_STORE=dynamodb needs TWINCELL_DYNAMODB_TABLE, the table of events")?;
    let store = DynamoDbEventStore::connect(&settings).await;
    if flag("TWINCELL_DYNAMODB_CREATE_TABLE")? {
        store
            .create_table()
            .await
            .with_context(|| format!("creating DynamoDB table {}", settings.table))?;
    }
    match store.check().await {
        Ok(()) => tracing::info!(table = %settings.table, "DynamoDB store ready"),
        Err(e) => {
            tracing::warn!(table = %settings.table, error = %e, "DynamoDB store not answering; /health reports 503 until it does")
        }
    }
    Ok(store)
}

async fn serve<S: EventStore + 'static>(
    config: CellConfig,
    publisher: Option<Arc<dyn twincell_replication::Publish>>,
    store: S,
) -> anyhow::Result<()> {
    let CellConfig {
        topology,
        auth,
        delivery_tokens,
        replication,
        tuning,
        fixed_clock_ms,
        ..
    } = config;
    twincell_http::init_metrics(
        topology.this().as_str(),
        twincell_http::emf::Flush::EveryRequest,
    )
    .map_err(anyhow::Error::msg)?;
    // Every store call counted and timed (the store_* metrics).
    let store = twincell_core::Metered::new(store);
    twincell_http::auth::start(auth.as_deref()).await;
    let origin_keys = replication.origin_keys;
    let replication = replication.key.map(|key| twincell_http::Replication {
        key,
        publisher,
        delivery_tokens,
        origin_keys,
    });
    #[cfg(feature = "contract-mode")]
    if let Some(ms) = fixed_clock_ms {
        use twincell_core::testing::{ManualClock, SequentialIds};
        let clock = ManualClock::new(twincell_core::Timestamp::from_unix_millis(ms)?, 0);
        let service = tuning.apply(Service::new(
            topology,
            store,
            clock,
            SequentialIds::default(),
        ));
        return lambda_http::run(crate::app_with(Arc::new(service), replication, auth))
            .await
            .map_err(|e| anyhow::anyhow!(e));
    }
    #[cfg(not(feature = "contract-mode"))]
    if fixed_clock_ms.is_some() {
        anyhow::bail!(
            "TWINCELL_FIXED_CLOCK_MS is set, but this build has no contract mode (a frozen clock is for the parity suite only)"
        );
    }
    let service = tuning.apply(Service::new(
        topology,
        store,
        twincell_http::TokioClock,
        RandomIds,
    ));
    lambda_http::run(crate::app_with(Arc::new(service), replication, auth))
        .await
        .map_err(|e| anyhow::anyhow!(e))
}

/// The `api` function's whole run, on the caller's Tokio runtime: reads the
/// configuration (keys from Secrets Manager where a secret is named), opens
/// the store and serves invocations from the Lambda Runtime API in
/// `AWS_LAMBDA_RUNTIME_API`.
///
/// # Errors
/// A configuration or store that does not work, with the reason (Lambda
/// reports it as an init error).
pub async fn main() -> anyhow::Result<()> {
    twincell_http::init_logs(LogTo::Lambda);
    let environment = crate::secrets::environment().await?;
    let config = CellConfig::from_lookup(&DEFAULTS, environment)?;
    // One client for resync and, on SQLite, the change feed.
    let publisher = twincell_replication::publish::shared(
        config.replication.target.clone(),
        config.replication.signer.clone(),
    );
    match config.store.clone() {
        StoreChoice::DynamoDb => serve(config, publisher, dynamodb().await?).await,
        StoreChoice::Sqlite(path) => {
            let store = twincell_sqlite::SqliteEventStore::open(&path).await?;
            tracing::info!(path = %path.display(), "SQLite store ready");
            // On SQLite the cell publishes its own events from the file's
            // change feed itself (on AWS the replicator Lambda reads the
            // table's stream), through the same publisher as resync.
            if let Some(publisher) = &publisher {
                store.publish_own_events(config.topology.this().clone(), Arc::clone(publisher));
            }
            serve(config, publisher, store).await
        }
        StoreChoice::Memory => {
            tracing::warn!("TWINCELL_STORE=memory: events are lost when the instance ends");
            serve(config, publisher, InMemoryEventStore::new()).await
        }
        StoreChoice::Cosmos => {
            anyhow::bail!("TWINCELL_STORE=cosmos: the api does not run on Cosmos DB")
        }
    }
}
