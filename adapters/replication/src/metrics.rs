//! What every publisher of a cell's own events counts, the same in both
//! clouds and on SQLite (the AWS `replicator` Lambda, the Azure
//! `replicate-outbound` function, a SQLite cell's change-feed publisher),
//! on the `metrics` facade: the binaries install the recorder (CloudWatch
//! EMF lines, `twincell-http`'s `emf`); without one, recording does nothing.
//!
//! | metric | unit | dimensions |
//! |---|---|---|
//! | [`PUBLISHED_EVENTS`] | Count | `outcome`: `published`, `failed` (not published this time; retried) |
//! | [`PUBLISH_LAG`] | Milliseconds | (from an event's commit to its publishing: how far the publisher is behind, in time) |
//! | [`PUBLISHER_BACKLOG`] (gauge) | Count | (own events not yet published, where the feed can count them: a SQLite cell) |

use std::time::{SystemTime, UNIX_EPOCH};

use twincell_core::RecordedEvent;

use crate::PublishError;

/// Own events handed to the replication target, by outcome.
pub const PUBLISHED_EVENTS: &str = "published_events";
/// From an event's commit to its publishing.
pub const PUBLISH_LAG: &str = "publish_lag";
/// Own events on the change feed not yet published (a SQLite cell, set
/// after every pass; in the clouds Lambda's `IteratorAge` and the Cosmos DB
/// change feed estimator count it).
pub const PUBLISHER_BACKLOG: &str = "publisher_backlog";

/// Counts a publish of `events` that ended in `result` (on a failure, the
/// events before the first one not published went out), and the lag of
/// each that went out.
pub fn record_publish(events: &[RecordedEvent], result: &Result<usize, PublishError>) {
    let published = result
        .as_ref()
        .map_or_else(|e| e.published, |_| events.len());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let sent = events.get(..published).unwrap_or(events);
    if !sent.is_empty() {
        metrics::counter!(PUBLISHED_EVENTS, "outcome" => "published")
            .increment(u64::try_from(sent.len()).unwrap_or(u64::MAX));
        let lag = metrics::histogram!(PUBLISH_LAG);
        for event in sent {
            // Whole milliseconds; a clock behind the commit's reads 0.
            let ms = now.saturating_sub(event.recorded_at().unix_millis()).max(0);
            lag.record(u32::try_from(ms).unwrap_or(u32::MAX));
        }
    }
    let failed = events.len().saturating_sub(sent.len());
    if failed > 0 {
        metrics::counter!(PUBLISHED_EVENTS, "outcome" => "failed")
            .increment(u64::try_from(failed).unwrap_or(u64::MAX));
    }
}
