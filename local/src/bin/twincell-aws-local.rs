//! The AWS cell on one machine: API Gateway in front of the `api` Lambda,
//! and the stream's event source mapping in front of the `replicator`
//! Lambda, each binary a real process under its own Lambda Runtime API
//! emulator (see `twincell_local::gateway` and `…::stream_mapping`).
//!
//! ```text
//! twincell-aws-local --api PATH [--replicator PATH] [--listen 127.0.0.1:0]
//!   [--table NAME] [--batch-size 100] [--max-retries 20]
//!   [--stream-poll-ms 250] [--retry-ms 1000]
//! ```
//!
//! The functions get this process's environment (the table, the DynamoDB
//! endpoint, credentials, `TWINCELL_*`) plus the variables Lambda sets.
//! The table is `--table` or `TWINCELL_DYNAMODB_TABLE`. The first line on
//! stdout is `twincell aws cell listening on http://127.0.0.1:<port>`. If a
//! function process exits, so does this one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::process::{Child, Command};
use twincell_contract::emulator::Emulator;
use twincell_local::stream_mapping::{MappingConfig, MappingStats};

fn lambda(path: &str, name: &str, emulator: &Emulator) -> anyhow::Result<Child> {
    twincell_local::gateway::function_process(Command::new(path), name, emulator)
        .with_context(|| format!("starting {path}"))
}

/// The AWS cell on one machine: API Gateway in front of the `api`
/// Lambda, and the stream's event source mapping in front of the
/// `replicator` Lambda, each a real process under its own Lambda Runtime
/// API emulator.
#[derive(Debug, Parser)]
#[command(name = "twincell-aws-local")]
struct Args {
    /// The `api` binary.
    #[arg(long, value_name = "PATH")]
    api: String,
    /// The `replicator` binary; without it, no stream is read.
    #[arg(long, value_name = "PATH")]
    replicator: Option<String>,
    /// The loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = twincell_local::loopback)]
    listen: SocketAddr,
    /// The table whose stream the replicator reads.
    #[arg(long, env = "TWINCELL_DYNAMODB_TABLE")]
    table: Option<String>,
    /// Records per replicator invocation (the mapping's BatchSize).
    #[arg(long, default_value_t = 100)]
    batch_size: i32,
    /// Retries of a failing batch (the mapping's MaximumRetryAttempts).
    #[arg(long, default_value_t = 20)]
    max_retries: u32,
    /// How often the stream is polled, in milliseconds.
    #[arg(long, default_value_t = 250)]
    stream_poll_ms: u64,
    /// The wait before a failed batch is retried, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    retry_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    twincell_http::init_logs(twincell_http::LogTo::Stderr);
    let mut mapping = MappingConfig {
        table: String::new(),
        batch_size: args.batch_size,
        max_retries: args.max_retries,
        poll: Duration::from_millis(args.stream_poll_ms),
        retry_backoff: Duration::from_millis(args.retry_ms),
        timeout: Duration::from_secs(60),
    };
    let (api, replicator, table, addr) = (args.api, args.replicator, args.table, args.listen);

    // The URL line comes first on stdout, before the functions (which share
    // this stdout) can log anything.
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let address = listener.local_addr()?;
    #[allow(clippy::print_stdout)]
    {
        println!("twincell aws cell listening on http://{address}");
    }
    let api_emulator = Emulator::start().await?;
    let mut api_process = lambda(&api, "twincell-api", &api_emulator)?;
    let mut replicator_process = None;
    let stats = Arc::new(MappingStats::default());
    if let Some(path) = replicator {
        mapping.table = table
            .clone()
            .context("--table or TWINCELL_DYNAMODB_TABLE names the table whose stream is read")?;
        let emulator = Emulator::start().await?;
        replicator_process = Some(lambda(&path, "twincell-replicator", &emulator)?);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            if let Err(e) = twincell_local::stream_mapping::run(mapping, emulator, stats).await {
                tracing::error!(error = %e, "the event source mapping stopped");
                std::process::exit(1);
            }
        });
    }
    let server = axum::serve(listener, twincell_local::gateway::router(api_emulator));
    let replicator_exit = async {
        match replicator_process.as_mut() {
            Some(p) => p.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = server => r.context("serving")?,
        status = api_process.wait() => bail!("the api function exited: {status:?}"),
        status = replicator_exit => bail!("the replicator function exited: {status:?}"),
    }
    Ok(())
}
