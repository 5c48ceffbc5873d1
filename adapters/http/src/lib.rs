//! # twincell-http
//!
//! The one axum [`Router`] both cells serve — the AWS cell through
//! `lambda_http`, the Azure cell through `axum::serve` — so that the same
//! request gets the same status and the same body bytes in either cloud.
//!
//! Every failure is `application/problem+json` ([`problem`]); bodies follow
//! one set of rules ([`body`]); every response carries `x-request-id` (the
//! caller's when valid, else a new UUIDv7) and `x-twincell-cell`. A panic is
//! a bug, never a design: the catch-panic layer is a backstop that answers a
//! problem+json 500.

pub mod auth;
pub mod body;
mod clock;
pub mod extract;
pub mod headers;
pub mod normalize;
pub mod problem;
pub mod replication;
mod routes;
pub mod tuning;

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::HeaderValue;
use tower_http::catch_panic::CatchPanicLayer;
use twincell_core::{Clock, EventStore, IdGenerator, Service};

pub use body::BODY_LIMIT;
pub use clock::TokioClock;
pub use problem::{Problem, ProblemKind};
pub use replication::Replication;
pub use routes::IDEMPOTENT_REPLAYED;
pub use tuning::Tuning;

/// The response header naming the cell that answered.
pub const CELL_HEADER: &str = "x-twincell-cell";
/// The request and response header correlating logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Every route: `(method, path template)`. The router, each `function.json`
/// and `template.yaml` must declare exactly this set (a test checks).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("POST", "/transactions"),
    ("GET", "/transactions/{id}"),
    ("GET", "/inventory/{sku}"),
    ("POST", "/inventory/{sku}/receipts"),
    ("POST", "/inventory/{sku}/write-offs"),
    ("POST", "/inventory/{sku}/reservations"),
    ("DELETE", "/inventory/{sku}/reservations/{order_id}"),
    (
        "POST",
        "/inventory/{sku}/reservations/{order_id}/fulfilment",
    ),
    ("POST", "/inventory/{sku}/transfers"),
    ("POST", "/replication/events"),
    ("OPTIONS", "/replication/events"),
    ("GET", "/replication/status"),
    ("POST", "/replication/resync"),
];

/// The API of one cell over `service`, with replication off (every
/// `/replication/*` request is 404).
pub fn router<S, C, I>(service: Arc<Service<S, C, I>>) -> Router
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    router_with_replication(service, None)
}

/// The API of one cell over `service`; with `replication`, the
/// [`replication`] routes too. No route asks for a bearer token (see
/// [`router_with`]).
pub fn router_with_replication<S, C, I>(
    service: Arc<Service<S, C, I>>,
    replication: Option<Replication>,
) -> Router
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    router_with(service, replication, None)
}

/// The scope each protected route needs; `/health` and `/replication/*`
/// need none (the failover probe has no token; replication has its key).
pub const SCOPES: &[(&str, &str, &str)] = &[
    ("POST", "/transactions", "transactions.write"),
    ("GET", "/transactions/{id}", "transactions.read"),
    ("GET", "/inventory/{sku}", "inventory.read"),
    ("POST", "/inventory/{sku}/receipts", "inventory.admin"),
    ("POST", "/inventory/{sku}/write-offs", "inventory.admin"),
    ("POST", "/inventory/{sku}/reservations", "inventory.write"),
    (
        "DELETE",
        "/inventory/{sku}/reservations/{order_id}",
        "inventory.write",
    ),
    (
        "POST",
        "/inventory/{sku}/reservations/{order_id}/fulfilment",
        "inventory.write",
    ),
    ("POST", "/inventory/{sku}/transfers", "inventory.admin"),
];

fn scope_of(method: &str, path: &str) -> &'static str {
    SCOPES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map_or("", |(_, _, scope)| scope)
}

/// The API of one cell over `service`; with `replication`, the
/// [`replication`] routes too; with `auth`, every route of [`SCOPES`] asks
/// for a bearer token granting its scope ([`auth`]).
pub fn router_with<S, C, I>(
    service: Arc<Service<S, C, I>>,
    replication: Option<Replication>,
    auth: Option<Arc<auth::Authenticator>>,
) -> Router
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    // A cell id is `[a-z0-9-]`, always a valid header value.
    let cell = HeaderValue::from_str(service.topology().this().as_str())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let guarded = |method: &'static str,
                   path: &'static str,
                   route: axum::routing::MethodRouter<Arc<Service<S, C, I>>>| {
        match &auth {
            Some(auth) => route.route_layer(middleware::from_fn_with_state(
                (Arc::clone(auth), scope_of(method, path)),
                auth::guard::require,
            )),
            None => route,
        }
    };
    let routes = Router::new()
        .route("/health", get(routes::health::<S, C, I>))
        .route(
            "/transactions",
            guarded(
                "POST",
                "/transactions",
                post(routes::create_transaction::<S, C, I>),
            ),
        )
        .route(
            "/transactions/{id}",
            guarded(
                "GET",
                "/transactions/{id}",
                get(routes::get_transaction::<S, C, I>),
            ),
        )
        .route(
            "/inventory/{sku}",
            guarded(
                "GET",
                "/inventory/{sku}",
                get(routes::get_inventory::<S, C, I>),
            ),
        )
        .route(
            "/inventory/{sku}/receipts",
            guarded(
                "POST",
                "/inventory/{sku}/receipts",
                post(routes::receive::<S, C, I>),
            ),
        )
        .route(
            "/inventory/{sku}/write-offs",
            guarded(
                "POST",
                "/inventory/{sku}/write-offs",
                post(routes::write_off::<S, C, I>),
            ),
        )
        .route(
            "/inventory/{sku}/reservations",
            guarded(
                "POST",
                "/inventory/{sku}/reservations",
                post(routes::reserve::<S, C, I>),
            ),
        )
        .route(
            "/inventory/{sku}/reservations/{order_id}",
            guarded(
                "DELETE",
                "/inventory/{sku}/reservations/{order_id}",
                delete(routes::release::<S, C, I>),
            ),
        )
        .route(
            "/inventory/{sku}/reservations/{order_id}/fulfilment",
            guarded(
                "POST",
                "/inventory/{sku}/reservations/{order_id}/fulfilment",
                post(routes::fulfil::<S, C, I>),
            ),
        )
        .route(
            "/inventory/{sku}/transfers",
            guarded(
                "POST",
                "/inventory/{sku}/transfers",
                post(routes::transfer::<S, C, I>),
            ),
        )
        .with_state(service.clone());
    let routes = match replication {
        Some(replication) => routes.merge(replication::routes(service, replication)),
        None => routes,
    };
    // After the merge, so the replication routes answer 405 alike.
    let routes = routes
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);
    // Routing happens on the normalized path: the outer router hands every
    // request, normalized, to the routes.
    let normalize: fn(Request) -> Request = normalize::normalize;
    Router::new()
        .fallback_service(
            tower::ServiceBuilder::new()
                .map_request(normalize)
                .service(routes),
        )
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(cell, stamp))
}

fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    Problem::internal(format!("handler panicked: {what}")).into_response()
}

/// A new request id: a UUID in version 7 layout (time-ordered) made of the
/// current millisecond, a random value drawn once per process and a counter,
/// so it is unique without asking the kernel for randomness per request.
fn new_request_id() -> HeaderValue {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let random = uuid::Uuid::now_v7().as_u128();
        u64::try_from(random & u128::from(u64::MAX)).unwrap_or_default()
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    let high = (millis << 16) | 0x7000 | (count >> 52 & 0x0fff);
    let low = (0x8000_0000_0000_0000 | (seed ^ count)) & 0xbfff_ffff_ffff_ffff;
    let id = uuid::Uuid::from_u64_pair(high, low);
    HeaderValue::from_str(&id.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Whether a caller's `x-request-id` is kept: 1–128 visible ASCII characters.
fn valid_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Outermost layer: request id and cell on every response, and the log line
/// of every 5xx with its cause and the request id.
async fn stamp(State(cell): State<HeaderValue>, request: Request, next: Next) -> Response {
    let request_id = headers::last_item(request.headers(), REQUEST_ID_HEADER)
        .and_then(Result::ok)
        .and_then(|v| HeaderValue::from_str(v).ok())
        .filter(valid_request_id)
        .unwrap_or_else(new_request_id);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The request's span: every line logged while serving it carries the
    // request id, and the caller once a token names one (auth::guard).
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or_default(),
        %method,
        path,
        caller.sub = tracing::field::Empty,
        caller.oid = tracing::field::Empty,
        caller.tid = tracing::field::Empty,
        caller.client_id = tracing::field::Empty,
    );
    let mut response = tracing::Instrument::instrument(next.run(request), span).await;
    if let Some(problem::InternalCause(cause)) = response.extensions_mut().remove() {
        tracing::error!(
            request_id = request_id.to_str().unwrap_or_default(),
            %method,
            path,
            status = response.status().as_u16(),
            cause,
            "request failed"
        );
    }
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER, request_id);
    headers.insert(CELL_HEADER, cell);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_a_generic_problem_json_500_whose_cause_is_only_logged() {
        use http_body_util::BodyExt;
        let response = panic_response(Box::new("secret detail"));
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            "application/problem+json"
        );
        let cause = response.extensions().get::<problem::InternalCause>();
        assert_eq!(
            cause.map(|c| c.0.as_str()),
            Some("handler panicked: secret detail")
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("urn:twincell:problem:internal-error"),
            "{body}"
        );
        assert!(!body.contains("secret"), "{body}");
    }

    #[test]
    fn generated_request_ids_are_unique_version_7_uuids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let id = uuid::Uuid::parse_str(a.to_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
    }
}
