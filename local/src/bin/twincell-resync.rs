//! Re-sends one cell's own events to its replication target, after an
//! outage longer than the transports keep events (24 hours): calls the
//! cell's `POST /replication/resync` until it has gone through every event
//! (or those since an instant), printing its progress.
//!
//! ```text
//! twincell-resync --cell https://… --key-env VAR [--since 2026-11-22T00:00:00.000Z]
//!                 [--cursor CURSOR] [--max-events 10000]
//! ```
//!
//! The cell's replication key is read from the environment variable `VAR`
//! (never the command line). Each call re-sends a bounded slice; when one
//! fails, the cursor to resume from is printed (`--cursor` resumes there).
//! Re-sending is harmless: the receiving cell applies what it already holds
//! as a no-op. Exit status 0 when done, 1 on a failure, 2 on a bad command
//! line.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

/// Re-sends one cell's own events to its replication target, calling the
/// cell's `POST /replication/resync` until every event is re-sent.
#[derive(Debug, Parser)]
#[command(name = "twincell-resync")]
struct Args {
    /// The cell's base URL.
    #[arg(long, value_name = "URL", value_parser = base_url)]
    cell: String,
    /// The environment variable holding the cell's replication key.
    #[arg(long, value_name = "VAR")]
    key_env: String,
    /// Only events recorded at or after this instant (RFC 3339, UTC, with
    /// milliseconds).
    #[arg(long, value_name = "RFC3339")]
    since: Option<String>,
    /// Resume where a failed run stopped.
    #[arg(long)]
    cursor: Option<String>,
    /// The most events one call re-sends.
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,
}

fn base_url(value: &str) -> Result<String, String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err("expected an http:// or https:// URL".to_owned())
    }
}

#[tokio::main(flavor = "current_thread")]
#[allow(clippy::print_stdout)]
async fn main() -> ExitCode {
    let Args {
        cell,
        key_env,
        since,
        mut cursor,
        max_events: max,
    } = Args::parse();
    let Some(key) = std::env::var(&key_env)
        .ok()
        .filter(|k| !k.trim().is_empty())
    else {
        eprintln!("--key-env {key_env}: the variable holds no replication key");
        return ExitCode::from(2);
    };
    twincell_local::install_crypto();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut total = 0u64;
    loop {
        let mut body = serde_json::Map::new();
        body.insert(
            "cursor".into(),
            cursor.clone().map_or(Value::Null, Value::from),
        );
        if let Some(s) = &since {
            body.insert("since".into(), s.clone().into());
        }
        if let Some(m) = max {
            body.insert("max_events".into(), m.into());
        }
        let answer = client
            .post(format!("{cell}/replication/resync"))
            .header("x-twincell-replication-key", key.trim())
            .header("content-type", "application/json")
            .body(Value::Object(body).to_string())
            .send()
            .await;
        let (status, answer) = match answer {
            Ok(r) => (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            ),
            Err(e) => {
                eprintln!(
                    "{cell}: {e}; resume with --cursor {}",
                    cursor.as_deref().unwrap_or("(none)")
                );
                return ExitCode::FAILURE;
            }
        };
        if status != 200 {
            let resume = answer
                .get("next")
                .and_then(Value::as_str)
                .or(cursor.as_deref())
                .unwrap_or("(none: start again)");
            eprintln!("{cell} answered {status}: {answer}\nresume with --cursor {resume}");
            return ExitCode::FAILURE;
        }
        total += answer.get("published").and_then(Value::as_u64).unwrap_or(0);
        cursor = answer
            .get("next")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match &cursor {
            Some(c) => println!("re-sent {total} events so far; next cursor {c}"),
            None => {
                println!("re-sent {total} events; done");
                return ExitCode::SUCCESS;
            }
        }
    }
}
