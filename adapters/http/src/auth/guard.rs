//! The check every protected route runs before anything else of the
//! request is read: one `Authorization: Bearer` header (of repeated ones,
//! the last, as behind every AWS front door), a token of
//! at most [`MAX_TOKEN_BYTES`], none in the query string, a good token
//! ([`Verifier::verify`]) and the route's scope. Identity headers an edge
//! may set (`X-MS-CLIENT-PRINCIPAL*`, an API Gateway authorizer context)
//! are never read. The caller's identity goes on the log line; the token
//! never does, nor the reason a token was refused into the answer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use super::source::{Current, KeySource};
use super::{Identity, Refusal, Verifier};
use crate::problem::{Problem, ProblemKind};

/// The longest token read, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The one detail of every 401 for a token that is not good, whatever the
/// reason (the reason is logged).
pub const INVALID_TOKEN_DETAIL: &str = "the bearer token is not valid";
/// The detail of a 401 without a token.
pub const MISSING_TOKEN_DETAIL: &str = "this route needs a bearer token (Authorization: Bearer)";

/// Verifier and keys: what a protected route asks.
#[derive(Debug)]
pub struct Authenticator {
    verifier: Verifier,
    keys: Arc<KeySource>,
}

/// Why a request is not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No token.
    Missing,
    /// A token that is not good, or one in the query.
    Invalid(String),
    /// A good token without the route's scope.
    Scope(String),
    /// No signing key is available; one may be in this many seconds.
    NoKeys(u64),
}

impl Authenticator {
    /// An authenticator checking tokens with `verifier` against the keys of
    /// `keys`.
    #[must_use]
    pub fn new(verifier: Verifier, keys: KeySource) -> Self {
        Self {
            verifier,
            keys: Arc::new(keys),
        }
    }

    /// An authenticator for tokens of the same issuers and keys meant for
    /// `audiences` instead: the keys are shared, fetched and refreshed once
    /// for both.
    #[must_use]
    pub fn for_audiences(&self, audiences: Vec<String>) -> Self {
        Self {
            verifier: self.verifier.with_audiences(audiences),
            keys: Arc::clone(&self.keys),
        }
    }

    /// Fetches the keys now (best effort; a failure is logged and retried
    /// on use).
    pub async fn warm_up(&self) {
        self.keys.refresh().await;
    }

    /// The caller of a request with these parts, or why not.
    ///
    /// # Errors
    /// The [`Denial`].
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        query: Option<&str>,
    ) -> Result<Identity, Denial> {
        if query.is_some_and(query_holds_a_token) {
            return Err(Denial::Invalid("a token in the query string".to_owned()));
        }
        // Read as every single-valued header is (crate::headers): the
        // last of repeated headers, after the last comma. API Gateway REST
        // and ALB events keep only the last of two Authorization headers and
        // HTTP API joins them with a comma, so "exactly one" cannot be
        // told apart behind every front door; the last is what all of them
        // can agree on, and it is checked in full like any other.
        let Some(text) = crate::headers::last_item(headers, header::AUTHORIZATION) else {
            return Err(Denial::Missing);
        };
        let text =
            text.map_err(|()| Denial::Invalid("a header that is not visible ASCII".to_owned()))?;
        if text.len() > MAX_TOKEN_BYTES + "Bearer ".len() {
            return Err(Denial::Invalid(format!(
                "a token over {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            // Not echoed: a token sent without a scheme would be the "scheme".
            return Err(Denial::Invalid(
                "another scheme than Bearer, or none".to_owned(),
            ));
        }
        let token = token.trim();
        if token.is_empty() || token.contains(' ') {
            return Err(Denial::Invalid("not one token after Bearer".to_owned()));
        }
        let keys = match self.keys.current().await {
            Current::Keys(keys) => keys,
            Current::NoKeys { retry_in_seconds } => return Err(Denial::NoKeys(retry_in_seconds)),
        };
        match self.verifier.verify(token, &keys) {
            Err(Refusal::UnknownKid(_)) => match self.keys.after_unknown_kid().await {
                Current::Keys(keys) => self
                    .verifier
                    .verify(token, &keys)
                    .map_err(|r| Denial::Invalid(r.to_string())),
                Current::NoKeys { retry_in_seconds } => Err(Denial::NoKeys(retry_in_seconds)),
            },
            other => other.map_err(|r| Denial::Invalid(r.to_string())),
        }
    }
}

/// Whether a query string carries a bearer token (RFC 6750 §2.3's
/// `access_token`), which is never accepted: URLs end up in logs.
fn query_holds_a_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        name.eq_ignore_ascii_case("access_token")
    })
}

/// The answer to a denied request: problem+json, the same in both cells.
#[must_use]
pub fn denied(denial: &Denial) -> Response {
    problem(denial).into_response()
}

/// The problem a denial answers with.
#[must_use]
pub fn problem(denial: &Denial) -> Problem {
    match denial {
        Denial::Missing => Problem::new(ProblemKind::Unauthorized, MISSING_TOKEN_DETAIL)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
        Denial::Invalid(_) => Problem::new(ProblemKind::Unauthorized, INVALID_TOKEN_DETAIL)
            .with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            ),
        Denial::Scope(scope) => {
            let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
            Problem::new(
                ProblemKind::InsufficientScope,
                format!("the token does not grant the scope {scope}"),
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&challenge).unwrap_or_else(|_| {
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\"")
                }),
            )
        }
        // Retry-After says when the keys may next be fetched: asking
        // sooner would meet the same refusal.
        Denial::NoKeys(seconds) => {
            Problem::unavailable("no signing key of the identity provider is available")
                .with_header(header::RETRY_AFTER, HeaderValue::from(*seconds))
        }
    }
}

impl Identity {
    /// Puts the caller on `span` (the request's span, see the router's
    /// outermost layer): `sub`, and `oid`/`tid` or `client_id` where the
    /// token has them. Never the token.
    pub fn record_on(&self, span: &tracing::Span) {
        for (field, value) in [
            ("caller.sub", &self.subject),
            ("caller.oid", &self.object_id),
            ("caller.tid", &self.tenant_id),
            ("caller.client_id", &self.client_id),
        ] {
            if let Some(value) = value {
                span.record(field, value.as_str());
            }
        }
    }
}

/// Route middleware: the request goes on only with a token granting
/// `scope`.
pub async fn require(
    State((auth, scope)): State<(Arc<Authenticator>, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    match auth
        .authenticate(request.headers(), request.uri().query())
        .await
    {
        Ok(identity) => {
            identity.record_on(&tracing::Span::current());
            if identity.grants(scope) {
                tracing::debug!(scope, "authenticated");
                next.run(request).await
            } else {
                tracing::info!(scope, "refused: the token lacks the scope");
                denied(&Denial::Scope(scope.to_owned()))
            }
        }
        Err(denial) => {
            if let Denial::Invalid(reason) = &denial {
                tracing::info!(reason, "refused: the bearer token is not valid");
            }
            denied(&denial)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_in_the_query_is_spotted_by_name_only() {
        assert!(query_holds_a_token("access_token=abc"));
        assert!(query_holds_a_token("a=1&ACCESS_TOKEN=x"));
        assert!(query_holds_a_token("access_token"));
        assert!(!query_holds_a_token("token=1&x_access_token=2"));
    }
}
