//! The Azure cell's custom handler: the Functions host starts this binary and
//! forwards every HTTP request to it (`enableForwardingHttpRequest`) on
//! `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`. It serves the shared router.
//!
//! Configuration (read once, at start-up; a bad value stops the process):
//! - `FUNCTIONS_CUSTOMHANDLER_PORT`: the port (set by the host; 8080 when
//!   unset, for local runs; 0 picks a free one).
//! - `TWINCELL_CELL`: this cell's id (default `azure`).
//! - `TWINCELL_PEERS`: the other cells, comma-separated (default `aws`).
//! - `TWINCELL_COSMOS_ENDPOINT`, `TWINCELL_COSMOS_KEY`,
//!   `TWINCELL_COSMOS_REGION` (else the host's `REGION_NAME`), and
//!   optionally `TWINCELL_COSMOS_DATABASE` (default `twincell`) and
//!   `TWINCELL_COSMOS_CONTAINER` (default `events`): store events in Cosmos
//!   DB. Without an endpoint, events live in memory (local development
//!   only).
//! - Replication (see `twincell_replication::config`; keys as Key Vault
//!   references): `TWINCELL_REPLICATION_KEY` turns the `/replication/*`
//!   routes on; `TWINCELL_REPLICATION_TARGET`, `…_TARGET_KIND` and
//!   `…_TARGET_KEY` say where this cell publishes its own events: the
//!   `replicate-outbound` function (the container's change feed, see
//!   `outbound`) and resync.
//! - Who may call (see `twincell_http::auth::config`): `TWINCELL_AUTH_ISSUER`
//!   and `TWINCELL_AUTH_AUDIENCE` (optionally `TWINCELL_AUTH_JWKS_URL`), or
//!   `TWINCELL_AUTH=disabled`; with neither, the handler does not start.
//! - `TWINCELL_CACHE_SKUS`, `TWINCELL_SNAPSHOT_EVERY`: what the process
//!   keeps between requests and how often a ledger is snapshotted (see
//!   `twincell_http::tuning`).
//! - `TWINCELL_HTTP_HEADER_TIMEOUT_MS`, `TWINCELL_HTTP_REQUEST_TIMEOUT_MS`,
//!   `TWINCELL_HTTP_MAX_CONNECTIONS`: the server's bounds (see `server`).
//! - `RUST_LOG`: log filter (default `info`, the Cosmos DB SDK at `warn`);
//!   logs are JSON lines on stdout.
//!
//! The Cosmos DB client is built once, before the port is opened, and
//! opening the container makes the first requests, so the first forwarded
//! request finds its connection open. An account that can't be reached at
//! start stops the process with the reason (the host restarts it); one that
//! goes away later is reported by `/health` (503) until it is back.

#[cfg(feature = "contract-mode")]
mod host_standin;
mod outbound;
mod server;

use std::net::Ipv4Addr;
use std::sync::Arc;

// Each request allocates many small, short-lived objects; mimalloc serves
// them faster than the system allocator: +22 % requests per second in the
// load test (docs/measurements.md). The Lambda keeps the system allocator:
// there mimalloc cost a millisecond of init and 6 MB of RSS for no gain.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use tokio::net::TcpListener;
use twincell_core::{
    Clock, EventStore, IdGenerator, InMemoryEventStore, RandomIds, Service, Topology,
};

/// Typed configuration from the environment.
struct Config {
    port: u16,
    auth: Option<Arc<twincell_http::auth::Authenticator>>,
    /// Event Grid's Entra tokens on `/replication/events`.
    delivery_tokens: Option<twincell_http::auth::DeliveryTokens>,
    limits: server::Limits,
    topology: Topology,
    replication: twincell_replication::Settings,
    /// Contract mode: a stand-in of the host's Cosmos DB trigger to start
    /// once the port is open.
    trigger: Option<Trigger>,
    #[cfg(feature = "contract-mode")]
    fixed_clock_ms: Option<i64>,
    tuning: twincell_http::Tuning,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let port = match env("FUNCTIONS_CUSTOMHANDLER_PORT") {
            Some(p) => p.trim().parse().with_context(|| {
                format!("FUNCTIONS_CUSTOMHANDLER_PORT={p:?} is not a port number")
            })?,
            None => 8080,
        };
        let cell = env("TWINCELL_CELL").unwrap_or_else(|| "azure".to_owned());
        let peers = env("TWINCELL_PEERS").unwrap_or_else(|| "aws".to_owned());
        let topology = Topology::parse(&cell, &peers).context("TWINCELL_CELL / TWINCELL_PEERS")?;
        Ok(Self {
            port,
            auth: None,
            delivery_tokens: None,
            limits: server::Limits::from_env(env)?,
            tuning: twincell_http::Tuning::from_env(env).map_err(anyhow::Error::msg)?,
            topology,
            replication: twincell_replication::Settings::from_env()?,
            trigger: None,
            #[cfg(feature = "contract-mode")]
            fixed_clock_ms: env("TWINCELL_FIXED_CLOCK_MS")
                .map(|v| v.trim().parse().context("TWINCELL_FIXED_CLOCK_MS"))
                .transpose()?,
        })
    }
}

/// Turns transparent huge pages off for this process. mimalloc asks the
/// kernel for them (`MADV_HUGEPAGE`), and as the store and the buffers
/// grow, the first touch of each new one zeroes 2 MiB inside whichever
/// request touched it: stalls of 2–14 ms, which were the slowest 1 % of
/// requests (docs/measurements.md). Without them the slowest 1 % at one
/// connection fell from 1.8 ms to 0.25 ms, at no cost in CPU per request.
/// mimalloc's own switch (`MIMALLOC_ALLOW_THP=0`) is read before `main`
/// runs, from the environment, which a deployment may not set; this is
/// the same `prctl` it would make.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(error = %e, "transparent huge pages could not be turned off; some requests will wait on the zeroing of a 2 MiB page");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The Cosmos DB SDK logs its routing decisions at info.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "info,azure_core=warn,azure_data_cosmos=warn,azure_data_cosmos_driver=warn",
                    )
                }),
        )
        .init();
    without_huge_pages();
    let mut config = Config::from_env()?;
    config.auth = twincell_http::auth::from_env(env).map_err(anyhow::Error::msg)?;
    config.delivery_tokens =
        twincell_http::auth::delivery_tokens_from_env(env, config.auth.as_ref())
            .map_err(anyhow::Error::msg)?;
    if config.delivery_tokens.is_some() && config.replication.key.is_none() {
        anyhow::bail!(
            "TWINCELL_REPLICATION_AUTH_AUDIENCE needs TWINCELL_REPLICATION_KEY: replication is off without its key"
        );
    }
    #[cfg(not(feature = "contract-mode"))]
    if env("TWINCELL_FIXED_CLOCK_MS").is_some() {
        anyhow::bail!(
            "TWINCELL_FIXED_CLOCK_MS is set, but this build has no contract mode (a frozen clock is for the parity suite only)"
        );
    }
    #[cfg(not(feature = "contract-mode"))]
    if env("TWINCELL_COSMOS_EMULATOR").is_some() {
        anyhow::bail!(
            "TWINCELL_COSMOS_EMULATOR is set, but this build has no contract mode (the in-process emulator is for the parity suite only)"
        );
    }
    #[cfg(feature = "contract-mode")]
    if env("TWINCELL_COSMOS_EMULATOR").as_deref() == Some("true") {
        let store = twincell_cosmos::emulator::fresh_store()
            .await
            .context("starting the in-process Cosmos DB emulator")?;
        tracing::info!("Cosmos DB store on the in-process emulator (contract mode)");
        config.trigger = trigger_standin(&store)?;
        return run(config, store).await;
    }
    match twincell_cosmos::Settings::from_env()? {
        Some(settings) => {
            let store = twincell_cosmos::CosmosEventStore::connect(&settings)
                .await
                .with_context(|| {
                    format!(
                        "opening Cosmos DB container {}/{} at {}",
                        settings.database, settings.container, settings.endpoint
                    )
                })?;
            tracing::info!(endpoint = %settings.endpoint, database = %settings.database, container = %settings.container, "Cosmos DB store ready");
            run(config, store).await
        }
        None => run(config, InMemoryEventStore::new()).await,
    }
}

/// What starts the trigger stand-in, given the handler's address.
#[cfg(feature = "contract-mode")]
type Trigger = Box<dyn FnOnce(std::net::SocketAddr) + Send>;
#[cfg(not(feature = "contract-mode"))]
type Trigger = std::convert::Infallible;

/// `TWINCELL_STANDIN_COSMOS_TRIGGER=true` (contract mode, emulator only):
/// the host's Cosmos DB trigger stand-in, invoking `replicate-outbound`;
/// `TWINCELL_STANDIN_FEED_POLL_MS`, `…_RETRY_MIN_MS` and `…_RETRY_MAX_MS`
/// shorten its `feedPollDelay` and retry intervals for tests.
#[cfg(feature = "contract-mode")]
fn trigger_standin(store: &twincell_cosmos::CosmosEventStore) -> anyhow::Result<Option<Trigger>> {
    if env("TWINCELL_STANDIN_COSMOS_TRIGGER").as_deref() != Some("true") {
        return Ok(None);
    }
    let ms = |name: &str, default: u64| -> anyhow::Result<std::time::Duration> {
        let v = env(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .with_context(|| format!("{name}={v:?}"))
            })
            .transpose()?
            .unwrap_or(default);
        Ok(std::time::Duration::from_millis(v))
    };
    let settings = host_standin::TriggerSettings {
        max_items: 100,
        poll: ms("TWINCELL_STANDIN_FEED_POLL_MS", 5_000)?,
        partitions: twincell_cosmos::emulator::PARTITIONS,
        min_retry: ms("TWINCELL_STANDIN_RETRY_MIN_MS", 2_000)?,
        max_retry: ms("TWINCELL_STANDIN_RETRY_MAX_MS", 900_000)?,
    };
    let store = store.clone();
    Ok(Some(Box::new(move |address| {
        let url = format!("http://{address}/{}", outbound::FUNCTION);
        tracing::info!(%url, "Cosmos DB trigger stand-in started (contract mode)");
        host_standin::spawn(store, url, settings);
    })))
}

/// Serves `store` with the system clock, or in contract mode with the frozen
/// clock when one is configured.
async fn run<S: EventStore + 'static>(config: Config, store: S) -> anyhow::Result<()> {
    #[cfg(feature = "contract-mode")]
    if let Some(ms) = config.fixed_clock_ms {
        use twincell_core::testing::{ManualClock, SequentialIds};
        let clock = ManualClock::new(twincell_core::Timestamp::from_unix_millis(ms)?, 0);
        let service = config.tuning.apply(Service::new(
            config.topology.clone(),
            store,
            clock,
            SequentialIds::default(),
        ));
        return serve(config, service).await;
    }
    let service = config.tuning.apply(Service::new(
        config.topology.clone(),
        store,
        twincell_http::TokioClock,
        RandomIds,
    ));
    serve(config, service).await
}

async fn serve<S, C, I>(config: Config, service: Service<S, C, I>) -> anyhow::Result<()>
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    let Config {
        port,
        auth,
        delivery_tokens,
        limits,
        replication: settings,
        trigger,
        ..
    } = config;
    let service = Arc::new(service);
    let publisher = twincell_replication::publish::shared(settings.target);
    let outbound = match &publisher {
        Some(p) => outbound::routes(Arc::clone(&service), Arc::clone(p)),
        None => axum::Router::new(),
    };
    let publishes = publisher.is_some();
    let replication = settings.key.map(|key| twincell_http::Replication {
        key,
        publisher,
        delivery_tokens,
    });
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let address = listener.local_addr()?;
    let cell = service.topology().this().clone();
    // The one line a person starting it locally needs; tests read it too.
    #[allow(clippy::print_stdout)]
    {
        println!("twincell {cell} cell listening on http://{address}");
    }
    tracing::info!(%cell, %address, "serving");
    twincell_http::auth::start(auth.as_deref()).await;
    if !publishes {
        tracing::info!(
            "TWINCELL_REPLICATION_TARGET is not set: this cell publishes none of its events, and replicate-outbound invocations get 404"
        );
    }
    #[cfg(feature = "contract-mode")]
    if let Some(start) = trigger {
        start(address);
    }
    #[cfg(not(feature = "contract-mode"))]
    let _ = trigger;
    let app = outbound.merge(twincell_http::router_with(service, replication, auth));
    server::serve(listener, app, limits, shutdown())
        .await
        .context("serving")
}

/// Resolves on Ctrl-C or SIGTERM (the Functions host stops handlers with it).
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
