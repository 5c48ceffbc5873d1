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
    // No identity provider here: the API routes are open on purpose.
    start_with(cell, peer, &[("TWINCELL_AUTH", "disabled".to_owned())])
}

fn start_with(cell: &str, peer: &str, env: &[(&str, String)]) -> Cell {
    let binary = twincell_contract::target::bin_dir().join("handler");
    assert!(
        binary.is_file(),
        "{} is missing: {}",
        binary.display(),
        twincell_contract::target::BUILD_BINARIES
    );
    let mut child = Command::new(binary)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_STORE", "memory")
        .env("TWINCELL_CELL", cell)
        .env("TWINCELL_PEERS", peer)
        .env("TWINCELL_REPLICATION_KEY", key(cell))
        .env(
            "TWINCELL_ORIGIN_KEYS",
            twincell_contract::target::origin_keys(peer).unwrap(),
        )
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

/// The CLI pointed at both cells.
fn cli(aws: &Cell, azure: &Cell) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_twincell-contract"));
    command.args([
        "--target",
        &format!("aws={}", aws.url),
        "--target",
        &format!("azure={}", azure.url),
    ]);
    command
}

#[test]
fn the_cli_proves_parity_of_two_running_cells_and_is_safe_to_run_again() {
    let aws = start("aws", "azure");
    let azure = start("azure", "aws");
    // The first run knows the replication keys (from the environment, never
    // the command line); the second does not, and leaves out the cases
    // that need them, saying so.
    for run in 1..=2 {
        let mut command = cli(&aws, &azure);
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
        assert_eq!(
            errors.contains("need every target's replication key"),
            run == 2,
            "{errors}"
        );
        // These cells check no tokens: the cases about tokens are left out.
        assert!(
            errors.contains("about bearer tokens and need every target to check them"),
            "{errors}"
        );
    }
}

#[test]
fn against_cells_that_check_tokens_the_cli_sends_the_token_it_is_given() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let idp = runtime
        .block_on(twincell_http::auth::testing::IdentityProvider::start())
        .unwrap();
    let env: Vec<(&str, String)> = idp.env();
    let aws = start_with("aws", "azure", &env);
    let azure = start_with("azure", "aws", &env);
    for with_token in [true, false] {
        let mut command = cli(&aws, &azure);
        if with_token {
            command.env("CELL_TOKEN", idp.token("all").unwrap()).args([
                "--bearer-env",
                "aws=CELL_TOKEN",
                "--bearer-env",
                "azure=CELL_TOKEN",
            ]);
        }
        let output = command.output().unwrap();
        let report = String::from_utf8_lossy(&output.stdout);
        let errors = String::from_utf8_lossy(&output.stderr);
        if !with_token {
            // Every API request is refused, as it should be.
            assert!(!output.status.success(), "{report}");
            assert!(report.contains("status 401 instead of"), "{report}");
            continue;
        }
        assert!(output.status.success(), "{report}\n{errors}");
        // The cases about missing and malformed tokens run; those naming
        // minted tokens (expired, forged, ...) cannot, and are said so.
        assert!(
            report.contains("auth-every-api-route-without-a-token-is-401")
                && report.contains("auth-header-not-a-jwt-is-401"),
            "{report}"
        );
        assert!(!report.contains("auth-token-expired"), "{report}");
        assert!(
            errors.contains("name tokens only a test identity provider mints"),
            "{errors}"
        );
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
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--target") && stderr.contains("NAME=URL"),
        "the error names the flag and its form: {stderr}"
    );
}
