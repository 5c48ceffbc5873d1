//! The Event Grid stand-in as a process (see `twincell_local::eventgrid`).
//!
//! ```text
//! twincell-eventgrid [--listen 127.0.0.1:0]
//!   --topic NAME=KEY_VAR …                       the topic's key is in $KEY_VAR
//!   --subscription NAME=TOPIC,URL[,KEY_VAR] …    delivers to URL, sending $KEY_VAR
//!                                                in x-twincell-replication-key
//!   [--max-events-per-batch 1] [--time-divisor 1] [--max-attempts 30]
//!   [--duplicate-per-mille 0] [--lost-answer-per-mille 0] [--max-delay-ms 0]
//!   [--seed 1]
//! ```
//!
//! Keys are read from environment variables, never taken on the command
//! line. The first line on stdout is `event grid stand-in listening on
//! http://127.0.0.1:<port>`; topics publish at `<that>/topics/<name>`.

use std::time::Duration;

use anyhow::{Context, bail};
use twincell_local::eventgrid::{Config, SubscriptionConfig, TopicConfig};

fn key(var: &str) -> anyhow::Result<String> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .with_context(|| format!("the environment variable {var} holds no key"))
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
    let mut config = Config::default();
    let mut listen = "127.0.0.1:0".to_owned();
    let mut batch = 1usize;
    let mut subscriptions: Vec<(String, String, String, Option<String>)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().with_context(|| format!("{flag} {v:?}"));
        match flag.as_str() {
            "--listen" => listen = value,
            "--topic" => {
                let (name, var) = value.split_once('=').context("--topic NAME=KEY_VAR")?;
                config.topics.push(TopicConfig {
                    name: name.to_owned(),
                    key: key(var)?,
                });
            }
            "--subscription" => {
                let (name, rest) = value
                    .split_once('=')
                    .context("--subscription NAME=TOPIC,URL[,KEY_VAR]")?;
                let mut parts = rest.split(',');
                let (Some(topic), Some(url)) = (parts.next(), parts.next()) else {
                    bail!("--subscription NAME=TOPIC,URL[,KEY_VAR]");
                };
                subscriptions.push((
                    name.to_owned(),
                    topic.to_owned(),
                    url.to_owned(),
                    parts.next().map(str::to_owned),
                ));
            }
            "--max-events-per-batch" => batch = usize::try_from(number(&value)?)?,
            "--time-divisor" => config.time_divisor = u32::try_from(number(&value)?)?,
            "--max-attempts" => config.max_delivery_attempts = u32::try_from(number(&value)?)?,
            "--duplicate-per-mille" => {
                config.faults.duplicate_per_mille = u32::try_from(number(&value)?)?
            }
            "--lost-answer-per-mille" => {
                config.faults.lost_answer_per_mille = u32::try_from(number(&value)?)?
            }
            "--max-delay-ms" => config.faults.max_delay = Duration::from_millis(number(&value)?),
            "--seed" => config.seed = number(&value)?,
            other => bail!("unknown option {other}"),
        }
    }
    for (name, topic, endpoint, var) in subscriptions {
        let delivery_header = var
            .map(|v| key(&v).map(|k| ("x-twincell-replication-key".to_owned(), k)))
            .transpose()?;
        config.subscriptions.push(SubscriptionConfig {
            name,
            topic,
            endpoint,
            delivery_header,
            max_events_per_batch: batch,
        });
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?}"))?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "--listen must be a loopback address"
    );
    let app = twincell_local::eventgrid::start(config)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let address = listener.local_addr()?;
    #[allow(clippy::print_stdout)]
    {
        println!("event grid stand-in listening on http://{address}");
    }
    axum::serve(listener, app).await?;
    Ok(())
}
