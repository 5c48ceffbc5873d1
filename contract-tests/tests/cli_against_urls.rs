//! The `twincell-contract` binary against two running cells given by URL —
//! two Azure handler processes on their real clocks and random ids, one
//! configured as `aws` and one as `azure` — twice in a row: every case
//! passes, the answers agree once generated values are masked, and a second
//! run against the same (now non-empty) cells passes too, because every run
//! uses its own ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Cell {
    child: Child,
    url: String,
}

impl Drop for Cell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each cell's replication key.
fn key(cell: &str) -> String {
    format!("{cell}-replication-key-0123456789abcdef0123")
}

fn start(cell: &str, peer: &str) -> Cell {
    let binary = twincell_contract::target::bin_dir().join("handler");
    assert!(
        binary.is_file(),
        "{} is missing: {}",
        binary.display(),
        twincell_contract::target::BUILD_BINARIES
    );
    let mut child = Command::new(binary)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        // No identity provider here: the API routes are open on purpose.
        .env("TWINCELL_AUTH", "disabled")
        .env("TWINCELL_CELL", cell)
        .env("TWINCELL_PEERS", peer)
        .env("TWINCELL_REPLICATION_KEY", key(cell))
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    Cell { child, url }
}

#[test]
fn the_cli_proves_parity_of_two_running_cells_and_is_safe_to_run_again() {
    let aws = start("aws", "azure");
    let azure = start("azure", "aws");
    // The first run knows the replication keys (from the environment, never
    // the command line); the second does not, and leaves out the cases
    // that need them, saying so.
    for run in 1..=2 {
        let mut command = Command::new(env!("CARGO_BIN_EXE_twincell-contract"));
        command.args([
            "--target",
            &format!("aws={}", aws.url),
            "--target",
            &format!("azure={}", azure.url),
        ]);
        if run == 1 {
            command
                .env("AWS_CELL_KEY", key("aws"))
                .env("AZURE_CELL_KEY", key("azure"))
                .args([
                    "--replication-key-env",
                    "aws=AWS_CELL_KEY",
                    "--replication-key-env",
                    "azure=AZURE_CELL_KEY",
                ]);
        }
        let output = command.output().unwrap();
        let report = String::from_utf8_lossy(&output.stdout);
        let errors = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "run {run}:\n{report}\n{errors}");
        assert!(
            report.contains(" passed, 0 failed ("),
            "run {run}:\n{report}"
        );
        assert_eq!(
            report.contains("replication-delivery-of-an-unknown-twincell-type"),
            run == 1,
            "run {run}:\n{report}"
        );
        assert_eq!(errors.contains("were not run"), run == 2, "{errors}");
    }
}

#[test]
fn the_cli_fails_when_a_target_answers_differently() {
    let aws = start("aws", "azure");
    // Wrong on purpose: this cell says it is "aws" while the CLI is told it
    // is "azure"; every case that names a cell must fail.
    let impostor = start("aws", "azure");
    let output = Command::new(env!("CARGO_BIN_EXE_twincell-contract"))
        .args([
            "--target",
            &format!("aws={}", aws.url),
            "--target",
            &format!("azure={}", impostor.url),
            "--only",
            "inventory",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("FAIL"), "{report}");
}

#[test]
fn the_cli_rejects_a_bad_command_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_twincell-contract"))
        .args(["--target", "nourl"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage"));
}
