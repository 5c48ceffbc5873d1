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
//! | open connections: at the cap a new connection takes the slot of the one that has kept the server waiting longest (below) | 512 | `TWINCELL_HTTP_MAX_CONNECTIONS` |
//! | eviction: at the cap, a connection the server is waiting on — for a request head, a body, or the next request — and that has sent nothing for this long is closed to make room | 100 ms | `TWINCELL_HTTP_EVICT_AFTER_MS` |
//! | listen backlog: connections the kernel holds for the accept loop | 1 024 | (`main.rs`; the kernel caps it at `net.core.somaxconn`) |
//!
//! So a crowd of silent, slow or idle connections, however many, cannot
//! keep a new client out: at the cap, the connection that has been silent
//! longest gives way, while a connection whose request the server is
//! working on (its body received) is never closed for another.
//! `functions-azure/tests/connections.rs` holds `/health` and a normal
//! client to an answer within a second through crowds of slow bodies and
//! idle sockets past the cap.
//!
//! Keep the cap well below the process's file-descriptor limit (`ulimit
//! -n`). A bad value stops the handler at start.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

/// The server's bounds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) header_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) evict_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            evict_after: Duration::from_millis(100),
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
        if let Some(ms) = number("TWINCELL_HTTP_EVICT_AFTER_MS")? {
            limits.evict_after = Duration::from_millis(ms);
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

/// What the accept loop knows of one open connection.
#[derive(Debug)]
struct Tracked {
    /// When it last sent a byte, in ms since the server started.
    last_read: AtomicU64,
    /// Whether the server is waiting on the client (a request head, the
    /// rest of a body, or the next request): only then may it be evicted.
    waiting: AtomicBool,
    /// Closes it.
    evict: Notify,
}

/// Every open connection, for eviction at the cap.
#[derive(Debug)]
struct Connections {
    started: Instant,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
}

impl Connections {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Tracked>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes the connection that has kept the server waiting longest, if
    /// it has been silent for at least `after`; whether one was closed.
    fn evict_one(&self, after: Duration) -> bool {
        let now = self.now_ms();
        let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        let victim = self
            .lock()
            .values()
            .filter(|c| c.waiting.load(Ordering::Relaxed))
            .map(|c| (now.saturating_sub(c.last_read.load(Ordering::Relaxed)), c))
            .filter(|(silent, _)| *silent >= after)
            .max_by_key(|(silent, _)| *silent)
            .map(|(_, c)| Arc::clone(c));
        match victim {
            Some(c) => {
                // Not waiting any more: it is on its way out.
                c.waiting.store(false, Ordering::Relaxed);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's socket, noting when the client last sent a byte.
struct Watched {
    stream: TcpStream,
    connection: Arc<Tracked>,
    connections: Arc<Connections>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.connections.now_ms();
            self.connection.last_read.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request body that tells its connection when it has arrived whole:
/// from then on the server is working, not waiting.
struct Arriving {
    body: Incoming,
    connection: Arc<Tracked>,
}

impl http_body::Body for Arriving {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.connection.waiting.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// How long the accept loop waits for an evicted connection's slot before
/// looking for another to close.
const GRACE_FOR_EVICTED: Duration = Duration::from_millis(50);

/// How often the accept loop, holding a new connection at the cap,
/// looks again for a connection to close.
const EVICTION_RETRY: Duration = Duration::from_millis(100);

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
    let connections = Arc::new(Connections {
        started: Instant::now(),
        open: Mutex::new(HashMap::new()),
    });
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
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
        // A slot: a free one, or the one of the connection that has kept
        // the server waiting longest; while neither is to be had, the new
        // connection waits here and the kernel queues the next ones.
        let slot = loop {
            if let Ok(slot) = Arc::clone(&slots).try_acquire_owned() {
                break Some(slot);
            }
            let evicted = connections.evict_one(limits.evict_after);
            let wait = if evicted {
                GRACE_FOR_EVICTED
            } else {
                EVICTION_RETRY
            };
            tokio::select! {
                () = &mut shutdown => break None,
                slot = Arc::clone(&slots).acquire_owned() => break Some(slot.context("the connection slots closed")?),
                () = tokio::time::sleep(wait) => {}
            }
        };
        let Some(slot) = slot else {
            break;
        };
        next_id += 1;
        let id = next_id;
        let tracked = Arc::new(Tracked {
            last_read: AtomicU64::new(connections.now_ms()),
            waiting: AtomicBool::new(true),
            evict: Notify::new(),
        });
        connections.lock().insert(id, Arc::clone(&tracked));
        let app = app.clone();
        let request_timeout = limits.request_timeout;
        let in_service = Arc::clone(&tracked);
        let clock = Arc::clone(&connections);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let app = app.clone();
            let connection = Arc::clone(&in_service);
            let clock = Arc::clone(&clock);
            async move {
                use http_body::Body as _;
                // A request without a body has arrived whole with its head.
                let whole = request.body().is_end_stream();
                connection.waiting.store(!whole, Ordering::Relaxed);
                let request = request.map(|body| {
                    Body::new(Arriving {
                        body,
                        connection: Arc::clone(&connection),
                    })
                });
                let answer = tokio::time::timeout(request_timeout, app.oneshot(request)).await;
                // Answered: the server waits for the next request, and the
                // connection's silence counts from now.
                connection
                    .last_read
                    .store(clock.now_ms(), Ordering::Relaxed);
                connection.waiting.store(true, Ordering::Relaxed);
                Ok::<_, Infallible>(match answer {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => timed_out(),
                })
            }
        });
        let io = Watched {
            stream,
            connection: Arc::clone(&tracked),
            connections: Arc::clone(&connections),
        };
        let connection = http.serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        let connections = Arc::clone(&connections);
        tokio::spawn(async move {
            tokio::select! {
                closed = connection => {
                    if let Err(e) = closed {
                        tracing::debug!(error = %e, "connection closed with an error");
                    }
                }
                () = tracked.evict.notified() => {
                    tracing::debug!("connection closed to make room for a new one");
                }
            }
            connections.lock().remove(&id);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
