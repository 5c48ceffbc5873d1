//! The handler's connection bounds (`src/server.rs`), tried as an attacker
//! would, with small limits so each test is short: silent, slow and idle
//! clients are closed, a slow body gets 408, and a crowd of idle sockets
//! never stops the handler from answering others. Every wait is bounded:
//! a read that outlives its guard fails the test instead of hanging it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const HEADER_TIMEOUT_MS: u64 = 400;
const REQUEST_TIMEOUT_MS: u64 = 1_200;
const MAX_CONNECTIONS: usize = 4;
/// How long a test waits for the server to act before calling it a failure.
const GUARD: Duration = Duration::from_secs(15);

mod common;
use common::Handler;

fn start() -> Handler {
    common::start(&[
        (
            "TWINCELL_HTTP_HEADER_TIMEOUT_MS",
            &HEADER_TIMEOUT_MS.to_string(),
        ),
        (
            "TWINCELL_HTTP_REQUEST_TIMEOUT_MS",
            &REQUEST_TIMEOUT_MS.to_string(),
        ),
        (
            "TWINCELL_HTTP_MAX_CONNECTIONS",
            &MAX_CONNECTIONS.to_string(),
        ),
        ("RUST_LOG", "off"),
    ])
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(GUARD)).unwrap();
    stream
}

/// Reads until the server closes the connection; everything it sent.
/// Fails the test if the server keeps it open past the guard.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => out,
        Err(e) => panic!("the server kept the connection open ({e}); read so far: {out:?}"),
    }
}

fn health(address: &str) -> String {
    let mut stream = connect(address);
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    String::from_utf8_lossy(&read_until_closed(&mut stream)).into_owned()
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let handler = start();
    let mut stream = connect(&handler.address);
    let started = Instant::now();
    let sent = read_until_closed(&mut stream);
    assert!(sent.is_empty(), "{sent:?}");
    assert!(started.elapsed() >= Duration::from_millis(HEADER_TIMEOUT_MS / 2));
}

#[test]
fn a_request_head_sent_byte_by_byte_is_cut_off() {
    let handler = start();
    let mut stream = connect(&handler.address);
    let head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // One byte per 50 ms: the whole head would take about 5 s, far past
    // the 400 ms the server allows for it.
    let mut cut_off = false;
    for byte in head {
        if stream.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = if cut_off {
        Vec::new()
    } else {
        read_until_closed(&mut stream)
    };
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "a head dripped over seconds was answered: {answer:?}"
    );
}

#[test]
fn a_kept_alive_connection_that_goes_quiet_is_closed() {
    let handler = start();
    let mut stream = connect(&handler.address);
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let sent = String::from_utf8_lossy(&read_until_closed(&mut stream)).into_owned();
    assert!(sent.starts_with("HTTP/1.1 200 OK"), "{sent}");
    assert!(sent.ends_with(r#"{"status":"ok"}"#), "{sent}");
}

#[test]
fn a_body_sent_too_slowly_gets_408_and_the_connection_closes() {
    let handler = start();
    let mut stream = connect(&handler.address);
    stream
        .write_all(
            b"POST /inventory/sku-1/receipts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"quant",
        )
        .unwrap();
    // The rest of the body never comes.
    let sent = String::from_utf8_lossy(&read_until_closed(&mut stream)).into_owned();
    assert!(sent.starts_with("HTTP/1.1 408 "), "{sent}");
    assert!(
        sent.contains("content-type: application/problem+json"),
        "{sent}"
    );
    assert!(sent.contains("connection: close"), "{sent}");
    assert!(
        sent.contains(r#""type":"urn:twincell:problem:request-timeout""#),
        "{sent}"
    );
    // Nothing was received in the meantime.
    let view = health(&handler.address);
    assert!(view.starts_with("HTTP/1.1 200 OK"), "{view}");
}

#[test]
fn a_crowd_of_idle_sockets_never_stops_the_handler_answering_others() {
    let handler = start();
    // Ten times the cap: the server holds at most MAX_CONNECTIONS of
    // them, closes each after the header timeout, and the kernel queues the
    // rest until a slot frees.
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS * 10)
        .map(|_| connect(&handler.address))
        .collect();
    for _ in 0..3 {
        let answer = health(&handler.address);
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }
    drop(idle);
}

#[test]
fn a_bad_limit_stops_the_handler_with_the_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_handler"))
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
        .env("TWINCELL_HTTP_MAX_CONNECTIONS", "0")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("TWINCELL_HTTP_MAX_CONNECTIONS=\"0\" is not a positive whole number"),
        "{stderr}"
    );
}

/// The crowds of an attack on the edge, past the real default cap: the
/// handler with its production bounds but for the cap (64, so the test
/// holds fewer sockets), and a crowd of twice the cap.
fn start_for_crowds() -> Handler {
    common::start(&[("TWINCELL_HTTP_MAX_CONNECTIONS", "64"), ("RUST_LOG", "off")])
}

const CROWD: usize = 128;

/// `/health` and a receipt from new connections, each answered within a
/// second, a few times over `for_how_long`.
fn others_are_answered_within_a_second(address: &str, for_how_long: Duration) {
    let started = Instant::now();
    let mut probes = 0;
    while started.elapsed() < for_how_long {
        let asked = Instant::now();
        let answer = health(address);
        let took = asked.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(took < Duration::from_secs(1), "/health took {took:?}");
        let asked = Instant::now();
        let mut stream = connect(address);
        stream
            .write_all(
                b"POST /inventory/sku-crowd/receipts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"quantity\":1}\n",
            )
            .unwrap();
        let answer = String::from_utf8_lossy(&read_until_closed(&mut stream)).into_owned();
        let took = asked.elapsed();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(took < Duration::from_secs(1), "a receipt took {took:?}");
        probes += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(probes >= 3);
}

#[test]
fn a_crowd_of_slow_bodies_past_the_cap_never_keeps_others_waiting() {
    let handler = start_for_crowds();
    // Each sends a request head and one byte of a 100-byte body, then
    // trickles: the whole-request timeout (30 s) would hold each slot for
    // half a minute.
    let mut crowd: Vec<TcpStream> = (0..CROWD)
        .map(|_| {
            let mut s = connect(&handler.address);
            s.write_all(
                b"POST /inventory/sku-slow/receipts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
            )
            .unwrap();
            s
        })
        .collect();
    others_are_answered_within_a_second(&handler.address, Duration::from_secs(2));
    // The crowd trickles on; others still get in.
    for s in &mut crowd {
        let _ = s.write_all(b" ");
    }
    others_are_answered_within_a_second(&handler.address, Duration::from_secs(2));
    drop(crowd);
}

#[test]
fn a_crowd_of_idle_sockets_past_the_cap_never_keeps_others_waiting() {
    let handler = start_for_crowds();
    // Connected, silent: the header read timeout (10 s) would hold each
    // slot for ten seconds.
    let crowd: Vec<TcpStream> = (0..CROWD).map(|_| connect(&handler.address)).collect();
    others_are_answered_within_a_second(&handler.address, Duration::from_secs(3));
    drop(crowd);
}
