//! Both cells, replication, the front door and retrying clients in one
//! process, on virtual time, every choice drawn from one seed: a run that
//! fails replays exactly from the seed it prints.
//!
//! What is real: each cell's router (`twincell_http`, called as a tower
//! service with real HTTP requests), its `Service` and in-memory store, the
//! CloudEvents wire format (`twincell_replication::wire`, each event signed
//! by its origin) and the receiver with its key and signature checks, the
//! front door's rule of what may be retried
//! ([`crate::frontdoor::retry_safe`]). What is simulated, from the
//! services' documentation:
//!
//! - **time**: a clock per cell over one virtual time, each cell skewed by
//!   up to ±5 s;
//! - **each cell's publisher**: its own events in commit order from a
//!   change feed kept with its store, with a checkpoint written after each
//!   publish that a stopped cell may not have written (at least once);
//! - **Event Grid**: a topic per cell whose subscription delivers up to 10
//!   events per request to the other cell, at least once (a fault
//!   duplicates), in any order (a fault delays), retried on Event Grid's
//!   schedule (10 s, 30 s, 1 min, 5 min …), dead-lettered on 400/401/403/413
//!   and after 24 h;
//! - **the front door**: Traffic Manager's probes every second (Degraded
//!   after three failures), a client's preferred cell (one for everyone in a
//!   third of the seeds, as priority routing does), and one retry on the
//!   other cell of what is safe to retry when its cell does not answer;
//! - **clients**: each runs a script of payments, receipts, write-offs and
//!   reservations, retrying a request (the same key, the same order) after
//!   no answer or a 5xx, with backoff, at most [`ATTEMPTS`] times.
//!
//! The faults, named after what the clouds' chaos services inject (see
//! `docs/reliability.md`): a cell stopped (its memory lost, in-flight
//! answers lost after the write, its store kept) and started again
//! (App Service `Stop`); Lambda invocation errors
//! (`aws:lambda:invocation-error`); invocations started 12 s late
//! (`aws:lambda:invocation-add-delay`), after the client stopped waiting,
//! so the request runs after its client moved on; a store refusing every call
//! (`aws:fis:inject-api-internal-error`, Cosmos DB failover); replication
//! paused one way (`aws:dynamodb:global-table-pause-replication`, an Event
//! Grid subscription failing); duplicated and delayed deliveries; a
//! partition longer than the 24-hour retention, then a resync; clock skew.
//!
//! The checker ([`Report`]) is written apart from the core: it holds what
//! the clients were told against what both cells answer once they agree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Method, Request};
use serde_json::{Value, json};
use tower::ServiceExt as _;
use twincell_core::ports::{EventPage, Listing, ReplicatedApply, Snapshot};
use twincell_core::{
    AggregateId, CellId, Clock, EventStore, IdGenerator, InMemoryEventStore, RecordedEvent,
    Service, StoreError, StreamId, Timestamp, Topology,
};
use twincell_replication::signing::{OriginKeys, Signer};
use twincell_replication::{BoxFuture, Publish, PublishError, Secret};

use crate::rng::Rng;

/// Attempts a client makes of one request.
pub const ATTEMPTS: u32 = 8;
/// Event Grid's retry schedule.
const RETRIES_MS: [i64; 9] = [
    10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000, 10_800_000, 21_600_000,
];
/// Event Grid's time to live.
const RETENTION_MS: i64 = 24 * 3_600_000;
/// How long a client waits for an answer.
const CLIENT_WAIT_MS: i64 = 10_000;
/// The delay a delayed cell's invocations start after
/// (`aws:lambda:invocation-add-delay`): longer than a client waits, so the
/// client sees no answer and the request runs after it moved on.
const ADDED_DELAY_MS: i64 = 12_000;
const CELLS: [&str; 2] = ["aws", "azure"];
const SKUS: [&str; 3] = ["sku-a", "sku-b", "sku-c"];
const KEY: &str = "simulation-replication-key-0123456789abcdef";

/// A bug planted on purpose, to show the checker catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The simulated Event Grid drops one delivered event in 30 (what a
    /// receiver folding past a gap would lose).
    DropDeliveries,
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every choice comes from it.
    pub seed: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations each client runs.
    pub operations: usize,
    /// A planted bug.
    pub bug: Option<Bug>,
}

impl Config {
    /// The defaults for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            clients: 4,
            operations: 12,
            bug: None,
        }
    }
}

/// What one run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Acknowledged writes missing from a cell (payments, or units).
    pub lost: i64,
    /// Units counted beyond what was acknowledged and never answered.
    pub doubled: i64,
    /// Views with more reserved than on hand beyond a reported shortage.
    pub oversold: u64,
    /// Operations a client gave up on while at least one cell could have
    /// taken them: the front door should have got them through.
    pub unanswered: u64,
    /// Operations a client gave up on because both cells were down
    /// (stopped, store down or failing invocations, or not yet seen back
    /// up by the front door's monitor) for its last two attempts: each of
    /// those attempts was answered with a documented retryable error.
    /// Counted apart, as no front door can answer then.
    pub gave_up_both_down: u64,
    /// Shortage the cells reported at the end (documented, counted apart).
    pub shortage: i64,
    /// Reservations and write-offs refused for stock after an attempt that
    /// went unanswered (documented: that attempt may have been applied in
    /// the cell that did not answer, and is counted as a write never
    /// answered).
    pub uncertain_refusals: u64,
    /// Units held at the end that only such refusals account for
    /// (documented, counted apart).
    pub held_though_refused: i64,
    /// Requests a delayed cell ran after their client stopped waiting.
    pub ran_late: u64,
    /// Operations the clients ran.
    pub operations: u64,
    /// Events delivered by the simulated Event Grid.
    pub delivered: u64,
    /// What went wrong, readable.
    pub problems: Vec<String>,
    /// A digest of every answer and delivery, in order: the same seed
    /// gives the same digest.
    pub digest: u64,
}

impl Report {
    /// Whether every count is zero and nothing went wrong.
    #[must_use]
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.doubled == 0
            && self.oversold == 0
            && self.unanswered == 0
            && self.problems.is_empty()
    }
}

/// A cell's clock: the simulation's time plus the cell's skew, one
/// millisecond more on each reading (so readings are distinct).
#[derive(Debug)]
struct SkewedClock {
    now: Arc<AtomicI64>,
    skew: i64,
    tick: AtomicI64,
}

impl Clock for SkewedClock {
    fn now(&self) -> Timestamp {
        let tick = self.tick.fetch_add(1, Ordering::SeqCst) % 1_000;
        let ms = self.now.load(Ordering::SeqCst) + self.skew + tick;
        Timestamp::from_unix_millis(ms).unwrap_or(Timestamp::EPOCH)
    }

    fn pause(&self, _: Duration) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// Ids from a counter, distinct per cell and per start.
#[derive(Debug)]
struct CountedIds {
    prefix: u128,
    next: AtomicI64,
}

impl IdGenerator for CountedIds {
    fn new_id(&self) -> uuid::Uuid {
        let n = u128::try_from(self.next.fetch_add(1, Ordering::SeqCst)).unwrap_or(0);
        uuid::Uuid::from_u128((self.prefix << 64) | (0x8000_u128 << 48) | n)
    }
}

/// A cell's durable side: its store, the change feed of its own events in
/// commit order, and its publisher's checkpoint.
#[derive(Debug, Clone)]
struct Durable {
    store: Arc<InMemoryEventStore>,
    /// Every call refused, as a store in an outage refuses it.
    down: Arc<std::sync::atomic::AtomicBool>,
    feed: Arc<Mutex<Vec<RecordedEvent>>>,
    checkpoint: Arc<Mutex<usize>>,
    origin: CellId,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Durable {
    fn up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable(
                "the store is in an outage (simulated)".to_owned(),
            ))
        } else {
            Ok(())
        }
    }
}

impl EventStore for Durable {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        self.up()?;
        self.store.append(stream, expected_version, events).await?;
        if stream.origin == self.origin {
            lock(&self.feed).extend(events.iter().cloned());
        }
        Ok(())
    }

    async fn load(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
        self.up()?;
        self.store.load(aggregate).await
    }

    async fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &BTreeMap<CellId, u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.up()?;
        self.store.load_after(aggregate, after).await
    }

    async fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        self.up()?;
        self.store.read(stream, version).await
    }

    async fn apply_replicated(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        self.up()?;
        self.store.apply_replicated(event).await
    }

    async fn list_origin(&self, listing: &Listing) -> Result<EventPage, StoreError> {
        self.up()?;
        self.store.list_origin(listing).await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.up()?;
        self.store.save_snapshot(snapshot).await
    }

    async fn load_snapshots(&self, aggregate: &AggregateId) -> Result<Vec<Snapshot>, StoreError> {
        self.up()?;
        self.store.load_snapshots(aggregate).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.up()?;
        self.store.check().await
    }
}

/// A topic's undelivered events, shared by the cell's publisher (and its
/// resync) and the simulated subscription.
#[derive(Debug, Default)]
struct Topic {
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    event: Value,
    attempts: u32,
    due: i64,
    published: i64,
}

/// The cell's publish path into its topic: the real wire format, signed.
struct TopicPublisher {
    topic: Arc<Mutex<Topic>>,
    signer: Signer,
    now: Arc<AtomicI64>,
}

impl Publish for TopicPublisher {
    fn publish<'a>(
        &'a self,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<usize, PublishError>> {
        Box::pin(async move {
            let batches =
                twincell_replication::wire::batches(events, Some(&self.signer), 1024 * 1024, 5_000)
                    .map_err(|e| PublishError {
                        published: 0,
                        retryable: false,
                        reason: e.to_string(),
                    })?;
            let now = self.now.load(Ordering::SeqCst);
            let mut topic = lock(&self.topic);
            for batch in batches {
                let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&batch.body) else {
                    return Err(PublishError {
                        published: 0,
                        retryable: false,
                        reason: "a batch that is not a JSON array".to_owned(),
                    });
                };
                for event in items {
                    topic.pending.push(Pending {
                        event,
                        attempts: 0,
                        due: now,
                        published: now,
                    });
                }
            }
            Ok(events.len())
        })
    }
}

struct Cell {
    name: CellId,
    durable: Durable,
    topic: Arc<Mutex<Topic>>,
    signer: Signer,
    skew: i64,
    starts: i64,
    /// `None` while stopped.
    router: Option<Router>,
    /// Published up to here in this process's memory (the checkpoint is
    /// written after each publish, unless the cell stops first).
    published: usize,
}

impl Cell {
    fn start(&mut self, now: &Arc<AtomicI64>, origin_keys: &OriginKeys) {
        self.starts += 1;
        let topology = Topology::new(self.name.clone(), [other(&self.name)]);
        let service = Service::new(
            topology,
            self.durable.clone(),
            SkewedClock {
                now: Arc::clone(now),
                skew: self.skew,
                tick: AtomicI64::new(0),
            },
            CountedIds {
                prefix: (u128::from(self.name.as_str() == "aws") << 16)
                    | u128::try_from(self.starts).unwrap_or(0),
                next: AtomicI64::new(0),
            },
        );
        let publisher: Arc<dyn Publish> = Arc::new(TopicPublisher {
            topic: Arc::clone(&self.topic),
            signer: self.signer.clone(),
            now: Arc::clone(now),
        });
        let replication = Secret::new(KEY).ok().map(|key| twincell_http::Replication {
            key,
            publisher: Some(publisher),
            delivery_tokens: None,
            origin_keys: origin_keys.clone(),
        });
        self.router = Some(twincell_http::router_with(
            Arc::new(service),
            replication,
            None,
        ));
        self.published = *lock(&self.durable.checkpoint);
    }
}

fn get<T: Copy + Default>(per_cell: &[T; 2], cell: usize) -> T {
    per_cell.get(cell).copied().unwrap_or_default()
}

fn set<T>(per_cell: &mut [T; 2], cell: usize, value: T) {
    if let Some(slot) = per_cell.get_mut(cell) {
        *slot = value;
    }
}

fn sku_name(i: usize) -> &'static str {
    SKUS.get(i).copied().unwrap_or("sku-a")
}

fn cell_name(i: usize) -> &'static str {
    CELLS.get(i).copied().unwrap_or("aws")
}

fn other(cell: &CellId) -> CellId {
    CellId::new(if cell.as_str() == "aws" {
        "azure"
    } else {
        "aws"
    })
    .unwrap_or_else(|_| cell.clone())
}

/// An operation of a client's script.
#[derive(Debug, Clone)]
enum Op {
    Pay {
        key: String,
        amount: String,
    },
    Receive {
        sku: usize,
        key: String,
        quantity: i64,
    },
    WriteOff {
        sku: usize,
        key: String,
        quantity: i64,
    },
    Reserve {
        sku: usize,
        order: String,
        quantity: i64,
    },
}

impl Op {
    fn request(&self, client: usize) -> (Method, String, Option<String>, Value) {
        match self {
            Self::Pay { key, amount } => (
                Method::POST,
                "/transactions".to_owned(),
                Some(key.clone()),
                json!({"account_id": format!("acct-{client}"), "amount": amount, "currency": "USD"}),
            ),
            Self::Receive { sku, key, quantity } => (
                Method::POST,
                format!("/inventory/{}/receipts", sku_name(*sku)),
                Some(key.clone()),
                json!({"quantity": quantity}),
            ),
            Self::WriteOff { sku, key, quantity } => (
                Method::POST,
                format!("/inventory/{}/write-offs", sku_name(*sku)),
                Some(key.clone()),
                json!({"quantity": quantity, "reason": "damaged"}),
            ),
            Self::Reserve {
                sku,
                order,
                quantity,
            } => (
                Method::POST,
                format!("/inventory/{}/reservations", sku_name(*sku)),
                None,
                json!({"order_id": order, "quantity": quantity}),
            ),
        }
    }
}

struct Client {
    script: Vec<Op>,
    next: usize,
    attempt: u32,
    preferred: usize,
    /// Failed attempts in a row made while both cells were down.
    both_down: u32,
}

/// What the clients were told.
#[derive(Debug, Default)]
struct Told {
    payments: BTreeMap<String, Value>,
    on_hand: BTreeMap<usize, i64>,
    reserved: BTreeMap<usize, i64>,
    /// Units that writes never answered may have added (+) or taken (−).
    maybe_more: BTreeMap<usize, i64>,
    maybe_less: BTreeMap<usize, i64>,
    maybe_reserved: BTreeMap<usize, i64>,
    /// Units of reservations refused for stock after an attempt that went
    /// unanswered, which that attempt may hold (docs/domain.md).
    refused_uncertain: BTreeMap<usize, i64>,
    /// Per client: payments acknowledged, and payments never answered.
    paid: BTreeMap<usize, i64>,
    maybe_paid: BTreeMap<usize, i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Client(usize),
    Probe,
    Publish(usize),
    Deliver(usize),
    Stop(usize),
    Start(usize),
    StoreDown(usize, bool),
    LambdaErrors(usize, bool),
    Cut(usize, bool),
    /// From now on, the cell's next request dies after its write; the
    /// cell is down for the given time.
    DieMidRequest(usize, i64),
    /// The cell's invocations start [`ADDED_DELAY_MS`] late (or not).
    AddedDelay(usize, bool),
    /// A delayed request runs now.
    Late(u64),
}

/// A request a delayed cell runs late.
struct Late {
    cell: usize,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: String,
}

struct Sim {
    config: Config,
    rng: Rng,
    now: Arc<AtomicI64>,
    agenda: BTreeMap<(i64, u64), Action>,
    seq: u64,
    cells: Vec<Cell>,
    origin_keys: Vec<OriginKeys>,
    clients: Vec<Client>,
    /// The front door's monitor: consecutive failed probes per cell.
    probe_failures: [u32; 2],
    lambda_errors: [bool; 2],
    cut: [bool; 2],
    /// The cell whose next request dies after its write, and how long it
    /// then stays down.
    dies_mid_request: Option<(usize, i64)>,
    /// Cells whose invocations start late, and the requests waiting.
    delayed: [bool; 2],
    late: BTreeMap<u64, Late>,
    /// Whether the client's current attempt waited out its time.
    timed_out: bool,
    duplicate_per_mille: u64,
    max_delay_ms: i64,
    told: Told,
    report: Report,
    dead_letters: u64,
    runtime: tokio::runtime::Runtime,
    /// When each cell's publisher and each subscription next runs (events
    /// are scheduled when there is work, not polled).
    publish_at: [Option<i64>; 2],
    deliver_at: [Option<i64>; 2],
}

fn digest(h: u64, text: &str) -> u64 {
    // FNV-1a: a digest of the transcript, not a secret.
    text.bytes()
        .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Sim {
    fn at(&mut self, delay_ms: i64, action: Action) {
        self.seq += 1;
        let when = self.now.load(Ordering::SeqCst) + delay_ms.max(0);
        self.agenda.insert((when, self.seq), action);
    }

    fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    /// The cell's publisher runs at `at` (its feed poll), unless sooner.
    fn wake_publish(&mut self, cell: usize, at: i64) {
        if get(&self.publish_at, cell).is_none_or(|t| at < t) {
            set(&mut self.publish_at, cell, Some(at));
            let delay = at - self.now();
            self.at(delay, Action::Publish(cell));
        }
    }

    /// The subscription of `cell`'s topic delivers at `at`, unless sooner.
    fn wake_deliver(&mut self, cell: usize, at: i64) {
        if get(&self.deliver_at, cell).is_none_or(|t| at < t) {
            set(&mut self.deliver_at, cell, Some(at));
            let delay = at - self.now();
            self.at(delay, Action::Deliver(cell));
        }
    }

    fn record(&mut self, text: &str) {
        self.report.digest = digest(self.report.digest, text);
    }

    /// One request to a cell's router: its status and body, or `None` when
    /// the cell does not answer.
    fn call(
        &mut self,
        cell: usize,
        method: &Method,
        path: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Option<(u16, String)> {
        let router = self.cells.get(cell)?.router.clone()?;
        // Whatever the request appended (a client's write, or the events a
        // cell records on receiving others'), its publisher finds at its
        // next poll of the feed: Lambda's and the Functions host's, 250 ms.
        if *method != Method::GET {
            let poll = self.now() + 250;
            self.wake_publish(cell, poll);
        }
        let mut request = Request::builder().method(method.clone()).uri(path);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .header("content-type", "application/json")
            .body(Body::from(body))
            .ok()?;
        self.runtime.block_on(async move {
            let answer = router.oneshot(request).await.ok()?;
            let status = answer.status().as_u16();
            let bytes = axum::body::to_bytes(answer.into_body(), 16 * 1024 * 1024)
                .await
                .ok()?;
            Some((status, String::from_utf8_lossy(&bytes).into_owned()))
        })
    }

    fn online(&self, cell: usize) -> bool {
        self.probe_failures.get(cell).is_some_and(|f| *f <= 2)
    }

    /// The front door: the client's preferred cell while its monitor says
    /// it is up (or when both are down: fail open), else the other; one
    /// retry on the other cell of what is safe to retry when there is no
    /// answer.
    fn through_front_door(&mut self, client: usize, op: &Op) -> Option<(u16, String)> {
        let preferred = self.clients.get(client).map_or(0, |c| c.preferred);
        let first = if self.online(preferred) || !self.online(1 - preferred) {
            preferred
        } else {
            1 - preferred
        };
        let (method, path, key, body) = op.request(client);
        let mut headers = HeaderMap::new();
        let mut pairs = Vec::new();
        if let Some(key) = &key {
            pairs.push(("idempotency-key", key.clone()));
            if let Ok(v) = key.parse() {
                headers.insert("idempotency-key", v);
            }
        }
        self.timed_out = false;
        match self.attempt(first, &method, &path, &pairs, &body) {
            Ok(answer) => Some(answer),
            // The client hung up while the front door still waited.
            Err(_) if self.timed_out => None,
            Err(maybe_delivered)
                if crate::frontdoor::retry_elsewhere(&method, &path, &headers, maybe_delivered) =>
            {
                self.attempt(1 - first, &method, &path, &pairs, &body).ok()
            }
            Err(_) => Some((502, "front door: not sent again".to_owned())),
        }
    }

    /// One attempt on a cell: its answer, or no answer and whether the
    /// cell may have received the request (the front door's
    /// [`crate::frontdoor::retry_elsewhere`] decides on it).
    fn attempt(
        &mut self,
        cell: usize,
        method: &Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: &Value,
    ) -> Result<(u16, String), bool> {
        if self.cells.get(cell).is_none_or(|c| c.router.is_none()) {
            // Connection refused: nothing was sent.
            return Err(false);
        }
        if self.lambda_errors.get(cell).copied().unwrap_or(false) {
            // API Gateway's answer to a failed invocation; nothing ran.
            return Ok((502, "invocation error".to_owned()));
        }
        if get(&self.delayed, cell) {
            // The invocation starts after the client stopped waiting: no
            // answer now, the request runs later all the same.
            self.seq += 1;
            let id = self.seq;
            self.late.insert(
                id,
                Late {
                    cell,
                    method: method.clone(),
                    path: path.to_owned(),
                    headers: headers.iter().map(|(k, v)| (*k, v.clone())).collect(),
                    body: body.to_string(),
                },
            );
            self.at(ADDED_DELAY_MS, Action::Late(id));
            self.timed_out = true;
            return Err(true);
        }
        let answer = self.call(cell, method, path, headers, body.to_string());
        if let Some((dying, down_for)) = self.dies_mid_request
            && dying == cell
        {
            // The write went through; the process died before answering.
            self.dies_mid_request = None;
            self.stop(cell);
            self.at(down_for, Action::Start(cell));
            return Err(true);
        }
        answer.ok_or(true)
    }

    /// Whether a cell cannot take a request now: stopped, its store down,
    /// or its invocations failing.
    fn faulty(&self, cell: usize) -> bool {
        self.cells
            .get(cell)
            .is_none_or(|c| c.router.is_none() || c.durable.down.load(Ordering::SeqCst))
            || get(&self.lambda_errors, cell)
            || get(&self.delayed, cell)
    }

    /// Which faults each cell has now, for a report.
    fn fault_state(&self) -> String {
        (0..CELLS.len())
            .map(|c| {
                let cell = self.cells.get(c);
                format!(
                    "{} running {} store down {} lambda errors {} delayed {} monitor failures {}",
                    cell_name(c),
                    cell.is_some_and(|x| x.router.is_some()),
                    cell.is_some_and(|x| x.durable.down.load(Ordering::SeqCst)),
                    get(&self.lambda_errors, c),
                    get(&self.delayed, c),
                    get(&self.probe_failures, c)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn stop(&mut self, cell: usize) {
        if let Some(c) = self.cells.get_mut(cell) {
            c.router = None;
            // The checkpoint of the last publish may not have been written.
        }
    }

    fn client_step(&mut self, n: usize) {
        let Some(client) = self.clients.get(n) else {
            return;
        };
        let Some(op) = client.script.get(client.next).cloned() else {
            return;
        };
        let earlier_attempts = client.attempt > 0;
        let answer = self.through_front_door(n, &op);
        let (status, body) = answer.clone().unwrap_or((0, String::new()));
        self.record(&format!("{n} {op:?} {status} {body}"));
        let done = match status {
            200 | 201 => {
                self.acknowledge(n, &op, &body);
                true
            }
            409 if body.contains("insufficient-stock") => {
                // An earlier attempt went unanswered: it may hold.
                if earlier_attempts {
                    match &op {
                        Op::Reserve { sku, quantity, .. } => {
                            self.report.uncertain_refusals += 1;
                            *self.told.refused_uncertain.entry(*sku).or_default() += quantity;
                        }
                        Op::WriteOff { sku, quantity, .. } => {
                            self.report.uncertain_refusals += 1;
                            *self.told.maybe_less.entry(*sku).or_default() += quantity;
                        }
                        _ => {}
                    }
                }
                true
            }
            0 | 408 | 429 | 500..=599 => false,
            _ => {
                self.report
                    .problems
                    .push(format!("client {n}: {op:?} answered {status} {body}"));
                true
            }
        };
        // Down, or not yet seen back up by the front door's monitor (which
        // needs a probe, up to a second): no cell to send it to.
        let both_down = (0..CELLS.len()).all(|c| self.faulty(c) || !self.online(c));
        let Some(client) = self.clients.get_mut(n) else {
            return;
        };
        client.both_down = if !done && both_down {
            client.both_down + 1
        } else {
            0
        };
        let gave_up_both_down = client.both_down >= 2;
        if done {
            client.next += 1;
            client.attempt = 0;
            self.report.operations += 1;
            let think = i64::try_from(self.rng.below(400)).unwrap_or(0);
            self.at(50 + think, Action::Client(n));
        } else if client.attempt + 1 >= ATTEMPTS {
            if gave_up_both_down {
                self.report.gave_up_both_down += 1;
            } else {
                self.report.unanswered += 1;
                let faults = self.fault_state();
                self.report.problems.push(format!(
                    "client {n} gave up on {op:?} at {} ms (last answer {status}); cells: {faults}",
                    self.now()
                ));
            }
            self.unanswered(n, &op);
            let Some(client) = self.clients.get_mut(n) else {
                return;
            };
            client.next += 1;
            client.attempt = 0;
            self.report.operations += 1;
            let waited = if self.timed_out { CLIENT_WAIT_MS } else { 0 };
            self.at(waited + 100, Action::Client(n));
        } else {
            client.attempt += 1;
            let backoff = (100i64 << client.attempt.min(4)).min(2_000);
            let jitter = i64::try_from(self.rng.below(100)).unwrap_or(0);
            let waited = if self.timed_out { CLIENT_WAIT_MS } else { 0 };
            self.at(waited + backoff + jitter, Action::Client(n));
        }
        self.check_views(&op);
    }

    fn acknowledge(&mut self, client: usize, op: &Op, body: &str) {
        match op {
            Op::Pay { key, .. } => {
                *self.told.paid.entry(client).or_default() += 1;
                let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                self.told.payments.insert(key.clone(), value);
            }
            Op::Receive { sku, quantity, .. } => {
                *self.told.on_hand.entry(*sku).or_default() += quantity;
            }
            Op::WriteOff { sku, quantity, .. } => {
                *self.told.on_hand.entry(*sku).or_default() -= quantity;
            }
            Op::Reserve { sku, quantity, .. } => {
                *self.told.reserved.entry(*sku).or_default() += quantity;
            }
        }
    }

    fn unanswered(&mut self, client: usize, op: &Op) {
        match op {
            Op::Pay { .. } => *self.told.maybe_paid.entry(client).or_default() += 1,
            Op::Receive { sku, quantity, .. } => {
                *self.told.maybe_more.entry(*sku).or_default() += quantity;
            }
            Op::WriteOff { sku, quantity, .. } => {
                *self.told.maybe_less.entry(*sku).or_default() += quantity;
            }
            Op::Reserve { sku, quantity, .. } => {
                *self.told.maybe_reserved.entry(*sku).or_default() += quantity;
            }
        }
    }

    /// Every running cell's view of the SKU an operation touched: never
    /// more reserved than on hand beyond a reported shortage.
    fn check_views(&mut self, op: &Op) {
        let sku = match op {
            Op::Pay { .. } => return,
            Op::Receive { sku, .. } | Op::WriteOff { sku, .. } | Op::Reserve { sku, .. } => *sku,
        };
        self.check_sku(sku);
    }

    fn check_sku(&mut self, sku: usize) {
        let path = format!("/inventory/{}", sku_name(sku));
        for cell in 0..CELLS.len() {
            if let Some((200, body)) = self.call(cell, &Method::GET, &path, &[], String::new()) {
                let view: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if let Some(what) = oversold(&view) {
                    self.report.oversold += 1;
                    self.report.problems.push(format!(
                        "{} at {} ms: oversold {what}",
                        cell_name(cell),
                        self.now()
                    ));
                }
            }
        }
    }

    fn probe(&mut self) {
        for cell in 0..CELLS.len() {
            // A delayed cell's probe times out.
            let up = !get(&self.lambda_errors, cell)
                && !get(&self.delayed, cell)
                && matches!(
                    self.call(cell, &Method::GET, "/health", &[], String::new()),
                    Some((200, _))
                );
            let failures = if up {
                0
            } else {
                get(&self.probe_failures, cell) + 1
            };
            set(&mut self.probe_failures, cell, failures);
        }
        // The monitor only matters to clients.
        if !self.clients_done() {
            self.at(1_000, Action::Probe);
        }
    }

    /// The cell's publisher: its own events after its checkpoint, through
    /// its publish path, then the checkpoint.
    fn publish(&mut self, cell: usize) {
        if get(&self.publish_at, cell) != Some(self.now()) {
            return; // superseded by a sooner run
        }
        set(&mut self.publish_at, cell, None);
        let Some(c) = self.cells.get(cell) else {
            return;
        };
        if c.router.is_none() {
            return;
        }
        let events: Vec<RecordedEvent> = lock(&c.durable.feed)
            .get(c.published..)
            .map(<[RecordedEvent]>::to_vec)
            .unwrap_or_default();
        if events.is_empty() {
            return;
        }
        let publisher = TopicPublisher {
            topic: Arc::clone(&c.topic),
            signer: c.signer.clone(),
            now: Arc::clone(&self.now),
        };
        if self.runtime.block_on(publisher.publish(&events)).is_ok() {
            let Some(c) = self.cells.get_mut(cell) else {
                return;
            };
            c.published += events.len();
            // The checkpoint is written after the publish; a stop between
            // the two publishes these events again (at least once).
            if self.rng.below(4) != 0 {
                *lock(&c.durable.checkpoint) = c.published;
            }
            self.disturb();
            self.wake_due(cell);
        }
    }

    /// Schedules the subscription of `cell`'s topic for its next due event.
    fn wake_due(&mut self, cell: usize) {
        let next = self
            .cells
            .get(cell)
            .and_then(|c| lock(&c.topic).pending.iter().map(|p| p.due).min());
        if let Some(due) = next {
            let at = due.max(self.now());
            self.wake_deliver(cell, at);
        }
    }

    /// The subscription of `from`'s topic: up to 10 due events to the other
    /// cell.
    fn deliver(&mut self, from: usize) {
        if get(&self.deliver_at, from) != Some(self.now()) {
            return; // superseded by a sooner run
        }
        set(&mut self.deliver_at, from, None);
        let to = 1 - from;
        let now = self.now();
        let Some(topic) = self.cells.get(from).map(|c| Arc::clone(&c.topic)) else {
            return;
        };
        let batch: Vec<Pending> = {
            let mut topic = lock(&topic);
            // Past the time to live: dead-lettered.
            let before = topic.pending.len();
            topic.pending.retain(|p| now - p.published < RETENTION_MS);
            self.dead_letters += u64::try_from(before - topic.pending.len()).unwrap_or(0);
            topic.pending.sort_by_key(|p| p.due);
            let ready = topic.pending.iter().take_while(|p| p.due <= now).count();
            let take = ready.min(10);
            topic.pending.drain(..take).collect()
        };
        if batch.is_empty() {
            self.wake_due(from);
            return;
        }
        let mut events: Vec<Value> = batch.iter().map(|p| p.event.clone()).collect();
        if self.config.bug == Some(Bug::DropDeliveries) {
            let rng = &self.rng;
            events.retain(|_| rng.below(30) != 0);
        }
        let answer = if get(&self.cut, from) {
            None
        } else {
            self.call(
                to,
                &Method::POST,
                "/replication/events",
                &[("x-twincell-replication-key", KEY.to_owned())],
                Value::Array(events).to_string(),
            )
        };
        let status = answer.as_ref().map_or(0, |(s, _)| *s);
        self.record(&format!("deliver {from} {} {status}", batch.len()));
        match status {
            200..=204 => {
                self.report.delivered += u64::try_from(batch.len()).unwrap_or(0);
                self.check_sku_all();
            }
            400 | 401 | 403 | 413 => {
                self.dead_letters += u64::try_from(batch.len()).unwrap_or(0);
                self.report.problems.push(format!(
                    "a delivery to {} was refused for good: {answer:?}",
                    cell_name(to)
                ));
            }
            _ => {
                let mut topic = lock(&topic);
                for mut p in batch {
                    p.attempts += 1;
                    let index = usize::try_from(p.attempts - 1).unwrap_or(usize::MAX);
                    p.due = now + RETRIES_MS.get(index).copied().unwrap_or(43_200_000);
                    topic.pending.push(p);
                }
            }
        }
        // A delivery request takes about 10 ms; then the next due ones.
        let next = self
            .cells
            .get(from)
            .and_then(|c| lock(&c.topic).pending.iter().map(|p| p.due).min());
        if let Some(due) = next {
            let at = due.max(self.now() + 10);
            self.wake_deliver(from, at);
        }
    }

    fn check_sku_all(&mut self) {
        for sku in 0..SKUS.len() {
            self.check_sku(sku);
        }
    }

    /// Duplicates and delays what a publish just put in a topic.
    fn disturb(&mut self) {
        for cell in &self.cells {
            let mut topic = lock(&cell.topic);
            let mut copies = Vec::new();
            for p in topic
                .pending
                .iter_mut()
                .filter(|p| p.attempts == 0 && p.due == p.published)
            {
                p.due += i64::try_from(
                    self.rng
                        .below(u64::try_from(self.max_delay_ms).unwrap_or(0) + 1),
                )
                .unwrap_or(0);
                p.attempts = 0;
                if self
                    .rng
                    .chance(u32::try_from(self.duplicate_per_mille).unwrap_or(0))
                {
                    copies.push(p.clone());
                }
            }
            topic.pending.extend(copies);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Client(n) => self.client_step(n),
            Action::Probe => self.probe(),
            Action::Publish(c) => self.publish(c),
            Action::Deliver(c) => self.deliver(c),
            Action::Stop(c) => self.stop(c),
            Action::DieMidRequest(c, down_for) => self.dies_mid_request = Some((c, down_for)),
            Action::Start(c) => {
                let keys = self.origin_keys.get(c).cloned().unwrap_or_default();
                let now = Arc::clone(&self.now);
                if let Some(cell) = self.cells.get_mut(c)
                    && cell.router.is_none()
                {
                    cell.start(&now, &keys);
                    let at = self.now();
                    self.wake_publish(c, at);
                }
            }
            Action::StoreDown(c, down) => {
                if let Some(cell) = self.cells.get(c) {
                    cell.durable.down.store(down, Ordering::SeqCst);
                }
            }
            Action::LambdaErrors(c, on) => set(&mut self.lambda_errors, c, on),
            Action::AddedDelay(c, on) => set(&mut self.delayed, c, on),
            Action::Late(id) => {
                if let Some(late) = self.late.remove(&id) {
                    // A cell stopped meanwhile lost it.
                    let answer = self.call(
                        late.cell,
                        &late.method,
                        &late.path,
                        &late.headers,
                        late.body,
                    );
                    if answer.is_some() {
                        self.report.ran_late += 1;
                    }
                    self.record(&format!("late {} {} {answer:?}", late.cell, late.path));
                }
            }
            Action::Cut(from, on) => {
                set(&mut self.cut, from, on);
                if !on {
                    self.wake_due(from);
                }
            }
        }
    }

    fn clients_done(&self) -> bool {
        self.clients.iter().all(|c| c.next >= c.script.len())
    }

    fn quiet(&self) -> bool {
        self.cells.iter().all(|c| {
            lock(&c.topic).pending.is_empty() && c.published >= lock(&c.durable.feed).len()
        })
    }
}

/// Whether a view reserves more than it holds, in total or in a cell's
/// ledger, beyond the shortage it reports.
#[must_use]
pub fn oversold(view: &Value) -> Option<String> {
    let n = |v: &Value, f: &str| v.get(f).and_then(Value::as_i64).unwrap_or(0);
    let over = |v: &Value| n(v, "reserved") - n(v, "on_hand") > n(v, "shortage");
    if over(view)
        || view
            .get("cells")
            .and_then(Value::as_object)
            .is_some_and(|cells| cells.values().any(over))
    {
        return Some(view.to_string());
    }
    None
}

/// Runs one seed.
///
/// # Errors
/// When the runtime or a key cannot be made.
pub fn run(config: &Config) -> anyhow::Result<Report> {
    let rng = Rng::new(config.seed);
    let now = Arc::new(AtomicI64::new(1_790_000_000_000));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let signers: Vec<Signer> = CELLS
        .iter()
        .map(|c| Signer::generate(&format!("{c}-sim")).map(|(s, _)| s))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut cells = Vec::new();
    let mut origin_keys = Vec::new();
    for (i, name) in CELLS.iter().enumerate() {
        let name = CellId::new(*name)?;
        let peer = other(&name);
        let peer_signer = signers
            .get(1 - i)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no signer"))?;
        origin_keys.push(OriginKeys::default().with(&peer, &peer_signer));
        let skew = i64::try_from(rng.below(10_001)).unwrap_or(0) - 5_000;
        cells.push(Cell {
            durable: Durable {
                store: Arc::new(InMemoryEventStore::new()),
                down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                feed: Arc::new(Mutex::new(Vec::new())),
                checkpoint: Arc::new(Mutex::new(0)),
                origin: name.clone(),
            },
            name,
            topic: Arc::new(Mutex::new(Topic::default())),
            signer: signers
                .get(i)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no signer"))?,
            skew,
            starts: 0,
            router: None,
            published: 0,
        });
    }
    let mut sim = Sim {
        config: config.clone(),
        duplicate_per_mille: rng.below(300),
        max_delay_ms: i64::try_from(rng.below(3_000)).unwrap_or(0),
        rng,
        now,
        agenda: BTreeMap::new(),
        seq: 0,
        cells,
        origin_keys,
        clients: Vec::new(),
        probe_failures: [0; 2],
        lambda_errors: [false; 2],
        cut: [false; 2],
        dies_mid_request: None,
        delayed: [false; 2],
        late: BTreeMap::new(),
        timed_out: false,
        told: Told::default(),
        report: Report {
            seed: config.seed,
            digest: 0xcbf2_9ce4_8422_2325,
            ..Report::default()
        },
        dead_letters: 0,
        runtime,
        publish_at: [None; 2],
        deliver_at: [None; 2],
    };
    for c in 0..CELLS.len() {
        sim.act(Action::Start(c));
    }
    sim.at(0, Action::Probe);

    // Routing: in a third of the seeds every client prefers one cell, as
    // Traffic Manager's priority routing (the matrix's default) sends
    // everyone to the first endpoint, so the other cell holds little stock
    // of its own when clients fail over to it; else each its own.
    let everyone_to =
        (sim.rng.below(3) == 0).then(|| usize::try_from(sim.rng.below(2)).unwrap_or(0));

    // The clients' scripts.
    for n in 0..config.clients {
        let mut script = Vec::new();
        for i in 0..config.operations {
            let sku = usize::try_from(sim.rng.below(3)).unwrap_or(0);
            let op = match sim.rng.below(10) {
                0..=2 => Op::Pay {
                    key: format!("c{n}-p{i}"),
                    amount: format!("{}.{:02}", 1 + sim.rng.below(50), sim.rng.below(100)),
                },
                3..=5 => Op::Receive {
                    sku,
                    key: format!("c{n}-r{i}"),
                    quantity: 1 + i64::try_from(sim.rng.below(6)).unwrap_or(0),
                },
                6 => Op::WriteOff {
                    sku,
                    key: format!("c{n}-w{i}"),
                    quantity: 1,
                },
                _ => Op::Reserve {
                    sku,
                    order: format!("c{n}-o{i}"),
                    quantity: 1 + i64::try_from(sim.rng.below(3)).unwrap_or(0),
                },
            };
            script.push(op);
        }
        let own = usize::try_from(sim.rng.below(2)).unwrap_or(0);
        let preferred = everyone_to.unwrap_or(own);
        sim.clients.push(Client {
            script,
            next: 0,
            attempt: 0,
            preferred,
            both_down: 0,
        });
        let start = i64::try_from(sim.rng.below(500)).unwrap_or(0);
        sim.at(start, Action::Client(n));
    }

    // The faults: a few, each in a window of the first 20 s.
    let faults = sim.rng.below(4);
    for _ in 0..faults {
        let cell = usize::try_from(sim.rng.below(2)).unwrap_or(0);
        let start = i64::try_from(sim.rng.below(15_000)).unwrap_or(0);
        let length = 500 + i64::try_from(sim.rng.below(8_000)).unwrap_or(0);
        let (on, off, length) = match sim.rng.below(7) {
            0 => (Action::Stop(cell), Action::Start(cell), length),
            1 => {
                // On the cell's next request after `start`.
                sim.at(start, Action::DieMidRequest(cell, length));
                continue;
            }
            2 => (
                Action::StoreDown(cell, true),
                Action::StoreDown(cell, false),
                length,
            ),
            3 => (
                Action::LambdaErrors(cell, true),
                Action::LambdaErrors(cell, false),
                length,
            ),
            4 => (Action::Cut(cell, true), Action::Cut(cell, false), length),
            5 => (
                Action::AddedDelay(cell, true),
                Action::AddedDelay(cell, false),
                length,
            ),
            // A partition that outlasts the retention: resynced after.
            _ => (
                Action::Cut(cell, true),
                Action::Cut(cell, false),
                RETENTION_MS + 3_600_000,
            ),
        };
        sim.at(start, on);
        sim.at(start + length, off);
    }

    // Run until nothing is left to do: the clients done, every fault over,
    // every event delivered — after a resync when the retention ran out
    // on some. Bounded in virtual time.
    let limit = sim.now() + 3 * RETENTION_MS;
    let mut resynced = false;
    loop {
        let Some(((when, _), action)) = sim.agenda.pop_first() else {
            if sim.dead_letters > 0 && !resynced {
                resynced = true;
                for c in 0..CELLS.len() {
                    let answer = sim.call(
                        c,
                        &Method::POST,
                        "/replication/resync",
                        &[("x-twincell-replication-key", KEY.to_owned())],
                        "{}".to_owned(),
                    );
                    sim.record(&format!("resync {c} {answer:?}"));
                    sim.wake_due(c);
                }
                continue;
            }
            break;
        };
        sim.now.store(when, Ordering::SeqCst);
        sim.act(action);
        if sim.now() > limit {
            sim.report
                .problems
                .push("replication never went quiet".to_owned());
            break;
        }
    }
    if !sim.quiet() {
        let left: Vec<String> = sim
            .cells
            .iter()
            .map(|c| {
                format!(
                    "{}: {} waiting at its topic, {} of {} published, running {}",
                    c.name,
                    lock(&c.topic).pending.len(),
                    c.published,
                    lock(&c.durable.feed).len(),
                    c.router.is_some()
                )
            })
            .collect();
        sim.report
            .problems
            .push(format!("events left undelivered: {}", left.join("; ")));
    }
    Ok(check(sim))
}

/// Compares what the clients were told with what both cells answer.
fn check(mut sim: Sim) -> Report {
    let mut paths: Vec<String> = SKUS.iter().map(|s| format!("/inventory/{s}")).collect();
    let payments: Vec<(String, Value)> = sim
        .told
        .payments
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (_, p) in &payments {
        if let Some(id) = p.get("transaction_id").and_then(Value::as_str) {
            paths.push(format!("/transactions/{id}"));
        }
    }
    let mut views = BTreeMap::new();
    for path in &paths {
        let aws = sim.call(0, &Method::GET, path, &[], String::new());
        let azure = sim.call(1, &Method::GET, path, &[], String::new());
        sim.record(&format!("{path} {aws:?} {azure:?}"));
        match (aws, azure) {
            (Some((200, a)), Some((200, b))) if a == b => {
                views.insert(
                    path.clone(),
                    serde_json::from_str::<Value>(&a).unwrap_or(Value::Null),
                );
            }
            other => sim
                .report
                .problems
                .push(format!("the cells disagree on {path}: {other:?}")),
        }
    }
    for (key, told) in &payments {
        let id = told
            .get("transaction_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match views.get(&format!("/transactions/{id}")) {
            Some(held)
                if held.get("amount") == told.get("amount")
                    && held.get("account_id") == told.get("account_id") => {}
            held => {
                sim.report.lost += 1;
                sim.report
                    .problems
                    .push(format!("payment {key}: told {told}, held {held:?}"));
            }
        }
    }
    // One transaction per payment: every transaction either cell created,
    // by account, against the payments each client was told of (and those
    // it never heard back about).
    let mut created: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for cell in &sim.cells {
        for e in lock(&cell.durable.feed).iter() {
            if let twincell_core::DomainEvent::TransactionCreated {
                transaction_id,
                account_id,
                ..
            } = e.event()
            {
                created
                    .entry(account_id.as_str().to_owned())
                    .or_default()
                    .insert(transaction_id.to_string());
            }
        }
    }
    for n in 0..sim.clients.len() {
        let made = i64::try_from(
            created
                .get(&format!("acct-{n}"))
                .map_or(0, std::collections::BTreeSet::len),
        )
        .unwrap_or(i64::MAX);
        let paid = sim.told.paid.get(&n).copied().unwrap_or(0);
        let maybe = sim.told.maybe_paid.get(&n).copied().unwrap_or(0);
        if made > paid + maybe {
            sim.report.doubled += made - paid - maybe;
            sim.report.problems.push(format!(
                "acct-{n}: {made} transactions for {paid} payments told ({maybe} never answered)"
            ));
        }
        sim.report.lost += (paid - made).max(0);
    }
    for (i, sku) in SKUS.iter().enumerate() {
        let Some(view) = views.get(&format!("/inventory/{sku}")) else {
            continue;
        };
        let n = |f: &str| view.get(f).and_then(Value::as_i64).unwrap_or(0);
        let get = |m: &BTreeMap<usize, i64>| m.get(&i).copied().unwrap_or(0);
        // Units a void could not take back because they were reserved stay
        // on hand as the reported shortage (docs/domain.md): on hand less
        // the shortage is what received stock backs.
        let on_hand = n("on_hand");
        let backed = on_hand - n("shortage");
        let told_on_hand = get(&sim.told.on_hand);
        let reserved = n("reserved");
        let told_reserved = get(&sim.told.reserved);
        let lost = (told_on_hand - get(&sim.told.maybe_less) - backed).max(0)
            + (told_reserved - reserved).max(0);
        let beyond = reserved - told_reserved - get(&sim.told.maybe_reserved);
        let refused = get(&sim.told.refused_uncertain);
        let doubled =
            (backed - told_on_hand - get(&sim.told.maybe_more)).max(0) + (beyond - refused).max(0);
        sim.report.held_though_refused += beyond.clamp(0, refused);
        sim.report.lost += lost;
        sim.report.doubled += doubled;
        sim.report.shortage += n("shortage");
        if oversold(view).is_some() {
            sim.report.oversold += 1;
        }
        if lost > 0 || doubled > 0 {
            sim.report.problems.push(format!(
                "{sku}: on hand {on_hand} (told {told_on_hand}), reserved {reserved} (told {told_reserved})"
            ));
        }
    }
    sim.report
}

/// The sum of many runs.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Seeds run.
    pub seeds: u64,
    /// Summed over the seeds.
    pub lost: i64,
    /// Summed over the seeds.
    pub doubled: i64,
    /// Summed over the seeds.
    pub oversold: u64,
    /// Summed over the seeds.
    pub unanswered: u64,
    /// Summed over the seeds (counted apart, see [`Report`]).
    pub gave_up_both_down: u64,
    /// Summed over the seeds (documented, counted apart).
    pub shortage: i64,
    /// Summed over the seeds (documented, counted apart).
    pub uncertain_refusals: u64,
    /// Summed over the seeds (documented, counted apart).
    pub held_though_refused: i64,
    /// Summed over the seeds.
    pub ran_late: u64,
    /// Operations the clients ran.
    pub operations: u64,
    /// Events delivered.
    pub delivered: u64,
    /// The reports of the seeds that were not clean, by seed.
    pub not_clean: Vec<Report>,
}

impl Totals {
    fn add(&mut self, r: Report) {
        let one = Self {
            seeds: 1,
            lost: r.lost,
            doubled: r.doubled,
            oversold: r.oversold,
            unanswered: r.unanswered,
            gave_up_both_down: r.gave_up_both_down,
            shortage: r.shortage,
            uncertain_refusals: r.uncertain_refusals,
            held_though_refused: r.held_though_refused,
            ran_late: r.ran_late,
            operations: r.operations,
            delivered: r.delivered,
            not_clean: Vec::new(),
        };
        self.merge(one);
        if !r.clean() {
            self.not_clean.push(r);
        }
    }

    /// Adds another sum of runs to this one.
    pub fn merge(&mut self, other: Self) {
        self.seeds += other.seeds;
        self.lost += other.lost;
        self.doubled += other.doubled;
        self.oversold += other.oversold;
        self.unanswered += other.unanswered;
        self.gave_up_both_down += other.gave_up_both_down;
        self.shortage += other.shortage;
        self.uncertain_refusals += other.uncertain_refusals;
        self.held_though_refused += other.held_though_refused;
        self.ran_late += other.ran_late;
        self.operations += other.operations;
        self.delivered += other.delivered;
        self.not_clean.extend(other.not_clean);
        self.not_clean.sort_by_key(|r| r.seed);
    }
}

/// Seeds `first..first + count`, on `threads` threads, each configured by
/// `make`.
///
/// # Errors
/// When a run cannot be set up.
pub fn many(
    first: u64,
    count: u64,
    threads: usize,
    make: fn(u64) -> Config,
) -> anyhow::Result<Totals> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(first));
    let end = first.saturating_add(count);
    let mut handles = Vec::new();
    for _ in 0..threads.max(1) {
        let next = Arc::clone(&next);
        handles.push(std::thread::spawn(move || -> anyhow::Result<Totals> {
            let mut totals = Totals::default();
            loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end {
                    return Ok(totals);
                }
                totals.add(run(&make(seed))?);
            }
        }));
    }
    let mut totals = Totals::default();
    for h in handles {
        totals.merge(
            h.join()
                .map_err(|_| anyhow::anyhow!("a simulation thread panicked"))??,
        );
    }
    Ok(totals)
}
