//! Publishing a cell's own events over HTTP (feature `publish`): to an
//! Event Grid topic (`aeg-sas-key`) or straight to the peer's
//! `/replication/events` (`x-twincell-replication-key`). Same batches,
//! same receiver.

use std::time::Duration;

use twincell_core::RecordedEvent;

use crate::config::Target;
use crate::signing::Signer;
use crate::wire::{self, BATCH_CONTENT_TYPE, MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
use crate::{BoxFuture, Publish, PublishError};

/// Attempts per batch for failures worth retrying at once (unreachable,
/// timeouts, 408, 429, 5xx); the caller's own retry (the event source
/// mapping, the trigger's retry policy) takes over after them.
pub const ATTEMPTS: u32 = 3;
/// Time to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for one request, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest piece of an error answer kept for the log.
const ANSWER_EXCERPT: usize = 300;

/// Installs *ring* as the process's TLS crypto provider unless one is set:
/// the workspace builds reqwest without a provider of its own, so the
/// binaries carry one TLS implementation. Call it before building any
/// other reqwest client.
pub fn install_crypto() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Sends events to one [`Target`].
#[derive(Debug, Clone)]
pub struct Publisher {
    client: reqwest::Client,
    target: Target,
    signer: Option<Signer>,
    max_bytes: usize,
    max_events: usize,
}

/// Why a publisher could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the replication HTTP client: {0}")]
pub struct BuildError(String);

impl Publisher {
    /// A publisher to `target`, with one HTTP client (rustls on *ring*,
    /// the platform's trust roots) kept for every publish.
    ///
    /// # Errors
    /// [`BuildError`] when the HTTP client cannot be built.
    pub fn new(target: Target) -> Result<Self, BuildError> {
        install_crypto();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError(e.to_string()))?;
        Ok(Self {
            client,
            target,
            signer: None,
            max_bytes: MAX_BATCH_BYTES,
            max_events: MAX_BATCH_EVENTS,
        })
    }

    /// Every event published is signed by `signer` (this cell's key; see
    /// [`crate::signing`]).
    #[must_use]
    pub fn signed_by(mut self, signer: Option<Signer>) -> Self {
        self.signer = signer;
        self
    }

    /// Smaller batches than the transports allow (tests, and targets with
    /// lower limits).
    #[must_use]
    pub fn with_batch_limits(mut self, max_bytes: usize, max_events: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self.max_events = max_events.max(1);
        self
    }

    /// The target.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Publishes `events` in order, batch by batch, each CloudEvent with
    /// the trace context its event keeps, each request with `traceparent`
    /// (the publishing invocation's) when given; stops at the first batch
    /// that fails.
    ///
    /// # Errors
    /// [`PublishError`] with how many events went out before.
    pub async fn publish_traced(
        &self,
        events: &[RecordedEvent],
        traceparent: Option<&str>,
    ) -> Result<usize, PublishError> {
        let batches = wire::batches(
            events,
            self.signer.as_ref(),
            self.max_bytes,
            self.max_events,
        )
        .map_err(|e| PublishError {
            published: 0,
            retryable: false,
            reason: e.to_string(),
        })?;
        let mut published = 0;
        for batch in batches {
            self.send(&batch.body, traceparent)
                .await
                .map_err(|(retryable, reason)| PublishError {
                    published,
                    retryable,
                    reason,
                })?;
            published += batch.events;
        }
        Ok(published)
    }

    /// POSTs one batch, retrying what may pass on a second try.
    async fn send(&self, body: &[u8], traceparent: Option<&str>) -> Result<(), (bool, String)> {
        let mut last = (true, String::new());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * 4u64.pow(attempt - 1))).await;
            }
            last = match self.post(body, traceparent).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if !last.0 {
                break;
            }
        }
        Err(last)
    }

    async fn post(&self, body: &[u8], traceparent: Option<&str>) -> Result<(), (bool, String)> {
        let (header, key) = self.target.key_header();
        let mut request = self
            .client
            .post(self.target.publish_url())
            .header(reqwest::header::CONTENT_TYPE, BATCH_CONTENT_TYPE)
            .header(header, key.expose())
            .body(body.to_vec());
        if let Some(trace) = traceparent {
            request = request.header("traceparent", trace);
        }
        let response = request.send().await.map_err(|e| {
            (
                true,
                format!("POST {}: {}", self.target.publish_url(), describe(&e)),
            )
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retryable = status.is_server_error()
            || matches!(status.as_u16(), 408 | 429)
            // 422: the peer does not know an event type yet (it runs an
            // older version); it will once it is upgraded.
            || status.as_u16() == 422;
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(ANSWER_EXCERPT).collect();
        Err((
            retryable,
            format!("POST {}: {status}: {excerpt}", self.target.publish_url()),
        ))
    }
}

/// An error with its causes (reqwest's own text omits them).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A [`Publisher`] built on its first publish: building the HTTP client
/// loads the platform's trust roots (about 7 ms), which a Lambda whose
/// publishes are rare (the `api`, for resync) should not pay at every cold
/// start.
#[derive(Debug)]
pub struct LazyPublisher {
    target: Target,
    signer: Option<Signer>,
    publisher: std::sync::OnceLock<Publisher>,
}

impl LazyPublisher {
    /// A publisher to `target`, signing with `signer`, not built yet.
    #[must_use]
    pub fn new(target: Target, signer: Option<Signer>) -> Self {
        Self {
            target,
            signer,
            publisher: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> Result<&Publisher, PublishError> {
        if let Some(p) = self.publisher.get() {
            return Ok(p);
        }
        let built = Publisher::new(self.target.clone())
            .map_err(|e| PublishError {
                published: 0,
                retryable: true,
                reason: e.to_string(),
            })?
            .signed_by(self.signer.clone());
        // Two first publishes may both build one; either is kept.
        Ok(self.publisher.get_or_init(|| built))
    }
}

impl Publish for LazyPublisher {
    fn publish<'a>(
        &'a self,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<usize, PublishError>> {
        Box::pin(async move { self.get()?.publish_traced(events, None).await })
    }
}

/// The publisher of `target` as the router's resync and the change-feed
/// function want it, signing with `signer`, built on first use (none
/// without a target).
#[must_use]
pub fn shared(
    target: Option<Target>,
    signer: Option<Signer>,
) -> Option<std::sync::Arc<dyn Publish>> {
    let publisher: std::sync::Arc<dyn Publish> =
        std::sync::Arc::new(LazyPublisher::new(target?, signer));
    Some(publisher)
}

impl Publish for Publisher {
    fn publish<'a>(
        &'a self,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<usize, PublishError>> {
        Box::pin(self.publish_traced(events, None))
    }
}
