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

use serde_json::Value;

fn usage() -> ExitCode {
    eprintln!(
        "usage: twincell-resync --cell URL --key-env VAR [--since RFC3339] [--cursor CURSOR] [--max-events N]"
    );
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
#[allow(clippy::print_stdout)]
async fn main() -> ExitCode {
    let (mut cell, mut key_env, mut since, mut cursor, mut max) = (None, None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else {
            return usage();
        };
        match flag.as_str() {
            "--cell" => cell = Some(value.trim_end_matches('/').to_owned()),
            "--key-env" => key_env = Some(value),
            "--since" => since = Some(value),
            "--cursor" => cursor = Some(value),
            "--max-events" => match value.parse::<u64>() {
                Ok(n) => max = Some(n),
                Err(_) => return usage(),
            },
            _ => return usage(),
        }
    }
    let (Some(cell), Some(key_env)) = (cell, key_env) else {
        return usage();
    };
    let Some(key) = std::env::var(&key_env)
        .ok()
        .filter(|k| !k.trim().is_empty())
    else {
        eprintln!("{key_env} holds no replication key");
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
