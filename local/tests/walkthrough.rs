//! The README's walk-through on the real `twincell-local` binary: both
//! cells as processes on their SQLite files, the Event Grid stand-in, the
//! front door. A payment and a reservation through the front door; the
//! cell that served them killed with SIGKILL (by `twincell-local kill`);
//! the same requests again, answered by the other cell with the same
//! transaction and reservation and no error; the cell started again; both
//! cells' answers identical once the backlog drains; no process left after
//! SIGINT. Then: a matrix killed with SIGKILL takes its cells with it, and
//! one started again on the same directory has everything.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    // The matrix's process is waited for by `Running`'s drop.
    clippy::zombie_processes
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_killed_mid_session_costs_the_client_nothing_and_the_cells_agree_after() {
    twincell_local::install_crypto();
    let dir = fresh_dir("failover");
    let running = start(&dir);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let door = running.url.clone();
    let payment = json!({"account_id": "acct-1", "amount": "19.90", "currency": "USD"});
    let (status, served, first) = post(
        &client,
        &format!("{door}/transactions"),
        Some("checkout-1"),
        payment.clone(),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let receipt = post(
        &client,
        &format!("{door}/inventory/sku-1/receipts"),
        Some("delivery-1"),
        json!({"quantity": 10}),
    )
    .await;
    assert_eq!(receipt.0, 200, "{receipt:?}");
    let reserve = json!({"order_id": "order-1", "quantity": 3});
    let (status, reserved_by, reservation) = post(
        &client,
        &format!("{door}/inventory/sku-1/reservations"),
        None,
        reserve.clone(),
    )
    .await;
    assert_eq!(status, 201, "{reservation}");
    assert_eq!(reserved_by, served, "priority routing keeps one cell");

    // Its events reach the other cell (the status shows the backlog).
    let status = command(&running, &["status"]);
    until_both_agree(&client, &status, "/inventory/sku-1").await;

    // Traces: the AWS cell behind its API Gateway stand-in and Lambda
    // emulator continues an X-Ray root a caller sends, a W3C traceparent
    // wins over it, and either cell starts a trace for a request without.
    let aws = status["cells"]["aws"]["url"].as_str().unwrap().to_owned();
    let azure = status["cells"]["azure"]["url"].as_str().unwrap().to_owned();
    let traced = |url: String, header: Option<(&'static str, &'static str)>| {
        let client = client.clone();
        async move {
            let mut request = client.get(format!("{url}/inventory/sku-1"));
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), 200);
            answer.headers()["traceparent"].to_str().unwrap().to_owned()
        }
    };
    let xray = traced(
        aws.clone(),
        Some((
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        )),
    )
    .await;
    assert!(
        xray.starts_with("00-5759e988bd862e3fe1be46a994272793-"),
        "{xray}"
    );
    for url in [aws.clone(), azure.clone()] {
        let w3c = traced(
            url.clone(),
            Some((
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )),
        )
        .await;
        assert!(
            w3c.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{url}: {w3c}"
        );
        let (a, b) = (traced(url.clone(), None).await, traced(url, None).await);
        assert_eq!((a.len(), b.len()), (55, 55));
        assert_ne!(a.get(3..35), b.get(3..35), "a new trace each time");
    }

    // A payment taken in one cell is followed to its apply in the other:
    // the trace of the request that committed it travels with its event
    // (stored with it, carried by the change feed, published as the
    // CloudEvents `traceparent`), and the other cell's apply line names it.
    for (origin, url, peer) in [("aws", &aws, "azure"), ("azure", &azure, "aws")] {
        let trace_id = if origin == "aws" {
            "0af7651916cd43dd8448eb211c80319c"
        } else {
            "5a0c4e5e0d3b4a2f8c1d2e3f4a5b6c7d"
        };
        let answer = client
            .post(format!("{url}/transactions"))
            .header("content-type", "application/json")
            .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
            .body(json!({"account_id": "acct-t", "amount": "1.00", "currency": "USD"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201);
        let answered = answer.headers()["traceparent"].to_str().unwrap().to_owned();
        let created: Value = answer.json().await.unwrap();
        let path = format!(
            "/transactions/{}",
            created["transaction_id"].as_str().unwrap()
        );
        until_both_agree(&client, &status, &path).await;
        let line = until_logged(&dir.join("data/logs").join(format!("{peer}.log")), |line| {
            line["message"] == "replicated event applied" && line["trace_id"] == trace_id
        })
        .await;
        assert_eq!(line["origin_cell"], origin, "{line}");
        assert_eq!(line["outcome"], "stored", "{line}");
        assert_eq!(
            line["event_type"], "twincell.transaction.created.v1",
            "{line}"
        );
        // Its metrics: the apply counted by origin and outcome, its lag.
        let log = dir.join("data/logs").join(format!("{peer}.log"));
        let counted = until_logged(&log, |line| {
            line["replicated_events"].is_number()
                && line["origin_cell"] == origin
                && line["outcome"] == "stored"
        })
        .await;
        assert_eq!(
            counted["_aws"]["CloudWatchMetrics"][0]["Namespace"], "twincell",
            "{counted}"
        );
        until_logged(&log, |line| {
            !line["replication_lag"].is_null() && line["origin_cell"] == origin
        })
        .await;
        // And the origin's publisher counted it out, with its lag.
        let origin_log = dir.join("data/logs").join(format!("{origin}.log"));
        until_logged(&origin_log, |line| {
            line["published_events"].as_u64() > Some(0) && line["outcome"] == "published"
        })
        .await;
        until_logged(&origin_log, |line| {
            line["publish_lag"]["Count"].as_u64() > Some(0)
        })
        .await;
        // The span that committed it is the one the response named.
        assert_eq!(
            Some(line["parent_span_id"].as_str().unwrap()),
            answered.get(36..52),
            "{line} {answered}"
        );
    }

    // The cell that served the client dies.
    let killed = command(&running, &["kill", &served]);
    assert_eq!(killed["cells"][&served]["process"], "killed");
    let other = if served == "aws" { "azure" } else { "aws" };

    // The same requests again: the other cell answers, with the same
    // transaction and reservation, and the client sees no error.
    let (status, cell, again) = post(
        &client,
        &format!("{door}/transactions"),
        Some("checkout-1"),
        payment,
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {again}");
    assert_eq!(cell, other);
    assert_eq!(again["transaction_id"], first["transaction_id"]);
    let (status, cell, again) = post(
        &client,
        &format!("{door}/inventory/sku-1/reservations"),
        None,
        reserve,
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {again}");
    assert_eq!(cell, other);
    assert_eq!(again, reservation);

    // Started again: its backlog drains and both cells agree.
    let started = command(&running, &["start", &served]);
    assert_eq!(started["cells"][&served]["process"], "running");
    assert_eq!(started["cells"][&served]["starts"], 2);
    let id = first["transaction_id"].as_str().unwrap();
    let transaction = until_both_agree(&client, &started, &format!("/transactions/{id}")).await;
    assert!(transaction.contains(id));
    until_both_agree(&client, &started, "/inventory/sku-1").await;
    let status = command(&running, &["status"]);
    assert!(
        status["front_door"]["retried_on_the_other_cell"].as_u64() >= Some(2),
        "{status}"
    );
    let printed = std::fs::read_to_string(&running.out).unwrap();
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("aws ") && l.contains("azure→aws backlog")),
        "no status line: {printed}"
    );

    // Ctrl-C: every process of the matrix ends.
    let mut running = running;
    let pid = running.child.id();
    let children = descendants(&[pid]);
    assert!(
        children.len() >= 3,
        "both cells and the api function: {children:?}"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no exit on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
    until_gone(&children);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_killed_with_sigkill_takes_its_cells_and_resumes_on_its_directory() {
    twincell_local::install_crypto();
    let dir = fresh_dir("resume");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut running = start(&dir);
    let door = running.url.clone();
    // Replication cut: the receipt waits at the Event Grid stand-in when
    // the matrix dies.
    let cut = command(&running, &["cut"]);
    assert_eq!(cut["replication"]["aws-to-azure"]["cut"], true);
    let (status, _, receipt) = post(
        &client,
        &format!("{door}/inventory/sku-9/receipts"),
        Some("delivery-9"),
        json!({"quantity": 7}),
    )
    .await;
    assert_eq!(status, 200, "{receipt}");
    let started = Instant::now();
    loop {
        let status = command(&running, &["status"]);
        // The receipt and its key's record, published, not delivered.
        let way = &status["replication"]["aws-to-azure"];
        if way["unpublished"] == 0 && way["undelivered"] == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let children = descendants(&[running.child.id()]);
    assert!(children.len() >= 3, "{children:?}");
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    until_gone(&children);
    drop(running);

    // Started again on the same directory: the keys, both files and the
    // stand-in's spool are where they were, and the receipt reaches the
    // other cell.
    let running = start(&dir);
    let status = command(&running, &["status"]);
    let stock = until_both_agree(&client, &status, "/inventory/sku-9").await;
    let stock: Value = serde_json::from_str(&stock).unwrap();
    assert_eq!(stock["on_hand"], 7, "{stock}");
    assert_eq!(stock["cells"]["aws"]["on_hand"], 7, "{stock}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_taken_down_moves_traffic_and_the_controls_refuse_what_they_cannot_do() {
    twincell_local::install_crypto();
    let dir = fresh_dir("controls");
    let running = start(&dir);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let receive = async |client: &reqwest::Client| {
        post(
            client,
            &format!("{}/inventory/sku-5/receipts", running.url),
            None,
            json!({"quantity": 1}),
        )
        .await
    };
    assert_eq!(receive(&client).await.1, "aws");

    // aws's file write-locked: its /health fails, Traffic Manager degrades
    // it, and new requests go to azure.
    let down = command(&running, &["store", "aws", "down"]);
    assert_eq!(down["cells"]["aws"]["store"], "down");
    until_state(&running, "aws", "Degraded").await;
    let (status, cell, _) = receive(&client).await;
    assert_eq!((status, cell.as_str()), (200, "azure"));
    command(&running, &["store", "aws", "up"]);
    until_state(&running, "aws", "Online").await;
    assert_eq!(receive(&client).await.1, "aws");

    // A disabled endpoint gets nothing.
    command(&running, &["disable", "aws"]);
    assert_eq!(receive(&client).await.1, "azure");
    command(&running, &["enable", "aws"]);

    // What the controls refuse.
    for (path, body, expected) in [
        ("cells/gcp/kill", "", 404),
        ("cells/aws/reboot", "", 404),
        ("cells/aws/latency", r#"{"ms": 600000}"#, 400),
        ("cells/aws/latency", r#"{"seconds": 1}"#, 400),
        ("weights", r#"{"aws": 0}"#, 400),
        ("weights", r#"{"gcp": 5}"#, 400),
        ("replication/cut", r#"{"direction": "up"}"#, 400),
        ("replication/sever", "", 404),
        ("cells/aws/store-up", "", 409),
        ("cells/aws/start", "", 409),
    ] {
        assert_eq!(
            control(&client, &running, path, body).await,
            expected,
            "{path} {body}"
        );
    }
    assert_eq!(
        control(&client, &running, "cells/azure/kill", "").await,
        200
    );
    assert_eq!(
        control(&client, &running, "cells/azure/kill", "").await,
        409
    );
}
