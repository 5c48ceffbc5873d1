//! Extractors for path parameters and headers, answering in problem+json.
//! They run before the body is read, so a request to a resource that cannot
//! exist gets 404 and a bad header 400 whatever the body holds.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Path};
use http::request::Parts;
use twincell_core::{EventMetadata, IdempotencyKey, InventoryRequest, OrderId, Sku, TransactionId};

use crate::problem::{Problem, ProblemKind};

/// One answer for "no route" and "an id in the path that can't exist": a
/// front door that decodes the path (API Gateway REST decodes `%2F`) turns
/// the one into the other, and both cells must still answer alike.
pub(crate) fn no_such_resource() -> Problem {
    Problem::new(ProblemKind::NotFound, "no such resource")
}

async fn params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<Vec<(String, String)>, Problem> {
    // Percent-decoding to invalid UTF-8 is the only way this fails: such an
    // id can't name anything.
    Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .map_err(|_| no_such_resource())
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// What the events a command commits keep: the trace context the
/// outermost layer gave the request (none when the router is served
/// without it, as no cell is).
#[derive(Debug)]
pub struct Committing(pub EventMetadata);

impl<S: Send + Sync> FromRequestParts<S> for Committing {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<crate::trace::TraceContext>()
                .map(crate::trace::TraceContext::event_metadata)
                .unwrap_or_default(),
        ))
    }
}

/// `{sku}` of an inventory route.
#[derive(Debug)]
pub struct SkuPath(pub Sku);

impl<S: Send + Sync> FromRequestParts<S> for SkuPath {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let p = params(parts, state).await?;
        Sku::new(param(&p, "sku"))
            .map(Self)
            .map_err(|_| no_such_resource())
    }
}

/// `{sku}` and `{order_id}` of a reservation route.
#[derive(Debug)]
pub struct ReservationPath(pub Sku, pub OrderId);

impl<S: Send + Sync> FromRequestParts<S> for ReservationPath {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let p = params(parts, state).await?;
        let sku = Sku::new(param(&p, "sku")).map_err(|_| no_such_resource())?;
        let order = OrderId::new(param(&p, "order_id")).map_err(|_| no_such_resource())?;
        Ok(Self(sku, order))
    }
}

/// `{id}` of a transaction route.
#[derive(Debug)]
pub struct TransactionPath(pub TransactionId);

impl<S: Send + Sync> FromRequestParts<S> for TransactionPath {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let p = params(parts, state).await?;
        TransactionId::parse(param(&p, "id"))
            .map(Self)
            .map_err(|_| no_such_resource())
    }
}

/// The optional `Idempotency-Key` header, read as a list whose last item is
/// the key (see [`crate::headers`]): 1–255 visible ASCII characters, no
/// comma.
#[derive(Debug)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

fn idempotency_key(parts: &Parts) -> Result<Option<IdempotencyKey>, Problem> {
    let invalid = || {
        Problem::new(
            ProblemKind::InvalidHeader,
            "Idempotency-Key must be 1 to 255 visible ASCII characters without a comma",
        )
    };
    match crate::headers::last_item(&parts.headers, "idempotency-key") {
        None => Ok(None),
        Some(Ok(text)) => IdempotencyKey::new(text).map(Some).map_err(|_| invalid()),
        Some(Err(())) => Err(invalid()),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        idempotency_key(parts).map(Self)
    }
}

/// The `Idempotency-Key` of an inventory command that takes one (see
/// [`InventoryRequest::KEYED`]); for one that does not (a reservation is
/// keyed by its order), the header is not read.
#[derive(Debug)]
pub struct CommandKey<R>(pub Option<IdempotencyKey>, pub PhantomData<R>);

impl<S: Send + Sync, R: InventoryRequest> FromRequestParts<S> for CommandKey<R> {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        if !R::KEYED {
            return Ok(Self(None, PhantomData));
        }
        idempotency_key(parts).map(|key| Self(key, PhantomData))
    }
}
