//! A minimal AWS Lambda Runtime API (`/2018-06-01/runtime/...`) on
//! 127.0.0.1, enough to run a real `bootstrap` process and invoke it: the
//! function long-polls `invocation/next`, answers on `invocation/{id}/response`
//! (or `/error`), and reports init failures on `init/error`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};

/// What the function answered for one invocation.
#[derive(Debug)]
pub enum Outcome {
    /// `invocation/{id}/response`: the response document.
    Response(Value),
    /// `invocation/{id}/error` or `init/error`: the error document.
    Error(String),
}

struct Pending {
    id: String,
    event: Value,
    /// `Lambda-Runtime-Trace-Id`: the X-Ray trace the invocation is in.
    trace: String,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Clone)]
struct Shared {
    queue: Arc<Mutex<mpsc::Receiver<Pending>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>,
    init_error: Arc<Mutex<Option<String>>>,
}

/// A running emulator.
pub struct Emulator {
    address: SocketAddr,
    sender: mpsc::Sender<Pending>,
    shared: Shared,
    next_id: u64,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Emulator {
    /// Starts on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(16);
        let shared = Shared {
            queue: Arc::new(Mutex::new(receiver)),
            waiting: Arc::new(Mutex::new(HashMap::new())),
            init_error: Arc::new(Mutex::new(None)),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            sender,
            shared,
            next_id: 0,
            server,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    #[must_use]
    pub fn runtime_api(&self) -> String {
        self.address.to_string()
    }

    /// Delivers `event` to the function and waits (at most `timeout`) for
    /// its answer.
    ///
    /// # Errors
    /// When the function does not answer in time or reported an init error.
    pub async fn invoke(&mut self, event: Value, timeout: Duration) -> Result<Outcome, String> {
        self.invoke_traced(event, timeout, None).await
    }

    /// [`Self::invoke`] in a trace: `trace` is the X-Ray trace header
    /// Lambda hands the function as `Lambda-Runtime-Trace-Id`
    /// (`Root=1-…;Parent=…;Sampled=…`, the caller's — API Gateway's — when
    /// it started one); without it, a new root as Lambda makes for an
    /// invocation outside any trace.
    ///
    /// # Errors
    /// As [`Self::invoke`].
    pub async fn invoke_traced(
        &mut self,
        event: Value,
        timeout: Duration,
        trace: Option<String>,
    ) -> Result<Outcome, String> {
        self.next_id += 1;
        let id = format!("00000000-0000-4000-8000-{:012}", self.next_id);
        let trace = trace.unwrap_or_else(|| new_trace_header(self.next_id));
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending {
                id,
                event,
                trace,
                reply,
            })
            .await
            .map_err(|_| "emulator stopped".to_owned())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err("invocation dropped".to_owned()),
            Err(_) => match self.shared.init_error.lock().await.clone() {
                Some(e) => Err(format!("init error: {e}")),
                None => Err(format!("no answer within {timeout:?}")),
            },
        }
    }
}

/// A new X-Ray trace header (`Root=1-{epoch seconds}-{96 bits};Parent=…;
/// Sampled=0`), unique per process and invocation: the bits mix the
/// process id, the time and the invocation's number (SplitMix64); nothing
/// here needs them unpredictable.
fn new_trace_header(invocation: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let seed = u64::from(std::process::id()) << 32 ^ u64::from(now.subsec_nanos()) ^ invocation;
    let (a, b, c) = (mix(seed), mix(seed ^ 1), mix(seed ^ 2));
    format!(
        "Root=1-{:08x}-{:08x}{:016x};Parent={:016x};Sampled=0",
        now.as_secs() & 0xffff_ffff,
        a >> 32,
        b,
        c | 1
    )
}

async fn next(State(shared): State<Shared>) -> Response {
    let pending = shared.queue.lock().await.recv().await;
    let Some(pending) = pending else {
        return StatusCode::GONE.into_response();
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() + 30_000)
        .unwrap_or_default();
    let mut headers = HeaderMap::new();
    let put = |headers: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put(
        &mut headers,
        "lambda-runtime-aws-request-id",
        pending.id.clone(),
    );
    put(
        &mut headers,
        "lambda-runtime-deadline-ms",
        deadline.to_string(),
    );
    put(
        &mut headers,
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:eu-west-1:123456789012:function:twincell-api".to_owned(),
    );
    put(
        &mut headers,
        "lambda-runtime-trace-id",
        pending.trace.clone(),
    );
    put(&mut headers, "content-type", "application/json".to_owned());
    shared
        .waiting
        .lock()
        .await
        .insert(pending.id, pending.reply);
    (StatusCode::OK, headers, pending.event.to_string()).into_response()
}

async fn response(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let outcome = match serde_json::from_slice(&body) {
        Ok(v) => Outcome::Response(v),
        Err(e) => Outcome::Error(format!("response is not JSON: {e}")),
    };
    finish(&shared, &id, outcome).await
}

async fn error(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    finish(
        &shared,
        &id,
        Outcome::Error(String::from_utf8_lossy(&body).into_owned()),
    )
    .await
}

async fn finish(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    match shared.waiting.lock().await.remove(id) {
        Some(reply) => {
            let _ = reply.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn init_error(State(shared): State<Shared>, body: Bytes) -> StatusCode {
    *shared.init_error.lock().await = Some(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}
