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

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use twincell_contract::emulator::Emulator;
use twincell_local::stream_mapping::{MappingConfig, MappingStats};

fn lambda(path: &str, name: &str, emulator: &Emulator) -> anyhow::Result<Child> {
    Command::new(path)
        .env("AWS_LAMBDA_RUNTIME_API", emulator.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {path}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut listen = "127.0.0.1:0".to_owned();
    let (mut api, mut replicator, mut table) =
        (None, None, std::env::var("TWINCELL_DYNAMODB_TABLE").ok());
    let mut mapping = MappingConfig {
        table: String::new(),
        batch_size: 100,
        max_retries: 20,
        poll: Duration::from_millis(250),
        retry_backoff: Duration::from_millis(1_000),
        timeout: Duration::from_secs(60),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().with_context(|| format!("{flag} {v:?}"));
        match flag.as_str() {
            "--listen" => listen = value,
            "--api" => api = Some(value),
            "--replicator" => replicator = Some(value),
            "--table" => table = Some(value),
            "--batch-size" => mapping.batch_size = i32::try_from(number(&value)?)?,
            "--max-retries" => mapping.max_retries = u32::try_from(number(&value)?)?,
            "--stream-poll-ms" => mapping.poll = Duration::from_millis(number(&value)?),
            "--retry-ms" => mapping.retry_backoff = Duration::from_millis(number(&value)?),
            other => bail!("unknown option {other}"),
        }
    }
    let api = api.context("--api PATH is required")?;
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?}"))?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "--listen must be a loopback address"
    );

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
