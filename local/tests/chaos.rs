//! The clouds' faults on the real matrix (the `twincell-local` binary: both
//! cells as processes on their SQLite files, the Event Grid stand-in, the
//! front door), under a workload of clients that retry as real ones do —
//! the same `Idempotency-Key`, the same `order_id`, a bounded number of
//! attempts with backoff. Each scenario runs the workload for a few seconds
//! while its faults come and go, waits until both cells agree, and checks
//! what the clients were told against what the cells hold:
//!
//! - **lost**: an acknowledged payment missing in a cell, or fewer units
//!   received or reserved than acknowledged;
//! - **doubled**: more units received or reserved than acknowledged (beyond
//!   what requests that were never answered may have added, and what a
//!   reservation refused for stock after an unanswered attempt may hold:
//!   `docs/domain.md`, counted and printed apart);
//! - **oversold**: a view, sampled from each cell every 100 ms and at the
//!   end, with more reserved than on hand beyond a shortage it reports;
//! - **unanswered**: an operation still without an answer after its
//!   attempts.
//!
//! A reported shortage (`docs/domain.md`, keyed writes retried across a
//! partition) is counted apart. Each prints its figures, the RTO (death
//! to each client's first success through the front door) and the
//! replication backlog at the fault with its drain time. Run with
//! `--no-capture` to see them (`scripts/test.sh` does).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::zombie_processes,
    clippy::as_conversions,
    // The figures are the output.
    clippy::print_stdout
)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const CLIENTS: usize = 6;
const WORKLOAD: Duration = Duration::from_secs(8);
const SKUS: [&str; 3] = ["sku-a", "sku-b", "sku-c"];
const ATTEMPTS: u32 = 8;

/// What the clients were told.
#[derive(Debug, Default)]
struct Told {
    payments: BTreeMap<String, Value>,
    received: BTreeMap<String, i64>,
    reserved: BTreeMap<String, i64>,
    refused_reservations: u64,
    /// Quantities of writes never answered, which may or may not count.
    unanswered_receipts: BTreeMap<String, i64>,
    unanswered_reservations: BTreeMap<String, i64>,
    /// Reservations refused for stock after an attempt that went
    /// unanswered: that attempt may hold in the cell that did not answer
    /// (docs/domain.md, "A refusal after an unanswered attempt"). Their
    /// quantities may or may not count; how many ended held is printed.
    uncertain_refusals: BTreeMap<String, i64>,
    uncertain_refused: u64,
    unanswered: u64,
    unexpected: Vec<String>,
    ops: u64,
    /// When each client's successes completed.
    successes: Vec<(usize, Instant)>,
    oversold: Vec<String>,
    shortage: i64,
}

enum Outcome {
    Ok(Value),
    /// Refused for stock; whether an earlier attempt went unanswered.
    Refused(bool),
    Unanswered,
    Unexpected(String),
}

/// A small, seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One operation, retried as a client would: the same request until an
/// answer that is not a transient failure, at most `ATTEMPTS` times.
async fn send(
    http: &reqwest::Client,
    url: &str,
    client: usize,
    key: Option<&str>,
    body: &Value,
) -> Outcome {
    let mut wait = Duration::from_millis(50);
    let mut unanswered_attempt = false;
    for _ in 0..ATTEMPTS {
        let mut request = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-twincell-client", format!("chaos-{client}"))
            .timeout(Duration::from_secs(10))
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Ok(answer) = request.send().await {
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap_or_default();
            match status {
                200 | 201 => return Outcome::Ok(serde_json::from_str(&text).unwrap()),
                409 if text.contains("insufficient-stock") => {
                    return Outcome::Refused(unanswered_attempt);
                }
                408 | 429 | 500 | 502 | 503 | 504 => unanswered_attempt = true,
                _ => return Outcome::Unexpected(format!("{status} {url} {body}: {text}")),
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(800));
    }
    Outcome::Unanswered
}

async fn client(n: usize, door: String, until: Instant, told: Arc<Mutex<Told>>) {
    let http = reqwest::Client::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let sku = SKUS[rng.below(SKUS.len() as u64) as usize];
        let kind = rng.below(10);
        let (outcome, what) = if kind < 4 {
            let key = format!("c{n}-p{i}");
            let body =
                json!({"account_id": format!("acct-{n}"), "amount": "1.00", "currency": "USD"});
            (
                send(&http, &format!("{door}/transactions"), n, Some(&key), &body).await,
                ("payment", key, 0),
            )
        } else if kind < 7 {
            let key = format!("c{n}-r{i}");
            let quantity = 1 + rng.below(5) as i64;
            let body = json!({"quantity": quantity});
            (
                send(
                    &http,
                    &format!("{door}/inventory/{sku}/receipts"),
                    n,
                    Some(&key),
                    &body,
                )
                .await,
                ("receipt", key, quantity),
            )
        } else {
            let order = format!("c{n}-o{i}");
            let quantity = 1 + rng.below(2) as i64;
            let body = json!({"order_id": order, "quantity": quantity});
            (
                send(
                    &http,
                    &format!("{door}/inventory/{sku}/reservations"),
                    n,
                    None,
                    &body,
                )
                .await,
                ("reservation", order, quantity),
            )
        };
        let mut told = told.lock().unwrap();
        told.ops += 1;
        let (kind, key, quantity) = what;
        match outcome {
            Outcome::Ok(body) => {
                told.successes.push((n, Instant::now()));
                match kind {
                    "payment" => {
                        told.payments.insert(key, body);
                    }
                    "receipt" => *told.received.entry(sku.to_owned()).or_default() += quantity,
                    _ => *told.reserved.entry(sku.to_owned()).or_default() += quantity,
                }
            }
            Outcome::Refused(uncertain) => {
                told.refused_reservations += 1;
                if uncertain {
                    told.uncertain_refused += 1;
                    *told.uncertain_refusals.entry(sku.to_owned()).or_default() += quantity;
                }
            }
            Outcome::Unanswered => {
                told.unanswered += 1;
                match kind {
                    "receipt" => {
                        *told.unanswered_receipts.entry(sku.to_owned()).or_default() += quantity
                    }
                    "reservation" => {
                        *told
                            .unanswered_reservations
                            .entry(sku.to_owned())
                            .or_default() += quantity
                    }
                    _ => {}
                }
            }
            Outcome::Unexpected(e) => told.unexpected.push(e),
        }
    }
}

fn number(v: &Value, field: &str) -> i64 {
    v.get(field).and_then(Value::as_i64).unwrap_or(0)
}

/// Whether a view holds more reserved than on hand beyond the shortage it
/// reports, in total or in a cell's ledger.
fn oversold(view: &Value) -> Option<String> {
    let over = |v: &Value| number(v, "reserved") - number(v, "on_hand") > number(v, "shortage");
    if over(view) {
        return Some(view.to_string());
    }
    view.get("cells")
        .and_then(Value::as_object)
        .and_then(|cells| cells.values().find(|c| over(c)).map(|_| view.to_string()))
}

/// Samples every cell's view of every SKU every 100 ms until `until`.
async fn sampler(cells: Vec<String>, until: Instant, told: Arc<Mutex<Told>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while Instant::now() < until {
        for cell in &cells {
            for sku in SKUS {
                let Ok(answer) = http.get(format!("{cell}/inventory/{sku}")).send().await else {
                    continue;
                };
                if answer.status().as_u16() != 200 {
                    continue;
                }
                let view: Value = answer.json().await.unwrap();
                if let Some(v) = oversold(&view) {
                    told.lock().unwrap().oversold.push(v);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A fault, switched at an offset from the workload's start.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill(&'static str),
    Start(&'static str),
    StoreDown(&'static str),
    StoreUp(&'static str),
    Cut(Option<&'static str>),
    Heal(Option<&'static str>),
    Disable(&'static str),
    Enable(&'static str),
}

impl Fault {
    fn path_and_body(self) -> (String, String) {
        let way =
            |d: Option<&str>| d.map_or_else(String::new, |d| json!({"direction": d}).to_string());
        match self {
            Self::Kill(c) => (format!("cells/{c}/kill"), String::new()),
            Self::Start(c) => (format!("cells/{c}/start"), String::new()),
            Self::StoreDown(c) => (format!("cells/{c}/store-down"), String::new()),
            Self::StoreUp(c) => (format!("cells/{c}/store-up"), String::new()),
            Self::Cut(d) => ("replication/cut".to_owned(), way(d)),
            Self::Heal(d) => ("replication/heal".to_owned(), way(d)),
            Self::Disable(c) => (format!("cells/{c}/disable"), String::new()),
            Self::Enable(c) => (format!("cells/{c}/enable"), String::new()),
        }
    }

    /// Whether it takes something away (the RTO and backlog count from the
    /// first of these).
    fn breaks(self) -> bool {
        matches!(self, Self::Kill(_) | Self::StoreDown(_) | Self::Cut(_))
    }

    fn mends(self) -> bool {
        matches!(self, Self::Start(_) | Self::StoreUp(_) | Self::Heal(_))
    }
}

fn backlogs(status: &Value) -> BTreeMap<String, i64> {
    status["replication"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(way, r)| (way.clone(), r["backlog"].as_i64().unwrap_or(-1)))
        .collect()
}

/// The matrix's status, as `twincell-local status` prints it.
async fn matrix_status(http: &reqwest::Client, running: &Running) -> Value {
    http.get(format!("{}/_matrix/status", running.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn percentile(sorted: &[u128], q: usize) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * q).div_ceil(100).saturating_sub(1)]
}

async fn scenario(name: &str, flags: &[&str], faults: &[(u64, Fault)]) {
    twincell_local::install_crypto();
    let dir = fresh_dir(&format!("chaos-{name}"));
    let running = start_with(&dir, flags);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap();
    let status = matrix_status(&http, &running).await;
    let cells: Vec<String> = ["aws", "azure"]
        .iter()
        .map(|c| status["cells"][c]["url"].as_str().unwrap().to_owned())
        .collect();
    let told = Arc::new(Mutex::new(Told::default()));
    let begun = Instant::now();
    let until = begun + WORKLOAD;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..CLIENTS {
        tasks.spawn(client(n, running.url.clone(), until, Arc::clone(&told)));
    }
    let sampling = tokio::spawn(sampler(
        cells.clone(),
        until + Duration::from_secs(2),
        Arc::clone(&told),
    ));

    // The faults, on schedule.
    let mut broke: Option<(Instant, BTreeMap<String, i64>)> = None;
    let mut mended: Option<Instant> = None;
    for (at_ms, fault) in faults {
        tokio::time::sleep_until((begun + Duration::from_millis(*at_ms)).into()).await;
        let (path, body) = fault.path_and_body();
        // The backlog at the moment of the fault, read just before it (a
        // store taken down can't be read after).
        let backlog = if fault.breaks() && broke.is_none() {
            Some(backlogs(&matrix_status(&http, &running).await))
        } else {
            None
        };
        let before = Instant::now();
        let answer = http
            .post(format!("{}/_matrix/{path}", running.url))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{fault:?}");
        if let Some(backlog) = backlog {
            broke = Some((before, backlog));
        } else if fault.mends() {
            mended = Some(Instant::now());
        }
    }
    tasks.join_all().await;
    sampling.await.unwrap();

    // Quiescence: both cells agree on every SKU and every payment.
    let payments: Vec<String> = told
        .lock()
        .unwrap()
        .payments
        .values()
        .map(|p| p["transaction_id"].as_str().unwrap().to_owned())
        .collect();
    let mut paths: Vec<String> = SKUS.iter().map(|s| format!("/inventory/{s}")).collect();
    paths.extend(payments.iter().map(|id| format!("/transactions/{id}")));
    let settling = Instant::now();
    let mut views: BTreeMap<String, Value> = BTreeMap::new();
    let mut drained_after: Option<Duration> = None;
    // Quiet twice in a row, a second apart: no backlog, and both cells'
    // answers identical (a batch in flight at the stand-in is in no
    // backlog for an instant).
    let mut quiet_checks = 0;
    let mut previous: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        let status = matrix_status(&http, &running).await;
        let drained = backlogs(&status).values().all(|b| *b == 0);
        if drained && drained_after.is_none() {
            drained_after = mended.map(|m| m.elapsed());
        }
        let mut agreed = true;
        for path in &paths {
            let mut bodies = Vec::new();
            for cell in &cells {
                let answer = http.get(format!("{cell}{path}")).send().await.unwrap();
                bodies.push((answer.status().as_u16(), answer.text().await.unwrap()));
            }
            if bodies[0].0 != 200 || bodies[0] != bodies[1] {
                agreed = false;
                break;
            }
            views.insert(path.clone(), serde_json::from_str(&bodies[0].1).unwrap());
        }
        if agreed && drained && (quiet_checks == 0 || views == previous) {
            quiet_checks += 1;
            if quiet_checks == 2 {
                break;
            }
            previous = views.clone();
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            continue;
        }
        quiet_checks = 0;
        assert!(
            settling.elapsed() < Duration::from_secs(45),
            "{name}: the cells did not agree within 45 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // What the cells hold against what the clients were told.
    let mut guard = told.lock().unwrap();
    let told: &mut Told = &mut guard;
    let (mut lost, mut doubled, mut held_though_refused) = (0i64, 0i64, 0i64);
    for (key, body) in &told.payments {
        let id = body["transaction_id"].as_str().unwrap();
        let held = &views[&format!("/transactions/{id}")];
        if held["amount"] != body["amount"] || held["account_id"] != body["account_id"] {
            lost += 1;
            told.unexpected
                .push(format!("payment {key}: told {body}, held {held}"));
        }
    }
    for sku in SKUS {
        let view = &views[&format!("/inventory/{sku}")];
        for (field, acknowledged, unanswered) in [
            ("on_hand", &told.received, &told.unanswered_receipts),
            ("reserved", &told.reserved, &told.unanswered_reservations),
        ] {
            // On hand less a reported shortage is what received stock
            // backs (docs/domain.md).
            let held = if field == "on_hand" {
                number(view, field) - number(view, "shortage")
            } else {
                number(view, field)
            };
            let acknowledged = acknowledged.get(sku).copied().unwrap_or(0);
            let maybe = unanswered.get(sku).copied().unwrap_or(0);
            let refused = if field == "reserved" {
                told.uncertain_refusals.get(sku).copied().unwrap_or(0)
            } else {
                0
            };
            let (l, d) = (
                (acknowledged - held).max(0),
                (held - acknowledged - maybe - refused).max(0),
            );
            // Units held beyond the acknowledged and the never answered
            // that refusals after an unanswered attempt account for.
            held_though_refused += (held - acknowledged - maybe).clamp(0, refused);
            if l > 0 || d > 0 {
                told.unexpected.push(format!(
                    "{sku} {field}: held {held}, acknowledged {acknowledged}, maybe {maybe}; view {view}"
                ));
            }
            lost += l;
            doubled += d;
        }
        told.shortage += number(view, "shortage");
        if let Some(v) = oversold(view) {
            told.oversold.push(v);
        }
    }

    // RTO: from the first fault that took something away to each client's
    // first success after it.
    let mut rto: Vec<u128> = Vec::new();
    if let Some((at, _)) = &broke {
        for n in 0..CLIENTS {
            if let Some((_, done)) = told
                .successes
                .iter()
                .find(|(client, done)| *client == n && done > at)
            {
                rto.push(done.duration_since(*at).as_millis());
            }
        }
        rto.sort_unstable();
    }
    let backlog = broke
        .as_ref()
        .map(|(_, b)| {
            b.iter()
                .map(|(way, n)| format!("{way} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "-".to_owned());
    println!(
        "chaos {name}: lost {lost}, doubled {doubled}, oversold {}, unanswered {} | reported shortage {}, units held for orders refused after an unanswered attempt {held_though_refused} (of {} such refusals) | {} operations ({} payments, {} reservations refused for stock) | RTO {} | backlog at the fault: {backlog}; drained {} after the repair",
        told.oversold.len(),
        told.unanswered,
        told.shortage,
        told.uncertain_refused,
        told.ops,
        told.payments.len(),
        told.refused_reservations,
        if rto.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "p50 {} ms, max {} ms over {} clients",
                percentile(&rto, 50),
                rto.last().copied().unwrap_or(0),
                rto.len()
            )
        },
        drained_after.map_or_else(|| "-".to_owned(), |d| format!("{} ms", d.as_millis())),
    );
    assert!(told.unexpected.is_empty(), "{name}: {:?}", told.unexpected);
    assert_eq!(
        (lost, doubled, told.oversold.len(), told.unanswered),
        (0, 0, 0, 0),
        "{name}: oversold views {:?}",
        told.oversold
    );
    assert!(
        told.ops > 100,
        "{name}: a workload of {} operations",
        told.ops
    );
    if broke.is_some() {
        assert_eq!(
            rto.len(),
            CLIENTS,
            "{name}: every client succeeded after the fault"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_killed_mid_workload_and_started_again() {
    scenario(
        "kill",
        &[],
        &[(2_500, Fault::Kill("aws")), (5_000, Fault::Start("aws"))],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_unavailable_for_a_few_seconds() {
    scenario(
        "store-down",
        &[],
        &[
            (2_500, Fault::StoreDown("aws")),
            (5_500, Fault::StoreUp("aws")),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_cut_one_way_then_healed() {
    scenario(
        "cut-one-way",
        &[],
        &[
            (2_000, Fault::Cut(Some("aws-to-azure"))),
            (5_500, Fault::Heal(Some("aws-to-azure"))),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_cut_both_ways_while_clients_move_then_healed() {
    // Clients are moved to the other cell in the middle of the cut, so
    // keyed writes and orders are retried on both sides of it.
    scenario(
        "cut-both-ways",
        &[],
        &[
            (1_500, Fault::Cut(None)),
            (3_000, Fault::Disable("aws")),
            (4_500, Fault::Enable("aws")),
            (6_000, Fault::Heal(None)),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_reordered_deliveries() {
    scenario(
        "duplicates-reordering",
        &["--duplicate-per-mille", "300", "--max-delay-ms", "400"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_flapping_between_cells() {
    let mut faults = Vec::new();
    for i in 0..7u64 {
        let off = if i % 2 == 0 { "aws" } else { "azure" };
        faults.push((500 + i * 1_000, Fault::Disable(off)));
        faults.push((1_000 + i * 1_000, Fault::Enable(off)));
    }
    scenario("flapping", &[], &faults).await;
}
