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
//!   handshake: `WebHook-Request-Origin` in, `WebHook-Allowed-Origin` out,
//!   and `WebHook-Allowed-Rate` (the rate asked in `WebHook-Request-Rate`,
//!   else `*`).
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

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use twincell_core::{
    CellApi, CellId, ListCursor, Listing, RecordedEvent, ReplicatedApply, ServiceError,
    StreamProgress, Timestamp, Topology,
};
use twincell_replication::signing::{OriginKeys, Untrusted};
use twincell_replication::wire::{self, BodyError, Refusal};
use twincell_replication::{Publish, ReceiveLog, Secret};

use crate::Access;
use crate::emf;
use crate::problem::{EventRef, Problem, ProblemKind};
use crate::routes::json;

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
    /// The keys each peer's events must be signed with; empty: signatures
    /// are not checked (see [`twincell_replication::signing`]).
    pub origin_keys: OriginKeys,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("key", &self.key)
            .field("publisher", &self.publisher.is_some())
            .field("delivery_tokens", &self.delivery_tokens.is_some())
            .field("origin_keys", &self.origin_keys.cells().collect::<Vec<_>>())
            .finish()
    }
}

/// The replication routes' state.
pub(crate) struct Shared {
    api: Arc<dyn CellApi>,
    replication: Replication,
    log: ReceiveLog,
}

type St = State<Arc<Shared>>;

impl Shared {
    /// The state of the replication routes of `api`.
    pub(crate) fn new(api: Arc<dyn CellApi>, replication: Replication) -> Arc<Self> {
        Arc::new(Self {
            api,
            replication,
            log: ReceiveLog::new(),
        })
    }
}

/// `handler` behind the check its row's `access` names: the key, or for
/// deliveries the key or Event Grid's Entra token. The check comes before
/// anything of the request is read.
pub(crate) fn guard(
    handler: MethodRouter<Arc<Shared>>,
    access: Access,
    shared: &Arc<Shared>,
) -> MethodRouter<Arc<Shared>> {
    match access {
        Access::Open | Access::Scope(_) => handler,
        Access::ReplicationKey | Access::Delivery => handler.route_layer(
            middleware::from_fn_with_state((Arc::clone(shared), access), require),
        ),
    }
}

async fn require(
    State((shared, access)): State<(Arc<Shared>, Access)>,
    request: Request,
    next: Next,
) -> Response {
    let checked = match access {
        Access::Delivery => {
            authenticate_delivery(
                request.headers(),
                request.uri().query(),
                &shared.replication,
            )
            .await
        }
        Access::ReplicationKey | Access::Open | Access::Scope(_) => {
            authenticate(request.headers(), &shared.replication.key)
        }
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err(problem) => problem.into_response(),
    }
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

/// Why a delivered event was not applied. The order is the answer's: the
/// first kind a delivery holds decides its status ([`refused_answer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Refused {
    /// The store can't be reached (or a reconcile lost every race).
    Unavailable,
    /// A bug.
    Internal,
    /// Not signed by its origin, or of a cell that is not a peer: final,
    /// whatever else the delivery held.
    Untrusted,
    /// A type this version does not know yet.
    UnknownType,
    /// Diverged from the stored event, or of this cell's own origin.
    Conflict,
    /// Not a twincell CloudEvent.
    Malformed,
}

/// How a delivery whose first refusal is of one kind is answered: the
/// problem type (and so the status the deliverer retries on or not), what
/// the detail says of the refused events, and the line logged. Event Grid
/// retries everything but 400, 401, 403 and 413.
struct RefusedAnswer {
    refused: Refused,
    kind: ProblemKind,
    /// "{n} of {received} events {what}; the others were applied".
    what: &'static str,
    log: Option<&'static str>,
}

/// The answers that name the refused events; [`Refused::Unavailable`] is a
/// 503 and [`Refused::Internal`] a 500, whose causes are only logged.
const REFUSED_ANSWERS: [RefusedAnswer; 4] = [
    RefusedAnswer {
        refused: Refused::Untrusted,
        kind: ProblemKind::UntrustedEvent,
        what: "are not signed by their origin cell, or come from a cell that is not a peer",
        log: None,
    },
    RefusedAnswer {
        refused: Refused::UnknownType,
        kind: ProblemKind::UnsupportedEventType,
        what: "have a type this cell does not know yet",
        log: Some("a delivery held event types this version does not know"),
    },
    RefusedAnswer {
        refused: Refused::Conflict,
        kind: ProblemKind::ReplicationConflict,
        what: "were refused and never applied",
        log: None,
    },
    RefusedAnswer {
        refused: Refused::Malformed,
        kind: ProblemKind::MalformedBody,
        what: "are not twincell CloudEvents",
        log: Some("a delivery held malformed events"),
    },
];

/// What a delivery did, event by event.
#[derive(Default)]
struct Tally<'a> {
    by_peer: BTreeMap<&'a CellId, u64>,
    stored: usize,
    present: usize,
    /// The refused events of each kind.
    refused: BTreeMap<Refused, Vec<EventRef>>,
    /// The first cause of an unavailable store or a bug.
    causes: BTreeMap<Refused, String>,
}

impl<'a> Tally<'a> {
    fn refuse(&mut self, refused: Refused, id: Option<&str>, reason: impl Into<String>) {
        self.refused
            .entry(refused)
            .or_default()
            .push(event_ref(id, reason));
    }

    fn cause(&mut self, refused: Refused, cause: impl FnOnce() -> String) {
        self.causes.entry(refused).or_insert_with(cause);
    }

    /// The outcome of applying `event`, `now` on this cell's clock.
    fn applied(
        &mut self,
        event: &'a RecordedEvent,
        id: Option<&str>,
        outcome: &Result<ReplicatedApply, ServiceError>,
        now: Timestamp,
        topology: &Topology,
    ) {
        let id_text = id.unwrap_or_default();
        let counted = match outcome {
            Ok(ReplicatedApply::Stored) => "stored",
            Ok(ReplicatedApply::AlreadyPresent) => "already_present",
            Err(ServiceError::ReplicaDiverged { .. }) => "diverged",
            Err(ServiceError::OwnEventReplicated(_)) => "own_origin",
            Err(_) => "unavailable",
        };
        count_replicated(topology, Some(event.origin()), counted);
        if matches!(outcome, Ok(ReplicatedApply::Stored)) {
            let lag = now
                .unix_millis()
                .saturating_sub(event.recorded_at().unix_millis());
            // Whole milliseconds, at most 49 days (a clock skewed behind
            // the origin's reads 0).
            let lag = u32::try_from(lag.max(0)).unwrap_or(u32::MAX);
            if topology.contains(event.origin()) {
                metrics::histogram!(emf::REPLICATION_LAG, "origin_cell" => event.origin().to_string())
                    .record(lag);
            }
        }
        match outcome {
            Ok(applied) => {
                *self.by_peer.entry(event.origin()).or_default() += 1;
                let outcome = match applied {
                    ReplicatedApply::Stored => {
                        self.stored += 1;
                        "stored"
                    }
                    ReplicatedApply::AlreadyPresent => {
                        self.present += 1;
                        "already_present"
                    }
                };
                // The trace of the request that committed the event in its
                // origin cell, so that one query finds both ends.
                let trace = event.metadata().traceparent;
                tracing::info!(
                    origin_cell = %event.origin(),
                    event_id = %event.event_id(),
                    event_type = event.event().type_name(),
                    stream = %event.stream(),
                    version = event.version(),
                    outcome,
                    trace_id = trace.map(|t| t.trace_id_hex()),
                    parent_span_id = trace.map(|t| t.span_id_hex()),
                    "replicated event applied"
                );
            }
            Err(ServiceError::ReplicaDiverged { stream, version }) => {
                tracing::error!(event = id_text, %stream, version, "a replicated event differs from the stored one; it is not applied");
                self.refuse(
                    Refused::Conflict,
                    id,
                    "diverged: a different event is stored at this stream and version",
                );
            }
            Err(ServiceError::OwnEventReplicated(stream)) => {
                tracing::error!(event = id_text, %stream, "an event of this cell's own origin arrived as replicated; it is not stored");
                self.refuse(
                    Refused::Conflict,
                    id,
                    "own-origin: this cell never receives its own events",
                );
            }
            Err(ServiceError::Unavailable(reason)) => {
                self.cause(Refused::Unavailable, || reason.clone());
            }
            Err(other) => self.cause(Refused::Internal, || other.to_string()),
        }
    }

    /// The outcome of the reconciles that followed.
    fn followed_up(&mut self, outcome: &Result<(), ServiceError>) {
        match outcome {
            Ok(()) => {}
            Err(ServiceError::Unavailable(reason)) => {
                self.cause(Refused::Unavailable, || reason.clone());
            }
            Err(ServiceError::Contention) => self.cause(Refused::Unavailable, || {
                "contention while reconciling".to_owned()
            }),
            Err(other) => self.cause(Refused::Internal, || other.to_string()),
        }
    }

    /// The answer: the first kind of refusal decides it; none is a 200.
    fn answer(mut self, received: usize) -> Result<Response, Problem> {
        if let Some(reason) = self.causes.remove(&Refused::Unavailable) {
            return Err(Problem::unavailable(format!("replicated apply: {reason}")));
        }
        if let Some(cause) = self.causes.remove(&Refused::Internal) {
            return Err(Problem::internal(format!("replicated apply: {cause}")));
        }
        if let Some((refused, events)) = self.refused.pop_first() {
            return Err(refused_answer(refused, events, received));
        }
        Ok(json(
            StatusCode::OK,
            &Received {
                received,
                stored: self.stored,
                already_present: self.present,
            },
        ))
    }
}

/// The problem answering a delivery whose first refusal is `refused`.
fn refused_answer(refused: Refused, events: Vec<EventRef>, received: usize) -> Problem {
    let Some(answer) = REFUSED_ANSWERS.iter().find(|a| a.refused == refused) else {
        return Problem::internal(format!("no answer for refused events {refused:?}"));
    };
    if let Some(line) = answer.log {
        tracing::warn!(events = events.len(), "{line}");
    }
    Problem::new(
        answer.kind,
        format!(
            "{} of {received} events {}; the others were applied",
            events.len(),
            answer.what
        ),
    )
    .with_events(events)
}

/// Whether `event` may be applied: its origin is one of the deployment's
/// cells (this cell's own events are refused later, as a conflict) and,
/// where origin keys are configured, it carries a signature of one of its
/// origin's keys.
fn trusted(
    keys: &OriginKeys,
    topology: &twincell_core::Topology,
    event: &RecordedEvent,
    (kid, signature): &(Option<String>, Option<String>),
) -> Result<(), Untrusted> {
    let origin = event.origin();
    if !topology.contains(origin) {
        return Err(Untrusted::UnknownOrigin(origin.clone()));
    }
    if keys.is_empty() || origin == topology.this() {
        return Ok(());
    }
    keys.verify(event, kid.as_deref(), signature.as_deref())
}

/// `POST /replication/events`: every decodable event is applied, then the
/// tally of what became of each is the answer.
pub(crate) async fn receive(State(shared): St, request: Request) -> Result<Response, Problem> {
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
    let mut events: Vec<RecordedEvent> = Vec::with_capacity(received);
    let mut ids: Vec<Option<String>> = Vec::with_capacity(received);
    let mut tally = Tally::default();
    let topology = shared.api.topology();
    for item in incoming {
        match item.event {
            Ok(event) => {
                if let Err(why) = trusted(
                    &shared.replication.origin_keys,
                    topology,
                    &event,
                    &item.signature,
                ) {
                    tracing::error!(event = %event.event_id(), origin = %event.origin(), stream = %event.stream(), version = event.version(), reason = %why, "a delivered event was refused: not shown to come from its origin");
                    count_replicated(topology, Some(event.origin()), "untrusted");
                    tally.refuse(Refused::Untrusted, item.id.as_deref(), why.to_string());
                    continue;
                }
                events.push(event);
                ids.push(item.id);
            }
            Err(Refusal::Malformed(why)) => {
                count_replicated(topology, None, "malformed");
                tally.refuse(Refused::Malformed, item.id.as_deref(), why);
            }
            Err(Refusal::UnknownType(ty)) => {
                count_replicated(topology, None, "unknown_type");
                tally.refuse(
                    Refused::UnknownType,
                    item.id.as_deref(),
                    format!("unknown event type {ty}"),
                );
            }
        }
    }
    let report = shared.api.apply_replicated_batch(&events).await;
    let now = shared.api.now();
    for ((event, id), outcome) in events.iter().zip(&ids).zip(&report.outcomes) {
        tally.applied(event, id.as_deref(), outcome, now, topology);
    }
    tally.followed_up(&report.follow_up);
    for (peer, count) in &tally.by_peer {
        shared.log.received(peer, *count, now);
    }
    for progress in &report.streams {
        shared.log.progress(progress);
    }
    tally.answer(received)
}

/// Counts one delivered event by its origin (`unknown` unless it is a cell
/// of the deployment: a sender never picks a dimension value) and what
/// became of it.
fn count_replicated(topology: &Topology, origin: Option<&CellId>, outcome: &'static str) {
    let origin = origin
        .filter(|o| topology.contains(o))
        .map_or("unknown", CellId::as_str);
    metrics::counter!(
        emf::REPLICATED_EVENTS,
        "origin_cell" => origin.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

const REQUEST_ORIGIN: &str = "webhook-request-origin";
const ALLOWED_ORIGIN: HeaderName = HeaderName::from_static("webhook-allowed-origin");
const REQUEST_RATE: &str = "webhook-request-rate";
const ALLOWED_RATE: HeaderName = HeaderName::from_static("webhook-allowed-rate");

/// The rate granted to a sender: what it asked for (requests per minute),
/// or `*` (no limit) when it asked for none. The receiver has no rate of
/// its own to impose: a delivery that finds the store busy is answered
/// 503 and retried on the deliverer's schedule.
fn allowed_rate(headers: &HeaderMap) -> Result<HeaderValue, Problem> {
    match crate::headers::last_item(headers, REQUEST_RATE) {
        None => Ok(HeaderValue::from_static("*")),
        // 1 to 999 999 999: a whole number with no leading zero.
        Some(Ok(rate))
            if (1..=9).contains(&rate.len())
                && rate.bytes().all(|b| b.is_ascii_digit())
                && !rate.starts_with('0') =>
        {
            HeaderValue::from_str(rate).map_err(|_| bad_rate())
        }
        Some(_) => Err(bad_rate()),
    }
}

fn bad_rate() -> Problem {
    Problem::new(
        ProblemKind::InvalidHeader,
        "WebHook-Request-Rate must be a positive whole number of requests per minute",
    )
}

/// `OPTIONS /replication/events`: the CloudEvents webhook validation. The
/// answer echoes the origin and always names the rate granted
/// (`WebHook-Allowed-Rate`), which the specification requires when the
/// sender asked for one.
pub(crate) async fn handshake(headers: HeaderMap) -> Result<Response, Problem> {
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
    let rate = allowed_rate(&headers)?;
    let mut response = StatusCode::OK.into_response();
    response.headers_mut().insert(ALLOWED_ORIGIN, value);
    response.headers_mut().insert(ALLOWED_RATE, rate);
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
pub(crate) async fn status(State(shared): St) -> Result<Response, Problem> {
    let topology = shared.api.topology();
    let mut seen = shared.log.snapshot();
    // Re-check the remembered gaps: another process may have closed them.
    for status in seen.values() {
        for stream in status.gaps.keys().take(GAPS_CHECKED) {
            let progress = shared.api.stream_progress(stream).await?;
            shared.log.progress(&progress);
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
pub(crate) async fn resync(State(shared): St, request: Request) -> Result<Response, Problem> {
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
        origin: shared.api.topology().this().clone(),
        since,
        after: ask.cursor.map(ListCursor::new),
        limit: RESYNC_PAGE.min(max_events),
    };
    let started = tokio::time::Instant::now();
    let mut published = 0usize;
    loop {
        let page = shared.api.own_events(&listing).await?;
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
