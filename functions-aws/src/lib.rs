//! # twincell-aws
//!
//! The AWS cell: the shared router behind `lambda_http` (the `api`
//! binary), and the [`replicator`] that publishes the cell's own events
//! from the table's stream. API Gateway REST
//! (v1), HTTP API (v2), ALB and Lambda function URL events all reach the
//! router with the same path the Azure cell sees: `lambda_http` puts an API
//! Gateway stage in front of the path, and [`strip_stage`] takes it off
//! again, so a stage never changes routing.

pub mod api;
pub mod replicator;
pub mod secrets;

use std::sync::Arc;

use lambda_http::request::RequestContext;
use lambda_http::tower::ServiceBuilder;
use lambda_http::tower::util::MapRequest;
use lambda_http::{Request, RequestExt};
use twincell_core::CellApi;

/// What a Lambda invocation runs: [`strip_stage`], then the router.
pub type App = MapRequest<axum::Router, fn(Request) -> Request>;

/// The Lambda handler of one cell over `service`, with the replication
/// routes when `replication` is given, and no route asking for a token.
pub fn app<A: CellApi + 'static>(
    service: Arc<A>,
    replication: Option<twincell_http::Replication>,
) -> App {
    app_with(service, replication, None)
}

/// [`app`], with bearer tokens asked for on the API routes when `auth` is
/// given (see `twincell_http::auth`).
pub fn app_with<A: CellApi + 'static>(
    service: Arc<A>,
    replication: Option<twincell_http::Replication>,
    auth: Option<Arc<twincell_http::auth::Authenticator>>,
) -> App {
    let normalize: fn(Request) -> Request = |request| strip_stage(with_request_id(request));
    ServiceBuilder::new()
        .map_request(normalize)
        .service(twincell_http::router_with(service, replication, auth))
}

/// Hands the router the Lambda request id of the invocation carrying the
/// request, for its log lines (`function_request_id`).
#[must_use]
pub fn with_request_id(mut request: Request) -> Request {
    let id = request
        .lambda_context_ref()
        .and_then(|context| twincell_http::FunctionRequestId::checked(&context.request_id));
    if let Some(id) = id {
        request.extensions_mut().insert(id);
    }
    request
}

/// Routes on the path the client sent, without the API Gateway stage.
///
/// `lambda_http` builds the request URI from the event and puts the stage in
/// front of the path. HTTP API (v2) events carry the stage in `rawPath` for
/// named stages, and the path as sent: the stage prefix is taken off the
/// URI. REST (v1) events carry only the percent-decoded path (the stage is in
/// the request context): the URI path is rebuilt from it, re-encoding what
/// a path cannot hold literally (`%`, `?`, `#`, spaces, non-ASCII), so a
/// decoded `?` never turns into a query. ALB and function URL requests pass
/// unchanged.
#[must_use]
pub fn strip_stage(mut request: Request) -> Request {
    let path = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(_)) => encode_path(request.raw_http_path()),
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            let Some(stage) = ctx
                .stage
                .clone()
                .filter(|s| !s.is_empty() && s != "$default")
            else {
                return request;
            };
            let path = request.uri().path();
            match path
                .strip_prefix('/')
                .and_then(|p| p.strip_prefix(stage.as_str()))
            {
                Some("") => "/".to_owned(),
                Some(rest) if rest.starts_with('/') => rest.to_owned(),
                _ => return request,
            }
        }
        _ => return request,
    };
    twincell_http::normalize::replace_path(&mut request, &path);
    request
}

/// Percent-encodes a decoded path for a URI: unreserved characters, `/` and
/// the sub-delimiters stay, everything else (`%` included) is encoded.
#[must_use]
pub fn encode_path(decoded: &str) -> String {
    let mut out = String::with_capacity(decoded.len());
    for byte in decoded.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    if out.is_empty() { "/".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::encode_path;

    #[test]
    fn a_decoded_path_is_re_encoded_for_the_uri() {
        assert_eq!(encode_path("/inventory/a?b"), "/inventory/a%3Fb");
        assert_eq!(encode_path("/inventory/a b#c%"), "/inventory/a%20b%23c%25");
        assert_eq!(encode_path("/inventory/café"), "/inventory/caf%C3%A9");
        assert_eq!(encode_path("/health"), "/health");
        assert_eq!(encode_path(""), "/");
    }
}
