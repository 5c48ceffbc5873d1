//! # twincell-aws
//!
//! The AWS cell: the shared router behind `lambda_http`. API Gateway REST
//! (v1), HTTP API (v2), ALB and Lambda function URL events all reach the
//! router with the same path the Azure cell sees: `lambda_http` puts an API
//! Gateway stage in front of the path, and [`strip_stage`] takes it off
//! again, so a stage never changes routing.

use std::sync::Arc;

use lambda_http::http::Uri;
use lambda_http::http::uri::PathAndQuery;
use lambda_http::request::RequestContext;
use lambda_http::tower::ServiceBuilder;
use lambda_http::tower::util::MapRequest;
use lambda_http::{Request, RequestExt};
use twincell_core::{Clock, EventStore, IdGenerator, Service};

/// What a Lambda invocation runs: [`strip_stage`], then the router.
pub type App = MapRequest<axum::Router, fn(Request) -> Request>;

/// The Lambda handler of one cell over `service`.
pub fn app<S, C, I>(service: Arc<Service<S, C, I>>) -> App
where
    S: EventStore + 'static,
    C: Clock + 'static,
    I: IdGenerator + 'static,
{
    let normalize: fn(Request) -> Request = strip_stage;
    ServiceBuilder::new()
        .map_request(normalize)
        .service(twincell_http::router(service))
}

/// Routes on the path the client sent, without the API Gateway stage.
///
/// `lambda_http` builds the request URI from the event (normalizing it like
/// a URL parser: dot segments resolved, unsafe characters percent-encoded)
/// and puts the stage in front: REST (v1) events carry the stage only in the
/// request context and `lambda_http` prepends it unless the path already
/// starts with it; HTTP API (v2) events carry it in `rawPath` for named
/// stages. This takes exactly that prefix off the normalized path. ALB and
/// function URL requests have no stage and pass unchanged.
#[must_use]
pub fn strip_stage(mut request: Request) -> Request {
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => {
            let stage = ctx.stage.clone().unwrap_or_default();
            // lambda_http leaves a v1 path alone when it already starts with
            // the stage; then there is nothing of its own to take off.
            let prefixed = format!("/{stage}/");
            if request.raw_http_path().starts_with(&prefixed) {
                None
            } else {
                Some(stage)
            }
        }
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else {
        return request;
    };
    let path = request.uri().path();
    let rest = match path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(stage.as_str()))
    {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => return request,
    };
    let path_and_query = match request.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}
