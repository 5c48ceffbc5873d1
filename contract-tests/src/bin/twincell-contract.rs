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

use twincell_contract::runner::run_all;
use twincell_contract::target::{Target, UrlTarget};

fn usage() -> ExitCode {
    eprintln!(
        "usage: twincell-contract --target NAME=URL [--target NAME=URL …] [--cases DIR] [--only SUBSTRING] [--replication-key-env NAME=VAR …] [--bearer-env NAME=VAR …]"
    );
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut targets: Vec<(String, String)> = Vec::new();
    let mut cases_dir = None;
    let mut only = None;
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut bearers: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--target", Some(spec)) => match spec.split_once('=') {
                Some((name, url)) if !name.is_empty() && url.starts_with("http") => {
                    targets.push((name.to_owned(), url.to_owned()));
                }
                _ => return usage(),
            },
            ("--cases", Some(dir)) => cases_dir = Some(dir),
            ("--only", Some(s)) => only = Some(s),
            (option @ ("--replication-key-env" | "--bearer-env"), Some(spec)) => {
                let Some((name, var)) = spec.split_once('=') else {
                    return usage();
                };
                match std::env::var(var) {
                    Ok(value) if !value.trim().is_empty() => {
                        let list = if option == "--bearer-env" {
                            &mut bearers
                        } else {
                            &mut keys
                        };
                        list.push((name.to_owned(), value.trim().to_owned()));
                    }
                    _ => {
                        eprintln!("{option} {spec}: {var} is not set");
                        return ExitCode::from(2);
                    }
                }
            }
            _ => return usage(),
        }
    }
    if targets.is_empty() {
        return usage();
    }
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
