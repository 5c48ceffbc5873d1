//! The front door of a local matrix: one address that sends each request to
//! a cell as Azure Traffic Manager would ([`crate::traffic_manager`]), and
//! beyond Traffic Manager, retries once on the other cell a request that
//! could not reach its cell when the API documents it as safe to retry.
//!
//! - Cells are probed at `GET /health` every interval, each probe bounded
//!   by the timeout; a probe is a success on a 2xx answer.
//! - A client is the value of its `x-twincell-client` header, or else its
//!   connection (address and port): it keeps the cell it was given for the
//!   DNS TTL, as a client's resolver would.
//! - A request that gets no answer from its cell (refused, reset, timed
//!   out: what a dead cell looks like) is sent once to another candidate
//!   if it is safe to retry ([`retry_safe`], the table of `docs/api.md`),
//!   and answered `502` naming the cell otherwise: a write that is not
//!   safe to retry is never sent twice by the front door. A reservation,
//!   write-off or transfer that its cell may have received before it died
//!   (reset or timed out, not refused) is answered `502` too
//!   ([`retry_elsewhere`]): the other cell decides it on its own stock,
//!   which cannot see what the first cell did, so its refusal would not be
//!   the answer; the client retries knowing that an attempt went
//!   unanswered (`docs/domain.md`).
//! - Answers pass through as the cell gave them, `x-twincell-cell`
//!   included; the front door adds `x-twincell-front-door-attempts` when
//!   it retried.
//! - Bounds: 1 MiB per request body, 2 s to connect, 30 s per attempt.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use crate::rng::Rng;
use crate::traffic_manager::{DnsCache, ProbeSettings, TrafficManager};

/// The largest request body the front door forwards.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Time to connect to a cell.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one attempt, answer included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The header a client may name itself by.
pub const CLIENT_HEADER: &str = "x-twincell-client";
/// Set on an answer that took more than one attempt.
pub const ATTEMPTS_HEADER: &str = "x-twincell-front-door-attempts";

/// Whether a request that may or may not have been applied can be sent
/// again, to either cell, without anything being done twice
/// (`docs/api.md`, "Which requests are safe to retry"; `x-twincell-retry`
/// in `docs/openapi.json`).
#[must_use]
pub fn retry_safe(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let keyed = headers.contains_key("idempotency-key");
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => true,
        Method::POST => match segments.as_slice() {
            ["transactions"] => keyed,
            ["inventory", _, "receipts" | "write-offs" | "transfers"] => keyed,
            ["inventory", _, "reservations"]
            | ["inventory", _, "reservations", _, "fulfilment"]
            | ["replication", "events" | "resync"] => true,
            _ => false,
        },
        Method::DELETE => matches!(segments.as_slice(), ["inventory", _, "reservations", _]),
        _ => false,
    }
}

/// Whether a request is decided on the serving cell's own stock — a
/// reservation, a write-off or a transfer — so that another cell may
/// refuse what the first one took.
#[must_use]
pub fn decided_on_own_stock(method: &Method, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    *method == Method::POST
        && matches!(
            segments.as_slice(),
            ["inventory", _, "reservations" | "write-offs" | "transfers"]
        )
}

/// Whether the front door sends a request that got no answer from its
/// cell to another cell at once: it is safe to retry, and, when the first
/// cell may have received it (`maybe_delivered`: the connection was lost
/// or timed out after it was sent), the other cell's answer cannot differ
/// for want of seeing what the first did.
#[must_use]
pub fn retry_elsewhere(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    maybe_delivered: bool,
) -> bool {
    retry_safe(method, path, headers) && !(maybe_delivered && decided_on_own_stock(method, path))
}

/// One cell behind the front door.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Its name (its `TWINCELL_CELL`).
    pub name: String,
    /// Its base URL.
    pub url: String,
}

struct Door {
    cells: BTreeMap<String, String>,
    manager: Mutex<TrafficManager>,
    dns: Mutex<DnsCache>,
    started: Instant,
    rng: Rng,
    client: reqwest::Client,
    routed: Mutex<BTreeMap<String, u64>>,
    retried: Mutex<u64>,
    /// Latency added before every request to a cell, probes included (a
    /// fault a person switches on).
    latency: Mutex<BTreeMap<String, Duration>>,
}

impl Door {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits the latency added to `cell`, if any.
    async fn added_latency(&self, cell: &str) {
        let wait = self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(cell)
            .copied();
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A running front door's shared state: the router serves it, the probe
/// loop keeps it current.
#[derive(Clone)]
pub struct FrontDoor(Arc<Door>);

impl FrontDoor {
    /// A front door over `cells` with `manager`'s settings and method, and
    /// clients keeping an answer for `ttl`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        cells: &[Cell],
        manager: TrafficManager,
        ttl: Duration,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self(Arc::new(Door {
            cells: cells
                .iter()
                .map(|c| (c.name.clone(), c.url.trim_end_matches('/').to_owned()))
                .collect(),
            manager: Mutex::new(manager),
            dns: Mutex::new(DnsCache::new(ttl)),
            started: Instant::now(),
            rng: Rng::new(seed),
            client,
            routed: Mutex::new(BTreeMap::new()),
            retried: Mutex::new(0),
            latency: Mutex::new(BTreeMap::new()),
        })))
    }

    /// Adds `latency` before every request to `cell` and every probe of it
    /// (zero takes it away), as a slow network to that cell would.
    ///
    /// # Errors
    /// When there is no such cell.
    pub fn set_latency(&self, cell: &str, latency: Duration) -> Result<(), String> {
        if !self.0.cells.contains_key(cell) {
            return Err(format!("no cell {cell}"));
        }
        let mut all = self
            .0
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if latency.is_zero() {
            all.remove(cell);
        } else {
            all.insert(cell.to_owned(), latency);
        }
        Ok(())
    }

    /// The latency added to each cell.
    #[must_use]
    pub fn latencies(&self) -> BTreeMap<String, Duration> {
        self.0
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The monitor, to read or to change (weights, enabled endpoints).
    pub fn manager(&self) -> std::sync::MutexGuard<'_, TrafficManager> {
        self.0
            .manager
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Probes every cell once, concurrently, each bounded by the
    /// settings' timeout, and records the results.
    pub async fn probe_once(&self) {
        let settings: ProbeSettings = self.manager().settings();
        let mut probes = tokio::task::JoinSet::new();
        for (name, url) in &self.0.cells {
            let door = Arc::clone(&self.0);
            let url = format!("{url}/health");
            let name = name.clone();
            probes.spawn(async move {
                let start = Instant::now();
                let probe = async {
                    door.added_latency(&name).await;
                    door.client.get(url).send().await
                };
                let answer = tokio::time::timeout(settings.timeout, probe).await;
                let ok = matches!(&answer, Ok(Ok(r)) if r.status().is_success());
                (name, ok.then(|| start.elapsed()))
            });
        }
        let results = probes.join_all().await;
        let mut manager = self.manager();
        for (name, answer) in results {
            // Every name is one of the manager's.
            let _ = manager.probed(&name, answer);
        }
    }

    /// Probes every cell every interval, until the task is dropped.
    pub async fn probe_forever(self) {
        let interval = self.manager().settings().interval;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.probe_once().await;
        }
    }

    /// The state `GET /_matrix/status` shows.
    #[must_use]
    pub fn status(&self) -> Value {
        let manager = self.manager();
        let routed = self
            .0
            .routed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let endpoints: Vec<Value> = manager
            .endpoints()
            .values()
            .map(|e| {
                json!({
                    "cell": e.name,
                    "url": self.0.cells.get(&e.name),
                    "status": e.status.as_str(),
                    "consecutive_failures": e.failures,
                    "priority": e.priority,
                    "weight": e.weight,
                    "latency_us": e.latency.map(|l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX)),
                    "routed": routed.get(&e.name).copied().unwrap_or(0),
                })
            })
            .collect();
        let settings = manager.settings();
        let ttl = self
            .0
            .dns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ttl();
        json!({
            "routing": format!("{:?}", manager.method()).to_lowercase(),
            "probe": {
                "interval_ms": settings.interval.as_millis(),
                "timeout_ms": settings.timeout.as_millis(),
                "tolerated_failures": settings.tolerated,
            },
            "dns_ttl_ms": ttl.as_millis(),
            // The longest a client may be sent to a dead cell:
            // (interval + timeout) × (tolerated + 1) + TTL.
            "failover_bound_ms": (settings.detection_bound() + ttl).as_millis(),
            "endpoints": endpoints,
            "retried_on_the_other_cell": *self.0.retried.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        })
    }

    /// The front door's router: `/_matrix/status`, and everything else
    /// forwarded. Serve it with `into_make_service_with_connect_info`.
    pub fn router(&self) -> Router {
        self.router_with(
            Router::new().route(
                "/_matrix/status",
                axum::routing::get(|State(door): State<FrontDoor>| async move {
                    axum::Json(door.status())
                })
                .with_state(self.clone()),
            ),
        )
    }

    /// The front door's router with `control`'s routes (`/_matrix/…`)
    /// served by the front door itself, and everything else forwarded.
    pub fn router_with(&self, control: Router) -> Router {
        Router::new()
            .fallback(forward)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone())
            .merge(control)
    }

    fn choose(&self, client: &str, except: Option<&str>) -> Option<String> {
        let manager = self.manager();
        let roll = self.0.rng.next_u64();
        match except {
            None => {
                let mut dns = self
                    .0
                    .dns
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                dns.expire(self.0.now());
                dns.resolve(client, self.0.now(), &manager, roll)
            }
            // A retry goes to another candidate, whatever the client's
            // cached answer says.
            Some(failed) => manager
                .candidates()
                .into_iter()
                .map(|e| e.name.clone())
                .find(|name| name != failed),
        }
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn problem(status: StatusCode, detail: String) -> Response {
    (
        status,
        [("content-type", "application/problem+json")],
        json!({
            "type": "urn:twincell:problem:front-door",
            "title": "Front door",
            "status": status.as_u16(),
            "detail": detail,
        })
        .to_string(),
    )
        .into_response()
}

async fn forward(State(door): State<FrontDoor>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let connection = parts.extensions.get::<ConnectInfo<SocketAddr>>().copied();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the front door forwards bodies of at most {MAX_BODY_BYTES} bytes"),
        );
    };
    let client = parts
        .headers
        .get(CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| connection.map(|ConnectInfo(addr)| addr.to_string()))
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let Some(first) = door.choose(&client, None) else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "every cell is disabled".to_owned(),
        );
    };
    match attempt(&door, &first, &parts.method, &path, &parts.headers, &body).await {
        Ok(answer) => answer,
        Err(Lost {
            why,
            maybe_delivered,
        }) if !retry_elsewhere(&parts.method, &path, &parts.headers, maybe_delivered) => {
            let reason = if retry_safe(&parts.method, &path, &parts.headers) {
                "the other cell would decide it on its own stock, which cannot see what this one did"
            } else {
                "it is not safe to retry"
            };
            problem(
                StatusCode::BAD_GATEWAY,
                format!(
                    "cell {first} did not answer ({why}); {} {} was not sent again, as {reason}: it may or may not have been applied",
                    parts.method,
                    path.split('?').next().unwrap_or_default()
                ),
            )
        }
        Err(Lost { why, .. }) => {
            let Some(second) = door.choose(&client, Some(&first)) else {
                return problem(
                    StatusCode::BAD_GATEWAY,
                    format!("cell {first} did not answer ({why}) and no other cell is a candidate"),
                );
            };
            *door
                .0
                .retried
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
            match attempt(&door, &second, &parts.method, &path, &parts.headers, &body).await {
                Ok(mut answer) => {
                    answer
                        .headers_mut()
                        .insert(ATTEMPTS_HEADER, HeaderValue::from_static("2"));
                    answer
                }
                Err(Lost { why: again, .. }) => problem(
                    StatusCode::BAD_GATEWAY,
                    format!("cell {first} did not answer ({why}), nor cell {second} ({again})"),
                ),
            }
        }
    }
}

/// Why an attempt got no answer.
struct Lost {
    why: String,
    /// Whether the cell may have received the request.
    maybe_delivered: bool,
}

/// One attempt on `cell`: its answer, or why there was none.
async fn attempt(
    door: &FrontDoor,
    cell: &str,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Lost> {
    let base = door.0.cells.get(cell).ok_or_else(|| Lost {
        why: format!("no cell {cell}"),
        maybe_delivered: false,
    })?;
    door.0.added_latency(cell).await;
    let mut outgoing = door
        .0
        .client
        .request(method.clone(), format!("{base}{path}"))
        .body(body.clone());
    for (name, value) in headers {
        if name == http::header::HOST
            || name.as_str() == CLIENT_HEADER
            || HOP_BY_HOP.contains(&name.as_str())
        {
            continue;
        }
        outgoing = outgoing.header(name, value);
    }
    let answer = outgoing.send().await.map_err(|e| {
        let (why, maybe_delivered) = if e.is_connect() {
            ("connection refused", false)
        } else if e.is_timeout() {
            ("timed out", true)
        } else {
            ("connection lost", true)
        };
        Lost {
            why: why.to_owned(),
            maybe_delivered,
        }
    })?;
    *door
        .0
        .routed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(cell.to_owned())
        .or_default() += 1;
    let status = answer.status();
    let mut out_headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) && name != http::header::CONTENT_LENGTH {
            out_headers.append(HeaderName::clone(name), value.clone());
        }
    }
    let bytes = answer.bytes().await.map_err(|_| Lost {
        why: "connection lost while answering".to_owned(),
        maybe_delivered: true,
    })?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::traffic_manager::RoutingMethod;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn the_retry_table_is_the_one_the_api_documents() {
        let none = HeaderMap::new();
        let keyed = headers(&[("idempotency-key", "k-1")]);
        for (method, path, safe_without, safe_with) in [
            (Method::GET, "/health", true, true),
            (Method::GET, "/inventory/sku-1?x=1", true, true),
            (Method::HEAD, "/transactions/abc", true, true),
            (Method::POST, "/transactions", false, true),
            (Method::POST, "/inventory/sku-1/receipts", false, true),
            (Method::POST, "/inventory/sku-1/write-offs", false, true),
            (Method::POST, "/inventory/sku-1/transfers", false, true),
            (Method::POST, "/inventory/sku-1/reservations", true, true),
            (
                Method::DELETE,
                "/inventory/sku-1/reservations/o-1",
                true,
                true,
            ),
            (
                Method::POST,
                "/inventory/sku-1/reservations/o-1/fulfilment",
                true,
                true,
            ),
            (Method::POST, "/replication/events", true, true),
            (Method::POST, "/somewhere/else", false, false),
            (Method::PUT, "/transactions", false, false),
            (Method::DELETE, "/transactions/abc", false, false),
        ] {
            assert_eq!(
                retry_safe(&method, path, &none),
                safe_without,
                "{method} {path}"
            );
            assert_eq!(
                retry_safe(&method, path, &keyed),
                safe_with,
                "{method} {path} keyed"
            );
            // Lost after it was sent: what the other cell decides on its
            // own stock is not sent there.
            let own_stock = matches!(
                path,
                "/inventory/sku-1/write-offs"
                    | "/inventory/sku-1/transfers"
                    | "/inventory/sku-1/reservations"
            ) && method == Method::POST;
            assert_eq!(
                decided_on_own_stock(&method, path),
                own_stock,
                "{method} {path}"
            );
            assert_eq!(
                retry_elsewhere(&method, path, &keyed, false),
                safe_with,
                "{method} {path} never sent"
            );
            assert_eq!(
                retry_elsewhere(&method, path, &keyed, true),
                safe_with && !own_stock,
                "{method} {path} maybe sent"
            );
        }
    }

    /// A stand-in cell that dies mid-request: it reads each request, then
    /// closes the connection without answering.
    async fn dying_cell() -> (String, Arc<Mutex<u64>>) {
        use tokio::io::AsyncReadExt;
        let hits = Arc::new(Mutex::new(0u64));
        let counter = Arc::clone(&hits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                *counter.lock().unwrap() += 1;
                drop(socket);
            }
        });
        (url, hits)
    }

    /// A stand-in cell: answers every request with its name in
    /// `x-twincell-cell` and counts what it got.
    async fn cell(name: &'static str) -> (String, Arc<Mutex<u64>>, tokio::task::JoinHandle<()>) {
        let hits = Arc::new(Mutex::new(0u64));
        let counter = Arc::clone(&hits);
        let app = Router::new().fallback(move |request: Request| {
            let counter = Arc::clone(&counter);
            async move {
                *counter.lock().unwrap() += 1;
                let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (
                    [("x-twincell-cell", name)],
                    format!("{name}:{}", String::from_utf8_lossy(&body)),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (url, hits, server)
    }

    async fn door(urls: [&str; 2], ttl: Duration) -> (String, FrontDoor) {
        let manager = TrafficManager::new(
            ProbeSettings::LOCAL,
            RoutingMethod::Priority,
            &[("aws", 1, 500), ("azure", 2, 500)],
        )
        .unwrap();
        let cells = [
            Cell {
                name: "aws".into(),
                url: urls[0].into(),
            },
            Cell {
                name: "azure".into(),
                url: urls[1].into(),
            },
        ];
        let door = FrontDoor::new(&cells, manager, ttl, 7).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = door.router();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        (url, door)
    }

    #[tokio::test]
    async fn a_dead_cell_costs_a_safe_request_nothing_and_an_unsafe_write_is_never_sent_twice() {
        crate::install_crypto();
        let (aws, aws_hits, aws_server) = cell("aws").await;
        let (azure, azure_hits, _azure_server) = cell("azure").await;
        let (url, door) = door([&aws, &azure], Duration::ZERO).await;
        let http = reqwest::Client::new();
        let get = http
            .get(format!("{url}/inventory/sku-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(get.headers()["x-twincell-cell"], "aws");
        assert_eq!(*aws_hits.lock().unwrap(), 1);
        // aws dies; the monitor has not noticed yet.
        aws_server.abort();
        let _ = aws_server.await;
        let get = http
            .get(format!("{url}/inventory/sku-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 200);
        assert_eq!(get.headers()["x-twincell-cell"], "azure");
        assert_eq!(get.headers()[ATTEMPTS_HEADER], "2");
        let keyed = http
            .post(format!("{url}/transactions"))
            .header("idempotency-key", "checkout-1")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(keyed.headers()["x-twincell-cell"], "azure");
        assert_eq!(keyed.text().await.unwrap(), "azure:{}");
        let before = *azure_hits.lock().unwrap();
        let unkeyed = http
            .post(format!("{url}/inventory/sku-1/receipts"))
            .body("{\"quantity\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(unkeyed.status(), 502);
        let problem: Value = unkeyed.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("not safe to retry"),
            "{problem}"
        );
        assert_eq!(
            *azure_hits.lock().unwrap(),
            before,
            "never sent to the other cell"
        );
        // The monitor notices: three failed probes (tolerated: 2).
        for _ in 0..3 {
            door.probe_once().await;
        }
        assert_eq!(door.status()["endpoints"][0]["status"], "Degraded");
        assert_eq!(door.status()["endpoints"][1]["status"], "Online");
        let receipt = http
            .post(format!("{url}/inventory/sku-1/receipts"))
            .body("{\"quantity\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(receipt.headers()["x-twincell-cell"], "azure");
        assert!(
            receipt.headers().get(ATTEMPTS_HEADER).is_none(),
            "routed there first"
        );
        assert_eq!(door.status()["retried_on_the_other_cell"], 2);
    }

    #[tokio::test]
    async fn a_request_lost_after_it_was_sent_is_retried_only_where_the_other_cell_cannot_answer_otherwise()
     {
        crate::install_crypto();
        let (aws, aws_hits) = dying_cell().await;
        let (azure, azure_hits, _azure_server) = cell("azure").await;
        let (url, _door) = door([&aws, &azure], Duration::ZERO).await;
        let http = reqwest::Client::new();
        // A keyed payment: the other cell gives the same answer.
        let payment = http
            .post(format!("{url}/transactions"))
            .header("idempotency-key", "checkout-1")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(payment.status(), 200);
        assert_eq!(payment.headers()["x-twincell-cell"], "azure");
        assert_eq!(*aws_hits.lock().unwrap(), 1);
        // A reservation: aws may hold it, azure would decide on its own
        // stock. Not sent there; the client is told it may have applied.
        let before = *azure_hits.lock().unwrap();
        let reservation = http
            .post(format!("{url}/inventory/sku-1/reservations"))
            .body("{\"order_id\":\"o-1\",\"quantity\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(reservation.status(), 502);
        let problem: Value = reservation.json().await.unwrap();
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("own stock"), "{problem}");
        assert!(
            detail.contains("may or may not have been applied"),
            "{problem}"
        );
        assert_eq!(*aws_hits.lock().unwrap(), 2, "it reached aws");
        assert_eq!(*azure_hits.lock().unwrap(), before, "never sent to azure");
    }
}
