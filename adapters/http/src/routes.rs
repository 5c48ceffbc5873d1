//! Every route, each in one row of [`ROUTES`] (method, path template,
//! access, handler), and the handlers: extract → convert to a core command
//! → call the inbound port → map the result. No rule lives here.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, options, post};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use twincell_core::inventory::InventoryOutcome;
use twincell_core::{
    CellApi, CreateTransaction, InventoryCommand, InventoryRequest, ReceiveStock, ReserveStock,
    TransferStock, WriteOffStock,
};

use crate::body::JsonBody;
use crate::extract::{
    CommandKey, Committing, IdempotencyKeyHeader, ReservationPath, SkuPath, TransactionPath,
};
use crate::problem::{Problem, ProblemKind};
use crate::replication;

/// The router's state: one cell's use cases, behind the inbound port.
pub(crate) type Api = Arc<dyn CellApi>;

/// The header that marks a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the failover probe and the webhook handshake carry nothing.
    Open,
    /// A bearer token granting this scope, where the cell checks tokens
    /// ([`auth`](crate::auth)).
    Scope(&'static str),
    /// The replication key (`x-twincell-replication-key`).
    ReplicationKey,
    /// The replication key, or, where the cell accepts them, Event Grid's
    /// Entra token holding the delivery role.
    Delivery,
}

/// The state a route's handler takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Handler {
    /// Served by every cell, on its use cases.
    Api(fn() -> MethodRouter<Api>),
    /// Served only where replication is on (otherwise 404, as for any
    /// unknown path).
    Replication(fn() -> MethodRouter<Arc<replication::Shared>>),
}

/// One route: method, path template, who may call it, and its handler.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The HTTP method.
    pub method: &'static str,
    /// The path template, as the router, each `function.json` and
    /// `template.yaml` write it.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    pub(crate) handler: Handler,
}

impl Route {
    /// The scope a bearer token must grant, if the route asks for one.
    #[must_use]
    pub fn scope(&self) -> Option<&'static str> {
        match self.access {
            Access::Scope(scope) => Some(scope),
            Access::Open | Access::ReplicationKey | Access::Delivery => None,
        }
    }

    /// Whether the route is served only where replication is on.
    #[must_use]
    pub fn needs_replication(&self) -> bool {
        matches!(self.handler, Handler::Replication(_))
    }
}

/// Every route, each once: the router is built from these rows, and the
/// function folders, the SAM template, the OpenAPI document and the docs
/// are checked against them (`tests/route_drift.rs`, `tests/openapi.rs`).
pub static ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/health",
        access: Access::Open,
        handler: Handler::Api(|| get(health)),
    },
    Route {
        method: "POST",
        path: "/transactions",
        access: Access::Scope("transactions.write"),
        handler: Handler::Api(|| post(create_transaction)),
    },
    Route {
        method: "GET",
        path: "/transactions/{id}",
        access: Access::Scope("transactions.read"),
        handler: Handler::Api(|| get(get_transaction)),
    },
    Route {
        method: "GET",
        path: "/inventory/{sku}",
        access: Access::Scope("inventory.read"),
        handler: Handler::Api(|| get(get_inventory)),
    },
    Route {
        method: "POST",
        path: "/inventory/{sku}/receipts",
        access: Access::Scope("inventory.admin"),
        handler: Handler::Api(|| post(inventory_command::<ReceiveStock>)),
    },
    Route {
        method: "POST",
        path: "/inventory/{sku}/write-offs",
        access: Access::Scope("inventory.admin"),
        handler: Handler::Api(|| post(inventory_command::<WriteOffStock>)),
    },
    Route {
        method: "POST",
        path: "/inventory/{sku}/reservations",
        access: Access::Scope("inventory.write"),
        handler: Handler::Api(|| post(inventory_command::<ReserveStock>)),
    },
    Route {
        method: "DELETE",
        path: "/inventory/{sku}/reservations/{order_id}",
        access: Access::Scope("inventory.write"),
        handler: Handler::Api(|| delete(release)),
    },
    Route {
        method: "POST",
        path: "/inventory/{sku}/reservations/{order_id}/fulfilment",
        access: Access::Scope("inventory.write"),
        handler: Handler::Api(|| post(fulfil)),
    },
    Route {
        method: "POST",
        path: "/inventory/{sku}/transfers",
        access: Access::Scope("inventory.admin"),
        handler: Handler::Api(|| post(inventory_command::<TransferStock>)),
    },
    Route {
        method: "POST",
        path: "/replication/events",
        access: Access::Delivery,
        handler: Handler::Replication(|| post(replication::receive)),
    },
    Route {
        method: "OPTIONS",
        path: "/replication/events",
        access: Access::Open,
        handler: Handler::Replication(|| options(replication::handshake)),
    },
    Route {
        method: "GET",
        path: "/replication/status",
        access: Access::ReplicationKey,
        handler: Handler::Replication(|| get(replication::status)),
    },
    Route {
        method: "POST",
        path: "/replication/resync",
        access: Access::ReplicationKey,
        handler: Handler::Replication(|| post(replication::resync)),
    },
];

/// `(method, path, scope)` of every route that asks for a bearer token.
pub fn scopes() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    ROUTES
        .iter()
        .filter_map(|r| r.scope().map(|scope| (r.method, r.path, scope)))
}

/// A JSON response. Serializing the core's views cannot fail; if it ever
/// did, the client gets a 500 problem, not a panic.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    // Room for a typical answer up front: growing from empty took five
    // reallocations per response.
    let mut bytes = Vec::with_capacity(512);
    match serde_json::to_writer(&mut bytes, value) {
        Ok(()) => (
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

fn with_location(mut response: Response, location: &str, replayed: bool) -> Response {
    let headers = response.headers_mut();
    match HeaderValue::try_from(location) {
        Ok(v) => {
            headers.insert(header::LOCATION, v);
        }
        // Ids are URL-safe by construction; never reached.
        Err(_) => return Problem::internal("location header is not valid").into_response(),
    }
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

fn outcome(result: InventoryOutcome) -> Response {
    match result {
        InventoryOutcome::Applied(view) => json(StatusCode::OK, &view),
        InventoryOutcome::Requested(view) => json(StatusCode::ACCEPTED, &view),
        InventoryOutcome::Replayed(view) => {
            let mut response = json(StatusCode::OK, &view);
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            response
        }
        InventoryOutcome::Reserved {
            reservation,
            replayed,
        } => {
            let location = format!(
                "/inventory/{}/reservations/{}",
                reservation.sku, reservation.order_id
            );
            with_location(json(StatusCode::CREATED, &reservation), &location, replayed)
        }
    }
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

/// `GET /health`.
pub(crate) async fn health(State(api): State<Api>) -> Result<Response, Problem> {
    api.health().await?;
    Ok(json(StatusCode::OK, &Health { status: "ok" }))
}

/// `POST /transactions`.
pub(crate) async fn create_transaction(
    State(api): State<Api>,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Committing(metadata): Committing,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let cmd = CreateTransaction::from_json(&body).map_err(Problem::validation)?;
    let created = api
        .create_transaction(&cmd, key.as_ref(), &metadata)
        .await?;
    let view = created.transaction.view();
    let location = format!("/transactions/{}", view.transaction_id);
    Ok(with_location(
        json(StatusCode::CREATED, &view),
        &location,
        created.replayed,
    ))
}

/// `GET /transactions/{id}`.
pub(crate) async fn get_transaction(
    State(api): State<Api>,
    TransactionPath(id): TransactionPath,
) -> Result<Response, Problem> {
    Ok(json(StatusCode::OK, &api.transaction(id).await?.view()))
}

/// `GET /inventory/{sku}`.
pub(crate) async fn get_inventory(
    State(api): State<Api>,
    SkuPath(sku): SkuPath,
) -> Result<Response, Problem> {
    Ok(json(StatusCode::OK, &api.inventory(&sku).await?))
}

/// An inventory command whose body says what to do: `POST
/// /inventory/{sku}/receipts`, `/write-offs`, `/reservations` and
/// `/transfers`, one row each in [`ROUTES`] naming its request type. A
/// receipt, write-off or transfer takes an `Idempotency-Key`.
pub(crate) async fn inventory_command<R: InventoryRequest>(
    State(api): State<Api>,
    SkuPath(sku): SkuPath,
    CommandKey(key, _): CommandKey<R>,
    Committing(metadata): Committing,
    JsonBody(body): JsonBody,
) -> Result<Response, Problem> {
    let command = R::parse(&body, api.topology())
        .map_err(Problem::validation)?
        .into_command(key);
    Ok(outcome(api.execute(&sku, &command, &metadata).await?))
}

/// `DELETE /inventory/{sku}/reservations/{order_id}`.
pub(crate) async fn release(
    State(api): State<Api>,
    ReservationPath(sku, order): ReservationPath,
    Committing(metadata): Committing,
) -> Result<Response, Problem> {
    Ok(outcome(
        api.execute(&sku, &InventoryCommand::Release(order), &metadata)
            .await?,
    ))
}

/// `POST /inventory/{sku}/reservations/{order_id}/fulfilment` (no body).
pub(crate) async fn fulfil(
    State(api): State<Api>,
    ReservationPath(sku, order): ReservationPath,
    Committing(metadata): Committing,
) -> Result<Response, Problem> {
    Ok(outcome(
        api.execute(&sku, &InventoryCommand::Fulfil(order), &metadata)
            .await?,
    ))
}

/// Any path no route matches.
pub(crate) async fn not_found() -> Problem {
    crate::extract::no_such_resource()
}

/// A known path with a method it does not take; axum adds `Allow`.
pub(crate) async fn method_not_allowed() -> Problem {
    Problem::new(
        ProblemKind::MethodNotAllowed,
        "this route does not take that method; see the Allow header",
    )
}
