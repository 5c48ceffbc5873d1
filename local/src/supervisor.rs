//! The matrix as one program (`twincell-local`): both cells as real
//! processes, each on its own SQLite file, replicating through the Event
//! Grid stand-in, behind the front door, with the faults a person can
//! switch on while it runs.
//!
//! - **Cells.** The Azure cell is the `handler`'s run
//!   (`twincell_azure::main`); the AWS cell is API Gateway ([`gateway`])
//!   in front of the `api` function's run (`twincell_aws::api::main`) under
//!   a Lambda Runtime API emulator. This binary starts itself again for
//!   each (`twincell-local child …`), so `cargo run -p twincell-local`
//!   builds everything it runs. Each cell is a process group of its own,
//!   its store `TWINCELL_STORE=sqlite` on `<data-dir>/<cell>.sqlite`, its
//!   log `<data-dir>/logs/<cell>.log`.
//! - **Replication.** Each cell publishes its own events from its file's
//!   change feed to its topic on the Event Grid stand-in (run in this
//!   process, its undelivered events kept in `<data-dir>/eventgrid/`),
//!   whose subscription delivers them, signed by the origin, to the other
//!   cell's `/replication/events` with that cell's inbound key: the clouds'
//!   publish path, wire format, keys and receiver.
//! - **Keys** are made on the first run into `<data-dir>/keys.json` (mode
//!   0600) and handed to the cells in their environment, as the clouds'
//!   application settings are; they are never printed.
//! - **Front door** ([`FrontDoor`]) on `--port`, with the control routes
//!   under `/_matrix/` ([`control`]).
//! - **Exit.** Ctrl-C or SIGTERM stops every cell (SIGTERM to its group,
//!   SIGKILL after 5 s). Every child asks the kernel for SIGKILL when its
//!   parent dies (`PR_SET_PDEATHSIG`), so a matrix killed with SIGKILL
//!   leaves nothing running. The data stays on disk: a matrix started again
//!   on the same directory resumes from each file, each publisher's
//!   checkpoint and the stand-in's spool.
//!
//! [`gateway`]: crate::gateway

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use twincell_replication::signing::Signer;

use crate::eventgrid::{self, SubscriptionConfig, TopicConfig};
use crate::frontdoor::{Cell as DoorCell, FrontDoor};
use crate::traffic_manager::{ProbeSettings, RoutingMethod, TrafficManager};

/// The two cells, in the order they are shown.
pub const CELLS: [&str; 2] = ["aws", "azure"];

/// The variable a child reads its parent's process id from, to check that
/// the parent it asked the kernel to watch is still the one that started
/// it.
pub const PARENT_VARIABLE: &str = "TWINCELL_LOCAL_PARENT";

/// How long a cell may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the front door's port answers any request within.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopping cell gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How to run the matrix.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the files, keys, spool and logs are.
    pub data_dir: PathBuf,
    /// The front door's port (0: any free one).
    pub port: u16,
    /// Each cell's port (0: any free one, kept across its restarts).
    pub cell_ports: BTreeMap<String, u16>,
    /// Traffic Manager's routing method.
    pub routing: RoutingMethod,
    /// Cells in priority order (priority routing).
    pub priority: Vec<String>,
    /// Each cell's weight (weighted routing).
    pub weights: BTreeMap<String, u32>,
    /// How long a client keeps the cell it was given.
    pub ttl: Duration,
    /// Endpoint monitoring.
    pub probes: ProbeSettings,
    /// `RUST_LOG` of the cells.
    pub log: String,
    /// How often the status line is printed (`None`: never).
    pub status_every: Option<Duration>,
    /// Divides the Event Grid stand-in's retry intervals (1: Event
    /// Grid's own 10 s, 30 s, 1 min, 5 min …).
    pub retry_divisor: u32,
    /// Faults of the Event Grid stand-in: duplicated deliveries and random
    /// delays (which reorder events).
    pub eventgrid_faults: eventgrid::Faults,
    /// This program, started again for each cell.
    pub exe: PathBuf,
}

/// One cell's keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CellKeys {
    /// What the other cell's deliveries present (`TWINCELL_REPLICATION_KEY`).
    inbound: String,
    /// Its topic's access key (`TWINCELL_REPLICATION_TARGET_KEY`).
    topic: String,
    /// Its signing key (`TWINCELL_SIGNING_KEY`: `<kid>:<PKCS#8>`).
    signing: String,
}

fn random_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for a new key"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The keys in `<dir>/keys.json`, made (mode 0600) when absent.
fn keys(dir: &Path) -> anyhow::Result<BTreeMap<String, CellKeys>> {
    let path = dir.join("keys.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let keys: BTreeMap<String, CellKeys> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not the keys a matrix wrote", path.display()))?;
        if CELLS.iter().all(|c| keys.contains_key(*c)) {
            return Ok(keys);
        }
        bail!(
            "{} lacks a cell's keys; remove it to make new ones",
            path.display()
        );
    }
    let mut keys = BTreeMap::new();
    for cell in CELLS {
        let (_, signing) =
            Signer::generate_setting(&format!("{cell}-local")).map_err(anyhow::Error::msg)?;
        keys.insert(
            cell.to_owned(),
            CellKeys {
                inbound: random_key()?,
                topic: random_key()?,
                signing,
            },
        );
    }
    let text = serde_json::to_string_pretty(&keys)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(keys)
}

fn other(cell: &str) -> &'static str {
    if cell == "aws" { "azure" } else { "aws" }
}

/// The subscription that carries `from`'s events to the other cell.
fn direction(from: &str) -> String {
    format!("{from}-to-{}", other(from))
}

/// A free loopback port, for a cell that must come back on the same one.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Where a cell's process stands.
#[derive(Debug)]
enum Proc {
    Running(Child),
    /// Stopped on purpose (killed or stopped); started again on request.
    Down(&'static str),
    /// Ended by itself.
    Exited(String),
}

/// One cell: how to start it and its process.
#[derive(Debug)]
pub struct CellProcess {
    name: String,
    port: u16,
    env: Vec<(String, String)>,
    exe: PathBuf,
    log: PathBuf,
    proc: tokio::sync::Mutex<Proc>,
    starts: AtomicU32,
}

fn signal_group(child: &Child, signal: rustix::process::Signal) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // The child leads its group: the signal reaches the AWS cell's
        // function process too.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

impl CellProcess {
    /// Its base URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it, unless it runs, and waits until it answers.
    ///
    /// # Errors
    /// When it does not start or ends before answering (its log says why).
    pub async fn start(&self, client: &reqwest::Client) -> anyhow::Result<()> {
        let mut proc = self.proc.lock().await;
        if let Proc::Running(child) = &mut *proc
            && child.try_wait()?.is_none()
        {
            bail!("cell {} is running", self.name);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new(&self.exe);
        command
            .args(["child", &self.name])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(PARENT_VARIABLE, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own group: Ctrl-C in the terminal reaches this process
            // only, which stops the cells in order, and a kill reaches
            // every process of the cell.
            .process_group(0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting cell {}", self.name))?;
        self.starts.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                *proc = Proc::Exited(status.to_string());
                bail!(
                    "cell {} ended at start ({status}); its log is {}",
                    self.name,
                    self.log.display()
                );
            }
            let answer = client
                .get(format!("{}/health", self.url()))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if answer.is_ok() {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                signal_group(&child, rustix::process::Signal::KILL);
                let _ = child.wait().await;
                bail!(
                    "cell {} did not answer within {START_TIMEOUT:?}; its log is {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        *proc = Proc::Running(child);
        Ok(())
    }

    /// Kills it with SIGKILL (every process of the cell), as a crash would.
    ///
    /// # Errors
    /// When it is not running.
    pub async fn kill(&self) -> anyhow::Result<()> {
        let mut proc = self.proc.lock().await;
        let Proc::Running(child) = &mut *proc else {
            bail!("cell {} is not running", self.name);
        };
        signal_group(child, rustix::process::Signal::KILL);
        let _ = child.wait().await;
        *proc = Proc::Down("killed");
        Ok(())
    }

    /// Stops it: SIGTERM, then SIGKILL after 5 s.
    pub async fn stop(&self) {
        let mut proc = self.proc.lock().await;
        if let Proc::Running(child) = &mut *proc {
            signal_group(child, rustix::process::Signal::TERM);
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                signal_group(child, rustix::process::Signal::KILL);
                let _ = child.wait().await;
            }
            *proc = Proc::Down("stopped");
        }
    }

    /// `running`, `starting`, `killed`, `stopped` or `exited (…)`, with
    /// its pid when running; notices a process that ended by itself.
    fn state(&self) -> (String, Option<u32>) {
        // A start holds the lock until the cell answers.
        let Ok(mut proc) = self.proc.try_lock() else {
            return ("starting".to_owned(), None);
        };
        if let Proc::Running(child) = &mut *proc {
            match child.try_wait() {
                Ok(None) => return ("running".to_owned(), child.id()),
                Ok(Some(status)) => *proc = Proc::Exited(status.to_string()),
                Err(e) => *proc = Proc::Exited(e.to_string()),
            }
        }
        match &*proc {
            Proc::Running(child) => ("running".to_owned(), child.id()),
            Proc::Down(why) => ((*why).to_owned(), None),
            Proc::Exited(why) => (format!("exited ({why})"), None),
        }
    }
}

/// A running matrix.
pub struct Matrix {
    cells: BTreeMap<String, Arc<CellProcess>>,
    door: FrontDoor,
    eventgrid: String,
    data_dir: PathBuf,
    client: reqwest::Client,
    stores: tokio::sync::Mutex<BTreeMap<String, twincell_sqlite::SqliteEventStore>>,
    /// The cells whose file this process holds locked.
    locks: std::sync::Mutex<BTreeMap<String, twincell_sqlite::WriteLock>>,
    /// The front door's URL.
    pub url: String,
}

impl std::fmt::Debug for Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matrix")
            .field("url", &self.url)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

async fn serve(listener: tokio::net::TcpListener, router: Router) {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "a server of the matrix stopped");
    }
}

impl Matrix {
    /// Starts everything: the stand-in, both cells (waiting until each
    /// answers), the front door and its probes.
    ///
    /// # Errors
    /// A data directory that can't be used, a port taken, a cell that does
    /// not start.
    pub async fn start(options: &Options) -> anyhow::Result<Arc<Self>> {
        crate::install_crypto();
        std::fs::create_dir_all(options.data_dir.join("logs"))
            .with_context(|| format!("creating {}", options.data_dir.display()))?;
        std::fs::create_dir_all(options.data_dir.join("eventgrid"))?;
        let data_dir = options.data_dir.canonicalize()?;
        let keys = keys(&data_dir)?;
        let mut ports = BTreeMap::new();
        for cell in CELLS {
            let port = match options.cell_ports.get(cell).copied().unwrap_or(0) {
                0 => free_port()?,
                p => p,
            };
            ports.insert(cell, port);
        }
        let url_of =
            |cell: &str| format!("http://127.0.0.1:{}", ports.get(cell).copied().unwrap_or(0));

        // The Event Grid stand-in: one topic per cell, one subscription
        // per direction.
        let key_of = |cell: &str| keys.get(cell).cloned().context("a cell without keys");
        let mut config = eventgrid::Config {
            spool_dir: Some(data_dir.join("eventgrid")),
            time_divisor: options.retry_divisor.max(1),
            faults: options.eventgrid_faults.clone(),
            ..eventgrid::Config::default()
        };
        for cell in CELLS {
            config.topics.push(TopicConfig {
                name: format!("{cell}-events"),
                key: key_of(cell)?.topic,
            });
            config.subscriptions.push(SubscriptionConfig {
                name: direction(cell),
                topic: format!("{cell}-events"),
                endpoint: format!("{}/replication/events", url_of(other(cell))),
                delivery_header: Some((
                    "x-twincell-replication-key".to_owned(),
                    key_of(other(cell))?.inbound,
                )),
                max_events_per_batch: 10,
            });
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let eventgrid_url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(serve(listener, eventgrid::start(config)?));

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut cells = BTreeMap::new();
        for cell in CELLS {
            let own = key_of(cell)?;
            let peer_signer = Signer::from_setting(&key_of(other(cell))?.signing)
                .map_err(|e| anyhow::anyhow!("the keys of cell {}: {e}", other(cell)))?;
            let port = ports.get(cell).copied().unwrap_or(0);
            let env: Vec<(String, String)> = [
                ("TWINCELL_CELL", cell.to_owned()),
                ("TWINCELL_PEERS", other(cell).to_owned()),
                // No identity provider locally: the API is open on
                // purpose, as `--local` has it.
                ("TWINCELL_AUTH", "disabled".to_owned()),
                ("TWINCELL_STORE", "sqlite".to_owned()),
                (
                    "TWINCELL_SQLITE_PATH",
                    data_dir
                        .join(format!("{cell}.sqlite"))
                        .display()
                        .to_string(),
                ),
                ("TWINCELL_REPLICATION_KEY", own.inbound),
                (
                    "TWINCELL_REPLICATION_TARGET",
                    format!("{eventgrid_url}/topics/{cell}-events"),
                ),
                ("TWINCELL_REPLICATION_TARGET_KIND", "eventgrid".to_owned()),
                ("TWINCELL_REPLICATION_TARGET_KEY", own.topic),
                ("TWINCELL_SIGNING_KEY", own.signing),
                (
                    "TWINCELL_ORIGIN_KEYS",
                    peer_signer.origin_entry(other(cell)),
                ),
                ("TWINCELL_LOCAL_PORT", port.to_string()),
                ("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string()),
                ("RUST_LOG", options.log.clone()),
                // A matrix on a laptop is for watching: its cells write
                // their metrics whatever the shell's TWINCELL_METRICS says.
                ("TWINCELL_METRICS", "emf".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            cells.insert(
                cell.to_owned(),
                Arc::new(CellProcess {
                    name: cell.to_owned(),
                    port,
                    env,
                    exe: options.exe.clone(),
                    log: data_dir.join("logs").join(format!("{cell}.log")),
                    proc: tokio::sync::Mutex::new(Proc::Down("not started")),
                    starts: AtomicU32::new(0),
                }),
            );
        }
        let starting = cells.values().map(|c| {
            let client = client.clone();
            async move { c.start(&client).await }
        });
        for started in futures_util::future::join_all(starting).await {
            if let Err(e) = started {
                for c in cells.values() {
                    c.stop().await;
                }
                return Err(e);
            }
        }

        let endpoints: Vec<(&str, u32, u32)> = CELLS
            .iter()
            .map(|c| {
                let priority = options
                    .priority
                    .iter()
                    .position(|p| p == c)
                    .map_or(u32::MAX, |i| u32::try_from(i + 1).unwrap_or(u32::MAX));
                (*c, priority, options.weights.get(*c).copied().unwrap_or(1))
            })
            .collect();
        let manager = TrafficManager::new(options.probes, options.routing, &endpoints)?;
        let door_cells: Vec<DoorCell> = CELLS
            .iter()
            .map(|c| DoorCell {
                name: (*c).to_owned(),
                url: url_of(c),
            })
            .collect();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs());
        let door = FrontDoor::new(&door_cells, manager, options.ttl, seed)?;
        door.probe_once().await;
        tokio::spawn(door.clone().probe_forever());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .with_context(|| format!("the front door's port 127.0.0.1:{}", options.port))?;
        let url = format!("http://{}", listener.local_addr()?);
        let matrix = Arc::new(Self {
            cells,
            door: door.clone(),
            eventgrid: eventgrid_url,
            data_dir,
            client,
            stores: tokio::sync::Mutex::new(BTreeMap::new()),
            locks: std::sync::Mutex::new(BTreeMap::new()),
            url,
        });
        // Every request answered within a bound: a forward is two
        // attempts of 30 s at most, a cell's start 60 s.
        let app = door.router_with(control(&matrix)).layer(
            tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            ),
        );
        tokio::spawn(serve(listener, app));
        Ok(matrix)
    }

    /// The lines a person starting it reads first.
    #[must_use]
    pub fn banner(&self) -> String {
        let mut lines = vec![
            format!("twincell matrix on {}", self.data_dir.display()),
            format!("  front door   {}", self.url),
        ];
        for (name, cell) in &self.cells {
            lines.push(format!("  {name:<5} cell   {}", cell.url()));
        }
        lines.push(format!(
            "  cell logs    {}",
            self.data_dir.join("logs").display()
        ));
        lines.push(
            "Ctrl-C stops it; `twincell-local --help` lists the ways to break it while it runs."
                .to_owned(),
        );
        lines.join("\n")
    }

    /// Stops every cell.
    pub async fn stop(&self) {
        futures_util::future::join_all(self.cells.values().map(|c| c.stop())).await;
    }

    fn cell(&self, name: &str) -> Result<&Arc<CellProcess>, Refusal> {
        self.cells.get(name).ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("no cell {name}; the cells are aws and azure"),
            )
        })
    }

    fn locks(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, twincell_sqlite::WriteLock>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `cell`'s store unavailable (its file's write lock held here)
    /// or available again.
    async fn set_store(&self, cell: &str, available: bool) -> Result<(), String> {
        if available {
            return match self.locks().remove(cell) {
                Some(_) => Ok(()),
                None => Err(format!("the store of cell {cell} is not down")),
            };
        }
        if self.locks().contains_key(cell) {
            return Err(format!("the store of cell {cell} is down already"));
        }
        let path = self.data_dir.join(format!("{cell}.sqlite"));
        let lock = tokio::task::spawn_blocking(move || twincell_sqlite::WriteLock::take(path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.locks().insert(cell.to_owned(), lock);
        Ok(())
    }

    /// The publisher's backlog in `cell`'s file (`None` when unreadable).
    async fn unpublished(&self, cell: &str) -> Option<u64> {
        if self.locks().contains_key(cell) {
            return None;
        }
        let mut stores = self.stores.lock().await;
        if !stores.contains_key(cell) {
            let store = twincell_sqlite::SqliteEventStore::open(
                self.data_dir.join(format!("{cell}.sqlite")),
            )
            .await
            .ok()?;
            stores.insert(cell.to_owned(), store);
        }
        let origin = twincell_core::CellId::new(cell).ok()?;
        stores
            .get(cell)?
            .backlog(twincell_sqlite::PUBLISHER_READER, &origin)
            .await
            .ok()
    }

    /// What `GET /_matrix/status` answers.
    pub async fn status(&self) -> Value {
        let stand_in: Value = match self
            .client
            .get(format!("{}/control/stats", self.eventgrid))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let latencies = self.door.latencies();
        let mut cells = serde_json::Map::new();
        let mut replication = serde_json::Map::new();
        for (name, cell) in &self.cells {
            let (process, pid) = cell.state();
            cells.insert(
                name.clone(),
                json!({
                    "url": cell.url(),
                    "process": process,
                    "pid": pid,
                    "starts": cell.starts.load(Ordering::Relaxed),
                    "store": if self.locks().contains_key(name) { "down" } else { "up" },
                    "added_latency_ms": latencies.get(name).map(Duration::as_millis),
                }),
            );
            let way = direction(name);
            let sub = stand_in
                .get("subscriptions")
                .and_then(|s| s.get(&way))
                .cloned()
                .unwrap_or(Value::Null);
            let unpublished = self.unpublished(name).await;
            let undelivered = sub.get("pending").and_then(Value::as_u64);
            replication.insert(
                way,
                json!({
                    "unpublished": unpublished,
                    "undelivered": undelivered,
                    "backlog": unpublished.zip(undelivered).map(|(a, b)| a + b),
                    "delivered": sub.get("delivered"),
                    "lag_ms": sub.get("lag_ms"),
                    "dead_letters": sub.get("dead_lettered"),
                    "cut": sub.get("cut"),
                }),
            );
        }
        json!({
            "front_door": self.door.status(),
            "cells": cells,
            "replication": replication,
        })
    }

    /// The status in one line.
    pub async fn status_line(&self) -> String {
        line(&self.status().await)
    }
}

/// `status` in one line: each cell's process, monitor state and requests
/// routed; each direction's backlog, lag and dead letters.
#[must_use]
pub fn line(status: &Value) -> String {
    let mut parts = Vec::new();
    let at = |v: &Value, pointer: &str, missing: &str| {
        v.pointer(pointer).filter(|v| !v.is_null()).map_or_else(
            || missing.to_owned(),
            |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned),
        )
    };
    let endpoints = status
        .pointer("/front_door/endpoints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for e in &endpoints {
        let name = at(e, "/cell", "?");
        let store = if at(status, &format!("/cells/{name}/store"), "up") == "down" {
            " STORE DOWN"
        } else {
            ""
        };
        parts.push(format!(
            "{name} {}{store} {}, {} req",
            at(status, &format!("/cells/{name}/process"), "?"),
            at(e, "/status", "?"),
            at(e, "/routed", "0"),
        ));
    }
    if let Some(ways) = status.get("replication").and_then(Value::as_object) {
        for (way, r) in ways {
            parts.push(format!(
                "{} backlog {}{} lag p50 {} p99 {} ms, dead {}",
                way.replace("-to-", "→"),
                at(r, "/backlog", "?"),
                if r.get("cut") == Some(&Value::Bool(true)) {
                    " CUT"
                } else {
                    ""
                },
                at(r, "/lag_ms/p50", "-"),
                at(r, "/lag_ms/p99", "-"),
                at(r, "/dead_letters", "?"),
            ));
        }
    }
    parts.join(" | ")
}

/// A control request refused: its status and why.
type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        json!({
            "type": "urn:twincell:problem:matrix-control",
            "title": "Matrix control",
            "status": status.as_u16(),
            "detail": detail,
        })
        .to_string(),
    )
        .into_response()
}

async fn done(matrix: &Matrix) -> Response {
    axum::Json(matrix.status().await).into_response()
}

type M = State<Arc<Matrix>>;

/// A JSON body of the control routes; an empty body is `T::default()`.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Refusal> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

/// The most latency a cell may be given (the front door's attempts time
/// out after 30 s anyway).
const MAX_ADDED_LATENCY_MS: u64 = 60_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Latency {
    ms: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Direction {
    /// `aws-to-azure` or `azure-to-aws`; none: both.
    direction: Option<String>,
}

/// The control routes, on the front door's port (loopback only; they
/// take no key, as the stand-ins' control APIs):
///
/// | route | does |
/// |---|---|
/// | `GET /_matrix/status` | the status as JSON |
/// | `POST /_matrix/cells/{cell}/kill` | SIGKILL to every process of the cell |
/// | `POST /_matrix/cells/{cell}/start` | starts a killed cell again |
/// | `POST /_matrix/cells/{cell}/store-down`, `…/store-up` | holds the cell's file's write lock (every store operation waits 5 s and answers unavailable, `/health` 503), or lets go |
/// | `POST /_matrix/cells/{cell}/latency` `{"ms": 300}` | latency before each request and probe (0 removes it) |
/// | `POST /_matrix/cells/{cell}/disable`, `…/enable` | the endpoint's Traffic Manager status |
/// | `POST /_matrix/weights` `{"aws": 900, "azure": 100}` | weights, 1–1000 |
/// | `POST /_matrix/replication/cut`, `…/heal` `{"direction": "aws-to-azure"}` | one direction, or both without a body |
pub fn control(matrix: &Arc<Matrix>) -> Router {
    Router::new()
        .route(
            "/_matrix/status",
            axum::routing::get(|State(m): M| async move { done(&m).await }),
        )
        .route(
            "/_matrix/cells/{cell}/{action}",
            axum::routing::post(cell_action),
        )
        .route("/_matrix/weights", axum::routing::post(weights))
        .route(
            "/_matrix/replication/{action}",
            axum::routing::post(replication),
        )
        .with_state(Arc::clone(matrix))
}

async fn cell_action(
    State(m): M,
    UrlPath((name, action)): UrlPath<(String, String)>,
    bytes: axum::body::Bytes,
) -> Response {
    let cell = match m.cell(&name) {
        Ok(c) => Arc::clone(c),
        Err((status, why)) => return refuse(status, &why),
    };
    let outcome = match action.as_str() {
        "kill" => cell.kill().await.map_err(|e| e.to_string()),
        "start" => cell.start(&m.client).await.map_err(|e| format!("{e:#}")),
        "store-down" | "store-up" => m.set_store(&name, action == "store-up").await,
        "latency" => match body::<Latency>(&bytes) {
            Ok(l) if l.ms > MAX_ADDED_LATENCY_MS => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    &format!("at most {MAX_ADDED_LATENCY_MS} ms"),
                );
            }
            Ok(l) => m.door.set_latency(&name, Duration::from_millis(l.ms)),
            Err((status, why)) => return refuse(status, &why),
        },
        "disable" | "enable" => m
            .door
            .manager()
            .set_enabled(&name, action == "enable")
            .map_err(|e| e.to_string()),
        _ => {
            return refuse(
                StatusCode::NOT_FOUND,
                "a cell's actions are kill, start, store-down, store-up, latency, disable and enable",
            );
        }
    };
    match outcome {
        Ok(()) => done(&m).await,
        Err(e) => refuse(StatusCode::CONFLICT, &e),
    }
}

async fn weights(State(m): M, bytes: axum::body::Bytes) -> Response {
    let asked: BTreeMap<String, u32> = match body(&bytes) {
        Ok(w) => w,
        Err((status, why)) => return refuse(status, &why),
    };
    if asked.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "name a weight: {\"aws\": 900}");
    }
    {
        let mut manager = m.door.manager();
        // Checked whole before any is set.
        let mut checked = manager.clone();
        for (cell, weight) in &asked {
            if let Err(e) = checked.set_weight(cell, *weight) {
                return refuse(StatusCode::BAD_REQUEST, &e.to_string());
            }
        }
        *manager = checked;
    }
    done(&m).await
}

async fn replication(
    State(m): M,
    UrlPath(action): UrlPath<String>,
    bytes: axum::body::Bytes,
) -> Response {
    if action != "cut" && action != "heal" {
        return refuse(
            StatusCode::NOT_FOUND,
            "replication's actions are cut and heal",
        );
    }
    let asked: Direction = match body(&bytes) {
        Ok(d) => d,
        Err((status, why)) => return refuse(status, &why),
    };
    let ways: Vec<String> = match asked.direction {
        None => CELLS.iter().map(|c| direction(c)).collect(),
        Some(d) if CELLS.iter().any(|c| direction(c) == d) => vec![d],
        Some(d) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("no direction {d}; the directions are aws-to-azure and azure-to-aws"),
            );
        }
    };
    for way in ways {
        let answer = m
            .client
            .post(format!("{}/control/{action}", m.eventgrid))
            .body(json!({"subscription": way}).to_string())
            .send()
            .await;
        if !answer.is_ok_and(|a| a.status().is_success()) {
            return refuse(
                StatusCode::BAD_GATEWAY,
                "the Event Grid stand-in did not take it",
            );
        }
    }
    done(&m).await
}

/// Runs the matrix until `shutdown` resolves, printing the banner and,
/// every `status_every`, the status line; then stops every cell.
///
/// # Errors
/// As [`Matrix::start`].
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let matrix = Matrix::start(&options).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", matrix.banner());
    }
    let status = {
        let matrix = Arc::clone(&matrix);
        async move {
            let Some(every) = options.status_every else {
                return std::future::pending().await;
            };
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let line = matrix.status_line().await;
                #[allow(clippy::print_stdout)]
                {
                    println!("{line}");
                }
            }
        }
    };
    tokio::select! {
        () = shutdown => {},
        () = status => {},
    }
    matrix.stop().await;
    Ok(())
}

/// What a child process does first: asks the kernel for SIGKILL when its
/// parent dies, then checks that the parent is still the one that started
/// it (it may have died before the request was made). Where the kernel
/// has no such request (not Linux), a thread ends the process once its
/// parent is gone.
///
/// # Errors
/// When the parent is gone already.
pub fn die_with_parent() -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        let expected = std::env::var(PARENT_VARIABLE)
            .ok()
            .and_then(|p| p.parse::<i32>().ok());
        let parent = rustix::process::getppid().map(rustix::process::Pid::as_raw_nonzero);
        if let Some(expected) = expected
            && parent.map(std::num::NonZeroI32::get) != Some(expected)
        {
            bail!("the matrix that started this cell is gone");
        }
    }
    // Elsewhere no such request exists: a thread watches for the parent
    // to change (an orphan is adopted by another process) once a second.
    #[cfg(not(target_os = "linux"))]
    {
        let parent = rustix::process::getppid();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if rustix::process::getppid() != parent {
                    std::process::exit(1);
                }
            }
        });
    }
    Ok(())
}

/// The AWS cell's process: API Gateway on `TWINCELL_LOCAL_PORT` in front of
/// this program started again as the `api` function (`child aws-api`)
/// under a Lambda Runtime API emulator. Ends when the function ends.
///
/// # Errors
/// A port that can't be bound, a function that does not start or ends.
pub async fn aws_cell(exe: &Path) -> anyhow::Result<()> {
    let port: u16 = std::env::var("TWINCELL_LOCAL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .context("TWINCELL_LOCAL_PORT names the gateway's port")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let emulator = twincell_contract::emulator::Emulator::start().await?;
    let mut function = Command::new(exe);
    function
        .args(["child", "aws-api"])
        .env(PARENT_VARIABLE, std::process::id().to_string());
    let mut function = crate::gateway::function_process(function, "twincell-api", &emulator)
        .context("starting the api function")?;
    tokio::select! {
        r = axum::serve(listener, crate::gateway::router(emulator)) => r.context("serving")?,
        status = function.wait() => bail!("the api function ended: {status:?}"),
    }
    Ok(())
}
