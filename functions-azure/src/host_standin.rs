//! A stand-in for the Functions host's Cosmos DB trigger (contract mode
//! only, for local runs and tests: there is no Functions host on the
//! package registries). It does what the host documents for a
//! `cosmosDBTrigger` with `startFromBeginning: true` and an
//! `exponentialBackoff` retry policy with `maxRetryCount: -1`:
//!
//! - reads the container's change feed from the beginning, the lease
//!   being the reader it keeps (in memory: a restart starts over, which
//!   only re-sends what the peer already has);
//! - invokes the function with at most `maxItemsPerInvocation` documents,
//!   as the host does for a custom handler: `POST /<function>` on the
//!   handler's own port with `{"Data": {"documents": "<JSON array>"},
//!   "Metadata": {…}}`;
//! - a non-200 answer fails the invocation: the same batch is invoked
//!   again after a backoff (doubling from the minimum to the maximum
//!   interval) until it succeeds; the lease does not move past it;
//! - a drained partition is read again after `feedPollDelay`.

use std::time::Duration;

use serde_json::json;
use twincell_cosmos::CosmosEventStore;

/// The trigger's settings (the `function.json` values, shortened for
/// tests through `TWINCELL_STANDIN_*` variables).
#[derive(Debug, Clone)]
pub(crate) struct TriggerSettings {
    /// `maxItemsPerInvocation`.
    pub(crate) max_items: usize,
    /// `feedPollDelay`: how long a drained partition waits before it is
    /// polled again.
    pub(crate) poll: Duration,
    /// The container's physical partitions, which the reader visits in
    /// turn: an empty page waits `poll / partitions`, so each partition is
    /// polled every `poll` as the host, which reads them in parallel, does.
    pub(crate) partitions: u32,
    /// The retry policy's `minimumInterval`.
    pub(crate) min_retry: Duration,
    /// The retry policy's `maximumInterval`.
    pub(crate) max_retry: Duration,
}

/// Starts the stand-in: invokes `url` with the container's changes.
pub(crate) fn spawn(store: CosmosEventStore, url: String, settings: TriggerSettings) {
    tokio::spawn(async move {
        twincell_replication::publish::install_crypto();
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "trigger stand-in: no HTTP client");
                return;
            }
        };
        let mut reader = loop {
            match store.change_feed().await {
                Ok(r) => break r,
                Err(e) => {
                    tracing::warn!(error = %e, "trigger stand-in: change feed not readable yet");
                    tokio::time::sleep(settings.poll).await;
                }
            }
        };
        let mut invocation = 0u64;
        loop {
            let docs = match reader.next_page().await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "trigger stand-in: change feed read failed");
                    tokio::time::sleep(settings.poll).await;
                    continue;
                }
            };
            if docs.is_empty() {
                tokio::time::sleep(settings.poll / settings.partitions.max(1)).await;
                continue;
            }
            for chunk in docs.chunks(settings.max_items.max(1)) {
                invocation += 1;
                let mut retry = 0u32;
                let mut wait = settings.min_retry;
                loop {
                    let body = json!({
                        "Data": {"documents": serde_json::Value::Array(chunk.to_vec()).to_string()},
                        "Metadata": {
                            "sys": {"MethodName": crate::outbound::FUNCTION, "UtcNow": twincell_core::Clock::now(&twincell_core::SystemClock).to_string(), "RandGuid": format!("00000000-0000-4000-8000-{invocation:012}")},
                            "RetryContext": {"RetryCount": retry, "MaxRetryCount": -1}
                        }
                    });
                    let ok = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        break;
                    }
                    retry += 1;
                    tracing::warn!(
                        retry,
                        "trigger stand-in: invocation failed; retrying the same batch"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(settings.max_retry);
                }
            }
        }
    });
}
