//! Metrics, as CloudWatch Embedded Metric Format lines, the same in both
//! cells: CloudWatch turns a Lambda's lines into metrics, and in Azure the
//! same lines are log records (the Functions host's `traces`) that a Kusto
//! query aggregates.
//!
//! Code anywhere records through the `metrics` facade (`metrics::counter!`
//! and `histogram!`); the recorder in `recorder.rs` aggregates and writes
//! the documents (why not a kept crate: see there). A Lambda flushes after
//! every invocation, as Powertools does, so a function frozen between
//! invocations keeps nothing unwritten ([`Flush::EveryRequest`]); the Azure
//! handler, which lives on, once a second ([`Flush::EverySecond`]).
//!
//! Namespace [`NAMESPACE`]; every document has the dimensions `service`
//! and `cell`, request metrics also `route` (the template) and
//! `status_class` (`2xx` …), replication ones `origin_cell` and `outcome`.
//! No dimension is per request (no id, no raw path), so a dimension set has
//! a bounded number of values, within EMF's 30 dimensions and 100 metrics.
//!
//! | metric | unit | dimensions beyond service and cell |
//! |---|---|---|
//! | [`REQUESTS`] | Count | route, status_class |
//! | [`LATENCY`] | Microseconds | route, status_class |
//! | [`COLD_STARTS`] | Count | |
//! | [`CONTENTION_RETRIES`] | Count | |
//! | [`REPLICATED_EVENTS`] | Count | origin_cell, outcome (`stored`, `already_present`, `diverged`, `own_origin`, `untrusted`, `malformed`, `unknown_type`, `unavailable`) |
//! | [`REPLICATION_LAG`] | Milliseconds | origin_cell (commit at the origin to stored here) |
//! | [`PUBLISHED_EVENTS`] | Count | outcome (`published`, `failed`): every publisher of own events, the AWS `replicator`, Azure's `replicate-outbound`, a SQLite cell's feed |
//! | [`PUBLISH_LAG`] | Milliseconds | (an own event's commit to its publishing: how far behind the publisher is) |
//! | [`PUBLISHER_BACKLOG`] (gauge) | Count | (a cell on SQLite: its own events on the change feed not yet published; in the clouds Lambda's `IteratorAge` and the Cosmos DB change feed estimator count it) |
//! | `store_calls`, `store_errors`, `store_latency` | Count, Count, Microseconds | op, and error for errors ([`twincell_core::metered`]) |

mod recorder;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Histogram, Unit};

/// The one CloudWatch namespace of both cells.
pub const NAMESPACE: &str = "twincell";
/// Requests answered.
pub const REQUESTS: &str = "requests";
/// Time to answer a request.
pub const LATENCY: &str = "latency";
/// First requests of a process.
pub const COLD_STARTS: &str = "cold_starts";
/// Lost version races a command retried (the core's command loop).
pub const CONTENTION_RETRIES: &str = twincell_core::service::CONTENTION_RETRIES_METRIC;
/// Replicated events received, by what became of them.
pub const REPLICATED_EVENTS: &str = "replicated_events";
/// From the origin's commit of an event to its storing here.
pub const REPLICATION_LAG: &str = "replication_lag";
/// Own events handed to the replication target, by outcome (every
/// publisher: `twincell_replication::metrics`).
pub const PUBLISHED_EVENTS: &str = twincell_replication::metrics::PUBLISHED_EVENTS;
/// From an own event's commit to its publishing.
pub const PUBLISH_LAG: &str = twincell_replication::metrics::PUBLISH_LAG;
/// Own events not yet published (a SQLite cell).
pub const PUBLISHER_BACKLOG: &str = twincell_replication::metrics::PUBLISHER_BACKLOG;

/// Every metric the cells write and the dimensions of its documents beyond
/// `service` and `cell`, in the order EMF lists them: what the dashboards
/// (`dashboards/`) are checked against, and what the cells' documents are
/// checked to carry.
pub const DOCUMENTS: [(&str, &[&str]); 12] = [
    (REQUESTS, &["route", "status_class"]),
    (LATENCY, &["route", "status_class"]),
    (COLD_STARTS, &[]),
    (CONTENTION_RETRIES, &[]),
    (REPLICATED_EVENTS, &["origin_cell", "outcome"]),
    (REPLICATION_LAG, &["origin_cell"]),
    (twincell_core::metered::STORE_CALLS, &["op"]),
    (twincell_core::metered::STORE_ERRORS, &["op", "error"]),
    (twincell_core::metered::STORE_LATENCY, &["op"]),
    (PUBLISHED_EVENTS, &["outcome"]),
    (PUBLISH_LAG, &[]),
    (PUBLISHER_BACKLOG, &[]),
];

/// The metrics that are histograms, written in EMF's aggregated form
/// (`{"Values", "Counts", "Max", "Min", "Count", "Sum"}`, see
/// `recorder.rs`); the others are counts or a gauge, written as a number.
pub const HISTOGRAMS: [&str; 4] = [
    LATENCY,
    REPLICATION_LAG,
    twincell_core::metered::STORE_LATENCY,
    PUBLISH_LAG,
];

/// When a cell writes what it recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// After every request (a Lambda: frozen between invocations).
    EveryRequest,
    /// Once a second, by a timer, off the request path (a long-lived
    /// process).
    EverySecond,
}

struct Installed {
    emf: Arc<recorder::Emf>,
    flush: Flush,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Installs the recorder for this process's cell (once; later calls change
/// nothing) unless `TWINCELL_METRICS` is `off`: metrics are on by default
/// (`emf`), at about 2 % of the request path's CPU
/// (docs/observability.md#what-they-cost).
///
/// # Errors
/// Any value of `TWINCELL_METRICS` but `emf` or `off`, named.
pub fn init_metrics(cell: &str, flush: Flush) -> Result<(), String> {
    match std::env::var("TWINCELL_METRICS").ok().as_deref() {
        Some("off") => return Ok(()),
        None | Some("" | "emf") => {}
        Some(other) => {
            return Err(format!(
                "TWINCELL_METRICS={other:?}: expected \"emf\" (CloudWatch EMF lines) or \"off\""
            ));
        }
    }
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let service = crate::logging::process().service.clone();
    let emf = Arc::new(recorder::Emf::new(
        NAMESPACE,
        vec![("service", service), ("cell", cell.to_owned())],
    ));
    match metrics::set_global_recorder(recorder::Shared(Arc::clone(&emf))) {
        Ok(()) => {
            let _ = INSTALLED.set(Installed { emf, flush });
            if flush == Flush::EverySecond
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                runtime.spawn(async {
                    let mut every = tokio::time::interval(Duration::from_secs(1));
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    loop {
                        every.tick().await;
                        // Off the runtime's workers: the write to stdout
                        // may block (a full pipe), which no request should
                        // wait behind.
                        let _ = tokio::task::spawn_blocking(self::flush).await;
                    }
                });
            }
            metrics::describe_counter!(REQUESTS, Unit::Count, "requests answered");
            metrics::describe_histogram!(LATENCY, Unit::Microseconds, "time to answer");
            metrics::describe_counter!(COLD_STARTS, Unit::Count, "first requests of a process");
            metrics::describe_counter!(CONTENTION_RETRIES, Unit::Count, "lost version races");
            metrics::describe_counter!(REPLICATED_EVENTS, Unit::Count, "replicated events");
            metrics::describe_counter!(
                twincell_core::metered::STORE_CALLS,
                Unit::Count,
                "store calls"
            );
            metrics::describe_counter!(
                twincell_core::metered::STORE_ERRORS,
                Unit::Count,
                "store calls that failed"
            );
            metrics::describe_histogram!(
                twincell_core::metered::STORE_LATENCY,
                Unit::Microseconds,
                "store call time"
            );
            metrics::describe_counter!(PUBLISHED_EVENTS, Unit::Count, "own events published");
            metrics::describe_histogram!(
                PUBLISH_LAG,
                Unit::Milliseconds,
                "own event commit to published"
            );
            metrics::describe_gauge!(
                PUBLISHER_BACKLOG,
                Unit::Count,
                "own events not yet published"
            );
            metrics::describe_histogram!(
                REPLICATION_LAG,
                Unit::Milliseconds,
                "origin commit to stored here"
            );
        }
        Err(_) => tracing::warn!("metrics are off: another recorder is installed"),
    }
    Ok(())
}

/// Whether this process writes metrics.
#[must_use]
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// Writes what was recorded since the last flush, one EMF document per
/// dimension set (more when a histogram holds over 100 values), to stdout
/// (where the cells' log lines go) in one write.
pub fn flush() {
    if let Some(installed) = INSTALLED.get() {
        let lines = installed.emf.drain(now_ms());
        if !lines.is_empty()
            && let Err(e) = std::io::Write::write_all(&mut std::io::stdout().lock(), &lines)
        {
            tracing::warn!(error = %e, "metrics were not written");
        }
    }
}

/// What the router calls at the end of a request: [`flush`] when this
/// process flushes after every request; otherwise the timer does.
pub fn flush_due() {
    if INSTALLED
        .get()
        .is_some_and(|installed| installed.flush == Flush::EveryRequest)
    {
        flush();
    }
}

/// The status classes, in the order [`class_of`] numbers them.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`STATUS_CLASSES`] of a status's class.
fn class_of(status: u16) -> usize {
    match status / 100 {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        _ => 4,
    }
}

/// `2xx`, `4xx` … of a status.
fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES
        .get(class_of(status))
        .copied()
        .unwrap_or("5xx")
}

/// A request metric's handles: its count and its latency.
type RequestHandles = (Counter, Histogram);

/// The request metrics' handles by route template and status class, each
/// made once: a request finds its own under a read lock without building a
/// key. Bounded: routes are the router's templates and `unmatched`.
static REQUEST_HANDLES: OnceLock<RwLock<HashMap<String, [Option<RequestHandles>; 5]>>> =
    OnceLock::new();

/// Counts a request answered and records its latency, by `route` (the
/// matched template, or `unmatched`) and status class, and a cold start.
/// Nothing when metrics are off.
pub(crate) fn record_request(route: &str, status: u16, latency: Duration, cold_start: bool) {
    if !enabled() {
        return;
    }
    let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
    let record = |(count, latency): &RequestHandles| {
        count.increment(1);
        latency.record(micros);
    };
    let class = class_of(status);
    let handles = REQUEST_HANDLES.get_or_init(|| RwLock::new(HashMap::new()));
    let known = handles
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
        .and_then(|classes| classes.get(class))
        .and_then(Option::as_ref)
        .map(record);
    if known.is_none() {
        // The first of its route and class: made under the write lock.
        let mut all = handles.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = all.entry(route.to_owned()).or_default().get_mut(class) {
            record(slot.get_or_insert_with(|| {
                let labels = [
                    ("route", route.to_owned()),
                    ("status_class", status_class(status).to_owned()),
                ];
                (
                    metrics::counter!(REQUESTS, &labels),
                    metrics::histogram!(LATENCY, &labels),
                )
            }));
        }
    }
    if cold_start {
        metrics::counter!(COLD_STARTS).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(
            [101, 200, 304, 422, 503, 600].map(status_class),
            ["1xx", "2xx", "3xx", "4xx", "5xx", "5xx"]
        );
    }
}
