//! Both cells as real processes, replicating both ways through the Event
//! Grid stand-in, with duplicates, reordering, delays, lost answers, an
//! outage longer than the retention, and a resync:
//!
//! - AWS: `twincell-aws-local` runs the `api` binary behind the API Gateway
//!   stand-in and the `replicator` binary behind the event source mapping
//!   stand-in, which reads moto's DynamoDB stream with the Streams API;
//!   keys come from moto's Secrets Manager.
//! - Azure: the `handler` binary (contract-mode build) on the Cosmos DB
//!   SDK's emulator, its host's change-feed trigger stood in.
//! - Event Grid: `twincell-eventgrid`, one topic per cell, one webhook
//!   subscription per topic to the other cell's `/replication/events`.
//!
//! A seeded random workload runs in both cells (payments with the same
//! idempotency keys in both, receipts, keyed receipts retried in both,
//! reservations of the same orders in both, releases and fulfilments across
//! cells, transfers, write-offs). After the transport quiesces, both cells
//! answer every GET of every touched SKU and transaction with identical
//! bodies, no payment or keyed receipt is doubled, no SKU is oversold in
//! any view, every request was answered, and no stream waits on a gap.
//! Every event travels signed by its origin's key, and a forged one — the
//! delivery key right, the signature missing, of another key, or of a cell
//! that is not a peer — is refused by both cells with a final 403 and
//! applies nothing.
//! Then the transport is cut: a keyed receipt is retried in its own cell
//! (replayed) and in the other (applied again, and 2 of its units reserved
//! there); the retention runs out, and a resync from both cells restores
//! the same, with the receipt counted once in both cells and nothing
//! short; a second resync changes nothing.
//!
//! Needs moto (`TWINCELL_MOTO_ENDPOINT`) and the contract-mode binaries
//! (`TWINCELL_CONTRACT_BIN_DIR`, built by scripts/test.sh); fails, saying
//! so, without them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use twincell_local::matrix::{AWS_KEY, AZURE_KEY, Matrix, Options};
use twincell_local::rng::Rng;

const SKUS: usize = 4;
const ORDERS: usize = 16;
const KEYS: usize = 8;
/// The SKU of the receipt retried across the cut link: nothing else
/// touches it, so its stock is known exactly.
const PALLET_SKU: &str = "e2e-pallet";

/// A path and each cell's answer to it (status, body).
type Views = Vec<(String, (u16, String), (u16, String))>;

fn pick(rng: &Rng, bound: usize) -> usize {
    usize::try_from(rng.below(u64::try_from(bound).unwrap())).unwrap()
}
struct Cell {
    name: &'static str,
    url: String,
    key: &'static str,
}

#[derive(Default)]
struct Ledger {
    received: BTreeMap<String, u64>,
    written_off: BTreeMap<String, u64>,
    /// Per idempotency key, the transaction ids each cell answered.
    payments: BTreeMap<String, BTreeSet<String>>,
    /// Per keyed receipt (key), its SKU, units and the cells that applied
    /// it rather than replaying it.
    keyed: BTreeMap<String, (String, u64, BTreeSet<usize>)>,
    requests: u64,
    unanswered: Vec<String>,
}

struct World {
    client: reqwest::Client,
    cells: [Cell; 2],
    eventgrid: String,
    ledger: Ledger,
    rng: Rng,
}

fn sku(i: usize) -> String {
    format!("e2e-sku-{i}")
}

fn order_sku(o: usize) -> usize {
    o % SKUS
}

fn order_quantity(o: usize) -> usize {
    1 + o % 3
}

impl World {
    /// Sends a request, retrying 503 as a client does; `None` when the
    /// cell gave no usable answer (counted as unanswered).
    async fn call(
        &mut self,
        cell: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Option<(u16, Value, reqwest::header::HeaderMap)> {
        self.ledger.requests += 1;
        let url = format!("{}{path}", self.cells[cell].url);
        for _ in 0..20 {
            let mut request = self.client.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                &url,
            );
            if let Some(b) = &body {
                request = request
                    .header("content-type", "application/json")
                    .body(b.to_string());
            }
            if let Some(k) = idempotency_key {
                request = request.header("idempotency-key", k);
            }
            match request.send().await {
                Ok(r) if r.status().as_u16() == 503 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let headers = r.headers().clone();
                    let json = r.json().await.unwrap_or(Value::Null);
                    return Some((status, json, headers));
                }
                Err(e) => {
                    self.ledger.unanswered.push(format!("{method} {url}: {e}"));
                    return None;
                }
            }
        }
        self.ledger
            .unanswered
            .push(format!("{method} {url}: 503 twenty times"));
        None
    }

    fn expect(&mut self, what: &str, got: Option<u16>, allowed: &[u16]) {
        if let Some(status) = got
            && !allowed.contains(&status)
        {
            self.ledger
                .unanswered
                .push(format!("{what}: unexpected status {status}"));
        }
    }

    async fn receive(&mut self, cell: usize, s: usize, quantity: u64) {
        let r = self
            .call(
                cell,
                "POST",
                &format!("/inventory/{}/receipts", sku(s)),
                Some(json!({"quantity": quantity})),
                None,
            )
            .await;
        if r.as_ref().is_some_and(|(st, ..)| *st == 200) {
            *self.ledger.received.entry(sku(s)).or_default() += quantity;
        }
        self.expect("receive", r.map(|r| r.0), &[200]);
    }

    /// A receipt with idempotency key `k` on SKU `s`: the same units
    /// whichever cell takes it, counted once in the ledger.
    async fn keyed_receive(
        &mut self,
        cell: usize,
        s: &str,
        k: &str,
        quantity: u64,
    ) -> Option<Value> {
        let r = self
            .call(
                cell,
                "POST",
                &format!("/inventory/{s}/receipts"),
                Some(json!({"quantity": quantity})),
                Some(k),
            )
            .await;
        self.expect("keyed receive", r.as_ref().map(|r| r.0), &[200]);
        let (200, view, headers) = r? else {
            return None;
        };
        let replayed = headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let entry = self
            .ledger
            .keyed
            .entry(k.to_owned())
            .or_insert_with(|| (s.to_owned(), quantity, BTreeSet::new()));
        if entry.2.is_empty() {
            *self.ledger.received.entry(s.to_owned()).or_default() += quantity;
        }
        if !replayed {
            entry.2.insert(cell);
        }
        Some(view)
    }

    /// One random operation in a random cell.
    async fn random_op(&mut self) {
        let cell = usize::try_from(self.rng.below(2)).unwrap();
        let s = pick(&self.rng, SKUS);
        let o = pick(&self.rng, ORDERS);
        let q = 1 + self.rng.below(5);
        match self.rng.below(19) {
            0..=2 => self.receive(cell, s, q + 2).await,
            3..=7 => {
                let body = json!({"order_id": format!("order-{o}"), "quantity": order_quantity(o)});
                let r = self
                    .call(
                        cell,
                        "POST",
                        &format!("/inventory/{}/reservations", sku(order_sku(o))),
                        Some(body),
                        None,
                    )
                    .await;
                self.expect("reserve", r.map(|r| r.0), &[201, 409]);
            }
            8..=9 => {
                let r = self
                    .call(
                        cell,
                        "DELETE",
                        &format!("/inventory/{}/reservations/order-{o}", sku(order_sku(o))),
                        None,
                        None,
                    )
                    .await;
                self.expect("release", r.map(|r| r.0), &[200, 202, 404, 409]);
            }
            10..=11 => {
                let r = self
                    .call(
                        cell,
                        "POST",
                        &format!(
                            "/inventory/{}/reservations/order-{o}/fulfilment",
                            sku(order_sku(o))
                        ),
                        None,
                        None,
                    )
                    .await;
                self.expect("fulfil", r.map(|r| r.0), &[200, 202, 404, 409]);
            }
            12 => {
                let to = self.cells[1 - cell].name;
                let r = self
                    .call(
                        cell,
                        "POST",
                        &format!("/inventory/{}/transfers", sku(s)),
                        Some(json!({"to_cell": to, "quantity": q})),
                        None,
                    )
                    .await;
                self.expect("transfer", r.map(|r| r.0), &[200, 409]);
            }
            13 => {
                let body = json!({"quantity": 1, "reason": "damaged in the e2e run"});
                let r = self
                    .call(
                        cell,
                        "POST",
                        &format!("/inventory/{}/write-offs", sku(s)),
                        Some(body),
                        None,
                    )
                    .await;
                if r.as_ref().is_some_and(|(st, ..)| *st == 200) {
                    *self.ledger.written_off.entry(sku(s)).or_default() += 1;
                }
                self.expect("write-off", r.map(|r| r.0), &[200, 409]);
            }
            14..=15 => {
                let k = pick(&self.rng, KEYS);
                self.pay(cell, k).await;
            }
            _ => {
                // Keyed pallet `k` of SKU `k % SKUS`: 3 + k units.
                let k = pick(&self.rng, KEYS);
                let units = 3 + u64::try_from(k).unwrap();
                self.keyed_receive(cell, &sku(k % SKUS), &format!("pallet-{k}"), units)
                    .await;
            }
        }
    }

    /// A payment with idempotency key `k`: the same payload whichever cell
    /// takes it.
    async fn pay(&mut self, cell: usize, k: usize) {
        let key = format!("checkout-{k}");
        let body = json!({"account_id": format!("acct-{}", k % 3), "amount": format!("{}.50", k + 1), "currency": "EUR"});
        let r = self
            .call(cell, "POST", "/transactions", Some(body), Some(&key))
            .await;
        if let Some((201, view, _)) = &r {
            let id = view["transaction_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.ledger.payments.entry(key).or_default().insert(id);
        }
        self.expect("pay", r.map(|r| r.0), &[201]);
    }

    async fn get_text(&self, cell: usize, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.cells[cell].url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Every GET of every touched SKU and transaction, in both cells.
    async fn views(&self) -> Views {
        let mut paths: Vec<String> = (0..SKUS)
            .map(|s| format!("/inventory/{}", sku(s)))
            .chain([format!("/inventory/{PALLET_SKU}")])
            .collect();
        for ids in self.ledger.payments.values() {
            paths.extend(ids.iter().map(|id| format!("/transactions/{id}")));
        }
        let mut out = Vec::new();
        for p in paths {
            let a = self.get_text(0, &p).await;
            let b = self.get_text(1, &p).await;
            out.push((p, a, b));
        }
        out
    }

    async fn eventgrid_stats(&self) -> Value {
        self.client
            .get(format!("{}/control/stats", self.eventgrid))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn control(&self, what: &str) -> Value {
        let r = self
            .client
            .post(format!("{}/control/{what}", self.eventgrid))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "control {what}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    async fn status(&self, cell: usize) -> Value {
        self.client
            .get(format!("{}/replication/status", self.cells[cell].url))
            .header("x-twincell-replication-key", self.cells[cell].key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until nothing is in flight and both cells answer every GET
    /// alike twice in a row; panics with what differs after `limit`.
    async fn quiesce(&self, limit: Duration) -> Views {
        let start = Instant::now();
        let mut last_diff = String::new();
        let mut stable = None;
        while start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let stats = self.eventgrid_stats().await;
            let pending: u64 = stats["subscriptions"]
                .as_object()
                .unwrap()
                .values()
                .map(|s| s["pending"].as_u64().unwrap())
                .sum();
            if pending > 0 {
                last_diff = format!("{pending} events still in Event Grid: {stats}");
                stable = None;
                continue;
            }
            let views = self.views().await;
            match views.iter().find(|(_, a, b)| a != b) {
                Some((path, a, b)) => {
                    last_diff = format!("{path}: aws {a:?}, azure {b:?}");
                    stable = None;
                }
                None if stable.as_ref() == Some(&views) => return views,
                None => stable = Some(views),
            }
        }
        panic!("the cells did not converge within {limit:?}: {last_diff}");
    }

    async fn resync(&mut self, cell: usize) -> u64 {
        let mut cursor = Value::Null;
        let mut published = 0;
        for _ in 0..1_000 {
            let r = self
                .client
                .post(format!("{}/replication/resync", self.cells[cell].url))
                .header("x-twincell-replication-key", self.cells[cell].key)
                .header("content-type", "application/json")
                .body(json!({"cursor": cursor, "max_events": 200}).to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let answer: Value = r.json().await.unwrap();
            assert_eq!(status, 200, "resync in {}: {answer}", self.cells[cell].name);
            published += answer["published"].as_u64().unwrap();
            cursor = answer["next"].clone();
            if cursor.is_null() {
                return published;
            }
        }
        panic!("resync did not finish");
    }
}

/// The checks after convergence.
async fn check_converged(world: &mut World, views: &Views) {
    assert!(
        world.ledger.unanswered.is_empty(),
        "requests left unanswered or answered wrongly: {:?}",
        world.ledger.unanswered
    );
    for (path, (status, body), _) in views {
        assert_eq!(*status, 200, "{path}: {body}");
        if !path.starts_with("/inventory/") {
            continue;
        }
        let view: Value = serde_json::from_str(body).unwrap();
        let s = view["sku"].as_str().unwrap();
        // A shortage only comes of a keyed receipt applied in both cells,
        // and never exceeds its units.
        let shortage = view["shortage"].as_u64().unwrap_or(0);
        let bound: u64 = world
            .ledger
            .keyed
            .values()
            .filter(|(sku, _, cells)| sku == s && cells.len() > 1)
            .map(|(_, units, _)| units)
            .sum();
        assert!(
            shortage <= bound,
            "{path}: shortage {shortage} over {bound}: {body}"
        );
        let mut on_hand = 0;
        for (cell, numbers) in view["cells"].as_object().unwrap() {
            let held = numbers["reserved"].as_u64().unwrap();
            let here = numbers["on_hand"].as_u64().unwrap();
            assert!(
                held <= here,
                "{path}: {cell} holds {held} of {here}: oversold"
            );
            on_hand += here;
        }
        let came = world.ledger.received.get(s).copied().unwrap_or(0);
        let gone = world.ledger.written_off.get(s).copied().unwrap_or(0);
        assert!(
            on_hand - shortage <= came - gone,
            "{path}: {on_hand} on hand ({shortage} short) of {came} received and {gone} written off"
        );
    }
    // A keyed receipt retried in either cell now replays the one answer.
    let keyed = world.ledger.keyed.clone();
    for (key, (s, units, _)) in &keyed {
        let mut answers = Vec::new();
        for cell in 0..2 {
            let (status, view, headers) = world
                .call(
                    cell,
                    "POST",
                    &format!("/inventory/{s}/receipts"),
                    Some(json!({"quantity": units})),
                    Some(key),
                )
                .await
                .unwrap();
            assert_eq!(status, 200, "{key} in {cell}: {view}");
            assert_eq!(headers["idempotent-replayed"], "true", "{key} in {cell}");
            answers.push(view);
        }
        assert_eq!(
            answers[0], answers[1],
            "{key}: the cells replay different answers"
        );
    }
    // One transaction per key, whichever cell took it, and a retry in
    // either cell replays it.
    let payments = world.ledger.payments.clone();
    for (key, ids) in &payments {
        assert_eq!(ids.len(), 1, "{key} created {ids:?}");
        let k: usize = key.trim_start_matches("checkout-").parse().unwrap();
        let id = ids.iter().next().unwrap();
        let canonical = world.get_text(0, &format!("/transactions/{id}")).await.1;
        for cell in 0..2 {
            let body = json!({"account_id": format!("acct-{}", k % 3), "amount": format!("{}.50", k + 1), "currency": "EUR"});
            let (status, view, headers) = world
                .call(cell, "POST", "/transactions", Some(body), Some(key))
                .await
                .unwrap();
            assert_eq!(status, 201);
            assert_eq!(headers["idempotent-replayed"], "true");
            assert_eq!(
                view,
                serde_json::from_str::<Value>(&canonical).unwrap(),
                "{key} in {cell}"
            );
        }
    }
    for cell in 0..2 {
        let status = world.status(cell).await;
        for peer in status["peers"].as_array().unwrap() {
            assert_eq!(peer["streams_with_gaps"], json!([]), "{status}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_cells_converge_through_a_faulty_transport_and_after_an_outage_and_resync() {
    twincell_local::install_crypto();
    let moto = twincell_dynamodb::testing::shared_endpoint().unwrap_or_else(|e| panic!("{e}"));
    let run = twincell_dynamodb::testing::unique_table("e2e");
    let seed: u64 = std::env::var("TWINCELL_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    println!("e2e run {run}, seed {seed} (TWINCELL_E2E_SEED replays it)");
    let mut options = Options::new(
        &moto,
        &twincell_contract::target::bin_dir(),
        (
            env!("CARGO_BIN_EXE_twincell-eventgrid").into(),
            env!("CARGO_BIN_EXE_twincell-aws-local").into(),
        ),
        &run,
    );
    // Hours of Event Grid retries in seconds; faster polls than the
    // clouds' so the run is short.
    options.eventgrid_args = [
        "--time-divisor",
        "1000",
        "--duplicate-per-mille",
        "150",
        "--lost-answer-per-mille",
        "100",
        "--max-delay-ms",
        "300",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .chain(["--seed".to_owned(), seed.to_string()])
    .collect();
    options.stream_poll = Duration::from_millis(100);
    options.stream_retry = Duration::from_millis(100);
    options.feed_poll = Duration::from_millis(100);
    options.trigger_retry = (Duration::from_millis(100), Duration::from_secs(2));
    let matrix = Matrix::start(&options)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut world = World {
        client,
        cells: [
            Cell {
                name: "aws",
                url: matrix.aws.url.clone(),
                key: AWS_KEY,
            },
            Cell {
                name: "azure",
                url: matrix.azure.url.clone(),
                key: AZURE_KEY,
            },
        ],
        eventgrid: matrix.eventgrid.url.clone(),
        ledger: Ledger::default(),
        rng: Rng::new(seed),
    };
    // Phase 1: a faulty but working transport.
    for s in 0..SKUS {
        world.receive(0, s, 10).await;
        world.receive(1, s, 10).await;
    }
    for _ in 0..160 {
        world.random_op().await;
    }
    let views = world.quiesce(Duration::from_secs(180)).await;
    check_converged(&mut world, &views).await;
    let dead: Value = client_get(&world, "/control/dead-letters").await;
    assert!(
        dead.as_object()
            .unwrap()
            .values()
            .all(|d| d.as_array().unwrap().is_empty()),
        "dead letters: {dead}"
    );
    let stats = world.eventgrid_stats().await;
    println!(
        "phase 1 converged: {} requests; event grid {stats}",
        world.ledger.requests
    );
    for sub in stats["subscriptions"].as_object().unwrap().values() {
        assert!(sub["delivered"].as_u64().unwrap() > 0, "{stats}");
        // Every delivery was accepted the first time it was answered: no
        // cell refused an event (an echo of its own, a diverged one) nor
        // was unavailable.
        assert_eq!(sub["failed_attempts"], 0, "{stats}");
    }
    let faults: u64 = stats["subscriptions"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["duplicated"].as_u64().unwrap() + s["lost_answers"].as_u64().unwrap())
        .sum();
    assert!(faults > 0, "the transport injected no faults: {stats}");

    forged_events_are_refused(&world).await;

    // Phase 2: the link is down longer than the retention. A keyed
    // receipt is retried in its cell (a replay) and, its first answer
    // lost, in the other cell, which applies it again and reserves 2 of
    // its units before the cells meet.
    world.control("cut").await;
    let first = world
        .keyed_receive(0, PALLET_SKU, "pallet-cut", 7)
        .await
        .unwrap();
    let again = world
        .keyed_receive(0, PALLET_SKU, "pallet-cut", 7)
        .await
        .unwrap();
    assert_eq!(
        first, again,
        "a retry in the same cell replays the first answer"
    );
    let other = world
        .keyed_receive(1, PALLET_SKU, "pallet-cut", 7)
        .await
        .unwrap();
    assert_eq!(
        other["on_hand"], 7,
        "the other cell could not know: {other}"
    );
    assert_eq!(world.ledger.keyed["pallet-cut"].2.len(), 2);
    let hold = world
        .call(
            1,
            "POST",
            &format!("/inventory/{PALLET_SKU}/reservations"),
            Some(json!({"order_id": "pallet-order", "quantity": 2})),
            None,
        )
        .await;
    world.expect("reserve the pallet", hold.map(|r| r.0), &[201]);
    for s in 0..SKUS {
        world.receive(0, s, 5).await;
        world.receive(1, s, 5).await;
    }
    for _ in 0..80 {
        world.random_op().await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expired = world.control("expire").await;
    assert!(expired["expired"].as_u64().unwrap() > 0, "{expired}");
    world.control("heal").await;
    // Events after the outage arrive; what was lost leaves gaps.
    for s in 0..SKUS {
        world.receive(0, s, 1).await;
        world.receive(1, s, 1).await;
    }
    let start = Instant::now();
    let gaps = loop {
        let count: usize = [world.status(0).await, world.status(1).await]
            .iter()
            .flat_map(|s| s["peers"].as_array().unwrap().clone())
            .map(|p| p["streams_with_gaps"].as_array().unwrap().len())
            .sum();
        if count > 0 {
            break count;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no gap ever showed after the outage"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("after the outage: {gaps} streams wait on a gap");
    // The AWS cell through its route, the Azure cell through the CLI an
    // operator runs.
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_twincell-resync"))
        .args([
            "--cell",
            &world.cells[1].url,
            "--key-env",
            "AZURE_KEY",
            "--max-events",
            "50",
        ])
        .env("AZURE_KEY", AZURE_KEY)
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let azure_resent: u64 = printed
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("re-sent "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{printed}"));
    let resent = [world.resync(0).await, azure_resent];
    println!("resync re-sent {resent:?} events");
    let after = world.quiesce(Duration::from_secs(180)).await;
    check_converged(&mut world, &after).await;
    // The retried pallet is counted once in both cells, its reservation
    // kept, nothing short.
    let pallet = after
        .iter()
        .find(|(p, ..)| p.ends_with(PALLET_SKU))
        .map(|(_, (_, body), _)| serde_json::from_str::<Value>(body).unwrap())
        .unwrap();
    assert_eq!(
        (
            &pallet["on_hand"],
            &pallet["reserved"],
            pallet.get("shortage")
        ),
        (&json!(7), &json!(2), None),
        "{pallet}"
    );

    // Phase 3: re-sending everything again changes nothing.
    let again = [world.resync(0).await, world.resync(1).await];
    assert!(
        again[0] >= resent[0] && again[1] >= resent[1],
        "{again:?} after {resent:?}"
    );
    let unchanged = world.quiesce(Duration::from_secs(120)).await;
    assert_eq!(
        unchanged.iter().map(|(p, a, _)| (p, a)).collect::<Vec<_>>(),
        after.iter().map(|(p, a, _)| (p, a)).collect::<Vec<_>>(),
        "a second resync changed an answer"
    );
    println!(
        "converged after the outage and a second resync: {} requests",
        world.ledger.requests
    );
}

/// Events with the right delivery key but no valid origin signature, sent
/// straight to each cell's `/replication/events`: refused, nothing applied.
async fn forged_events_are_refused(world: &World) {
    use twincell_core::event::{AggregateId, DomainEvent, RecordedEvent, StreamId};
    use twincell_replication::signing::Signer;
    use twincell_replication::wire::to_signed_cloud_event;
    let (mallory, _) = Signer::generate("aws-local").unwrap();
    for (to, from) in [(1usize, "aws"), (0, "azure"), (1, "gcp")] {
        let sku = format!("forged-{from}");
        let event = RecordedEvent::new(
            StreamId::new(
                AggregateId::inventory(&twincell_core::Sku::new(&sku).unwrap()),
                twincell_core::CellId::new(from).unwrap(),
            ),
            1,
            twincell_core::Timestamp::from_unix_millis(1_795_320_745_007).unwrap(),
            DomainEvent::StockReceived {
                quantity: twincell_core::Quantity::new(1_000).unwrap(),
            },
        )
        .unwrap();
        for signer in [None, Some(&mallory)] {
            let ce = to_signed_cloud_event(&event, signer).unwrap();
            let r = world
                .client
                .post(format!("{}/replication/events", world.cells[to].url))
                .header("content-type", "application/cloudevents-batch+json")
                .header("x-twincell-replication-key", world.cells[to].key)
                .body(json!([ce]).to_string())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 403, "{from} → {}: {body}", world.cells[to].name);
            assert_eq!(
                body["type"], "urn:twincell:problem:untrusted-event",
                "{body}"
            );
            let (_, view) = world.get_text(to, &format!("/inventory/{sku}")).await;
            let view: Value = serde_json::from_str(&view).unwrap();
            assert_eq!(view["on_hand"], 0, "a forged event was applied: {view}");
        }
    }
}

async fn client_get(world: &World, path: &str) -> Value {
    world
        .client
        .get(format!("{}{path}", world.eventgrid))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
