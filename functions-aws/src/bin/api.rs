//! The AWS cell's `api` Lambda: the shared router under `lambda_http`.
//!
//! Configuration (read once, during init; a bad value fails the init):
//! - `TWINCELL_CELL`: this cell's id (default `aws`).
//! - `TWINCELL_PEERS`: the other cells, comma-separated (default `azure`).
//! - `RUST_LOG`: log filter (default `info`); JSON lines to CloudWatch.

use std::sync::Arc;

use anyhow::Context;
use twincell_core::{InMemoryEventStore, RandomIds, Service, SystemClock, Topology};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn topology() -> anyhow::Result<Topology> {
    let cell = env("TWINCELL_CELL").unwrap_or_else(|| "aws".to_owned());
    let peers = env("TWINCELL_PEERS").unwrap_or_else(|| "azure".to_owned());
    Topology::parse(&cell, &peers).context("TWINCELL_CELL / TWINCELL_PEERS")
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_ansi(false)
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let topology = topology()?;
    #[cfg(not(feature = "contract-mode"))]
    if env("TWINCELL_FIXED_CLOCK_MS").is_some() {
        return Err("TWINCELL_FIXED_CLOCK_MS is set, but this build has no contract mode (a frozen clock is for the parity suite only)".into());
    }
    let store = InMemoryEventStore::new();

    #[cfg(feature = "contract-mode")]
    if let Some(ms) = env("TWINCELL_FIXED_CLOCK_MS") {
        use twincell_core::testing::{ManualClock, SequentialIds};
        let ms: i64 = ms.trim().parse().context("TWINCELL_FIXED_CLOCK_MS")?;
        let clock = ManualClock::new(twincell_core::Timestamp::from_unix_millis(ms)?, 0);
        let service = Service::new(topology, store, clock, SequentialIds::default());
        return lambda_http::run(twincell_aws::app(Arc::new(service))).await;
    }
    let service = Service::new(topology, store, SystemClock, RandomIds);
    lambda_http::run(twincell_aws::app(Arc::new(service))).await
}
