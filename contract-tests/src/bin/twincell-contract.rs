//! Runs the parity cases against deployed cells and proves they answer
//! alike:
//!
//! ```text
//! twincell-contract --target aws=https://abc.execute-api.eu-west-1.amazonaws.com \
//!                   --target azure=https://twincell.azurewebsites.net
//! ```
//!
//! A target's name must be that cell's `TWINCELL_CELL`. Every run uses ids
//! unique to it (`{{run}}`), creates only its own transactions, stock and
//! reservations, and touches nothing else, so it is safe against a live
//! deployment. Options: `--cases DIR` (default: the embedded cases),
//! `--only SUBSTRING` (run matching cases), `--replication-key-env
//! NAME=VAR` (the cell `NAME`'s replication key, read from the environment
//! variable `VAR` so it never shows in a process list: the cases that
//! deliver events need every target's key and are not run without them),
//! `--bearer-env NAME=VAR` (a token granting every scope for the cell
//! `NAME`, read from `VAR`: a cell that checks tokens answers 401 to every
//! API request without one; with a token for every target, the cases about
//! missing and malformed tokens run too; those naming tokens only a test
//! identity provider can mint, expired or forged, never run here).
//! Exit status 1 when any case fails.

use std::process::ExitCode;

use clap::Parser;
use twincell_contract::runner::run_all;
use twincell_contract::target::{Target, UrlTarget};

/// Runs the parity cases against deployed cells and proves they answer
/// alike.
#[derive(Debug, Parser)]
#[command(name = "twincell-contract")]
struct Args {
    /// A cell to run against; NAME is that cell's TWINCELL_CELL.
    #[arg(long = "target", value_name = "NAME=URL", required = true, value_parser = target)]
    targets: Vec<(String, String)>,
    /// Read the cases from this folder instead of the embedded ones.
    #[arg(long = "cases", value_name = "DIR")]
    cases_dir: Option<String>,
    /// Run only the cases whose name contains this.
    #[arg(long, value_name = "SUBSTRING")]
    only: Option<String>,
    /// The cell NAME's replication key, read from the environment variable
    /// VAR (the cases that deliver events need every target's key).
    #[arg(long = "replication-key-env", value_name = "NAME=VAR", value_parser = secret)]
    keys: Vec<(String, String)>,
    /// A bearer token granting every scope for the cell NAME, read from the
    /// environment variable VAR.
    #[arg(long = "bearer-env", value_name = "NAME=VAR", value_parser = secret)]
    bearers: Vec<(String, String)>,
}

fn target(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((name, url)) if !name.is_empty() && url.starts_with("http") => {
            Ok((name.to_owned(), url.to_owned()))
        }
        _ => Err("expected NAME=URL with an http:// or https:// URL".to_owned()),
    }
}

/// `NAME=VAR`, with the value of `VAR` read from the environment (never
/// from the command line, where a process list would show it).
fn secret(value: &str) -> Result<(String, String), String> {
    let (name, var) = value.split_once('=').ok_or("expected NAME=VAR")?;
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok((name.to_owned(), v.trim().to_owned())),
        _ => Err(format!("the environment variable {var} is not set")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Args {
        targets,
        cases_dir,
        only,
        keys,
        bearers,
    } = Args::parse();
    let cases = match &cases_dir {
        Some(dir) => twincell_contract::case::load_dir(std::path::Path::new(dir)),
        None => twincell_contract::embedded_cases(),
    };
    let mut cases = match cases {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cases: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(only) = &only {
        cases.retain(|c| c.name.contains(only.as_str()));
    }
    let mut built: Vec<Box<dyn Target>> = Vec::new();
    for (i, (name, url)) in targets.iter().enumerate() {
        let peer = targets
            .iter()
            .enumerate()
            .find(|(j, _)| *j != i)
            .map_or(name.as_str(), |(_, (n, _))| n.as_str());
        let key = keys.iter().find(|(n, _)| n == name).map(|(_, k)| k.clone());
        let bearer = bearers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone());
        match UrlTarget::new(name, url, peer) {
            Ok(t) => built.push(Box::new(t.with_replication_key(key).with_bearer(bearer))),
            Err(e) => {
                eprintln!("{name}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let (cases, notes) = twincell_contract::runner::runnable(cases, &built);
    for note in notes {
        eprintln!("{note}");
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let run_id = format!("c{millis:x}-");
    let report = run_all(&cases, &run_id, &built).await;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", report.render());
    }
    if report.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
