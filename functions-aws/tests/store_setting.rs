//! The `api` binary runs only on the store it is told to use: without
//! `TWINCELL_STORE` its init fails, naming the variable, before it asks
//! the Lambda runtime for a single event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn api() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command
        .env("TWINCELL_AUTH", "disabled")
        .env("RUST_LOG", "off")
        // A runtime that is not there: reached only after a good init.
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9");
    command
}

#[test]
fn without_a_store_setting_the_init_fails_naming_the_variable() {
    let output = api().env_remove("TWINCELL_STORE").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TWINCELL_STORE is not set"), "{stderr}");
    assert!(stderr.contains("dynamodb, sqlite, memory"), "{stderr}");
}

#[test]
fn a_store_the_api_was_not_built_with_or_without_its_settings_is_refused() {
    let output = api().env("TWINCELL_STORE", "cosmos").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TWINCELL_STORE=\"cosmos\": this binary runs on dynamodb, sqlite, memory"),
        "{stderr}"
    );
    let output = api()
        .env("TWINCELL_STORE", "dynamodb")
        .env_remove("TWINCELL_DYNAMODB_TABLE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TWINCELL_DYNAMODB_TABLE"), "{stderr}");
}
