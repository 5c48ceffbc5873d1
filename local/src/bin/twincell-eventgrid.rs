//! The Event Grid stand-in as a process (see `twincell_local::eventgrid`).
//!
//! ```text
//! twincell-eventgrid [--listen 127.0.0.1:0]
//!   --topic NAME=KEY_VAR …                       the topic's key is in $KEY_VAR
//!   --subscription NAME=TOPIC,URL[,KEY_VAR] …    delivers to URL, sending $KEY_VAR
//!                                                in x-twincell-replication-key
//!   [--max-events-per-batch 1] [--time-divisor 1] [--max-attempts 30]
//!   [--duplicate-per-mille 0] [--lost-answer-per-mille 0] [--max-delay-ms 0]
//!   [--seed 1] [--spool-dir DIR]
//! ```
//!
//! Keys are read from environment variables, never taken on the command
//! line. The first line on stdout is `event grid stand-in listening on
//! http://127.0.0.1:<port>`; topics publish at `<that>/topics/<name>`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use twincell_local::eventgrid::{Config, SubscriptionConfig, TopicConfig};

/// The Event Grid stand-in: custom topics in the CloudEvents schema that
/// push what is published to webhook subscriptions, with Event Grid's
/// retry schedule and faults a test can add.
#[derive(Debug, Parser)]
#[command(name = "twincell-eventgrid")]
struct Args {
    /// The loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = twincell_local::loopback)]
    listen: SocketAddr,
    /// A topic; its key is read from the environment variable KEY_VAR.
    #[arg(long = "topic", value_name = "NAME=KEY_VAR", value_parser = topic)]
    topics: Vec<TopicConfig>,
    /// A webhook subscription of TOPIC delivering to URL, sending the key
    /// in the environment variable KEY_VAR as x-twincell-replication-key.
    #[arg(long = "subscription", value_name = "NAME=TOPIC,URL[,KEY_VAR]", value_parser = subscription)]
    subscriptions: Vec<Subscription>,
    /// Events per delivery (Event Grid's maxEventsPerBatch).
    #[arg(long, default_value_t = 1)]
    max_events_per_batch: usize,
    /// Every time of the retry schedule and retention divided by this.
    #[arg(long, default_value_t = Config::default().time_divisor)]
    time_divisor: u32,
    /// Delivery attempts before an event is dead-lettered.
    #[arg(long = "max-attempts", default_value_t = Config::default().max_delivery_attempts)]
    max_attempts: u32,
    /// Per thousand published events, how many are delivered twice.
    #[arg(long, default_value_t = 0)]
    duplicate_per_mille: u32,
    /// Per thousand successful deliveries, how many lose their answer.
    #[arg(long, default_value_t = 0)]
    lost_answer_per_mille: u32,
    /// The longest random delay before an event is first delivered.
    #[arg(long, default_value_t = 0)]
    max_delay_ms: u64,
    /// The seed of every fault.
    #[arg(long, default_value_t = Config::default().seed)]
    seed: u64,
    /// Keep what is accepted and not yet delivered in this directory, so
    /// that a stand-in started again on it delivers it.
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<std::path::PathBuf>,
}

/// A subscription as given on the command line, its key read.
#[derive(Debug, Clone)]
struct Subscription {
    name: String,
    topic: String,
    endpoint: String,
    delivery_header: Option<(String, String)>,
}

fn key(var: &str) -> Result<String, String> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("the environment variable {var} holds no key"))
}

fn topic(value: &str) -> Result<TopicConfig, String> {
    let (name, var) = value.split_once('=').ok_or("expected NAME=KEY_VAR")?;
    Ok(TopicConfig {
        name: name.to_owned(),
        key: key(var)?,
    })
}

fn subscription(value: &str) -> Result<Subscription, String> {
    let shape = "expected NAME=TOPIC,URL[,KEY_VAR]";
    let (name, rest) = value.split_once('=').ok_or(shape)?;
    let mut parts = rest.split(',');
    let (Some(topic), Some(endpoint)) = (parts.next(), parts.next()) else {
        return Err(shape.to_owned());
    };
    let delivery_header = parts
        .next()
        .map(|var| key(var).map(|k| ("x-twincell-replication-key".to_owned(), k)))
        .transpose()?;
    Ok(Subscription {
        name: name.to_owned(),
        topic: topic.to_owned(),
        endpoint: endpoint.to_owned(),
        delivery_header,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    twincell_http::init_logs(twincell_http::LogTo::Stderr);
    let mut config = Config {
        topics: args.topics,
        time_divisor: args.time_divisor,
        max_delivery_attempts: args.max_attempts,
        seed: args.seed,
        spool_dir: args.spool_dir,
        ..Config::default()
    };
    config.faults.duplicate_per_mille = args.duplicate_per_mille;
    config.faults.lost_answer_per_mille = args.lost_answer_per_mille;
    config.faults.max_delay = Duration::from_millis(args.max_delay_ms);
    config.subscriptions = args
        .subscriptions
        .into_iter()
        .map(|s| SubscriptionConfig {
            name: s.name,
            topic: s.topic,
            endpoint: s.endpoint,
            delivery_header: s.delivery_header,
            max_events_per_batch: args.max_events_per_batch,
        })
        .collect();
    let app = twincell_local::eventgrid::start(config)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    #[allow(clippy::print_stdout)]
    {
        println!("event grid stand-in listening on http://{address}");
    }
    axum::serve(listener, app).await?;
    Ok(())
}
