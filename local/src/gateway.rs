//! API Gateway (HTTP API, payload v2, stage `prod`) in front of a Lambda
//! binary: every request is turned into the event API Gateway would send
//! (`twincell_contract::lambda_events`, the shapes the parity suite proves)
//! and handed to the real binary through a Lambda Runtime API emulator;
//! the function's answer goes back as the HTTP answer. Like one warm
//! Lambda instance, it runs one invocation at a time.
//!
//! Bounds as API Gateway has them: 10 MB per request, 30 s per
//! invocation (then 503, as API Gateway answers a timed-out integration).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use tokio::sync::Mutex;
use twincell_contract::case::HttpRequest;
use twincell_contract::emulator::{Emulator, Outcome};
use twincell_contract::lambda_events::{self, Shape};

/// The largest request API Gateway takes.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// How long an integration may take.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `command` as a Lambda function polling `emulator`, with the
/// variables Lambda sets; stdin closed, output inherited, killed when the
/// handle is dropped.
///
/// # Errors
/// When the process does not start.
pub fn function_process(
    mut command: tokio::process::Command,
    name: &str,
    emulator: &Emulator,
) -> std::io::Result<tokio::process::Child> {
    command
        .env("AWS_LAMBDA_RUNTIME_API", emulator.runtime_api())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
}

struct Gateway {
    function: Mutex<Emulator>,
}

/// The gateway's router over `function` (an emulator the Lambda binary
/// polls).
pub fn router(function: Emulator) -> Router {
    Router::new()
        .fallback(forward)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        // The integration's own 30 s, plus reading the request.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            INTEGRATION_TIMEOUT + Duration::from_secs(5),
        ))
        .with_state(Arc::new(Gateway {
            function: Mutex::new(function),
        }))
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        format!("{{\"message\":\"{message}\"}}"),
    )
        .into_response()
}

async fn forward(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = match http_body_util::BodyExt::collect(body).await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    // API Gateway's X-Ray header: the caller's root continued, or a new
    // one; the function sees it in the event and as its invocation's trace.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let xray = twincell_http::trace::xray_header_for(
        parts
            .headers
            .get(twincell_http::trace::XRAY_HEADER)
            .and_then(|v| v.to_str().ok()),
        now,
    );
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != twincell_http::trace::XRAY_HEADER)
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    headers.push((twincell_http::trace::XRAY_HEADER.to_owned(), xray.clone()));
    let http_request = HttpRequest {
        method: parts.method.as_str().to_owned(),
        path,
        headers,
        body: body.to_vec(),
    };
    let event = lambda_events::event(Shape::HttpV2, &http_request);
    let outcome = gateway
        .function
        .lock()
        .await
        .invoke_traced(event, INTEGRATION_TIMEOUT, Some(xray))
        .await;
    let answer = match outcome {
        Ok(Outcome::Response(v)) => lambda_events::answer(&v),
        Ok(Outcome::Error(e)) => Err(e),
        Err(e) => Err(e),
    };
    match answer {
        Ok(a) => {
            let mut response = Response::new(Body::from(a.body));
            *response.status_mut() =
                StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
            for (k, v) in a.headers {
                if matches!(
                    k.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                ) {
                    continue;
                }
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::try_from(k.as_str()),
                    HeaderValue::from_str(&v),
                ) {
                    response.headers_mut().append(name, value);
                }
            }
            response
        }
        Err(e) => {
            tracing::warn!(error = %e, "the function failed or timed out");
            plain(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        }
    }
}
