//! The `handler` binary as the Functions host runs it: a real process on a
//! real socket, spoken to in raw HTTP/1.1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

mod common;
use common::start;

/// Sends raw bytes, reads the whole response (the server closes on
/// `Connection: close`), splits status, headers and body.
fn exchange(address: &str, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn handler_serves_the_api_over_a_real_socket() {
    let handler = start(&[("TWINCELL_CELL", "azure"), ("TWINCELL_PEERS", "aws")]);
    let (status, headers, body) = exchange(
        &handler.address,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_slice()), (200, &br#"{"status":"ok"}"#[..]));
    assert_eq!(header(&headers, "x-twincell-cell"), Some("azure"));

    let payload = br#"{"account_id":"acct-1","amount":"7.5","currency":"EUR"}"#;
    let request = [
        format!(
            "POST /transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: k1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        )
        .into_bytes(),
        payload.to_vec(),
    ]
    .concat();
    let (status, headers, body) = exchange(&handler.address, &request);
    assert_eq!(status, 201);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["amount"], "7.50");
    let location = header(&headers, "location").unwrap().to_owned();
    let (status, _, again) = exchange(
        &handler.address,
        format!("GET {location} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!((status, again), (200, body));
}

#[test]
fn unknown_routes_and_methods_are_answered_by_the_router_not_the_transport() {
    let handler = start(&[]);
    let (status, headers, _) = exchange(
        &handler.address,
        b"PATCH /transactions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
    assert_eq!(header(&headers, "allow"), Some("POST"));
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/problem+json")
    );
    let (status, headers, _) = exchange(
        &handler.address,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/problem+json")
    );
}

#[test]
fn a_bad_configuration_stops_the_process_at_start_up() {
    let output = Command::new(env!("CARGO_BIN_EXE_handler"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "not-a-port")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("FUNCTIONS_CUSTOMHANDLER_PORT"));
    let output = Command::new(env!("CARGO_BIN_EXE_handler"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_STORE", "memory")
        .env("TWINCELL_CELL", "Azure West")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("TWINCELL_CELL"));
}

#[test]
fn a_frozen_clock_request_is_refused_by_a_build_without_contract_mode() {
    if cfg!(feature = "contract-mode") {
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_handler"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_STORE", "memory")
        .env("TWINCELL_AUTH", "disabled")
        .env("TWINCELL_FIXED_CLOCK_MS", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no contract mode"));
}

#[test]
fn without_an_authentication_setting_the_handler_does_not_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_handler"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_STORE", "memory")
        .env_remove("TWINCELL_AUTH")
        .env_remove("TWINCELL_AUTH_ISSUER")
        .env_remove("TWINCELL_AUTH_AUDIENCE")
        .env_remove("TWINCELL_AUTH_JWKS_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no authentication is configured")
            && stderr.contains("TWINCELL_AUTH=disabled"),
        "{stderr}"
    );
    for (name, value, reason) in [
        ("TWINCELL_AUTH", "off", "the only value is"),
        (
            "TWINCELL_AUTH_ISSUER",
            "http://login.example",
            "must be https://",
        ),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_handler"))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
            .env("TWINCELL_STORE", "memory")
            .env("TWINCELL_AUTH_AUDIENCE", "api://twincell")
            .env(name, value)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{name}={value}: {stderr}");
    }
}

/// The one kind of answer that is not the router's: hyper refuses a
/// request head over its read buffer before any request exists to route,
/// so the answer has no body and no request id. docs/api.md lists it.
#[test]
fn an_oversized_url_or_header_block_is_refused_by_hyper_itself_without_a_request_id() {
    let handler = common::start(&[]);
    let long_url = format!(
        "GET /inventory/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    let (status, headers, body) = exchange(&handler.address, long_url.as_bytes());
    let big_header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(600_000)
    );
    let (header_status, header_headers, header_body) =
        exchange(&handler.address, big_header.as_bytes());
    for (what, status, headers, body) in [
        ("a 100 KB URL", status, headers, body),
        (
            "a 600 KB header",
            header_status,
            header_headers,
            header_body,
        ),
    ] {
        assert!(
            status == 414 || status == 431,
            "{what}: {status} (hyper answers 414 or 431 before routing)"
        );
        assert!(header(&headers, "x-request-id").is_none(), "{what}");
        assert!(body.is_empty(), "{what}: no problem+json body");
    }
    // The handler goes on answering.
    let (status, headers, _) = exchange(
        &handler.address,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(header(&headers, "x-request-id").is_some());
}
