//! Test support (feature `test-util`): stores on a local moto server.
//!
//! `scripts/test.sh` installs `moto[server]` from PyPI, starts one server on
//! 127.0.0.1 for the whole run and exports its URL as
//! [`ENDPOINT_VAR`] and its program as [`SERVER_VAR`]. Tests that stop and
//! restart DynamoDB start a [`MotoServer`] of their own. Nothing here skips
//! when moto is missing: it fails, saying what to run.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};

use crate::{DynamoDbEventStore, Settings, http_client};

/// The variable holding the shared moto server's URL.
pub const ENDPOINT_VAR: &str = "TWINCELL_MOTO_ENDPOINT";
/// The variable holding the path of the `moto_server` program.
pub const SERVER_VAR: &str = "TWINCELL_MOTO_SERVER";

/// The shared moto server's URL.
///
/// # Errors
/// Says how to start one when [`ENDPOINT_VAR`] is not set.
pub fn shared_endpoint() -> Result<String, String> {
    std::env::var(ENDPOINT_VAR).map_err(|_| {
        format!(
            "{ENDPOINT_VAR} is not set: these tests need a moto server; run scripts/test.sh, \
             which installs and starts one, or start `moto_server -H 127.0.0.1 -p 5000` and \
             export {ENDPOINT_VAR}=http://127.0.0.1:5000"
        )
    })
}

/// A table name no other test uses.
#[must_use]
pub fn unique_table(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store on `endpoint` with fixed test credentials (moto accepts any), on
/// `table`, which is not created.
///
/// Calls may take 30 s per attempt (60 s in all), not the production 2 s:
/// moto serves one request at a time for every test of the run, and a 1 MB
/// query page takes it seconds while other tests queue behind it.
#[must_use]
pub fn store_at(endpoint: &str, table: &str) -> DynamoDbEventStore {
    let mut settings = Settings::new(table);
    settings.attempt_timeout = Duration::from_secs(30);
    settings.call_timeout = Duration::from_secs(60);
    store_with(endpoint, &settings)
}

/// [`store_at`] with other timeouts and retries (`settings.endpoint` is
/// ignored for `endpoint`).
#[must_use]
pub fn store_with(endpoint: &str, settings: &Settings) -> DynamoDbEventStore {
    let table = settings.table.as_str();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::from_static("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "twincell-tests",
        ))
        .endpoint_url(endpoint)
        .http_client(http_client())
        .timeout_config(settings.timeouts())
        .retry_config(settings.retries())
        .build();
    DynamoDbEventStore::with_client(aws_sdk_dynamodb::Client::from_conf(config), table)
}

/// A store on a new, empty table on the shared moto server.
///
/// # Panics
/// When moto is not configured or refuses to create the table: the test
/// cannot run, and says why.
#[allow(clippy::panic)]
pub async fn fresh_store(prefix: &str) -> DynamoDbEventStore {
    let endpoint = shared_endpoint().unwrap_or_else(|e| panic!("{e}"));
    let store = store_at(&endpoint, &unique_table(prefix));
    if let Err(e) = store.create_table().await {
        panic!("can't create a table on moto at {endpoint}: {e}");
    }
    store
}

/// A moto server of the test's own, on a free port of 127.0.0.1, stopped on
/// drop. It keeps its port across [`stop`](Self::stop) and
/// [`start`](Self::start); state does not survive a stop.
#[derive(Debug)]
pub struct MotoServer {
    program: String,
    addr: SocketAddr,
    child: Option<Child>,
}

impl MotoServer {
    /// Starts `$TWINCELL_MOTO_SERVER` and waits until it answers.
    ///
    /// # Errors
    /// When the program is not configured, does not start, or does not
    /// answer within 30 s.
    pub fn launch() -> Result<Self, String> {
        let program = std::env::var(SERVER_VAR).map_err(|_| {
            format!("{SERVER_VAR} is not set: run scripts/test.sh, which installs moto_server")
        })?;
        Self::launch_program(&program)
    }

    /// Starts `program` (a `moto_server`-compatible command) and waits
    /// until it answers.
    ///
    /// # Errors
    /// As [`launch`](Self::launch).
    pub fn launch_program(program: &str) -> Result<Self, String> {
        let program = program.to_owned();
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?;
        let mut server = Self {
            program,
            addr,
            child: None,
        };
        server.start()?;
        Ok(server)
    }

    /// The server's URL.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the server again after [`stop`](Self::stop).
    ///
    /// # Errors
    /// When it does not start or answer within 30 s.
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let child = Command::new(&self.program)
            .args(["-H", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("can't run {}: {e}", self.program))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("{} exited at start: {status}", self.program));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("moto did not answer on {} within 30 s", self.addr))
    }

    /// Stops the server; its port refuses connections until
    /// [`start`](Self::start).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
