//! The `replicate-outbound` function: the Functions host reads the events
//! container's change feed (`cosmosDBTrigger`, see
//! `functions/replicate-outbound/function.json`) and invokes the handler
//! with each batch as a non-HTTP custom-handler invocation:
//! `POST /replicate-outbound` with `{"Data": {"documents": …}, "Metadata":
//! …}`, answered with `{"Outputs", "Logs", "ReturnValue"}`. The handler
//! publishes the cell's own events among them to the replication target,
//! in order; a non-200 answer fails the invocation and the host's retry
//! policy delivers the batch again (the lease does not move).
//!
//! Nothing in an invocation is trusted: the catch-all HTTP function
//! forwards any path, this one included, to the handler, so anyone could
//! send one. Each document only names an event; the event published is
//! the one read back from the container, and a document naming an event
//! the container does not hold is not published. At worst a forged
//! invocation re-sends events the peer already has, which changes nothing
//! there. A request that is not an invocation at all gets the 404 any
//! unknown path gets.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use twincell_core::{Clock, EventStore, IdGenerator, RecordedEvent, Service};
use twincell_replication::Publish;

/// The function's name, which is the path the host invokes.
pub(crate) const FUNCTION: &str = "replicate-outbound";
/// The binding's name in `function.json`.
pub(crate) const BINDING: &str = "documents";
/// The largest invocation accepted: the trigger's `maxItemsPerInvocation`
/// (100) documents of at most 64 KiB of event each, with room to spare.
pub(crate) const INVOCATION_BODY_LIMIT: usize = 8 * 1024 * 1024;

#[derive(Deserialize)]
struct Invocation {
    #[serde(rename = "Data")]
    data: serde_json::Map<String, Value>,
}

/// The fields of an event document this function reads.
#[derive(Deserialize)]
struct Document {
    origin: String,
    event: Value,
}

struct Shared<S, C, I> {
    service: Arc<Service<S, C, I>>,
    publisher: Arc<dyn Publish>,
}

/// The route the host invokes.
pub(crate) fn routes<S, C, I>(service: Arc<Service<S, C, I>>, publisher: Arc<dyn Publish>) -> Router
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    Router::new()
        .route(&format!("/{FUNCTION}"), post(invoke::<S, C, I>))
        .layer(DefaultBodyLimit::max(INVOCATION_BODY_LIMIT))
        .with_state(Arc::new(Shared { service, publisher }))
}

fn answer(status: StatusCode, logs: Vec<String>) -> Response {
    let body = json!({"Outputs": {}, "Logs": logs, "ReturnValue": null});
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// The documents of an invocation: the binding's value is the array, or a
/// JSON string holding it (the host sends either, by version).
fn documents(body: &[u8]) -> Option<Vec<Value>> {
    let invocation: Invocation = serde_json::from_slice(body).ok()?;
    match invocation.data.get(BINDING)? {
        Value::Array(items) => Some(items.clone()),
        Value::String(text) => serde_json::from_str(text).ok(),
        _ => None,
    }
}

async fn invoke<S, C, I>(State(shared): State<Arc<Shared<S, C, I>>>, body: Bytes) -> Response
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    let Some(docs) = documents(&body) else {
        // Not an invocation: answered as any unknown path is.
        return twincell_http::Problem::new(
            twincell_http::ProblemKind::NotFound,
            "no such resource",
        )
        .into_response();
    };
    let this = shared.service.topology().this().clone();
    let mut events: Vec<RecordedEvent> = Vec::new();
    let mut logs = Vec::new();
    let (mut others, mut snapshots, mut refused) = (0usize, 0usize, 0usize);
    for doc in &docs {
        if doc.get("kind").and_then(Value::as_str) == Some(twincell_cosmos::SNAPSHOT_KIND) {
            // A snapshot is local, derived data: never replicated.
            snapshots += 1;
            continue;
        }
        let named = serde_json::from_value::<Document>(doc.clone())
            .ok()
            .filter(|d| d.origin == this.as_str())
            .map(|d| serde_json::from_value::<RecordedEvent>(d.event));
        let claimed = match named {
            None if doc.get("origin").and_then(Value::as_str) != Some(this.as_str()) => {
                others += 1;
                continue;
            }
            Some(Ok(event)) => event,
            None | Some(Err(_)) => {
                refused += 1;
                tracing::error!(
                    document = doc
                        .get("id")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default(),
                    "a change-feed document of this cell is not an event; not published"
                );
                continue;
            }
        };
        match shared
            .service
            .store()
            .read(claimed.stream(), claimed.version())
            .await
        {
            Ok(Some(stored)) => events.push(stored),
            Ok(None) => {
                refused += 1;
                tracing::error!(stream = %claimed.stream(), version = claimed.version(), "an invocation named an event the container does not hold; not published");
            }
            Err(e) => {
                let line = format!(
                    "reading back {} v{}: {e}",
                    claimed.stream(),
                    claimed.version()
                );
                tracing::warn!(error = %line, "invocation failed; the host retries it");
                return answer(StatusCode::INTERNAL_SERVER_ERROR, vec![line]);
            }
        }
    }
    let result = shared.publisher.publish(&events).await;
    twincell_replication::metrics::record_publish(&events, &result);
    match result {
        Ok(published) => {
            let line = format!(
                "published {published} of {} documents ({others} replicated from other cells, {snapshots} snapshots, {refused} refused)",
                docs.len()
            );
            tracing::info!(
                published,
                others,
                snapshots,
                refused,
                "change-feed batch published"
            );
            logs.push(line);
            answer(StatusCode::OK, logs)
        }
        Err(e) => {
            tracing::warn!(error = %e, "publishing failed; the host retries the batch");
            answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                vec![format!("publishing failed: {e}")],
            )
        }
    }
}
