//! `twincell-local`: both cells, replication between them and a failover
//! front door on this machine, and the commands that break them while they
//! run (see `twincell_local::supervisor`).
//!
//! ```text
//! twincell-local [--data-dir .twincell] [--port 8080] [--routing priority|weighted|performance]
//!                [--priority aws,azure] [--weights aws=900,azure=100] [--ttl 0]
//!                [--probe-interval-ms 1000] [--probe-timeout-ms 500] [--tolerated-failures 2]
//! twincell-local status|kill CELL|start CELL|store CELL down|up|latency CELL MS|disable CELL|enable CELL
//!                |weights aws=900,azure=100|cut [DIRECTION]|heal [DIRECTION]   [--port 8080]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use twincell_local::supervisor::{self, CELLS, Options};
use twincell_local::traffic_manager::{ProbeSettings, RoutingMethod};

/// Both twincell cells, replication between them and a failover front door
/// on this machine. Without a command it runs the matrix; the commands act
/// on a running one.
#[derive(Debug, Parser)]
#[command(name = "twincell-local", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    up: Up,
    #[command(subcommand)]
    command: Option<Action>,
}

/// How the matrix runs.
#[derive(Debug, clap::Args)]
struct Up {
    /// Where both cells' files, the keys, the Event Grid spool and the logs
    /// are kept; a matrix started again on it resumes.
    #[arg(long, default_value = ".twincell", value_name = "DIR")]
    data_dir: PathBuf,
    /// The front door's port on 127.0.0.1 (0: any free one). The AWS cell
    /// listens on the next port and the Azure cell on the one after.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Traffic Manager's routing method.
    #[arg(long, value_enum, default_value_t = Routing::Priority)]
    routing: Routing,
    /// The cells in priority order (priority routing).
    #[arg(long, default_value = "aws,azure", value_parser = priority)]
    priority: Priority,
    /// Each cell's weight, 1–1000 (weighted routing), e.g. aws=900,azure=100.
    #[arg(long, value_parser = weights, default_value = "aws=1,azure=1")]
    weights: BTreeMap<String, u32>,
    /// Seconds a client keeps the cell it was given (the DNS TTL; 30 to see
    /// what production users would see).
    #[arg(long, default_value_t = 0)]
    ttl: u64,
    /// Milliseconds between two probes of a cell's /health.
    #[arg(long, default_value_t = 1_000)]
    probe_interval_ms: u64,
    /// Milliseconds a probe waits for an answer.
    #[arg(long, default_value_t = 500)]
    probe_timeout_ms: u64,
    /// Consecutive failed probes tolerated before a cell is Degraded.
    #[arg(long, default_value_t = ProbeSettings::LOCAL.tolerated)]
    tolerated_failures: u32,
    /// Divides the Event Grid stand-in's retry intervals (1: Event Grid's
    /// own schedule, 10 s, 30 s, 1 min, 5 min …; 10 makes a restarted
    /// cell's backlog drain ten times sooner).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3600))]
    retry_divisor: u32,
    /// Per thousand events published, how many Event Grid delivers twice.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    duplicate_per_mille: u32,
    /// The longest random delay before Event Grid first delivers an event,
    /// in milliseconds (events then arrive out of order).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    max_delay_ms: u64,
    /// The log filter of the cells and of this process (logs go to
    /// DATA_DIR/logs/).
    #[arg(long, default_value = "info", value_name = "RUST_LOG")]
    log: String,
    /// No status line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Routing {
    Priority,
    Weighted,
    Performance,
}

fn cell(value: &str) -> Result<String, String> {
    if CELLS.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err("the cells are aws and azure".to_owned())
    }
}

/// Cells in priority order.
#[derive(Debug, Clone)]
struct Priority(Vec<String>);

fn priority(value: &str) -> Result<Priority, String> {
    let order: Vec<String> = value
        .split(',')
        .map(|c| cell(c.trim()))
        .collect::<Result<_, _>>()?;
    if order.len() == CELLS.len() && CELLS.iter().all(|c| order.iter().any(|o| o == c)) {
        Ok(Priority(order))
    } else {
        Err("name each cell once: aws,azure or azure,aws".to_owned())
    }
}

fn weights(value: &str) -> Result<BTreeMap<String, u32>, String> {
    let mut out = BTreeMap::new();
    for pair in value.split(',') {
        let (name, weight) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not CELL=WEIGHT"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| format!("{weight:?} is not a weight"))?;
        if !(1..=1000).contains(&weight) {
            return Err(format!("weight {weight} is outside 1 to 1000"));
        }
        out.insert(cell(name.trim())?, weight);
    }
    Ok(out)
}

/// The running matrix's front door.
#[derive(Debug, clap::Args)]
struct Target {
    /// The running matrix's front door port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Shows the running matrix's status as JSON.
    Status(Target),
    /// Kills every process of a cell with SIGKILL, as a crash would.
    Kill {
        #[arg(value_parser = cell)]
        cell: String,
        #[command(flatten)]
        target: Target,
    },
    /// Makes a cell's store unavailable (`down`: its file's write lock is
    /// held, so every operation waits 5 s and answers 503) or available
    /// again (`up`).
    Store {
        #[arg(value_parser = cell)]
        cell: String,
        #[arg(value_parser = ["down", "up"])]
        state: String,
        #[command(flatten)]
        target: Target,
    },
    /// Starts a killed cell again (on its file, where it stopped).
    Start {
        #[arg(value_parser = cell)]
        cell: String,
        #[command(flatten)]
        target: Target,
    },
    /// Adds latency before every request to a cell and every probe of it
    /// (0 removes it).
    Latency {
        #[arg(value_parser = cell)]
        cell: String,
        /// Milliseconds.
        ms: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Disables a cell's endpoint: the front door sends it nothing.
    Disable {
        #[arg(value_parser = cell)]
        cell: String,
        #[command(flatten)]
        target: Target,
    },
    /// Enables a disabled endpoint.
    Enable {
        #[arg(value_parser = cell)]
        cell: String,
        #[command(flatten)]
        target: Target,
    },
    /// Changes the weights (weighted routing), e.g. aws=900,azure=100.
    Weights {
        #[arg(value_parser = weights)]
        weights: BTreeMap<String, u32>,
        #[command(flatten)]
        target: Target,
    },
    /// Cuts replication: aws-to-azure, azure-to-aws, or both when none is
    /// named. Events wait at the Event Grid stand-in, retried on its
    /// schedule.
    Cut {
        #[arg(value_parser = ["aws-to-azure", "azure-to-aws"])]
        direction: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Heals what `cut` cut.
    Heal {
        #[arg(value_parser = ["aws-to-azure", "azure-to-aws"])]
        direction: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Runs the deterministic simulation of both cells (no process, no
    /// socket): seeds from --first, --seeds of them or for --seconds,
    /// printing seeds per second and every seed that is not clean.
    Simulate {
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        first: u64,
        /// How many seeds.
        #[arg(long, default_value_t = 1_000)]
        seeds: u64,
        /// Run for this long instead (seeds from --first on).
        #[arg(long)]
        seconds: Option<u64>,
        /// Threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// One seed, with what it found.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// A process of the matrix (started by the matrix itself).
    #[command(hide = true)]
    Child {
        #[arg(value_parser = ["aws", "aws-api", "azure"])]
        role: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The simulation runs its own runtime per seed, outside any other.
    if let Some(Action::Simulate {
        first,
        seeds,
        seconds,
        threads,
        seed,
    }) = cli.command
    {
        return match simulate(first, seeds, seconds, threads, seed) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("twincell-local: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("twincell-local: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            None => up(cli.up).await,
            Some(Action::Child { role }) => child(&role).await,
            Some(action) => act(action).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twincell-local: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This process's logs (the Event Grid stand-in's, the front door's) go to
/// `<data-dir>/logs/matrix.log`, leaving the terminal to the status line.
fn log_to_file(dir: &std::path::Path, filter: &str) -> anyhow::Result<()> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join("matrix.log"))?;
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}

async fn up(up: Up) -> anyhow::Result<()> {
    log_to_file(&up.data_dir, &up.log)?;
    let next = |n: u16| {
        if up.port == 0 {
            0
        } else {
            up.port.saturating_add(n)
        }
    };
    let probes = ProbeSettings {
        interval: Duration::from_millis(up.probe_interval_ms),
        timeout: Duration::from_millis(up.probe_timeout_ms),
        tolerated: up.tolerated_failures,
    }
    .check()
    .map_err(anyhow::Error::msg)?;
    let options = Options {
        data_dir: up.data_dir,
        port: up.port,
        cell_ports: [("aws".to_owned(), next(1)), ("azure".to_owned(), next(2))].into(),
        routing: match up.routing {
            Routing::Priority => RoutingMethod::Priority,
            Routing::Weighted => RoutingMethod::Weighted,
            Routing::Performance => RoutingMethod::Performance,
        },
        priority: up.priority.0,
        weights: up.weights,
        ttl: Duration::from_secs(up.ttl),
        probes,
        log: up.log,
        status_every: (!up.quiet).then_some(Duration::from_secs(1)),
        retry_divisor: up.retry_divisor,
        eventgrid_faults: twincell_local::eventgrid::Faults {
            duplicate_per_mille: up.duplicate_per_mille,
            lost_answer_per_mille: 0,
            max_delay: Duration::from_millis(up.max_delay_ms),
        },
        exe: std::env::current_exe()?,
    };
    supervisor::run(options, shutdown()).await
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

async fn child(role: &str) -> anyhow::Result<()> {
    supervisor::die_with_parent()?;
    match role {
        "azure" => twincell_azure::main(twincell_azure::Args::default()).await,
        "aws-api" => twincell_aws::api::main().await,
        _ => {
            twincell_http::init_logs(twincell_http::LogTo::Stderr);
            supervisor::aws_cell(&std::env::current_exe()?).await
        }
    }
}

fn simulate(
    first: u64,
    seeds: u64,
    seconds: Option<u64>,
    threads: usize,
    seed: Option<u64>,
) -> anyhow::Result<()> {
    use twincell_local::simulation::{self, Config};
    twincell_local::install_crypto();
    if let Some(seed) = seed {
        let report = simulation::run(&Config::new(seed))?;
        #[allow(clippy::print_stdout)]
        {
            println!("{report:#?}");
        }
        anyhow::ensure!(report.clean(), "seed {seed} is not clean");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut totals = simulation::Totals::default();
    let mut next = first;
    loop {
        // In slices, so that --seconds can stop between them.
        let slice = match seconds {
            Some(_) => 200,
            None => seeds.saturating_sub(totals.seeds).min(10_000),
        };
        if slice == 0 {
            break;
        }
        totals.merge(simulation::many(next, slice, threads, Config::new)?);
        next += slice;
        if seconds.is_some_and(|s| started.elapsed().as_secs() >= s) {
            break;
        }
    }
    let ms = started.elapsed().as_millis().max(1);
    #[allow(clippy::print_stdout)]
    {
        for report in &totals.not_clean {
            println!("seed {} is not clean: {:?}", report.seed, report.problems);
        }
        println!(
            "simulation: seeds {first}..{next}: {} in {}.{} s, {} seeds/s, {} operations ({} run late by a delayed cell), {} events delivered; lost {}, doubled {}, oversold {}, unanswered {}; apart: {} given up while both cells were down, {} units of reported shortage, {} units held for orders refused after an unanswered attempt (of {} reservations and write-offs refused after one); {} seeds not clean",
            totals.seeds,
            ms / 1_000,
            ms % 1_000 / 100,
            u128::from(totals.seeds) * 1_000 / ms,
            totals.operations,
            totals.ran_late,
            totals.delivered,
            totals.lost,
            totals.doubled,
            totals.oversold,
            totals.unanswered,
            totals.gave_up_both_down,
            totals.shortage,
            totals.held_though_refused,
            totals.uncertain_refusals,
            totals.not_clean.len()
        );
    }
    anyhow::ensure!(
        totals.not_clean.is_empty(),
        "{} seeds are not clean",
        totals.not_clean.len()
    );
    Ok(())
}

async fn act(action: Action) -> anyhow::Result<()> {
    use serde_json::json;
    let (port, method, path, body) = match action {
        Action::Status(t) => (t.port, "GET", "status".to_owned(), None),
        Action::Kill { cell, target } => (target.port, "POST", format!("cells/{cell}/kill"), None),
        Action::Start { cell, target } => {
            (target.port, "POST", format!("cells/{cell}/start"), None)
        }
        Action::Store {
            cell,
            state,
            target,
        } => (
            target.port,
            "POST",
            format!("cells/{cell}/store-{state}"),
            None,
        ),
        Action::Latency { cell, ms, target } => (
            target.port,
            "POST",
            format!("cells/{cell}/latency"),
            Some(json!({"ms": ms})),
        ),
        Action::Disable { cell, target } => {
            (target.port, "POST", format!("cells/{cell}/disable"), None)
        }
        Action::Enable { cell, target } => {
            (target.port, "POST", format!("cells/{cell}/enable"), None)
        }
        Action::Weights { weights, target } => (
            target.port,
            "POST",
            "weights".to_owned(),
            Some(json!(weights)),
        ),
        Action::Cut { direction, target } => (
            target.port,
            "POST",
            "replication/cut".to_owned(),
            direction.map(|d| json!({"direction": d})),
        ),
        Action::Heal { direction, target } => (
            target.port,
            "POST",
            "replication/heal".to_owned(),
            direction.map(|d| json!({"direction": d})),
        ),
        Action::Child { .. } | Action::Simulate { .. } => anyhow::bail!("not a command"),
    };
    twincell_local::install_crypto();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()?;
    let url = format!("http://127.0.0.1:{port}/_matrix/{path}");
    let request = if method == "GET" {
        client.get(&url)
    } else {
        client
            .post(&url)
            .body(body.map(|b| b.to_string()).unwrap_or_default())
    };
    let answer = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("no matrix answers at 127.0.0.1:{port}: {e}"))?;
    let status = answer.status();
    let text = answer.text().await?;
    let shown = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    #[allow(clippy::print_stdout)]
    {
        println!("{shown}");
    }
    anyhow::ensure!(status.is_success(), "the matrix answered {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        for args in [
            &["twincell-local", "--weights", "aws=0"][..],
            &["twincell-local", "--weights", "gcp=5"],
            &["twincell-local", "--priority", "aws,aws"],
            &["twincell-local", "kill", "gcp"],
            &["twincell-local", "cut", "up"],
        ] {
            let e = Cli::try_parse_from(args).map(|_| ()).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue
                ),
                "{args:?}: {e}"
            );
        }
        let ok = Cli::try_parse_from(["twincell-local", "--weights", "aws=900,azure=100"]);
        assert!(ok.is_ok_and(|c| c.up.weights.get("aws") == Some(&900)));
    }
}
