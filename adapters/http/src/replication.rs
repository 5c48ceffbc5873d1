//! The replication routes, the same in both cells. On only when the cell
//! has a replication key (`TWINCELL_REPLICATION_KEY`); otherwise every
//! `/replication/*` request is 404, as for any unknown path, and nothing
//! is ever accepted without the key.
//!
//! - `POST /replication/events`: a CloudEvents batch (or one structured
//!   event) from a deliverer — an Event Grid subscription or the peer's
//!   publisher. Each event is applied with the core's replicated apply
//!   (idempotent; a diverged replay never overwrites). The status tells
//!   the deliverer what to retry: 200 when every event is stored (new or
//!   already present); 503 + `Retry-After` when the store is unavailable;
//!   500 for a bug; 422 for an event type this version does not know yet;
//!   409 naming diverged replays and events of this cell's own origin; 400
//!   for what is not a twincell CloudEvent; 413 over 1 MiB or 5 000 events;
//!   401 without the key (or with an Entra token that is not valid, where
//!   the cell accepts Event Grid's Entra delivery; 403 when the token
//!   lacks the app role). Event Grid retries everything but 400, 401, 403
//!   and 413, so those are answered only for what no retry can fix. Every
//!   decodable event is applied before the answer, whatever the others.
//! - `OPTIONS /replication/events`: Event Grid's CloudEvents webhook
//!   handshake: `WebHook-Request-Origin` in, `WebHook-Allowed-Origin` out.
//!   No key (the handshake carries none); it changes nothing.
//! - `GET /replication/status`: per peer, the events received, the last
//!   receipt, and the streams waiting on a missing version (as this
//!   process saw them, re-checked against the store).
//! - `POST /replication/resync`: re-sends this cell's own events through
//!   its publish path, a bounded slice per call ([`RESYNC_MAX_EVENTS`],
//!   [`RESYNC_TIME_BUDGET`]), resumable by cursor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use twincell_core::{
    CellId, Clock, EventStore, IdGenerator, ListCursor, Listing, RecordedEvent, ReplicatedApply,
    Service, ServiceError, StreamProgress, Timestamp,
};
use twincell_replication::wire::{self, BodyError, Refusal};
use twincell_replication::{Publish, ReceiveLog, Secret};

use crate::problem::{EventRef, Problem, ProblemKind};

/// The largest delivery accepted: Event Grid sends at most 1 MB per
/// request (its batches are at most 1 024 KB).
pub const REPLICATION_BODY_LIMIT: usize = 1024 * 1024;
/// The `WWW-Authenticate` challenge of a 401: the key goes in
/// `x-twincell-replication-key`.
pub const KEY_CHALLENGE: &str = "TwincellReplicationKey header=\"x-twincell-replication-key\"";
/// Events one resync call re-sends at most (the caller's `max_events`
/// may ask for fewer).
pub const RESYNC_MAX_EVENTS: usize = 10_000;
/// How long one resync call keeps listing and publishing before it
/// answers with its cursor: well inside API Gateway's 29 s.
pub const RESYNC_TIME_BUDGET: Duration = Duration::from_secs(10);
/// Events per listing page of a resync.
const RESYNC_PAGE: usize = 500;
/// Gaps re-checked against the store per peer on one status read.
const GAPS_CHECKED: usize = 100;

/// A cell's replication: its key, and where it publishes (for resync).
#[derive(Clone)]
pub struct Replication {
    /// The key deliverers must send.
    pub key: Secret,
    /// This cell's publisher; without one, resync answers 404.
    pub publisher: Option<Arc<dyn Publish>>,
    /// Event Grid's Entra tokens, accepted on `/replication/events` instead
    /// of the key when configured.
    pub delivery_tokens: Option<crate::auth::DeliveryTokens>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("key", &self.key)
            .field("publisher", &self.publisher.is_some())
            .field("delivery_tokens", &self.delivery_tokens.is_some())
            .finish()
    }
}

struct Shared<S, C, I> {
    service: Arc<Service<S, C, I>>,
    replication: Replication,
    log: ReceiveLog,
}

type St<S, C, I> = State<Arc<Shared<S, C, I>>>;

/// The replication routes over `service`.
pub(crate) fn routes<S, C, I>(service: Arc<Service<S, C, I>>, replication: Replication) -> Router
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    let shared = Arc::new(Shared {
        service,
        replication,
        log: ReceiveLog::new(),
    });
    Router::new()
        .route(
            "/replication/events",
            post(receive::<S, C, I>).options(handshake),
        )
        .route("/replication/status", get(status::<S, C, I>))
        .route("/replication/resync", post(resync::<S, C, I>))
        .with_state(shared)
}

fn unauthorized() -> Problem {
    Problem::new(
        ProblemKind::Unauthorized,
        "send the replication key in x-twincell-replication-key",
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(KEY_CHALLENGE),
    )
}

/// The key header, read as every single-valued header is (its last item,
/// see [`crate::headers`]: API Gateway REST and ALB keep only the last of
/// repeated headers and HTTP API joins them with commas, so this is the one
/// reading every front door gives alike; a key holds no comma).
fn authenticate(headers: &HeaderMap, key: &Secret) -> Result<(), Problem> {
    match crate::headers::last_item(headers, twincell_replication::KEY_HEADER) {
        Some(Ok(given)) if key.matches(given.as_bytes()) => Ok(()),
        _ => Err(unauthorized()),
    }
}

/// A delivery's credentials: the key when it sends the key header; else,
/// when the cell accepts Event Grid's Entra tokens, a bearer token for the
/// webhook's application holding the role (401 `invalid_token` for a bad
/// one, 403 without the role, 503 with no signing key: all as on the API);
/// else the key's 401.
async fn authenticate_delivery(
    headers: &HeaderMap,
    query: Option<&str>,
    replication: &Replication,
) -> Result<(), Problem> {
    let sends_key = headers.contains_key(twincell_replication::KEY_HEADER);
    let tokens = replication
        .delivery_tokens
        .as_ref()
        .filter(|_| !sends_key && headers.contains_key(header::AUTHORIZATION));
    let Some(tokens) = tokens else {
        return authenticate(headers, &replication.key);
    };
    match tokens.auth.authenticate(headers, query).await {
        Ok(identity) if identity.grants(&tokens.role) => {
            identity.record_on(&tracing::Span::current());
            tracing::debug!("replication delivery authenticated by an Entra token");
            Ok(())
        }
        Ok(identity) => {
            identity.record_on(&tracing::Span::current());
            tracing::warn!(
                role = tokens.role,
                "replication delivery refused: the token lacks the role"
            );
            Err(crate::auth::guard::problem(&crate::auth::Denial::Scope(
                tokens.role.clone(),
            )))
        }
        Err(denial) => {
            if let crate::auth::Denial::Invalid(reason) = &denial {
                tracing::warn!(
                    reason,
                    "replication delivery refused: the bearer token is not valid"
                );
            }
            Err(crate::auth::guard::problem(&denial))
        }
    }
}

/// Whether a `Content-Type` names a CloudEvents batch, a structured event,
/// or plain JSON, in UTF-8.
fn is_cloudevents_media_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let known = [
        "application/cloudevents-batch+json",
        "application/cloudevents+json",
        "application/json",
    ]
    .iter()
    .any(|m| essence.eq_ignore_ascii_case(m));
    known
        && parts.all(|param| match param.split_once('=') {
            Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
                let v = value.trim().trim_matches('"');
                v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
            }
            Some(_) => true,
            None => param.trim().is_empty(),
        })
}

async fn read_body(
    request: Request,
    content_types: &str,
    limit: usize,
) -> Result<serde_json::Value, Problem> {
    let ok = match crate::headers::last_item(request.headers(), header::CONTENT_TYPE) {
        Some(Ok(v)) => is_cloudevents_media_type(v),
        _ => false,
    };
    if !ok {
        return Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            format!("Content-Type must be {content_types} (UTF-8)"),
        ));
    }
    crate::body::check_content_length(request.headers(), limit)?;
    let bytes = crate::body::read_limited(request.into_body(), limit).await?;
    crate::body::parse(&bytes)
}

fn event_ref(id: Option<&str>, reason: impl Into<String>) -> EventRef {
    EventRef {
        id: id.unwrap_or_default().to_owned(),
        reason: reason.into(),
    }
}

#[derive(Serialize)]
struct Received {
    received: usize,
    stored: usize,
    already_present: usize,
}

/// `POST /replication/events`.
async fn receive<S, C, I>(State(shared): St<S, C, I>, request: Request) -> Result<Response, Problem>
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    authenticate_delivery(
        request.headers(),
        request.uri().query(),
        &shared.replication,
    )
    .await?;
    let body = read_body(
        request,
        "application/cloudevents-batch+json or application/cloudevents+json",
        REPLICATION_BODY_LIMIT,
    )
    .await?;
    let incoming = wire::decode_body(body).map_err(|e| match e {
        BodyError::TooMany(_) => Problem::new(ProblemKind::PayloadTooLarge, e.to_string()),
        BodyError::Empty | BodyError::NotCloudEvents => {
            Problem::new(ProblemKind::MalformedBody, e.to_string())
        }
    })?;
    let received = incoming.len();
    let mut malformed = Vec::new();
    let mut unknown = Vec::new();
    let mut events: Vec<RecordedEvent> = Vec::with_capacity(received);
    let mut ids: Vec<Option<String>> = Vec::with_capacity(received);
    for item in incoming {
        match item.event {
            Ok(event) => {
                if let Some(trace) = &item.traceparent {
                    tracing::debug!(event = %event.event_id(), traceparent = %trace, "replicated event");
                }
                events.push(event);
                ids.push(item.id);
            }
            Err(Refusal::Malformed(why)) => malformed.push(event_ref(item.id.as_deref(), why)),
            Err(Refusal::UnknownType(ty)) => {
                unknown.push(event_ref(
                    item.id.as_deref(),
                    format!("unknown event type {ty}"),
                ));
            }
        }
    }
    let report = shared.service.apply_replicated_batch(&events).await;
    let now = shared.service.now();
    let mut by_peer: BTreeMap<&CellId, u64> = BTreeMap::new();
    let (mut stored, mut present) = (0usize, 0usize);
    let mut conflicts = Vec::new();
    let mut unavailable: Option<String> = None;
    let mut internal: Option<String> = None;
    for ((event, id), outcome) in events.iter().zip(&ids).zip(&report.outcomes) {
        match outcome {
            Ok(applied) => {
                *by_peer.entry(event.origin()).or_default() += 1;
                match applied {
                    ReplicatedApply::Stored => stored += 1,
                    ReplicatedApply::AlreadyPresent => present += 1,
                }
            }
            Err(ServiceError::ReplicaDiverged { stream, version }) => {
                tracing::error!(event = id.as_deref().unwrap_or_default(), %stream, version, "a replicated event differs from the stored one; it is not applied");
                conflicts.push(event_ref(
                    id.as_deref(),
                    "diverged: a different event is stored at this stream and version",
                ));
            }
            Err(ServiceError::OwnEventReplicated(stream)) => {
                tracing::error!(event = id.as_deref().unwrap_or_default(), %stream, "an event of this cell's own origin arrived as replicated; it is not stored");
                conflicts.push(event_ref(
                    id.as_deref(),
                    "own-origin: this cell never receives its own events",
                ));
            }
            Err(ServiceError::Unavailable(reason)) => {
                unavailable.get_or_insert_with(|| reason.clone());
            }
            Err(other) => {
                internal.get_or_insert_with(|| other.to_string());
            }
        }
    }
    for (peer, count) in by_peer {
        shared.log.received(peer, count, now);
    }
    for progress in &report.streams {
        shared.log.progress(progress);
    }
    match &report.follow_up {
        Ok(()) => {}
        Err(ServiceError::Unavailable(reason)) => {
            unavailable.get_or_insert_with(|| reason.clone());
        }
        Err(ServiceError::Contention) => {
            unavailable.get_or_insert_with(|| "contention while reconciling".to_owned());
        }
        Err(other) => {
            internal.get_or_insert_with(|| other.to_string());
        }
    }
    if let Some(reason) = unavailable {
        return Err(Problem::unavailable(format!("replicated apply: {reason}")));
    }
    if let Some(cause) = internal {
        return Err(Problem::internal(format!("replicated apply: {cause}")));
    }
    if !unknown.is_empty() {
        tracing::warn!(
            events = unknown.len(),
            "a delivery held event types this version does not know"
        );
        return Err(Problem::new(
            ProblemKind::UnsupportedEventType,
            format!(
                "{} of {received} events have a type this cell does not know yet; the others were applied",
                unknown.len()
            ),
        )
        .with_events(unknown));
    }
    if !conflicts.is_empty() {
        return Err(Problem::new(
            ProblemKind::ReplicationConflict,
            format!(
                "{} of {received} events were refused and never applied; the others were applied",
                conflicts.len()
            ),
        )
        .with_events(conflicts));
    }
    if !malformed.is_empty() {
        tracing::warn!(events = malformed.len(), "a delivery held malformed events");
        return Err(Problem::new(
            ProblemKind::MalformedBody,
            format!(
                "{} of {received} events are not twincell CloudEvents; the others were applied",
                malformed.len()
            ),
        )
        .with_events(malformed));
    }
    Ok(json(
        StatusCode::OK,
        &Received {
            received,
            stored,
            already_present: present,
        },
    ))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => Problem::internal(format!("serializing a response: {e}")).into_response(),
    }
}

const REQUEST_ORIGIN: &str = "webhook-request-origin";
const ALLOWED_ORIGIN: HeaderName = HeaderName::from_static("webhook-allowed-origin");

/// `OPTIONS /replication/events`: the CloudEvents webhook validation.
async fn handshake(headers: HeaderMap) -> Result<Response, Problem> {
    let origin = match crate::headers::last_item(&headers, REQUEST_ORIGIN) {
        Some(Ok(origin))
            if (1..=255).contains(&origin.len())
                && origin.bytes().all(|b| (b' '..=b'~').contains(&b)) =>
        {
            origin
        }
        _ => {
            return Err(Problem::new(
                ProblemKind::InvalidHeader,
                "WebHook-Request-Origin must name the sender (1 to 255 visible ASCII characters)",
            ));
        }
    };
    let value = HeaderValue::from_str(origin).map_err(|_| {
        Problem::new(
            ProblemKind::InvalidHeader,
            "WebHook-Request-Origin is not a valid value",
        )
    })?;
    let mut response = StatusCode::OK.into_response();
    response.headers_mut().insert(ALLOWED_ORIGIN, value);
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST,OPTIONS"));
    Ok(response)
}

#[derive(Serialize)]
struct PeerView {
    cell: CellId,
    events_received: u64,
    last_received_at: Option<Timestamp>,
    streams_with_gaps: Vec<StreamProgress>,
    streams_with_gaps_not_listed: u64,
}

#[derive(Serialize)]
struct StatusView {
    cell: CellId,
    scope: &'static str,
    peers: Vec<PeerView>,
}

/// `GET /replication/status`.
async fn status<S, C, I>(
    State(shared): St<S, C, I>,
    headers: HeaderMap,
) -> Result<Response, Problem>
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    authenticate(&headers, &shared.replication.key)?;
    let topology = shared.service.topology();
    let mut seen = shared.log.snapshot();
    // Re-check the remembered gaps: another process may have closed them.
    for status in seen.values() {
        for stream in status.gaps.keys().take(GAPS_CHECKED) {
            let events = shared
                .service
                .store()
                .load(&stream.aggregate)
                .await
                .map_err(|e| Problem::from(ServiceError::from(e)))?;
            shared.log.progress(&StreamProgress::of(stream, &events));
        }
    }
    if seen.values().any(|s| !s.gaps.is_empty()) {
        seen = shared.log.snapshot();
    }
    let mut cells: Vec<CellId> = topology
        .cells()
        .filter(|c| *c != topology.this())
        .cloned()
        .collect();
    cells.extend(
        seen.keys()
            .filter(|c| !cells.contains(c))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let peers = cells
        .into_iter()
        .map(|cell| {
            let status = seen.remove(&cell).unwrap_or_default();
            let listed = status.gaps.len().min(GAPS_CHECKED);
            let not_listed = u64::try_from(status.gaps.len() - listed)
                .unwrap_or(u64::MAX)
                .saturating_add(status.gaps_not_named);
            PeerView {
                cell,
                events_received: status.events_received,
                last_received_at: status.last_received_at,
                streams_with_gaps: status.gaps.into_values().take(listed).collect(),
                streams_with_gaps_not_listed: not_listed,
            }
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &StatusView {
            cell: topology.this().clone(),
            scope: "this process, since it started",
            peers,
        },
    ))
}

/// What a resync call asks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResyncRequest {
    /// Only events recorded at or after this instant (RFC 3339).
    since: Option<String>,
    /// Where the previous call stopped.
    cursor: Option<String>,
    /// The most events this call re-sends (default and cap
    /// [`RESYNC_MAX_EVENTS`]).
    max_events: Option<usize>,
}

#[derive(Serialize)]
struct ResyncAnswer {
    published: usize,
    /// Where the next call resumes; `null` when every event was re-sent.
    next: Option<String>,
}

/// `POST /replication/resync`: re-sends this cell's own events (all of
/// them, or those recorded since an instant) through its publish path, in
/// listing pages, until [`RESYNC_MAX_EVENTS`] or [`RESYNC_TIME_BUDGET`];
/// answers with a cursor to call again with. Re-sending is harmless: the
/// receiver applies what it already holds as a no-op. A publish failure
/// answers 502 with the cursor the failed page started at (`next`), so a
/// retry skips nothing.
async fn resync<S, C, I>(State(shared): St<S, C, I>, request: Request) -> Result<Response, Problem>
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    authenticate(request.headers(), &shared.replication.key)?;
    let Some(publisher) = shared.replication.publisher.clone() else {
        return Err(Problem::new(
            ProblemKind::NotFound,
            "this cell publishes no events: TWINCELL_REPLICATION_TARGET is not set",
        ));
    };
    let body = read_body(request, "application/json", crate::BODY_LIMIT).await?;
    let ask: ResyncRequest = serde_json::from_value(body)
        .map_err(|e| Problem::new(ProblemKind::MalformedBody, format!("a resync request: {e}")))?;
    let since = ask
        .since
        .as_deref()
        .map(Timestamp::parse)
        .transpose()
        .map_err(|_| {
            Problem::new(
                ProblemKind::MalformedBody,
                "since must be an RFC 3339 UTC time with milliseconds, e.g. 2026-11-22T04:12:25.007Z",
            )
        })?;
    let max_events = ask
        .max_events
        .unwrap_or(RESYNC_MAX_EVENTS)
        .clamp(1, RESYNC_MAX_EVENTS);
    let mut listing = Listing {
        origin: shared.service.topology().this().clone(),
        since,
        after: ask.cursor.map(ListCursor::new),
        limit: RESYNC_PAGE.min(max_events),
    };
    let started = tokio::time::Instant::now();
    let mut published = 0usize;
    loop {
        let page = shared
            .service
            .store()
            .list_origin(&listing)
            .await
            .map_err(|e| match e {
                twincell_core::StoreError::InvalidCursor(why) => Problem::new(
                    ProblemKind::MalformedBody,
                    "cursor is not one this cell gave",
                )
                .with_cause(why),
                other => Problem::from(ServiceError::from(other)),
            })?;
        if let Err(e) = publisher.publish(&page.events).await {
            tracing::warn!(error = %e, published, "resync publish failed");
            let at = listing.after.as_ref().map(ListCursor::to_string);
            return Err(Problem::new(
                ProblemKind::ReplicationTargetFailed,
                format!(
                    "publishing to the replication target failed after {published} events; call again with the cursor in next"
                ),
            )
            .with_member("published", published.into())
            .with_member("next", at.map_or(serde_json::Value::Null, Into::into))
            .with_cause(e.to_string()));
        }
        published += page.events.len();
        listing.after = page.next;
        let Some(next) = &listing.after else {
            break;
        };
        if published >= max_events || started.elapsed() >= RESYNC_TIME_BUDGET {
            return Ok(json(
                StatusCode::OK,
                &ResyncAnswer {
                    published,
                    next: Some(next.to_string()),
                },
            ));
        }
        listing.limit = RESYNC_PAGE.min(max_events - published);
    }
    Ok(json(
        StatusCode::OK,
        &ResyncAnswer {
            published,
            next: None,
        },
    ))
}
