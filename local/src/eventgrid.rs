//! An Event Grid custom topic in the CloudEvents schema, written from what
//! Event Grid documents (learn.microsoft.com, Azure Event Grid: "Publish
//! events to custom topics", "Delivery and retry", "Endpoint validation
//! with CloudEvents schema"; `docs/replication.md` says how the cells use
//! it), with its failure modes, and faults a test can add:
//!
//! - **Publish**: `POST /topics/<topic>/api/events?api-version=2018-01-01`
//!   with `aeg-sas-key`; a batch (`application/cloudevents-batch+json`) or
//!   one event (`application/cloudevents+json`); 200 when accepted; 401
//!   without the key; 400 for what is not CloudEvents 1.0 (each event needs
//!   `specversion`, `id`, `source`, `type`); 413 over 1 MB or 5 000 events;
//!   503 when the topic holds more undelivered events than its bound.
//! - **Subscriptions** (webhook): validated first with the CloudEvents
//!   handshake (`OPTIONS` with `WebHook-Request-Origin`, answered by 200 and
//!   `WebHook-Allowed-Origin`); nothing is delivered before. Deliveries
//!   carry up to `maxEventsPerBatch` events and the subscription's delivery
//!   attribute header (the secret key). 200–204 is success; 400, 401, 403
//!   and 413 dead-letter the batch at once; anything else (or no answer
//!   within 30 s) is retried after 10 s, 30 s, 1 min, 5 min, 10 min, 30 min,
//!   1 h, 3 h, 6 h, then every 12 h, up to 30 attempts or the time to live
//!   (24 h), then dead-lettered. A batch succeeds or fails whole. Times are
//!   divided by `time_divisor` so a test sees hours in seconds.
//! - **Faults** (seeded, off by default): a published event delivered
//!   twice (`duplicate_per_mille`); a random delay before delivery (up to
//!   `max_delay`), which reorders events; a delivery that succeeded but
//!   whose answer is lost, so it is delivered again (`lost_answer_per_mille`).
//! - **Control** (for a test or another process): `GET /control/stats`,
//!   `POST /control/cut` and `/control/heal` (the link to a subscriber is
//!   down: deliveries fail and are retried on the schedule), `POST
//!   /control/expire` (the retention runs out: everything undelivered is
//!   dead-lettered, as after 24 h), `POST /control/flush` (deliver what is
//!   waiting now), `GET /control/dead-letters`, and `POST
//!   /control/subscriptions` (create one, as Event Grid's management API
//!   does after the topic exists). Bodies name a subscription
//!   (`{"subscription": "<name>"}`) or none for all.
//!
//! - **Durable** when given a spool directory: what a publish was answered
//!   200 for is kept on disk until delivered or dead-lettered, so a
//!   stand-in started again delivers it (see `spool`).
//! - **Lag**: `GET /control/stats` shows, per subscription, the time from
//!   each delivered event's `time` (when its cell recorded it) to its
//!   delivery, p50 and p99 of the last 1 000.
//!
//! It listens on 127.0.0.1 only (the control API has no key), takes at
//! most 1 MiB per request and answers within 30 s.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use crate::rng::Rng;
use crate::spool::Spool;

/// Event Grid's retry schedule, before `time_divisor`.
pub const RETRY_SCHEDULE: [Duration; 9] = [
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(300),
    Duration::from_secs(600),
    Duration::from_secs(1_800),
    Duration::from_secs(3_600),
    Duration::from_secs(10_800),
    Duration::from_secs(21_600),
];
/// After the schedule: every 12 hours.
pub const RETRY_AFTER_SCHEDULE: Duration = Duration::from_secs(43_200);
/// The largest publish request.
pub const MAX_PUBLISH_BYTES: usize = 1024 * 1024;
/// The most events one publish request holds.
pub const MAX_PUBLISH_EVENTS: usize = 5_000;
/// How long a delivery may take before it counts as failed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the stand-in takes to read and answer one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The origin the handshake names.
pub const ORIGIN: &str = "eventgrid.azure.net";

/// A topic.
#[derive(Debug, Clone)]
pub struct TopicConfig {
    /// Its name (the path segment of its endpoint).
    pub name: String,
    /// Its access key (`aeg-sas-key`).
    pub key: String,
}

/// A webhook subscription of a topic.
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// Its name (unique across topics).
    pub name: String,
    /// The topic it subscribes to.
    pub topic: String,
    /// Where it delivers.
    pub endpoint: String,
    /// A secret delivery attribute: header name and value.
    pub delivery_header: Option<(String, String)>,
    /// `maxEventsPerBatch`.
    pub max_events_per_batch: usize,
}

/// Faults to inject (all off by default).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Per thousand published events, how many are delivered twice.
    pub duplicate_per_mille: u32,
    /// Per thousand successful deliveries, how many lose their answer and
    /// are delivered again.
    pub lost_answer_per_mille: u32,
    /// The longest random delay before an event is first delivered.
    pub max_delay: Duration,
}

/// The whole stand-in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Topics.
    pub topics: Vec<TopicConfig>,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Faults.
    pub faults: Faults,
    /// Divides every retry interval and the time to live.
    pub time_divisor: u32,
    /// `maxDeliveryAttempts`.
    pub max_delivery_attempts: u32,
    /// `eventTimeToLiveInMinutes`, before `time_divisor`.
    pub time_to_live: Duration,
    /// Undelivered events one subscription may hold before publishes are
    /// refused with 503.
    pub max_pending: usize,
    /// The seed of the fault generator.
    pub seed: u64,
    /// Where each subscription's undelivered events are kept (`None`: in
    /// memory only).
    pub spool_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            topics: Vec::new(),
            subscriptions: Vec::new(),
            faults: Faults::default(),
            time_divisor: 1,
            max_delivery_attempts: 30,
            time_to_live: Duration::from_secs(24 * 3_600),
            max_pending: 100_000,
            seed: 1,
            spool_dir: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    event: Value,
    attempts: u32,
    due: Instant,
    published_at: Instant,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Stats {
    published: u64,
    delivered: u64,
    delivery_requests: u64,
    failed_attempts: u64,
    lost_answers: u64,
    duplicated: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct DeadLetter {
    id: String,
    reason: String,
    attempts: u32,
}

struct Subscription {
    config: SubscriptionConfig,
    pending: Mutex<Vec<Pending>>,
    stats: Mutex<Stats>,
    dead: Mutex<Vec<DeadLetter>>,
    validated: AtomicBool,
    cut: AtomicBool,
    wake: Notify,
    spool: Option<Spool>,
    /// Milliseconds from the `time` of each of the last delivered events to
    /// its delivery.
    lags: std::sync::Mutex<VecDeque<u64>>,
}

/// Delivered events whose lag `GET /control/stats` summarises.
const LAG_SAMPLES: usize = 1_000;

impl Subscription {
    fn record_lags(&self, batch: &[Pending]) {
        let now = time::OffsetDateTime::now_utc();
        let mut lags = self
            .lags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in batch {
            let Some(at) = p.event.get("time").and_then(Value::as_str).and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            }) else {
                continue;
            };
            let ms = u64::try_from((now - at).whole_milliseconds()).unwrap_or(0);
            if lags.len() == LAG_SAMPLES {
                lags.pop_front();
            }
            lags.push_back(ms);
        }
    }

    /// p50 and p99 of the recorded lags, in milliseconds.
    fn lag_percentiles(&self) -> Value {
        let mut lags: Vec<u64> = self
            .lags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        lags.sort_unstable();
        let at = |q: usize| {
            let i = (lags.len() * q).div_ceil(100).saturating_sub(1);
            lags.get(i).copied()
        };
        json!({"p50": at(50), "p99": at(99), "samples": lags.len()})
    }

    fn done<'a>(&self, events: impl Iterator<Item = &'a Pending>) {
        if let Some(spool) = &self.spool {
            spool.done(events.map(|p| &p.event));
        }
    }
}

struct Shared {
    topics: HashMap<String, TopicConfig>,
    subscriptions: std::sync::RwLock<Vec<Arc<Subscription>>>,
    config: Config,
    rng: Rng,
    client: reqwest::Client,
}

impl Shared {
    fn scaled(&self, d: Duration) -> Duration {
        d / self.config.time_divisor.max(1)
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        self.scaled(
            RETRY_SCHEDULE
                .get(index)
                .copied()
                .unwrap_or(RETRY_AFTER_SCHEDULE),
        )
    }

    fn random_delay(&self) -> Duration {
        let max = u64::try_from(self.config.faults.max_delay.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.below(max.saturating_add(1)))
    }

    fn select(&self, name: Option<&str>) -> Vec<Arc<Subscription>> {
        self.subscriptions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|s| name.is_none_or(|n| s.config.name == n))
            .cloned()
            .collect()
    }

    fn of_topic(&self, topic: &str) -> Vec<Arc<Subscription>> {
        self.select(None)
            .into_iter()
            .filter(|s| s.config.topic == topic)
            .collect()
    }
}

/// The stand-in's router; its delivery workers start with it.
///
/// # Errors
/// When the HTTP client cannot be built or a subscription names an unknown
/// topic.
pub fn start(config: Config) -> anyhow::Result<Router> {
    crate::install_crypto();
    let client = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let topics: HashMap<String, TopicConfig> = config
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let initial = config.subscriptions.clone();
    let shared = Arc::new(Shared {
        topics,
        subscriptions: std::sync::RwLock::new(Vec::new()),
        rng: Rng::new(config.seed),
        config,
        client,
    });
    for s in initial {
        subscribe(&shared, s).map_err(|(_, e)| anyhow::anyhow!(e))?;
    }
    Ok(Router::new()
        .route("/topics/{topic}/api/events", post(publish))
        .route("/control/subscriptions", post(create_subscription))
        .route("/control/stats", get(stats))
        .route("/control/dead-letters", get(dead_letters))
        .route("/control/cut", post(cut))
        .route("/control/heal", post(heal))
        .route("/control/expire", post(expire))
        .route("/control/flush", post(flush))
        .layer(DefaultBodyLimit::max(MAX_PUBLISH_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(shared))
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ApiVersion {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

async fn publish(
    State(shared): State<Arc<Shared>>,
    Path(topic): Path<String>,
    Query(query): Query<ApiVersion>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(config) = shared.topics.get(&topic) else {
        return error(StatusCode::NOT_FOUND, "no such topic");
    };
    if query.api_version.as_deref() != Some("2018-01-01") {
        return error(
            StatusCode::BAD_REQUEST,
            "api-version 2018-01-01 is required",
        );
    }
    let key = headers.get("aeg-sas-key").and_then(|v| v.to_str().ok());
    if key != Some(config.key.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "the aeg-sas-key is missing or wrong",
        );
    }
    let media = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let events = match (media.as_str(), serde_json::from_slice::<Value>(&body)) {
        ("application/cloudevents-batch+json", Ok(Value::Array(items))) => items,
        ("application/cloudevents+json", Ok(object @ Value::Object(_))) => vec![object],
        (_, Err(_)) => return error(StatusCode::BAD_REQUEST, "the body is not JSON"),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "a CloudEvents topic takes application/cloudevents-batch+json (an array) or application/cloudevents+json (one event)",
            );
        }
    };
    if events.len() > MAX_PUBLISH_EVENTS {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "more than 5 000 events");
    }
    for e in &events {
        let ok = e.get("specversion").and_then(Value::as_str) == Some("1.0")
            && ["id", "source", "type"].iter().all(|a| {
                e.get(*a)
                    .and_then(Value::as_str)
                    .is_some_and(|v| !v.is_empty())
            });
        if !ok {
            return error(
                StatusCode::BAD_REQUEST,
                "every event needs specversion 1.0, id, source and type",
            );
        }
    }
    let subscriptions = shared.of_topic(&topic);
    for s in &subscriptions {
        if s.pending.lock().await.len() + events.len() > shared.config.max_pending {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the topic is throttled");
        }
    }
    let now = Instant::now();
    for s in subscriptions {
        let mut pending = s.pending.lock().await;
        let mut stats = s.stats.lock().await;
        let mut accepted = Vec::with_capacity(events.len());
        for event in &events {
            let copies = if shared.rng.chance(shared.config.faults.duplicate_per_mille) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                accepted.push(event.clone());
            }
        }
        // Kept on disk before the publish is answered 200.
        if let Some(spool) = &s.spool
            && let Err(e) = spool.accepted(&accepted)
        {
            tracing::error!(subscription = %s.config.name, error = %e, "the spool refused a publish");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the topic could not store the events",
            );
        }
        stats.published += u64::try_from(events.len()).unwrap_or(u64::MAX);
        stats.duplicated += u64::try_from(accepted.len() - events.len()).unwrap_or(u64::MAX);
        for event in accepted {
            pending.push(Pending {
                event,
                attempts: 0,
                due: now + shared.random_delay(),
                published_at: now,
            });
        }
        drop(pending);
        s.wake.notify_one();
    }
    StatusCode::OK.into_response()
}

async fn handshake(shared: &Shared, s: &Subscription) -> bool {
    let answer = shared
        .client
        .request(reqwest::Method::OPTIONS, &s.config.endpoint)
        .header("WebHook-Request-Origin", ORIGIN)
        .send()
        .await;
    match answer {
        Ok(r) if r.status() == reqwest::StatusCode::OK => r
            .headers()
            .get("webhook-allowed-origin")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == ORIGIN || v == "*"),
        _ => false,
    }
}

/// One subscription's deliveries, forever.
async fn deliver_forever(shared: Arc<Shared>, s: Arc<Subscription>) {
    loop {
        if !s.validated.load(Ordering::SeqCst) {
            if handshake(&shared, &s).await {
                s.validated.store(true, Ordering::SeqCst);
                tracing::info!(subscription = %s.config.name, "webhook validated");
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let now = Instant::now();
        let ttl = shared.scaled(shared.config.time_to_live);
        let (batch, next_due) = {
            let mut pending = s.pending.lock().await;
            // Dead-letter what is past its time to live or its attempts.
            let mut expired = Vec::new();
            pending.retain(|p| {
                let keep = now.duration_since(p.published_at) < ttl
                    && p.attempts < shared.config.max_delivery_attempts;
                if !keep {
                    expired.push(p.clone());
                }
                keep
            });
            if let Some(spool) = &s.spool {
                // Between two deliveries nothing is in flight: what is
                // pending is all there is.
                spool.compact_if_large(&pending.iter().map(|p| &p.event).collect::<Vec<_>>());
            }
            if !expired.is_empty() {
                s.done(expired.iter());
                let mut dead = s.dead.lock().await;
                for p in expired {
                    dead.push(DeadLetter {
                        id: id_of(&p.event),
                        reason: "time to live or delivery attempts exhausted".into(),
                        attempts: p.attempts,
                    });
                }
            }
            pending.sort_by_key(|p| p.due);
            let ready = pending.iter().take_while(|p| p.due <= now).count();
            let take = ready.min(s.config.max_events_per_batch.max(1));
            let batch: Vec<Pending> = pending.drain(..take).collect();
            (batch, pending.first().map(|p| p.due))
        };
        if batch.is_empty() {
            let wait = next_due.map_or(Duration::from_millis(500), |d| {
                d.saturating_duration_since(now)
                    .min(Duration::from_millis(500))
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {},
                () = s.wake.notified() => {},
            }
            continue;
        }
        let outcome = if s.cut.load(Ordering::SeqCst) {
            Err("the link to the subscriber is cut".to_owned())
        } else {
            post_batch(&shared, &s, &batch).await
        };
        let mut stats = s.stats.lock().await;
        stats.delivery_requests += 1;
        match outcome {
            Ok(())
                if shared
                    .rng
                    .chance(shared.config.faults.lost_answer_per_mille) =>
            {
                stats.lost_answers += 1;
                drop(stats);
                retry(&shared, &s, batch).await;
            }
            Ok(()) => {
                stats.delivered += u64::try_from(batch.len()).unwrap_or(u64::MAX);
                drop(stats);
                s.record_lags(&batch);
                s.done(batch.iter());
            }
            Err(reason) if reason.starts_with("final") => {
                drop(stats);
                s.done(batch.iter());
                let mut dead = s.dead.lock().await;
                for p in batch {
                    dead.push(DeadLetter {
                        id: id_of(&p.event),
                        reason: reason.clone(),
                        attempts: p.attempts + 1,
                    });
                }
            }
            Err(reason) => {
                stats.failed_attempts += 1;
                drop(stats);
                tracing::debug!(subscription = %s.config.name, %reason, "delivery failed; retrying on the schedule");
                retry(&shared, &s, batch).await;
            }
        }
    }
}

fn id_of(event: &Value) -> String {
    event
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn retry(shared: &Shared, s: &Subscription, batch: Vec<Pending>) {
    let now = Instant::now();
    let mut pending = s.pending.lock().await;
    for mut p in batch {
        p.attempts += 1;
        p.due = now + shared.retry_delay(p.attempts);
        pending.push(p);
    }
}

async fn post_batch(shared: &Shared, s: &Subscription, batch: &[Pending]) -> Result<(), String> {
    let events: Vec<Value> = batch.iter().map(|p| p.event.clone()).collect();
    let mut request = shared
        .client
        .post(&s.config.endpoint)
        .header(
            http::header::CONTENT_TYPE,
            "application/cloudevents-batch+json; charset=utf-8",
        )
        .body(Value::Array(events).to_string());
    if let Some((name, value)) = &s.config.delivery_header {
        request = request.header(name.as_str(), value.as_str());
    }
    match request.send().await {
        Ok(r) if (200..=204).contains(&r.status().as_u16()) => Ok(()),
        Ok(r) if matches!(r.status().as_u16(), 400 | 401 | 403 | 413) => {
            Err(format!("final: the subscriber answered {}", r.status()))
        }
        Ok(r) => Err(format!("the subscriber answered {}", r.status())),
        Err(e) => Err(format!("no answer: {e}")),
    }
}

#[derive(Deserialize, Default)]
struct Which {
    subscription: Option<String>,
}

/// The subscription a control body names (`None`: all), or why the body
/// is not one.
fn which(body: &Bytes) -> Result<Option<String>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<Which>(body)
        .map(|w| w.subscription)
        .map_err(|e| format!("expected {{\"subscription\": …}}: {e}"))
}

/// Adds a subscription and starts delivering to it (after its handshake).
fn subscribe(shared: &Arc<Shared>, config: SubscriptionConfig) -> Result<(), (StatusCode, String)> {
    if !shared.topics.contains_key(&config.topic) {
        return Err((StatusCode::NOT_FOUND, format!("no topic {}", config.topic)));
    }
    let exists = |shared: &Shared, name: &str| {
        shared
            .subscriptions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|s| s.config.name == name)
    };
    if exists(shared, &config.name) {
        return Err((
            StatusCode::CONFLICT,
            format!("subscription {} exists", config.name),
        ));
    }
    let (spool, kept) = match &shared.config.spool_dir {
        None => (None, Vec::new()),
        Some(dir) => {
            // The name becomes a file name.
            if config.name.is_empty()
                || !config
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "a subscription name is letters, digits, '-' and '_'".to_owned(),
                ));
            }
            let (spool, kept) = Spool::open(&dir.join(format!("{}.jsonl", config.name)))
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
            (Some(spool), kept)
        }
    };
    let now = Instant::now();
    if !kept.is_empty() {
        tracing::info!(subscription = %config.name, events = kept.len(), "delivering what the spool kept");
    }
    let subscription = Arc::new(Subscription {
        config,
        pending: Mutex::new(
            kept.into_iter()
                .map(|event| Pending {
                    event,
                    attempts: 0,
                    due: now,
                    published_at: now,
                })
                .collect(),
        ),
        stats: Mutex::new(Stats::default()),
        dead: Mutex::new(Vec::new()),
        validated: AtomicBool::new(false),
        cut: AtomicBool::new(false),
        wake: Notify::new(),
        spool,
        lags: std::sync::Mutex::new(VecDeque::new()),
    });
    {
        let mut all = shared
            .subscriptions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if all
            .iter()
            .any(|s| s.config.name == subscription.config.name)
        {
            return Err((
                StatusCode::CONFLICT,
                format!("subscription {} exists", subscription.config.name),
            ));
        }
        all.push(Arc::clone(&subscription));
    }
    tokio::spawn(deliver_forever(Arc::clone(shared), subscription));
    Ok(())
}

/// `POST /control/subscriptions`: `{"name", "topic", "endpoint",
/// "delivery_key"?, "max_events_per_batch"?}`; the key goes in
/// `x-twincell-replication-key` as a secret delivery attribute.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSubscription {
    name: String,
    topic: String,
    endpoint: String,
    delivery_key: Option<String>,
    max_events_per_batch: Option<usize>,
}

async fn create_subscription(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let new: NewSubscription = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let config = SubscriptionConfig {
        name: new.name,
        topic: new.topic,
        endpoint: new.endpoint,
        delivery_header: new
            .delivery_key
            .map(|k| ("x-twincell-replication-key".to_owned(), k)),
        max_events_per_batch: new.max_events_per_batch.unwrap_or(1),
    };
    match subscribe(&shared, config) {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err((status, message)) => error(status, &message),
    }
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let mut out = serde_json::Map::new();
    for s in &shared.select(None) {
        let stats = s.stats.lock().await.clone();
        let mut v = match serde_json::to_value(stats) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        v.insert("pending".into(), s.pending.lock().await.len().into());
        v.insert("dead_lettered".into(), s.dead.lock().await.len().into());
        v.insert(
            "validated".into(),
            s.validated.load(Ordering::SeqCst).into(),
        );
        v.insert("cut".into(), s.cut.load(Ordering::SeqCst).into());
        v.insert("lag_ms".into(), s.lag_percentiles());
        out.insert(s.config.name.clone(), Value::Object(v));
    }
    Json(json!({"subscriptions": out})).into_response()
}

async fn dead_letters(State(shared): State<Arc<Shared>>) -> Response {
    let mut out = serde_json::Map::new();
    for s in &shared.select(None) {
        let dead = s.dead.lock().await.clone();
        out.insert(
            s.config.name.clone(),
            serde_json::to_value(dead).unwrap_or(Value::Null),
        );
    }
    Json(Value::Object(out)).into_response()
}

async fn set_cut(shared: &Shared, body: &Bytes, cut: bool) -> Response {
    let name = match which(body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let chosen = shared.select(name.as_deref());
    if chosen.is_empty() {
        return error(StatusCode::NOT_FOUND, "no such subscription");
    }
    for s in chosen {
        s.cut.store(cut, Ordering::SeqCst);
        s.wake.notify_one();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn cut(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    set_cut(&shared, &body, true).await
}

async fn heal(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    set_cut(&shared, &body, false).await
}

async fn expire(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let name = match which(&body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let mut expired = 0usize;
    for s in shared.select(name.as_deref()) {
        let drained: Vec<Pending> = s.pending.lock().await.drain(..).collect();
        expired += drained.len();
        s.done(drained.iter());
        let mut dead = s.dead.lock().await;
        for p in drained {
            dead.push(DeadLetter {
                id: id_of(&p.event),
                reason: "retention ran out".into(),
                attempts: p.attempts,
            });
        }
    }
    Json(json!({"expired": expired})).into_response()
}

async fn flush(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let name = match which(&body) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let now = Instant::now();
    for s in shared.select(name.as_deref()) {
        for p in s.pending.lock().await.iter_mut() {
            p.due = p.due.min(now);
        }
        s.wake.notify_one();
    }
    StatusCode::NO_CONTENT.into_response()
}
