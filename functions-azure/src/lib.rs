//! # twincell-azure
//!
//! The Azure cell's custom handler: the Functions host starts the `handler`
//! binary ([`main`]) and
//! forwards every HTTP request to it (`enableForwardingHttpRequest`) on
//! `127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT`. It serves the shared router.
//!
//! Configuration: `twincell_http::config` (one [`CellConfig`] for every
//! cell binary, read once at start-up; a bad value stops the process,
//! naming the variable), with this binary's defaults `TWINCELL_CELL=azure`,
//! `TWINCELL_PEERS=aws` and its stores: `TWINCELL_STORE=cosmos` (with
//! `TWINCELL_COSMOS_ENDPOINT`, `TWINCELL_COSMOS_KEY`,
//! `TWINCELL_COSMOS_REGION` or the host's `REGION_NAME`, and optionally
//! `TWINCELL_COSMOS_DATABASE` and `TWINCELL_COSMOS_CONTAINER`), `sqlite`
//! (`TWINCELL_SQLITE_PATH`) or `memory`. Without `TWINCELL_STORE` it does
//! not start — unless run with `--local`, which keeps events in
//! `.twincell/azure.sqlite` and, with no authentication setting, serves
//! without tokens. Its own settings:
//! - `FUNCTIONS_CUSTOMHANDLER_PORT`: the port (set by the host; 8080 when
//!   unset, for local runs; 0 picks a free one).
//! - `TWINCELL_HTTP_HEADER_TIMEOUT_MS`, `TWINCELL_HTTP_REQUEST_TIMEOUT_MS`,
//!   `TWINCELL_HTTP_MAX_CONNECTIONS`: the server's bounds (see `server`).
//! - With replication on, the `replicate-outbound` function (the Cosmos DB
//!   change feed, see `outbound`) publishes to `TWINCELL_REPLICATION_TARGET`;
//!   on SQLite the handler publishes from the file's change feed itself
//!   (`twincell_sqlite::FeedPublisher`).
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

use anyhow::Context;
use tokio::net::TcpListener;
use twincell_core::{Clock, EventStore, IdGenerator, InMemoryEventStore, RandomIds, Service};
use twincell_http::{CellConfig, CellDefaults, LogTo, StoreChoice, StoreKind};

/// This binary's part of the configuration.
const DEFAULTS: CellDefaults = CellDefaults {
    cell: "azure",
    peers: "aws",
    stores: &[StoreKind::Cosmos, StoreKind::Sqlite, StoreKind::Memory],
    local: false,
};

/// The handler's command line: nothing, as the Functions host starts it;
/// `--local` on a laptop.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(
    name = "handler",
    about = "The Azure cell's custom handler: the twincell API on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT"
)]
pub struct Args {
    /// A local run: events in `.twincell/<cell>.sqlite` unless
    /// TWINCELL_STORE says otherwise, and no tokens asked for unless an
    /// authentication setting is given.
    #[arg(long)]
    pub local: bool,
}

/// Everything the handler runs with.
struct Config {
    cell: CellConfig,
    /// Where this cell publishes its own events, when replication has a
    /// target: one client for resync, `replicate-outbound` and, on SQLite,
    /// the change feed.
    publisher: Option<Arc<dyn twincell_replication::Publish>>,
    port: u16,
    limits: server::Limits,
    /// Contract mode: a stand-in of the host's Cosmos DB trigger to start
    /// once the port is open.
    trigger: Option<Trigger>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Config {
    fn from_env(local: bool) -> anyhow::Result<Self> {
        let port = match env("FUNCTIONS_CUSTOMHANDLER_PORT") {
            Some(p) => p.trim().parse().with_context(|| {
                format!("FUNCTIONS_CUSTOMHANDLER_PORT={p:?} is not a port number")
            })?,
            None => 8080,
        };
        let limits = server::Limits::from_env(env)?;
        let cell = CellConfig::from_env(&CellDefaults { local, ..DEFAULTS })?;
        #[cfg(not(feature = "contract-mode"))]
        if cell.fixed_clock_ms.is_some() {
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
        let publisher = twincell_replication::publish::shared(
            cell.replication.target.clone(),
            cell.replication.signer.clone(),
        );
        Ok(Self {
            cell,
            publisher,
            port,
            limits,
            trigger: None,
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

/// The `handler` binary's whole run, on the caller's Tokio runtime: reads
/// the configuration, opens the store, prints the URL line and serves until
/// Ctrl-C or SIGTERM. `twincell-local` runs the Azure cell of its matrix
/// with it too, in a process of its own.
///
/// # Errors
/// A configuration, store or socket that does not work, with the reason.
pub async fn main(args: Args) -> anyhow::Result<()> {
    twincell_http::init_logs(LogTo::Stdout);
    without_huge_pages();
    // Contract mode adds the trigger stand-in to it.
    #[cfg_attr(not(feature = "contract-mode"), allow(unused_mut))]
    let mut config = Config::from_env(args.local)?;
    twincell_http::init_metrics(
        config.cell.topology.this().as_str(),
        twincell_http::emf::Flush::EverySecond,
    )
    .map_err(anyhow::Error::msg)?;
    match config.cell.store.clone() {
        StoreChoice::Memory => run(config, InMemoryEventStore::new()).await,
        StoreChoice::Sqlite(path) => {
            // A local run makes its data directory; a deployment's must
            // exist (a missing one is a wrong mount, answered unavailable).
            if let Some(dir) = path
                .parent()
                .filter(|d| args.local && !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let store = twincell_sqlite::SqliteEventStore::open(&path).await?;
            // On SQLite the cell publishes its own events from the file's
            // change feed itself (the clouds run their replicator beside
            // the cell), through the same publisher as resync.
            if let Some(publisher) = &config.publisher {
                store
                    .publish_own_events(config.cell.topology.this().clone(), Arc::clone(publisher));
            }
            run(config, store).await
        }
        StoreChoice::Cosmos => {
            #[cfg(feature = "contract-mode")]
            if env("TWINCELL_COSMOS_EMULATOR").as_deref() == Some("true") {
                let store = twincell_cosmos::emulator::fresh_store()
                    .await
                    .context("starting the in-process Cosmos DB emulator")?;
                tracing::info!("Cosmos DB store on the in-process emulator (contract mode)");
                config.trigger = trigger_standin(&store)?;
                return run(config, store).await;
            }
            let settings = twincell_cosmos::Settings::from_env()?.context(
                "TWINCELL_STORE=cosmos needs TWINCELL_COSMOS_ENDPOINT (and TWINCELL_COSMOS_KEY)",
            )?;
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
        StoreChoice::DynamoDb => {
            anyhow::bail!("TWINCELL_STORE=dynamodb: the handler does not run on DynamoDB")
        }
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
    // Every store call counted and timed (the store_* metrics).
    let store = twincell_core::Metered::new(store);
    #[cfg(feature = "contract-mode")]
    if let Some(ms) = config.cell.fixed_clock_ms {
        use twincell_core::testing::{ManualClock, SequentialIds};
        let clock = ManualClock::new(twincell_core::Timestamp::from_unix_millis(ms)?, 0);
        let service = config.cell.tuning.apply(Service::new(
            config.cell.topology.clone(),
            store,
            clock,
            SequentialIds::default(),
        ));
        return serve(config, service).await;
    }
    let service = config.cell.tuning.apply(Service::new(
        config.cell.topology.clone(),
        store,
        twincell_http::TokioClock,
        RandomIds,
    ));
    serve(config, service).await
}

/// Hands the router the id of the Functions invocation carrying the request
/// (the host's `X-Azure-Functions-InvocationId`), for its log lines
/// (`function_request_id`).
async fn with_invocation_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let id = twincell_http::headers::last_item(request.headers(), "x-azure-functions-invocationid")
        .and_then(Result::ok)
        .and_then(twincell_http::FunctionRequestId::checked);
    if let Some(id) = id {
        request.extensions_mut().insert(id);
    }
    request
}

async fn serve<S, C, I>(config: Config, service: Service<S, C, I>) -> anyhow::Result<()>
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    let Config {
        cell:
            CellConfig {
                auth,
                delivery_tokens,
                replication: settings,
                store,
                ..
            },
        publisher,
        port,
        limits,
        trigger,
    } = config;
    let service = Arc::new(service);
    let outbound = match &publisher {
        Some(p) => outbound::routes(Arc::clone(&service), Arc::clone(p)),
        None => axum::Router::new(),
    };
    let publishes = publisher.is_some();
    let origin_keys = settings.origin_keys;
    let replication = settings.key.map(|key| twincell_http::Replication {
        key,
        publisher,
        delivery_tokens,
        origin_keys,
    });
    let listener = listen(port).with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let address = listener.local_addr()?;
    let cell = service.topology().this().clone();
    // The one line a person starting it locally needs; tests read it too.
    #[allow(clippy::print_stdout)]
    {
        println!("twincell {cell} cell listening on http://{address}");
    }
    // Logged after the URL line, which comes first on stdout (`memory`
    // names a store whose events end with the process).
    tracing::info!(%cell, %address, store = %store, "serving");
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
    let app = outbound
        .merge(twincell_http::router_with(service, replication, auth))
        .layer(axum::middleware::map_request(with_invocation_id));
    server::serve(listener, app, limits, shutdown())
        .await
        .context("serving")
}

/// Connections the kernel holds for the accept loop, set explicitly (the
/// kernel caps it at `net.core.somaxconn`): a burst of new clients waits
/// there while the loop makes room (see `server`).
const LISTEN_BACKLOG: u32 = 1024;

/// A listening socket on 127.0.0.1:`port` with [`LISTEN_BACKLOG`].
fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(LISTEN_BACKLOG)
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
