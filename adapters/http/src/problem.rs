//! RFC 9457 `application/problem+json` responses: one type for every failure
//! of every route, with a stable `type` per error class.
//!
//! The mapping from the core's [`ServiceError`] is exhaustive (no `_ =>`), so
//! a new domain error cannot reach clients without a decision here.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use twincell_core::inventory::{InventoryError, ReservationStatus};
use twincell_core::{ServiceError, Violation, Violations};

/// The classes of failure. Each has a stable `type` URI, a fixed title and a
/// fixed status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// The body is not valid JSON (or not UTF-8, or has duplicate keys).
    MalformedBody,
    /// A header the API reads is malformed (`Idempotency-Key`).
    InvalidHeader,
    /// A body route without a JSON `Content-Type`.
    UnsupportedMediaType,
    /// A body over 64 KiB.
    PayloadTooLarge,
    /// Valid JSON with invalid fields; `errors` lists every violation.
    ValidationFailed,
    /// An idempotency key reused with another payload.
    IdempotencyKeyReused,
    /// No such route or resource.
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// Not enough available stock in this cell.
    InsufficientStock,
    /// The order is reserved with another quantity.
    ReservationMismatch,
    /// The order's reservation was already released or fulfilled.
    ReservationClosed,
    /// A stock counter would overflow.
    StockLimitExceeded,
    /// A replicated event differs from the stored one.
    ReplicaDiverged,
    /// No or the wrong replication key; no bearer token, or one that is
    /// not valid.
    Unauthorized,
    /// A valid bearer token without the scope the route needs.
    InsufficientScope,
    /// A delivery held diverged replays or events of this cell's own
    /// origin; `events` names them. Never applied.
    ReplicationConflict,
    /// A delivery held an event type this version does not know (a newer
    /// cell sent it); retried, it applies once this cell is upgraded.
    UnsupportedEventType,
    /// A delivery held events not signed by their origin cell's key, or
    /// of a cell that is not a peer; `events` names them. Never applied,
    /// and final: Event Grid does not retry a 403.
    UntrustedEvent,
    /// The store can't be reached or is too contended; retry.
    ServiceUnavailable,
    /// The replication target refused a resync publish or could not be
    /// reached.
    ReplicationTargetFailed,
    /// The request was not received and answered within the server's
    /// whole-request timeout (a client too slow to send it); the
    /// connection closes.
    RequestTimeout,
    /// A bug; details are in the logs under the request id.
    InternalError,
}

impl ProblemKind {
    /// Every kind, for docs and tests.
    pub const ALL: [ProblemKind; 22] = [
        Self::MalformedBody,
        Self::InvalidHeader,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::ValidationFailed,
        Self::IdempotencyKeyReused,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::InsufficientStock,
        Self::ReservationMismatch,
        Self::ReservationClosed,
        Self::StockLimitExceeded,
        Self::ReplicaDiverged,
        Self::Unauthorized,
        Self::InsufficientScope,
        Self::ReplicationConflict,
        Self::UnsupportedEventType,
        Self::UntrustedEvent,
        Self::ServiceUnavailable,
        Self::ReplicationTargetFailed,
        Self::RequestTimeout,
        Self::InternalError,
    ];

    /// The slug at the end of the `type` URI.
    #[must_use]
    pub fn slug(self) -> &'static str {
        match self {
            Self::MalformedBody => "malformed-body",
            Self::InvalidHeader => "invalid-header",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::ValidationFailed => "validation-failed",
            Self::IdempotencyKeyReused => "idempotency-key-reused",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::InsufficientStock => "insufficient-stock",
            Self::ReservationMismatch => "reservation-mismatch",
            Self::ReservationClosed => "reservation-closed",
            Self::StockLimitExceeded => "stock-limit-exceeded",
            Self::ReplicaDiverged => "replica-diverged",
            Self::Unauthorized => "unauthorized",
            Self::InsufficientScope => "insufficient-scope",
            Self::ReplicationConflict => "replication-conflict",
            Self::UnsupportedEventType => "unsupported-event-type",
            Self::UntrustedEvent => "untrusted-event",
            Self::ServiceUnavailable => "service-unavailable",
            Self::ReplicationTargetFailed => "replication-target-failed",
            Self::RequestTimeout => "request-timeout",
            Self::InternalError => "internal-error",
        }
    }

    /// The `type` member: `urn:twincell:problem:<slug>`.
    #[must_use]
    pub fn type_uri(self) -> String {
        format!("urn:twincell:problem:{}", self.slug())
    }

    /// The `title` member: fixed per kind.
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::MalformedBody => "Malformed request body",
            Self::InvalidHeader => "Invalid request header",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::PayloadTooLarge => "Payload too large",
            Self::ValidationFailed => "Validation failed",
            Self::IdempotencyKeyReused => "Idempotency key reused",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::InsufficientStock => "Insufficient stock",
            Self::ReservationMismatch => "Reservation mismatch",
            Self::ReservationClosed => "Reservation closed",
            Self::StockLimitExceeded => "Stock limit exceeded",
            Self::ReplicaDiverged => "Replica diverged",
            Self::Unauthorized => "Unauthorized",
            Self::InsufficientScope => "Insufficient scope",
            Self::ReplicationConflict => "Replication conflict",
            Self::UnsupportedEventType => "Unsupported event type",
            Self::UntrustedEvent => "Untrusted event",
            Self::ServiceUnavailable => "Service unavailable",
            Self::ReplicationTargetFailed => "Replication target failed",
            Self::RequestTimeout => "Request timeout",
            Self::InternalError => "Internal error",
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedBody | Self::InvalidHeader => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ValidationFailed | Self::IdempotencyKeyReused | Self::UnsupportedEventType => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope | Self::UntrustedEvent => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::InsufficientStock
            | Self::ReservationMismatch
            | Self::ReservationClosed
            | Self::StockLimitExceeded
            | Self::ReplicaDiverged
            | Self::ReplicationConflict => StatusCode::CONFLICT,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::ReplicationTargetFailed => StatusCode::BAD_GATEWAY,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

static NO_MEMBERS: std::sync::LazyLock<serde_json::Map<String, serde_json::Value>> =
    std::sync::LazyLock::new(serde_json::Map::new);

/// The most violations a `validation-failed` problem lists (the first, by
/// pointer); `detail` gives the total. With pointers cut at
/// [`POINTER_LISTED_CHARS`], no such body is larger than about 5 KB, however
/// many fields a 64 KiB body gets wrong.
pub const VIOLATIONS_LISTED: usize = 20;

/// The longest pointer a listed violation carries, in characters; a longer
/// one (an unknown field with a very long name) is cut and ends in `…`.
pub const POINTER_LISTED_CHARS: usize = 128;

fn shorten_pointer(v: Violation) -> Violation {
    if v.pointer().chars().count() <= POINTER_LISTED_CHARS {
        return v;
    }
    let mut cut: String = v.pointer().chars().take(POINTER_LISTED_CHARS - 1).collect();
    cut.push('…');
    Violation::new(cut, v.code(), v.message())
}

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// The most events a problem names in `events`.
pub const EVENTS_LISTED: usize = 100;

/// One event of a replication delivery a problem is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRef {
    /// The CloudEvent `id` as sent (empty when it had none).
    pub id: String,
    /// Why it was not applied.
    pub reason: String,
}

/// A failure on its way to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    kind: ProblemKind,
    detail: String,
    errors: Vec<Violation>,
    /// What few problems carry, boxed so every `Result<_, Problem>` stays
    /// small.
    extras: Option<Box<Extras>>,
    /// The cause of a 5xx, for the log line only; never sent.
    cause: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Extras {
    /// Replication events the problem is about (at most [`EVENTS_LISTED`]).
    events: Vec<EventRef>,
    /// Headers the kind needs besides `Content-Type` (`WWW-Authenticate`).
    headers: Vec<(http::HeaderName, HeaderValue)>,
    /// Extension members (RFC 9457 §3.2) after the standard ones.
    members: serde_json::Map<String, serde_json::Value>,
}

/// The cause of a 5xx, carried in the response extensions to the layer that
/// logs it with the request id (and never serialized).
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [Violation],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    events: &'a [EventRef],
    #[serde(flatten)]
    members: &'a serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem of `kind` with a `detail` for people.
    #[must_use]
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            extras: None,
            cause: None,
        }
    }

    fn extras(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Adds the extension member `name` (never one of the standard ones).
    #[must_use]
    pub fn with_member(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extras().members.insert(name.to_owned(), value);
        self
    }

    /// Names the events the problem is about (the first
    /// [`EVENTS_LISTED`]).
    #[must_use]
    pub fn with_events(mut self, events: impl IntoIterator<Item = EventRef>) -> Self {
        self.extras().events = events.into_iter().take(EVENTS_LISTED).collect();
        self
    }

    /// Sends `name: value` with the problem.
    #[must_use]
    pub fn with_header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.extras().headers.push((name, value));
        self
    }

    /// Keeps `cause` for the log line of the request (never sent).
    #[must_use]
    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// 422 listing every violation.
    #[must_use]
    pub fn validation(violations: Violations) -> Self {
        let n = violations.as_slice().len();
        let detail = match n {
            1 => "the request has 1 invalid field".to_owned(),
            n if n <= VIOLATIONS_LISTED => format!("the request has {n} invalid fields"),
            n => format!(
                "the request has {n} invalid fields; the first {VIOLATIONS_LISTED} by pointer are listed"
            ),
        };
        let mut p = Self::new(ProblemKind::ValidationFailed, detail);
        p.errors = violations
            .into_vec()
            .into_iter()
            .take(VIOLATIONS_LISTED)
            .map(shorten_pointer)
            .collect();
        p
    }

    /// 500 with a generic body; `cause` is logged, never sent.
    #[must_use]
    pub fn internal(cause: impl Into<String>) -> Self {
        let mut p = Self::new(
            ProblemKind::InternalError,
            "an internal error occurred; quote the x-request-id when reporting it",
        );
        p.cause = Some(cause.into());
        p
    }

    /// 503 with `Retry-After`; `cause` is logged, never sent.
    #[must_use]
    pub fn unavailable(cause: impl Into<String>) -> Self {
        let mut p = Self::new(
            ProblemKind::ServiceUnavailable,
            "the service is temporarily unavailable; retry after the number of seconds in Retry-After",
        );
        p.cause = Some(cause.into());
        p
    }

    /// The kind.
    #[must_use]
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }
}

fn closed(status: ReservationStatus) -> &'static str {
    match status {
        ReservationStatus::Held => "held",
        ReservationStatus::Released => "released",
        ReservationStatus::Fulfilled => "fulfilled",
    }
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Inventory(e) => match e {
                InventoryError::InsufficientStock {
                    requested,
                    available,
                } => Self::new(
                    ProblemKind::InsufficientStock,
                    format!("{requested} units requested but {available} available in this cell"),
                ),
                InventoryError::ReservationMismatch { order_id, held } => Self::new(
                    ProblemKind::ReservationMismatch,
                    format!("order {order_id} is already reserved with quantity {held}"),
                ),
                InventoryError::ReservationClosed { order_id, status } => Self::new(
                    ProblemKind::ReservationClosed,
                    format!(
                        "the reservation of order {order_id} is already {}",
                        closed(status)
                    ),
                ),
                InventoryError::ReservationNotFound { order_id } => Self::new(
                    ProblemKind::NotFound,
                    format!("no reservation for order {order_id}"),
                ),
                InventoryError::InvalidTransferTarget(cell) => Self::validation_one(
                    "/to_cell",
                    twincell_core::ViolationCode::UnknownCell,
                    format!("{cell} is not another cell of this deployment"),
                ),
                InventoryError::StockOverflow => Self::new(
                    ProblemKind::StockLimitExceeded,
                    "the stock counters of this SKU would overflow",
                ),
                InventoryError::IdempotencyKeyReused => Self::new(
                    ProblemKind::IdempotencyKeyReused,
                    "the Idempotency-Key was already used on this SKU with a different request",
                ),
                InventoryError::Inconsistent(cause) => Self::internal(cause),
            },
            ServiceError::TransactionNotFound(id) => {
                Self::new(ProblemKind::NotFound, format!("no transaction {id}"))
            }
            ServiceError::IdempotencyKeyReused => Self::new(
                ProblemKind::IdempotencyKeyReused,
                "the Idempotency-Key was already used with a different payload",
            ),
            ServiceError::Contention => Self::unavailable("too much contention on one aggregate"),
            ServiceError::Unavailable(cause) => Self::unavailable(cause),
            ServiceError::ReplicaDiverged { stream, version } => Self::new(
                ProblemKind::ReplicaDiverged,
                format!("event {stream} v{version} differs from the stored one"),
            ),
            ServiceError::OwnEventReplicated(stream) => {
                Self::internal(format!("own event {stream} arrived as replicated"))
            }
            ServiceError::InvalidCursor(cause) => Self::new(
                ProblemKind::MalformedBody,
                "cursor is not one this cell gave",
            )
            .with_cause(cause),
            ServiceError::Internal(cause) => Self::internal(cause),
        }
    }
}

impl Problem {
    fn validation_one(pointer: &str, code: twincell_core::ViolationCode, message: String) -> Self {
        let mut p = Self::new(
            ProblemKind::ValidationFailed,
            "the request has 1 invalid field",
        );
        p.errors = vec![Violation::new(pointer, code, message)];
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: self.kind.type_uri(),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: &self.detail,
            errors: &self.errors,
            events: self.extras.as_ref().map_or(&[], |x| x.events.as_slice()),
            members: self.extras.as_ref().map_or(&NO_MEMBERS, |x| &x.members),
        };
        // Serializing plain strings and integers cannot fail; the fallback
        // keeps even that impossible case a well-formed problem.
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"type":"urn:twincell:problem:internal-error","title":"Internal error","status":500,"detail":"an internal error occurred"}"#.to_vec()
        });
        let mut response = (self.kind.status(), bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.kind == ProblemKind::ServiceUnavailable {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        for (name, value) in self.extras.into_iter().flat_map(|x| x.headers) {
            headers.insert(name, value);
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(InternalCause(cause));
        }
        response
    }
}
