//! Extractors for path parameters and headers, answering in problem+json.
//! They run before the body is read, so a request to a resource that cannot
//! exist gets 404 and a bad header 400 whatever the body holds.

use axum::extract::{FromRequestParts, Path};
use http::request::Parts;
use twincell_core::{IdempotencyKey, OrderId, Sku, TransactionId};

use crate::problem::{Problem, ProblemKind};

fn no_such(what: &str) -> Problem {
    Problem::new(
        ProblemKind::NotFound,
        format!("no such {what}: the id in the path is not valid"),
    )
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
        .map_err(|_| no_such("resource"))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
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
            .map_err(|_| no_such("SKU"))
    }
}

/// `{sku}` and `{order_id}` of a reservation route.
#[derive(Debug)]
pub struct ReservationPath(pub Sku, pub OrderId);

impl<S: Send + Sync> FromRequestParts<S> for ReservationPath {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let p = params(parts, state).await?;
        let sku = Sku::new(param(&p, "sku")).map_err(|_| no_such("SKU"))?;
        let order = OrderId::new(param(&p, "order_id")).map_err(|_| no_such("reservation"))?;
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
            .map_err(|_| no_such("transaction"))
    }
}

/// The optional `Idempotency-Key` header: at most one, 1–255 visible ASCII
/// characters.
#[derive(Debug)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = Problem;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let invalid = || {
            Problem::new(
                ProblemKind::InvalidHeader,
                "Idempotency-Key must be one header of 1 to 255 visible ASCII characters",
            )
        };
        let mut values = parts.headers.get_all("idempotency-key").iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(Self(None)),
            (Some(v), None) => {
                let text = v.to_str().map_err(|_| invalid())?;
                IdempotencyKey::new(text)
                    .map(|k| Self(Some(k)))
                    .map_err(|_| invalid())
            }
            (Some(_), Some(_)) => Err(invalid()),
        }
    }
}
