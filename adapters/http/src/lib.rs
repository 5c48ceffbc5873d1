//! # twincell-http
//!
//! The one axum [`Router`] both cells serve — the AWS cell through
//! `lambda_http`, the Azure cell through `axum::serve` — so that the same
//! request gets the same status and the same body bytes in either cloud.
//!
//! Every failure is `application/problem+json` ([`problem`]); bodies follow
//! one set of rules ([`body`]); every response carries `x-request-id` (the
//! caller's when valid, else a new UUIDv7), `x-twincell-cell` and
//! `traceparent` (the request's span in the caller's trace, [`trace`]). A panic is
//! a bug, never a design: the catch-panic layer is a backstop that answers a
//! problem+json 500.

pub mod auth;
pub mod body;
mod clock;
pub mod config;
pub mod emf;
pub mod extract;
pub mod headers;
pub mod logging;
pub mod normalize;
pub mod problem;
pub mod replication;
mod routes;
pub mod trace;
pub mod tuning;

use std::any::Any;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use tower_http::catch_panic::CatchPanicLayer;
use twincell_core::CellApi;

pub use body::BODY_LIMIT;
pub use clock::TokioClock;
pub use config::{CellConfig, CellDefaults, StoreChoice, StoreKind};
pub use emf::init_metrics;
pub use logging::{FunctionRequestId, LogTo, init_logs};
pub use problem::{Problem, ProblemKind};
pub use replication::Replication;
pub use routes::{Access, IDEMPOTENT_REPLAYED, ROUTES, Route, scopes};
pub use tuning::Tuning;

/// The response header naming the cell that answered.
pub const CELL_HEADER: &str = "x-twincell-cell";
/// The request and response header correlating logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The API of one cell over `api` (a [`twincell_core::Service`], or any
/// implementation of the inbound port), with replication off (every
/// `/replication/*` request is 404).
pub fn router<A: CellApi + 'static>(api: Arc<A>) -> Router {
    router_with_replication(api, None)
}

/// The API of one cell over `api`; with `replication`, the
/// [`replication`] routes too. No route asks for a bearer token (see
/// [`router_with`]).
pub fn router_with_replication<A: CellApi + 'static>(
    api: Arc<A>,
    replication: Option<Replication>,
) -> Router {
    router_with(api, replication, None)
}

/// The API of one cell over `api`, built from [`ROUTES`]; with
/// `replication`, the [`replication`] routes too; with `auth`, every
/// route of a [`Access::Scope`] asks for a bearer token granting its
/// scope ([`auth`]).
pub fn router_with<A: CellApi + 'static>(
    api: Arc<A>,
    replication: Option<Replication>,
    auth: Option<Arc<auth::Authenticator>>,
) -> Router {
    let api: routes::Api = api;
    // A cell id is `[a-z0-9-]`, always a valid header value.
    let cell = HeaderValue::from_str(api.topology().this().as_str())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    if replication
        .as_ref()
        .is_some_and(|r| r.origin_keys.is_empty())
    {
        tracing::warn!(
            "TWINCELL_ORIGIN_KEYS=none: replicated events are applied without checking that their origin signed them"
        );
    }
    let shared = replication.map(|r| replication::Shared::new(Arc::clone(&api), r));
    let mut served = Router::new();
    let mut replicated = Router::new();
    for route in ROUTES {
        match (route.handler, &shared) {
            (routes::Handler::Api(handler), _) => {
                let handler = match (route.access, &auth) {
                    (Access::Scope(scope), Some(auth)) => {
                        handler().route_layer(middleware::from_fn_with_state(
                            (Arc::clone(auth), scope),
                            auth::guard::require,
                        ))
                    }
                    _ => handler(),
                };
                served = served.route(route.path, handler);
            }
            (routes::Handler::Replication(handler), Some(shared)) => {
                replicated = replicated.route(
                    route.path,
                    replication::guard(handler(), route.access, shared),
                );
            }
            (routes::Handler::Replication(_), None) => {}
        }
    }
    let routes = served.with_state(api);
    let routes = match shared {
        Some(shared) => routes.merge(replicated.with_state(shared)),
        None => routes,
    };
    // After the merge, so the replication routes answer 405 alike; the
    // matched route's template goes on the request's span (logging.rs).
    let routes = routes
        .route_layer(middleware::from_fn(record_route))
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
/// current millisecond and the bits [`trace`] draws its ids from (a random
/// value drawn once per process, mixed with a counter), so it is unique
/// without asking the kernel for randomness per request.
fn new_request_id() -> HeaderValue {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    let bits = trace::next_random();
    let high = (millis << 16) | 0x7000 | (bits >> 52 & 0x0fff);
    let low = (0x8000_0000_0000_0000 | bits) & 0xbfff_ffff_ffff_ffff;
    let id = uuid::Uuid::from_u64_pair(high, low);
    HeaderValue::from_str(&id.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Whether a caller's `x-request-id` is kept: 1–128 visible ASCII characters.
fn valid_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// Puts the template of the route that matched (`/inventory/{sku}`, never
/// the raw path) on the request's span.
async fn record_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    if let Some(route) = &route {
        tracing::Span::current().record("route", route.as_str());
    }
    let mut response = next.run(request).await;
    if let Some(route) = route.filter(|_| emf::enabled()) {
        response.extensions_mut().insert(route);
    }
    response
}

/// Outermost layer: request id, cell and trace on every response, the
/// request's span, one `request served` line per request, and the line of
/// every 5xx with its cause.
async fn stamp(State(cell): State<HeaderValue>, request: Request, next: Next) -> Response {
    let request_id = headers::last_item(request.headers(), REQUEST_ID_HEADER)
        .and_then(Result::ok)
        .and_then(|v| HeaderValue::from_str(v).ok())
        .filter(valid_request_id)
        .unwrap_or_else(new_request_id);
    let method = request.method().clone();
    let trace = trace::TraceContext::of(request.headers());
    let started = std::time::Instant::now();
    let function_request_id = request
        .extensions()
        .get::<logging::FunctionRequestId>()
        .map(|id| id.0.clone());
    // The request's span: every line logged while serving it carries these
    // fields (logging.rs), the route once one matches, the caller once a
    // token names one (auth::guard), and the status and time at the end.
    let cold_start = logging::cold_start();
    let span = tracing::info_span!(
        parent: logging::process_span(),
        "request",
        cell = cell.to_str().unwrap_or_default(),
        function_request_id,
        cold_start,
        request_id = request_id.to_str().unwrap_or_default(),
        trace_id = trace.trace_id_hex(),
        span_id = trace.span_id_hex(),
        xray_trace_id = trace.xray_trace_id.map(|x| x.to_string()),
        %method,
        route = tracing::field::Empty,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
        caller.sub = tracing::field::Empty,
        caller.oid = tracing::field::Empty,
        caller.tid = tracing::field::Empty,
        caller.client_id = tracing::field::Empty,
    );
    let mut request = request;
    request.extensions_mut().insert(trace);
    let mut response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let status = response.status().as_u16();
    let latency = started.elapsed();
    let cause = response.extensions_mut().remove::<problem::InternalCause>();
    // Only what a line will carry is recorded: recording costs (the
    // request line is at debug, see docs/observability.md).
    if cause.is_some() || tracing::enabled!(tracing::Level::DEBUG) {
        span.record("status", status);
        span.record(
            "latency_ms",
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        );
        span.in_scope(|| {
            if let Some(problem::InternalCause(cause)) = cause {
                tracing::error!(cause, "request failed");
            }
            tracing::debug!("request served");
        });
    }
    let route = response
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", axum::extract::MatchedPath::as_str);
    emf::record_request(route, status, latency, cold_start);
    emf::flush_due();
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER, request_id);
    headers.insert(CELL_HEADER, cell);
    if let Ok(value) = HeaderValue::from_str(&trace.traceparent()) {
        headers.insert(trace::TRACEPARENT_HEADER, value);
    }
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
    fn each_route_is_declared_once_and_its_access_fits_its_handler() {
        let mut seen = std::collections::BTreeSet::new();
        for route in ROUTES {
            assert!(
                seen.insert((route.method, route.path)),
                "{} {} is declared twice",
                route.method,
                route.path
            );
            if matches!(route.access, Access::ReplicationKey | Access::Delivery) {
                assert!(route.needs_replication(), "{} {}", route.method, route.path);
            }
            if route.scope().is_some() {
                assert!(
                    !route.needs_replication(),
                    "{} {}",
                    route.method,
                    route.path
                );
            }
        }
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
