//! The handler's HTTP/1.1 server, with the bounds a server facing untrusted
//! clients needs. `axum::serve` has none of them (it waits on a silent or
//! slow client forever and accepts until the process runs out of file
//! descriptors), so the accept loop is written here on hyper's own
//! connection builder.
//!
//! | bound | default | variable |
//! |---|---|---|
//! | header read: a connection's request head (the first one, or the next on a kept-alive connection) must arrive whole within it | 10 s | `TWINCELL_HTTP_HEADER_TIMEOUT_MS` |
//! | idle keep-alive: a kept-alive connection that sends no next request is closed | the header read timeout (hyper runs that clock from the moment a connection waits for a request) | |
//! | whole request: from the head to the last byte of the answer, body upload included; past it the answer is 408 problem+json and the connection closes | 30 s | `TWINCELL_HTTP_REQUEST_TIMEOUT_MS` |
//! | open connections: at the cap the server stops accepting (new clients wait in the kernel's queue) until one closes | 512 | `TWINCELL_HTTP_MAX_CONNECTIONS` |
//!
//! Keep the cap well below the process's file-descriptor limit (`ulimit
//! -n`). A bad value stops the handler at start.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The server's bounds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) header_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

impl Limits {
    /// The defaults, overridden by the environment.
    ///
    /// # Errors
    /// A variable that is not a positive whole number (and a cap of 0).
    pub(crate) fn from_env(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut limits = Self::default();
        let number = |name: &str| -> anyhow::Result<Option<u64>> {
            env(name)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| format!("{name}={v:?} is not a positive whole number"))
                })
                .transpose()
        };
        if let Some(ms) = number("TWINCELL_HTTP_HEADER_TIMEOUT_MS")? {
            limits.header_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = number("TWINCELL_HTTP_REQUEST_TIMEOUT_MS")? {
            limits.request_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = number("TWINCELL_HTTP_MAX_CONNECTIONS")? {
            limits.max_connections = usize::try_from(n).context("TWINCELL_HTTP_MAX_CONNECTIONS")?;
        }
        Ok(limits)
    }
}

/// The answer when a request outlives the whole-request timeout.
fn timed_out() -> Response<Body> {
    let mut response = axum::response::IntoResponse::into_response(twincell_http::Problem::new(
        twincell_http::ProblemKind::RequestTimeout,
        "the request was not received and answered in time",
    ));
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    response
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves,
/// then lets open connections finish their current request.
///
/// # Errors
/// Only if the listener fails for good; a failed accept (for example no
/// file descriptor left) is logged and retried after a pause.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.context("the connection slots closed")?,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let request_timeout = limits.request_timeout;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let app = app.clone();
            async move {
                let request = request.map(Body::new);
                let answer = tokio::time::timeout(request_timeout, app.oneshot(request)).await;
                Ok::<_, Infallible>(match answer {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => timed_out(),
                })
            }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
