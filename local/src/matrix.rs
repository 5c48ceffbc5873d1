//! Both cells and the topic stand-in as processes on this machine, wired
//! as in a deployment: each cell publishes to its own Event Grid topic,
//! whose subscription delivers to the other cell's `/replication/events`.
//!
//! - AWS: `twincell-aws-local` (the `api` and `replicator` binaries), its
//!   table and keys on moto (DynamoDB, Secrets Manager);
//! - Azure: the `handler` binary built with `contract-mode`, on the
//!   Cosmos DB SDK's emulator, its host's change-feed trigger stood in;
//! - `twincell-eventgrid` between them, with the faults asked for.
//!
//! A test, a benchmark, or any process that can speak HTTP drives it: the
//! cells' URLs take the API, the topic stand-in's control API cuts, heals
//! and expires the link. Dropping the [`Matrix`] stops every process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use twincell_replication::signing::Signer;

/// The AWS cell's inbound replication key (kept in moto's Secrets Manager).
pub const AWS_KEY: &str = "aws-inbound-replication-key-0123456789abcdef";
/// The Azure cell's inbound replication key.
pub const AZURE_KEY: &str = "azure-inbound-replication-key-0123456789abcdef";
const AWS_TOPIC_KEY: &str = "aws-events-topic-key-0123456789abcdef0123";
const AZURE_TOPIC_KEY: &str = "azure-events-topic-key-0123456789abcdef012";

/// How to start the matrix.
#[derive(Debug, Clone)]
pub struct Options {
    /// A DynamoDB- and Secrets-Manager-compatible endpoint (moto).
    pub moto: String,
    /// Where the `api`, `replicator` and (contract-mode) `handler`
    /// binaries are.
    pub bin_dir: PathBuf,
    /// `twincell-eventgrid` and `twincell-aws-local`.
    pub local_bins: (PathBuf, PathBuf),
    /// A name unique to this run (the table, the secrets).
    pub run: String,
    /// The topic stand-in's options (`--time-divisor`, faults, seed …).
    pub eventgrid_args: Vec<String>,
    /// How often the event source mapping polls the stream (Lambda: 4 times
    /// a second).
    pub stream_poll: Duration,
    /// The stream mapping's first retry wait.
    pub stream_retry: Duration,
    /// The change-feed trigger's `feedPollDelay`.
    pub feed_poll: Duration,
    /// The trigger's retry interval bounds.
    pub trigger_retry: (Duration, Duration),
    /// `maxEventsPerBatch` of both subscriptions.
    pub max_events_per_batch: usize,
    /// `RUST_LOG` of every process.
    pub log: String,
}

impl Options {
    /// Lambda's and the Functions host's own polling rates, no faults.
    #[must_use]
    pub fn new(moto: &str, bin_dir: &Path, local_bins: (PathBuf, PathBuf), run: &str) -> Self {
        Self {
            moto: moto.to_owned(),
            bin_dir: bin_dir.to_owned(),
            local_bins,
            run: run.to_owned(),
            eventgrid_args: Vec::new(),
            stream_poll: Duration::from_millis(250),
            stream_retry: Duration::from_millis(1_000),
            feed_poll: Duration::from_millis(1_000),
            trigger_retry: (Duration::from_secs(2), Duration::from_secs(900)),
            max_events_per_batch: 10,
            log: "warn".to_owned(),
        }
    }
}

/// A process of the matrix, stopped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    /// The URL it printed.
    pub url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` and reads the URL it prints on its first line.
///
/// # Errors
/// When it does not start or prints no URL.
pub fn spawn(mut command: Command, what: &str) -> anyhow::Result<Process> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let Some(url) = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://127.0.0.1:"))
        .map(str::to_owned)
    else {
        let _ = child.kill();
        bail!("{what} printed no URL: {line:?}");
    };
    Ok(Process { child, url })
}

fn binary(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build the cells first with `{}` (scripts/test.sh does, and copies \
         api, replicator and handler into TWINCELL_CONTRACT_BIN_DIR)",
        path.display(),
        twincell_contract::target::BUILD_BINARIES
    );
    Ok(path.display().to_string())
}

async fn create_secret(endpoint: &str, name: &str, value: &str) -> anyhow::Result<()> {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::from_static(
            "us-east-1",
        ))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "local",
        ))
        .endpoint_url(endpoint)
        .http_client(twincell_dynamodb::http_client())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_secretsmanager::error::DisplayErrorContext(&e)))
        .with_context(|| format!("creating secret {name} at {endpoint}"))?;
    Ok(())
}

/// The running matrix.
#[derive(Debug)]
pub struct Matrix {
    /// The topic stand-in (its control API too).
    pub eventgrid: Process,
    /// The AWS cell's API.
    pub aws: Process,
    /// The Azure cell's API.
    pub azure: Process,
}

impl Matrix {
    /// Starts everything and waits until both subscriptions passed the
    /// webhook handshake (which also waits for the AWS table).
    ///
    /// # Errors
    /// When a process does not start, moto refuses a secret, or a
    /// handshake does not pass within 60 s.
    pub async fn start(o: &Options) -> anyhow::Result<Self> {
        crate::install_crypto();
        create_secret(&o.moto, &format!("{}/inbound", o.run), AWS_KEY).await?;
        create_secret(&o.moto, &format!("{}/topic", o.run), AWS_TOPIC_KEY).await?;
        // Each cell signs its events with a key of its own, new for the
        // run; each accepts the other's events only signed by it.
        let (aws_signer, aws_setting) =
            Signer::generate_setting("aws-local").map_err(anyhow::Error::msg)?;
        let (azure_signer, azure_setting) =
            Signer::generate_setting("azure-local").map_err(anyhow::Error::msg)?;
        create_secret(&o.moto, &format!("{}/signing", o.run), &aws_setting).await?;

        let mut eventgrid = Command::new(&o.local_bins.0);
        eventgrid
            .args(["--topic", "aws-events=AWS_TOPIC_KEY"])
            .args(["--topic", "azure-events=AZURE_TOPIC_KEY"])
            .args(&o.eventgrid_args)
            .env("AWS_TOPIC_KEY", AWS_TOPIC_KEY)
            .env("AZURE_TOPIC_KEY", AZURE_TOPIC_KEY)
            .env("RUST_LOG", &o.log);
        let eventgrid = spawn(eventgrid, "twincell-eventgrid")?;

        let ms = |d: Duration| d.as_millis().to_string();
        let mut aws = Command::new(&o.local_bins.1);
        // The matrix runs without an identity provider: the API routes
        // are open on purpose (TWINCELL_AUTH=disabled), in both cells.
        aws.env("TWINCELL_AUTH", "disabled");
        aws.args(["--api", &binary(&o.bin_dir, "api")?])
            .args(["--replicator", &binary(&o.bin_dir, "replicator")?])
            .args([
                "--stream-poll-ms",
                &ms(o.stream_poll),
                "--retry-ms",
                &ms(o.stream_retry),
            ])
            .env("TWINCELL_CELL", "aws")
            .env("TWINCELL_PEERS", "azure")
            .env("TWINCELL_STORE", "dynamodb")
            .env("TWINCELL_DYNAMODB_TABLE", &o.run)
            .env("TWINCELL_DYNAMODB_CREATE_TABLE", "true")
            .env("AWS_ENDPOINT_URL", &o.moto)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env(
                "TWINCELL_REPLICATION_KEY_SECRET_ID",
                format!("{}/inbound", o.run),
            )
            .env(
                "TWINCELL_REPLICATION_TARGET",
                format!("{}/topics/aws-events", eventgrid.url),
            )
            .env("TWINCELL_REPLICATION_TARGET_KIND", "eventgrid")
            .env(
                "TWINCELL_REPLICATION_TARGET_KEY_SECRET_ID",
                format!("{}/topic", o.run),
            )
            .env(
                "TWINCELL_SIGNING_KEY_SECRET_ID",
                format!("{}/signing", o.run),
            )
            .env("TWINCELL_ORIGIN_KEYS", azure_signer.origin_entry("azure"))
            .env("RUST_LOG", &o.log);
        let aws = spawn(aws, "twincell-aws-local")?;

        let mut azure = Command::new(binary(&o.bin_dir, "handler")?);
        azure
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
            .env("TWINCELL_AUTH", "disabled")
            .env("TWINCELL_CELL", "azure")
            .env("TWINCELL_PEERS", "aws")
            .env("TWINCELL_STORE", "cosmos")
            .env("TWINCELL_COSMOS_EMULATOR", "true")
            .env("TWINCELL_STANDIN_COSMOS_TRIGGER", "true")
            .env("TWINCELL_STANDIN_FEED_POLL_MS", ms(o.feed_poll))
            .env("TWINCELL_STANDIN_RETRY_MIN_MS", ms(o.trigger_retry.0))
            .env("TWINCELL_STANDIN_RETRY_MAX_MS", ms(o.trigger_retry.1))
            .env("TWINCELL_REPLICATION_KEY", AZURE_KEY)
            .env(
                "TWINCELL_REPLICATION_TARGET",
                format!("{}/topics/azure-events", eventgrid.url),
            )
            .env("TWINCELL_REPLICATION_TARGET_KIND", "eventgrid")
            .env("TWINCELL_REPLICATION_TARGET_KEY", AZURE_TOPIC_KEY)
            .env("TWINCELL_SIGNING_KEY", azure_setting)
            .env("TWINCELL_ORIGIN_KEYS", aws_signer.origin_entry("aws"))
            .env("RUST_LOG", &o.log);
        let azure = spawn(azure, "handler")?;

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        for (name, topic, endpoint, key) in [
            ("to-azure", "aws-events", &azure.url, AZURE_KEY),
            ("to-aws", "azure-events", &aws.url, AWS_KEY),
        ] {
            let status = client
                .post(format!("{}/control/subscriptions", eventgrid.url))
                .body(
                    json!({
                        "name": name, "topic": topic,
                        "endpoint": format!("{endpoint}/replication/events"),
                        "delivery_key": key, "max_events_per_batch": o.max_events_per_batch,
                    })
                    .to_string(),
                )
                .send()
                .await?
                .status();
            anyhow::ensure!(
                status.as_u16() == 201,
                "creating subscription {name}: {status}"
            );
        }
        let matrix = Self {
            eventgrid,
            aws,
            azure,
        };
        let start = Instant::now();
        loop {
            let stats = matrix.eventgrid_stats(&client).await?;
            let validated = stats
                .get("subscriptions")
                .and_then(Value::as_object)
                .is_some_and(|s| {
                    s.len() == 2
                        && s.values()
                            .all(|v| v.get("validated") == Some(&Value::Bool(true)))
                });
            if validated {
                return Ok(matrix);
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the subscriptions' handshakes did not pass: {stats}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The topic stand-in's statistics.
    ///
    /// # Errors
    /// When it does not answer.
    pub async fn eventgrid_stats(&self, client: &reqwest::Client) -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(
            &client
                .get(format!("{}/control/stats", self.eventgrid.url))
                .send()
                .await?
                .bytes()
                .await?,
        )?)
    }
}
