//! The `replicator` Lambda's work: from a batch of the events table's
//! DynamoDB stream records, publish this cell's own events, in order, as
//! CloudEvents batches to the replication target.
//!
//! - Replicated events (another origin) land in the table too: they are
//!   skipped, never echoed back.
//! - Partial failure: the answer names in `batchItemFailures` the
//!   sequence number of the first record not published (a publish failure,
//!   or a record that does not decode); Lambda checkpoints before it and
//!   retries from there, so nothing is skipped. With `BisectBatchOnFunctionError`
//!   and a bounded `MaximumRetryAttempts`, a record that can never be
//!   published ends in the on-failure destination instead of blocking the
//!   shard, and a resync re-sends it later.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde::Deserialize;
use twincell_core::{CellId, RecordedEvent};
use twincell_replication::publish::Publisher;

/// The attributes of an events-table item the replicator reads.
#[derive(Deserialize)]
struct Image {
    origin: String,
    event: String,
}

/// Why a batch can't be answered record by record.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BatchError(String);

/// Publishes one cell's own events from its table's stream.
#[derive(Debug)]
pub struct Replicator {
    this: CellId,
    publisher: Publisher,
}

fn decode(record: &EventRecord) -> Result<RecordedEvent, String> {
    let image: Image = serde_dynamo::from_item(record.change.new_image.clone())
        .map_err(|e| format!("the new image is not an event item: {e}"))?;
    let event: RecordedEvent = serde_json::from_str(&image.event)
        .map_err(|e| format!("its event does not decode: {e}"))?;
    if event.origin().as_str() != image.origin {
        return Err(format!(
            "its origin attribute {} is not its event's origin {}",
            image.origin,
            event.origin()
        ));
    }
    Ok(event)
}

/// Whether the record is of a snapshot item (see `twincell_dynamodb`),
/// which the events table holds beside the events.
fn is_snapshot(record: &EventRecord) -> bool {
    matches!(
        record.change.new_image.get("kind"),
        Some(serde_dynamo::AttributeValue::S(kind)) if kind == twincell_dynamodb::SNAPSHOT_KIND
    )
}

fn failure(sequence_number: &str) -> DynamoDbEventResponse {
    let mut item = DynamoDbBatchItemFailure::default();
    item.item_identifier = Some(sequence_number.to_owned());
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures = vec![item];
    response
}

impl Replicator {
    /// The replicator of cell `this`, publishing with `publisher`.
    #[must_use]
    pub fn new(this: CellId, publisher: Publisher) -> Self {
        Self { this, publisher }
    }

    /// Handles one batch of stream records.
    ///
    /// # Errors
    /// [`BatchError`] when a record that must be retried has no sequence
    /// number to name it by: Lambda then retries the whole batch.
    pub async fn handle(
        &self,
        batch: Event,
        traceparent: Option<&str>,
    ) -> Result<DynamoDbEventResponse, BatchError> {
        let mut own: Vec<(Option<String>, RecordedEvent)> = Vec::new();
        let mut stop: Option<Option<String>> = None;
        let (mut skipped, mut others) = (0usize, 0usize);
        for record in &batch.records {
            let sequence = record
                .change
                .sequence_number
                .clone()
                .filter(|s| !s.is_empty());
            if record.event_name != "INSERT" {
                // Items are written once and never modified or removed.
                skipped += 1;
                continue;
            }
            if is_snapshot(record) {
                // A snapshot is local, derived data: never replicated.
                skipped += 1;
                continue;
            }
            match decode(record) {
                Ok(event) if event.origin() == &self.this => own.push((sequence, event)),
                Ok(_) => others += 1,
                Err(why) => {
                    tracing::error!(sequence_number = sequence.as_deref().unwrap_or_default(), error = %why, "a stream record does not decode; retrying from it");
                    stop = Some(sequence);
                    break;
                }
            }
        }
        let events: Vec<RecordedEvent> = own.iter().map(|(_, e)| e.clone()).collect();
        let name = |sequence: &Option<String>| match sequence {
            Some(s) => Ok(failure(s)),
            None => Err(BatchError(
                "a record to retry has no sequence number; failing the whole batch".into(),
            )),
        };
        let result = self.publisher.publish_traced(&events, traceparent).await;
        twincell_replication::metrics::record_publish(&events, &result);
        match result {
            Ok(published) => {
                tracing::info!(
                    published,
                    replicated_skipped = others,
                    skipped,
                    "stream batch published"
                );
                match &stop {
                    Some(sequence) => name(sequence),
                    None => Ok(DynamoDbEventResponse::default()),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing failed; the stream retries from the first event not published");
                let first = own
                    .get(e.published)
                    .map(|(s, _)| s.clone())
                    .unwrap_or_default();
                name(&first)
            }
        }
    }
}

/// The W3C `traceparent` of a Lambda invocation's X-Ray trace header: the
/// router's own conversion ([`twincell_http::trace`]).
pub use twincell_http::trace::traceparent_from_xray;

#[cfg(test)]
mod tests {
    use super::traceparent_from_xray;

    #[test]
    fn an_xray_header_becomes_a_w3c_traceparent() {
        assert_eq!(
            traceparent_from_xray(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            )
            .as_deref(),
            Some("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01")
        );
        assert_eq!(
            traceparent_from_xray(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
            )
            .as_deref(),
            Some("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00")
        );
        for bad in [
            "",
            "Root=1-5759e988-bd862e3fe1be46a994272793",
            "Root=2-a-b;Parent=53995c3f42cd8ad8",
            "Root=1-xyz-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
        ] {
            assert_eq!(traceparent_from_xray(bad), None, "{bad}");
        }
    }
}
