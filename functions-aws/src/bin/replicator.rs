//! The AWS cell's `replicator` Lambda: on the events table's DynamoDB
//! stream, publishes the cell's own events to the replication target (an
//! Event Grid topic, or the peer's `/replication/events`) as CloudEvents
//! batches; see `twincell_aws::replicator`.
//!
//! Configuration (read once, during init; a bad value fails the init):
//! - `TWINCELL_CELL`: this cell's id (default `aws`): the origin forwarded.
//! - `TWINCELL_REPLICATION_TARGET`, `TWINCELL_REPLICATION_TARGET_KIND`
//!   (`eventgrid` | `webhook`), and the target's key from
//!   `TWINCELL_REPLICATION_TARGET_KEY_SECRET_ID` (Secrets Manager) or,
//!   locally, `TWINCELL_REPLICATION_TARGET_KEY`. Required.
//! - `RUST_LOG`: log filter (default `info`); JSON lines to CloudWatch.
//! - `TWINCELL_METRICS`: `emf` (the default) writes the publishing metrics
//!   (`published_events`, `publish_lag`) as CloudWatch EMF lines after
//!   every invocation; `off` writes none.

use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use twincell_aws::replicator::{Replicator, traceparent_from_xray};
use twincell_core::CellId;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    twincell_http::init_logs(twincell_http::LogTo::Lambda);
    let cell = std::env::var("TWINCELL_CELL")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| "aws".to_owned());
    let this = CellId::new(cell.trim()).map_err(|e| format!("TWINCELL_CELL {cell:?}: {e}"))?;
    twincell_http::init_metrics(this.as_str(), twincell_http::emf::Flush::EveryRequest)?;
    let settings = twincell_aws::secrets::replication_settings().await?;
    let target = settings
        .target
        .ok_or("TWINCELL_REPLICATION_TARGET is not set: the replicator has nowhere to publish")?;
    tracing::info!(cell = %this, target = target.publish_url(), "replicator ready");
    let publisher =
        twincell_replication::publish::Publisher::new(target)?.signed_by(settings.signer);
    let replicator = Replicator::new(this, publisher);
    let replicator = &replicator;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::dynamodb::Event>| async move {
            let trace = event
                .context
                .xray_trace_id
                .as_deref()
                .and_then(traceparent_from_xray);
            let handled = replicator.handle(event.payload, trace.as_deref()).await;
            // Written before the answer: the function may be frozen after.
            twincell_http::emf::flush();
            handled.map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
