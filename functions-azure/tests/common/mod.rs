//! The `handler` binary started as the Functions host starts it, for the
//! tests that speak to it over a socket.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub(crate) struct Handler {
    child: Child,
    pub(crate) address: String,
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the handler on a free port with `extra_env` (which may override
/// the defaults) and waits for its URL line.
pub(crate) fn start(extra_env: &[(&str, &str)]) -> Handler {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_STORE", "memory")
        // No identity provider here: the API routes are open on purpose.
        .env("TWINCELL_AUTH", "disabled")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("the handler binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line
        .trim()
        .rsplit("http://")
        .next()
        .filter(|a| a.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in the first line: {line:?}"))
        .to_owned();
    Handler { child, address }
}
