//! Where cases run. A [`Target`] hands out a fresh [`Session`] per case:
//! a new process for the local binaries (so state and sequential ids start
//! over), the shared deployment for a URL.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::case::{Answer, HttpRequest};
use crate::emulator::{Emulator, Outcome};
use crate::lambda_events::{self, Shape};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The instant every local target's frozen clock shows, so bodies compare
/// byte for byte.
pub const FIXED_CLOCK_MS: i64 = 1_795_320_745_007;

/// The replication key every local target runs with (bound to
/// `{{replication_key}}` in cases), so the `/replication/*` routes answer
/// alike everywhere.
pub const REPLICATION_KEY: &str = "contract-replication-key-0123456789abcdef";

/// The signing key of every local target's peer, new for the run: each
/// target accepts replicated events of its peer only signed by it
/// ([`origin_keys`]), as a deployed cell does.
pub static PEER_SIGNER: std::sync::LazyLock<Option<twincell_replication::signing::Signer>> =
    std::sync::LazyLock::new(|| {
        twincell_replication::signing::Signer::generate("parity-peer")
            .ok()
            .map(|(signer, _)| signer)
    });

/// `TWINCELL_ORIGIN_KEYS` of a local target whose peer is `peer`: the
/// public key of [`PEER_SIGNER`].
///
/// # Errors
/// When the system gave no randomness for the key.
pub fn origin_keys(peer: &str) -> Result<String, String> {
    let signer = PEER_SIGNER
        .as_ref()
        .ok_or("no randomness for the peer's signing key")?;
    Ok(format!(
        "{peer}/{}={}",
        signer.key_id(),
        signer.public_key_base64()
    ))
}

/// Mints the token a case names (`{{token.<name>}}`), when this run can.
pub type Mint = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Bearer tokens for a target whose cell checks them.
#[derive(Clone)]
pub struct TargetAuth {
    /// The `TWINCELL_AUTH_*` settings a local cell process runs with
    /// (empty for a deployed cell).
    pub env: Vec<(String, String)>,
    /// The token named `name`, minted when asked: [`DEFAULT_TOKEN`] is sent
    /// on every API request that sets no `authorization` itself; the others
    /// are named in cases.
    pub mint: Mint,
}

impl std::fmt::Debug for TargetAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("TargetAuth").field("env", &names).finish()
    }
}

impl TargetAuth {
    /// A deployed cell's auth: one token granting every scope, and no
    /// other (the cases naming minted tokens do not run).
    #[must_use]
    pub fn bearer(token: String) -> Self {
        Self {
            env: Vec::new(),
            mint: std::sync::Arc::new(move |name| (name == DEFAULT_TOKEN).then(|| token.clone())),
        }
    }
}

/// The token sent on every API request of a case that sets no
/// `authorization` header itself: one granting every scope.
pub const DEFAULT_TOKEN: &str = "all";

/// Somewhere cases run.
pub trait Target: Send + Sync {
    /// The column name in reports.
    fn name(&self) -> &str;
    /// The id of the cell this target is (bound to `{{cell}}`).
    fn cell(&self) -> &str;
    /// The other cell (bound to `{{peer}}`).
    fn peer(&self) -> &str;
    /// Whether its clock and ids are fixed, so answers compare byte for byte.
    fn deterministic(&self) -> bool;
    /// The cell's replication key, when the run knows it (bound to
    /// `{{replication_key}}`; cases using it need it).
    fn replication_key(&self) -> Option<&str> {
        None
    }
    /// How the target's cell checks bearer tokens; `None` when it does
    /// not (`TWINCELL_AUTH=disabled`), and the cases about tokens do not
    /// run on it.
    fn auth(&self) -> Option<&TargetAuth> {
        None
    }
    /// The signing key of the target's peer, when the run holds it: the
    /// runner signs the well-formed events a case delivers with it, as the
    /// peer would, since the cell applies only signed events. `None` (a
    /// deployed cell): events go as the case wrote them.
    fn peer_signer(&self) -> Option<&twincell_replication::signing::Signer> {
        None
    }
    /// A fresh session for one case.
    fn session(&self) -> BoxFuture<'_, Result<Box<dyn Session>, String>>;
}

/// One case's connection to a target.
pub trait Session: Send {
    /// Sends one request.
    fn send<'a>(&'a mut self, request: &'a HttpRequest) -> BoxFuture<'a, Result<Answer, String>>;
}

/// Where the workspace's debug binaries are: `TWINCELL_CONTRACT_BIN_DIR`, or
/// `$CARGO_TARGET_DIR/debug`, or `target/debug` of the workspace.
#[must_use]
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TWINCELL_CONTRACT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    target.join("debug")
}

/// The command that builds the binaries the process targets run.
pub const BUILD_BINARIES: &str = "cargo build -p twincell-aws -p twincell-azure --bins --features twincell-aws/contract-mode,twincell-azure/contract-mode";

fn binary(name: &str) -> Result<PathBuf, String> {
    let path = bin_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it first with `{BUILD_BINARIES}`",
            path.display()
        ))
    }
}

/// Sends raw HTTP/1.1 to `address` and reads the whole answer: the exact
/// path and bytes of the request reach the server, unnormalized.
async fn raw_http(address: &str, request: &HttpRequest) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {address}\r\n",
        request.method, request.path
    );
    for (k, v) in &request.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        request.body.len()
    ));
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(&request.body)
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> Result<Answer, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header block in the answer")?;
    let (head, rest) = raw.split_at(split);
    let rest = rest.get(4..).unwrap_or_default();
    let head = std::str::from_utf8(head).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let (size_line, rest) = data.split_at(line_end);
        let size_text = std::str::from_utf8(size_line).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| e.to_string())?;
        data = rest.get(2..).ok_or("short chunk")?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("short chunk")?);
        data = data.get(size + 2..).ok_or("short chunk")?;
    }
}

/// Where a cell process keeps its events (`TWINCELL_STORE`).
#[derive(Debug, Clone)]
enum ProcessStore {
    Memory,
    /// A new SQLite file per session, in the system's temporary directory.
    Sqlite,
    /// The Cosmos DB SDK's in-process emulator (the `handler` only).
    CosmosEmulator,
    /// DynamoDB at an endpoint, and a fixed table (else one per session).
    DynamoDb(String, Option<String>),
}

impl ProcessStore {
    /// Sets the store's variables on a cell process.
    fn configure(&self, command: &mut Command) {
        match self {
            Self::Memory => {
                command.env("TWINCELL_STORE", "memory");
            }
            Self::Sqlite => {
                let path = std::env::temp_dir().join(format!("{}.sqlite", unique_name("parity")));
                command
                    .env("TWINCELL_STORE", "sqlite")
                    .env("TWINCELL_SQLITE_PATH", path);
            }
            Self::CosmosEmulator => {
                command
                    .env("TWINCELL_STORE", "cosmos")
                    .env("TWINCELL_COSMOS_EMULATOR", "true");
            }
            Self::DynamoDb(endpoint, table) => {
                let table = table.clone().unwrap_or_else(|| unique_name("parity"));
                command
                    .env("TWINCELL_STORE", "dynamodb")
                    .env("TWINCELL_DYNAMODB_TABLE", table)
                    .env("TWINCELL_DYNAMODB_CREATE_TABLE", "true")
                    .env("AWS_ENDPOINT_URL", endpoint)
                    .env("AWS_ACCESS_KEY_ID", "testing")
                    .env("AWS_SECRET_ACCESS_KEY", "testing");
            }
        }
    }
}

/// The Azure `handler` binary as a real process on a real socket.
pub struct AzureProcess {
    name: String,
    cell: String,
    peer: String,
    store: ProcessStore,
    auth: Option<TargetAuth>,
    /// Where its log lines go (`RUST_LOG=info`); none: no logs.
    log_file: Option<PathBuf>,
}

impl AzureProcess {
    /// A target running `handler` as `cell` with `peer`.
    #[must_use]
    pub fn new(cell: &str, peer: &str) -> Self {
        Self {
            name: "azure-handler".to_owned(),
            cell: cell.to_owned(),
            peer: peer.to_owned(),
            store: ProcessStore::Memory,
            auth: None,
            log_file: None,
        }
    }

    /// The same, checking bearer tokens as `auth` says.
    #[must_use]
    pub fn with_auth(mut self, auth: TargetAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The same, its log lines (at `info`, the router's at `debug`, so with
    /// a line per request) and its metrics (`TWINCELL_METRICS=emf`)
    /// appended to `path`.
    #[must_use]
    pub fn with_log_file(mut self, path: &Path) -> Self {
        self.log_file = Some(path.to_owned());
        self
    }

    /// The same, storing events in Cosmos DB through the SDK's in-process
    /// emulator (a new, empty account per session).
    #[must_use]
    pub fn on_cosmos_emulator(mut self) -> Self {
        self.name = format!("{}-cosmos", self.name);
        self.store = ProcessStore::CosmosEmulator;
        self
    }

    /// The same, storing events in a new SQLite file per session.
    #[must_use]
    pub fn on_sqlite(mut self) -> Self {
        self.name = format!("{}-sqlite", self.name);
        self.store = ProcessStore::Sqlite;
        self
    }
}

struct ProcessSession {
    address: String,
    _child: Child,
}

impl Session for ProcessSession {
    fn send<'a>(&'a mut self, request: &'a HttpRequest) -> BoxFuture<'a, Result<Answer, String>> {
        Box::pin(raw_http(&self.address, request))
    }
}

/// Sets `auth`'s settings on a cell process, or `TWINCELL_AUTH=disabled`.
fn auth_env(command: &mut Command, auth: Option<&TargetAuth>) {
    match auth {
        Some(auth) => {
            for (k, v) in &auth.env {
                command.env(k, v);
            }
        }
        None => {
            command.env("TWINCELL_AUTH", "disabled");
        }
    }
}

impl Target for AzureProcess {
    fn name(&self) -> &str {
        &self.name
    }
    fn auth(&self) -> Option<&TargetAuth> {
        self.auth.as_ref()
    }
    fn replication_key(&self) -> Option<&str> {
        Some(REPLICATION_KEY)
    }
    fn peer_signer(&self) -> Option<&twincell_replication::signing::Signer> {
        PEER_SIGNER.as_ref()
    }
    fn cell(&self) -> &str {
        &self.cell
    }
    fn peer(&self) -> &str {
        &self.peer
    }
    fn deterministic(&self) -> bool {
        true
    }
    fn session(&self) -> BoxFuture<'_, Result<Box<dyn Session>, String>> {
        Box::pin(async move {
            let mut command = Command::new(binary("handler")?);
            auth_env(&mut command, self.auth.as_ref());
            self.store.configure(&mut command);
            let mut child = command
                .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
                .env("TWINCELL_CELL", &self.cell)
                .env("TWINCELL_PEERS", &self.peer)
                .env("TWINCELL_FIXED_CLOCK_MS", FIXED_CLOCK_MS.to_string())
                .env("TWINCELL_REPLICATION_KEY", REPLICATION_KEY)
                .env("TWINCELL_ORIGIN_KEYS", origin_keys(&self.peer)?)
                .envs(observability_env(self.log_file.is_some()))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting handler: {e}"))?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
                .await
                .map_err(|_| "handler printed no URL within 10 s".to_owned())?
                .map_err(|e| e.to_string())?;
            let address = line
                .trim()
                .rsplit("http://")
                .next()
                .filter(|a| a.starts_with("127.0.0.1:"))
                .ok_or_else(|| format!("no URL in {line:?}"))?
                .to_owned();
            // The rest of stdout is its log: copied to the file, or read and
            // dropped (a closed pipe would fail its writes).
            let mut sink: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match &self.log_file {
                Some(path) => Box::new(
                    tokio::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .await
                        .map_err(|e| format!("{}: {e}", path.display()))?,
                ),
                None => Box::new(tokio::io::sink()),
            };
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stdout, &mut sink).await;
            });
            let session: Box<dyn Session> = Box::new(ProcessSession {
                address,
                _child: child,
            });
            Ok(session)
        })
    }
}

/// The Lambda `api` binary as a real process under the Runtime API emulator,
/// fed events of one shape.
pub struct LambdaProcess {
    name: String,
    shape: Shape,
    cell: String,
    peer: String,
    store: ProcessStore,
    auth: Option<TargetAuth>,
    /// Where its log lines go (`RUST_LOG=info`); none: no logs.
    log_file: Option<PathBuf>,
}

impl LambdaProcess {
    /// A target running `api` as `cell`, fed `shape` events.
    #[must_use]
    pub fn new(shape: Shape, cell: &str, peer: &str) -> Self {
        Self {
            name: format!("{}-process", shape.name()),
            shape,
            cell: cell.to_owned(),
            peer: peer.to_owned(),
            store: ProcessStore::Memory,
            auth: None,
            log_file: None,
        }
    }

    /// The same, checking bearer tokens as `auth` says.
    #[must_use]
    pub fn with_auth(mut self, auth: TargetAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The same, its log lines (at `info`, the router's at `debug`, so with
    /// a line per request) and its metrics (`TWINCELL_METRICS=emf`)
    /// appended to `path`.
    #[must_use]
    pub fn with_log_file(mut self, path: &Path) -> Self {
        self.log_file = Some(path.to_owned());
        self
    }

    /// The same, storing events in DynamoDB at `endpoint` (a local server
    /// such as moto): every session gets a new table, created by `api` at
    /// start.
    #[must_use]
    pub fn on_dynamodb(mut self, endpoint: &str) -> Self {
        self.name = format!("{}-dynamodb", self.name);
        self.store = ProcessStore::DynamoDb(endpoint.to_owned(), None);
        self
    }

    /// The same, storing events in a new SQLite file per session.
    #[must_use]
    pub fn on_sqlite(mut self) -> Self {
        self.name = format!("{}-sqlite", self.name);
        self.store = ProcessStore::Sqlite;
        self
    }

    /// [`on_dynamodb`](Self::on_dynamodb) with one named table for every
    /// session.
    #[must_use]
    pub fn on_dynamodb_table(mut self, endpoint: &str, table: &str) -> Self {
        self.name = format!("{}-dynamodb", self.name);
        self.store = ProcessStore::DynamoDb(endpoint.to_owned(), Some(table.to_owned()));
        self
    }
}

/// `RUST_LOG` and `TWINCELL_METRICS` of a process: a line per request and
/// its metrics when its log is kept, nothing otherwise.
fn observability_env(kept: bool) -> [(&'static str, &'static str); 2] {
    if kept {
        [
            ("RUST_LOG", "info,twincell_http=debug"),
            ("TWINCELL_METRICS", "emf"),
        ]
    } else {
        [("RUST_LOG", "off"), ("TWINCELL_METRICS", "off")]
    }
}

/// Where a process's stdout (its log) goes: appended to `file`, or nowhere.
fn log_output(file: Option<&Path>) -> Result<Stdio, String> {
    match file {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Stdio::from)
            .map_err(|e| format!("{}: {e}", path.display())),
        None => Ok(Stdio::null()),
    }
}

/// A name no other session of any process uses.
fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

struct LambdaSession {
    emulator: Emulator,
    shape: Shape,
    child: Child,
    /// Whether the function has answered once (its init is done).
    started: bool,
}

/// How long an invocation may take, once the function is initialized.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first may take: it waits for the process's init too (the
/// key fetch, the DynamoDB table created on a local stand-in), which a
/// machine busy with the rest of the suite can stretch.
const FIRST_INVOKE_TIMEOUT: Duration = Duration::from_secs(40);

impl Session for LambdaSession {
    fn send<'a>(&'a mut self, request: &'a HttpRequest) -> BoxFuture<'a, Result<Answer, String>> {
        Box::pin(async move {
            let event = lambda_events::event(self.shape, request);
            let timeout = if self.started {
                INVOKE_TIMEOUT
            } else {
                FIRST_INVOKE_TIMEOUT
            };
            // A function that exits (an init that fails before it reaches
            // the runtime loop) is reported at once, as Lambda reports a
            // Runtime.ExitError, rather than waited for.
            let outcome = tokio::select! {
                outcome = self.emulator.invoke(event, timeout) => outcome?,
                status = self.child.wait() => {
                    let mut said = String::new();
                    if let Some(mut stderr) = self.child.stderr.take() {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            stderr.read_to_string(&mut said),
                        )
                        .await;
                    }
                    return Err(format!(
                        "the function exited ({}) without answering: {}",
                        status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                        said.trim()
                    ));
                }
            };
            self.started = true;
            match outcome {
                Outcome::Response(v) => lambda_events::answer(&v),
                Outcome::Error(e) => Err(format!("the function reported an error: {e}")),
            }
        })
    }
}

impl Target for LambdaProcess {
    fn name(&self) -> &str {
        &self.name
    }
    fn auth(&self) -> Option<&TargetAuth> {
        self.auth.as_ref()
    }
    fn replication_key(&self) -> Option<&str> {
        Some(REPLICATION_KEY)
    }
    fn peer_signer(&self) -> Option<&twincell_replication::signing::Signer> {
        PEER_SIGNER.as_ref()
    }
    fn cell(&self) -> &str {
        &self.cell
    }
    fn peer(&self) -> &str {
        &self.peer
    }
    fn deterministic(&self) -> bool {
        true
    }
    fn session(&self) -> BoxFuture<'_, Result<Box<dyn Session>, String>> {
        Box::pin(async move {
            let emulator = Emulator::start().await.map_err(|e| e.to_string())?;
            let mut command = Command::new(binary("api")?);
            auth_env(&mut command, self.auth.as_ref());
            self.store.configure(&mut command);
            let child = command
                .env("AWS_LAMBDA_RUNTIME_API", emulator.runtime_api())
                .env("AWS_LAMBDA_FUNCTION_NAME", "twincell-api")
                .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
                .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/twincell-api")
                .env("AWS_LAMBDA_LOG_STREAM_NAME", "contract")
                .env("AWS_REGION", "us-east-1")
                .env("TWINCELL_CELL", &self.cell)
                .env("TWINCELL_PEERS", &self.peer)
                .env("TWINCELL_FIXED_CLOCK_MS", FIXED_CLOCK_MS.to_string())
                .env("TWINCELL_REPLICATION_KEY", REPLICATION_KEY)
                .env("TWINCELL_ORIGIN_KEYS", origin_keys(&self.peer)?)
                .envs(observability_env(self.log_file.is_some()))
                .stdout(log_output(self.log_file.as_deref())?)
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting api: {e}"))?;
            let session: Box<dyn Session> = Box::new(LambdaSession {
                emulator,
                shape: self.shape,
                child,
                started: false,
            });
            Ok(session)
        })
    }
}

/// A deployed cell at a base URL (`https://…`), shared by every case.
pub struct UrlTarget {
    name: String,
    base: String,
    peer: String,
    client: reqwest::Client,
    replication_key: Option<String>,
    auth: Option<TargetAuth>,
}

impl UrlTarget {
    /// The cell named `name` (its `TWINCELL_CELL`) at `base`, whose peer is
    /// `peer`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(name: &str, base: &str, peer: &str) -> Result<Self, String> {
        // TLS uses ring; the first target installs it (later calls find it set).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.to_owned(),
            base: base.trim_end_matches('/').to_owned(),
            peer: peer.to_owned(),
            client,
            replication_key: None,
            auth: None,
        })
    }

    /// The cell's replication key, for the cases that deliver events.
    #[must_use]
    pub fn with_replication_key(mut self, key: Option<String>) -> Self {
        self.replication_key = key;
        self
    }

    /// A token granting every scope, sent on the API requests (a cell
    /// that checks tokens needs one).
    #[must_use]
    pub fn with_bearer(mut self, token: Option<String>) -> Self {
        self.auth = token.map(TargetAuth::bearer);
        self
    }
}

struct UrlSession {
    base: String,
    client: reqwest::Client,
}

impl Session for UrlSession {
    fn send<'a>(&'a mut self, request: &'a HttpRequest) -> BoxFuture<'a, Result<Answer, String>> {
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(request.method.as_bytes())
                .map_err(|e| e.to_string())?;
            let mut builder = self
                .client
                .request(method, format!("{}{}", self.base, request.path));
            for (k, v) in &request.headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let response = builder
                .body(request.body.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = response.bytes().await.map_err(|e| e.to_string())?.to_vec();
            Ok(Answer {
                status,
                headers,
                body,
            })
        })
    }
}

impl Target for UrlTarget {
    fn name(&self) -> &str {
        &self.name
    }
    fn auth(&self) -> Option<&TargetAuth> {
        self.auth.as_ref()
    }
    fn replication_key(&self) -> Option<&str> {
        self.replication_key.as_deref()
    }
    fn cell(&self) -> &str {
        &self.name
    }
    fn peer(&self) -> &str {
        &self.peer
    }
    fn deterministic(&self) -> bool {
        false
    }
    fn session(&self) -> BoxFuture<'_, Result<Box<dyn Session>, String>> {
        Box::pin(async move {
            let session: Box<dyn Session> = Box::new(UrlSession {
                base: self.base.clone(),
                client: self.client.clone(),
            });
            Ok(session)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_answers_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let a = parse_http_response(raw).unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"abcde"[..]));
    }
}
