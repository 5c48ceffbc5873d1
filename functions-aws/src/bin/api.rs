//! The AWS cell's `api` Lambda: the shared router under `lambda_http`.
//!
//! Configuration (read once, during init; a bad value fails the init):
//! - `TWINCELL_CELL`: this cell's id (default `aws`).
//! - `TWINCELL_PEERS`: the other cells, comma-separated (default `azure`).
//! - `TWINCELL_DYNAMODB_TABLE`: the DynamoDB table of events. Unset, events
//!   live in memory (local development only: a Lambda's memory is per
//!   instance and lost on recycle).
//! - `AWS_ENDPOINT_URL`: another DynamoDB endpoint than AWS's (a local
//!   server such as moto). Credentials and region come from the standard
//!   AWS sources.
//! - `TWINCELL_DYNAMODB_CREATE_TABLE=true`: create the table at start if it
//!   does not exist (local servers; `template.yaml` declares it on AWS).
//! - Replication (see `twincell_replication::config`):
//!   `TWINCELL_REPLICATION_KEY_SECRET_ID` (or, locally,
//!   `TWINCELL_REPLICATION_KEY`) turns the `/replication/*` routes on;
//!   `TWINCELL_REPLICATION_TARGET`, `…_TARGET_KIND` and
//!   `…_TARGET_KEY_SECRET_ID` (or `…_TARGET_KEY`) let `/replication/resync`
//!   re-send this cell's events.
//! - Who may call (see `twincell_http::auth::config`): `TWINCELL_AUTH_ISSUER`
//!   and `TWINCELL_AUTH_AUDIENCE` (optionally `TWINCELL_AUTH_JWKS_URL`), or
//!   `TWINCELL_AUTH=disabled`; with neither, the init fails.
//! - `TWINCELL_CACHE_SKUS`, `TWINCELL_SNAPSHOT_EVERY`: what the instance
//!   keeps between invocations and how often a ledger is snapshotted (see
//!   `twincell_http::tuning`).
//! - `RUST_LOG`: log filter (default `info`); JSON lines to CloudWatch.
//!
//! The DynamoDB client is built once, and one request is made during init
//! so that the first invocation finds its connection open. A store that
//! does not answer then is logged, not fatal: `/health` reports it (503)
//! until it answers.

use std::sync::Arc;

use anyhow::Context;
use twincell_core::{EventStore, InMemoryEventStore, RandomIds, Service, Topology};
use twincell_dynamodb::{DynamoDbEventStore, Settings};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn topology() -> anyhow::Result<Topology> {
    let cell = env("TWINCELL_CELL").unwrap_or_else(|| "aws".to_owned());
    let peers = env("TWINCELL_PEERS").unwrap_or_else(|| "azure".to_owned());
    Topology::parse(&cell, &peers).context("TWINCELL_CELL / TWINCELL_PEERS")
}

fn flag(name: &str) -> anyhow::Result<bool> {
    match env(name).as_deref() {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => anyhow::bail!("{name} is {other:?}; expected true or false"),
    }
}

/// Builds the DynamoDB store, creates its table if asked, and warms the
/// connection.
async fn dynamodb(settings: &Settings) -> anyhow::Result<DynamoDbEventStore> {
    let store = DynamoDbEventStore::connect(settings).await;
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

/// The replication routes' configuration: the key, a publisher for resync
/// when a target is set, and Event Grid's Entra tokens when configured.
async fn replication(
    auth: Option<&Arc<twincell_http::auth::Authenticator>>,
) -> anyhow::Result<Option<twincell_http::Replication>> {
    let settings = twincell_aws::secrets::replication_settings().await?;
    let delivery_tokens =
        twincell_http::auth::delivery_tokens_from_env(env, auth).map_err(anyhow::Error::msg)?;
    if delivery_tokens.is_some() && settings.key.is_none() {
        anyhow::bail!(
            "TWINCELL_REPLICATION_AUTH_AUDIENCE needs TWINCELL_REPLICATION_KEY: replication is off without its key"
        );
    }
    let publisher = twincell_replication::publish::shared(settings.target);
    Ok(settings.key.map(|key| twincell_http::Replication {
        key,
        publisher,
        delivery_tokens,
    }))
}

async fn serve<S: EventStore + 'static>(
    topology: Topology,
    tuning: twincell_http::Tuning,
    store: S,
    replication: Option<twincell_http::Replication>,
    auth: Option<Arc<twincell_http::auth::Authenticator>>,
) -> Result<(), lambda_http::Error> {
    #[cfg(feature = "contract-mode")]
    if let Some(ms) = env("TWINCELL_FIXED_CLOCK_MS") {
        use twincell_core::testing::{ManualClock, SequentialIds};
        let ms: i64 = ms.trim().parse().context("TWINCELL_FIXED_CLOCK_MS")?;
        let clock = ManualClock::new(twincell_core::Timestamp::from_unix_millis(ms)?, 0);
        let service = tuning.apply(Service::new(
            topology,
            store,
            clock,
            SequentialIds::default(),
        ));
        return lambda_http::run(twincell_aws::app_with(Arc::new(service), replication, auth))
            .await;
    }
    let service = tuning.apply(Service::new(
        topology,
        store,
        twincell_http::TokioClock,
        RandomIds,
    ));
    lambda_http::run(twincell_aws::app_with(Arc::new(service), replication, auth)).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    twincell_aws::init_tracing();
    let topology = topology()?;
    let tuning = twincell_http::Tuning::from_env(env)?;
    #[cfg(not(feature = "contract-mode"))]
    if env("TWINCELL_FIXED_CLOCK_MS").is_some() {
        return Err("TWINCELL_FIXED_CLOCK_MS is set, but this build has no contract mode (a frozen clock is for the parity suite only)".into());
    }
    let auth = twincell_http::auth::from_env(env)?;
    twincell_http::auth::start(auth.as_deref()).await;
    let replication = replication(auth.as_ref()).await?;
    match Settings::from_env() {
        Some(settings) => {
            let store = dynamodb(&settings).await?;
            serve(topology, tuning, store, replication, auth).await
        }
        None => {
            serve(
                topology,
                tuning,
                InMemoryEventStore::new(),
                replication,
                auth,
            )
            .await
        }
    }
}
