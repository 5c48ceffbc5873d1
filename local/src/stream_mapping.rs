//! Lambda's event source mapping on a DynamoDB stream, as Lambda documents
//! it for `StartingPosition: TRIM_HORIZON`, `ParallelizationFactor: 1`,
//! `FunctionResponseTypes: [ReportBatchItemFailures]`,
//! `BisectBatchOnFunctionError` and a bounded `MaximumRetryAttempts`:
//!
//! - reads each shard in order from its start with the real Streams API
//!   (`ListStreams`, `DescribeStream`, `GetShardIterator`, `GetRecords`),
//!   at most `batch_size` records per invocation;
//! - invokes the function (the real `replicator` binary under a Lambda
//!   Runtime API emulator) with the stream event shape Lambda sends;
//! - a `batchItemFailures` answer checkpoints before the lowest sequence
//!   number named and retries from there; an empty list is success; a
//!   named item that is empty or not in the batch fails the whole batch;
//! - a function error retries the batch; with bisect, a failing batch is
//!   split in halves, each retried on its own;
//! - past `max_retries` for a record, its batch goes to the on-failure
//!   destination (here: counted and logged with its sequence range) and
//!   reading continues.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use twincell_contract::emulator::{Emulator, Outcome};

/// How the mapping reads and retries.
#[derive(Debug, Clone)]
pub struct MappingConfig {
    /// The table whose stream is read.
    pub table: String,
    /// `BatchSize`.
    pub batch_size: i32,
    /// `MaximumRetryAttempts`.
    pub max_retries: u32,
    /// The wait between polls of a shard with nothing new.
    pub poll: Duration,
    /// The first wait before a retry (doubling, at most 32 times it).
    pub retry_backoff: Duration,
    /// How long an invocation may take.
    pub timeout: Duration,
}

/// What the mapping did, for logs and tests.
#[derive(Debug, Default)]
pub struct MappingStats {
    /// Records handed to the function and reported done.
    pub records_done: AtomicU64,
    /// Invocations.
    pub invocations: AtomicU64,
    /// Retried batches (a partial or whole failure).
    pub retries: AtomicU64,
    /// Records sent to the on-failure destination.
    pub records_failed: AtomicU64,
}

/// A Streams client on the cell's shared AWS configuration
/// ([`twincell_dynamodb::sdk_config`]): `AWS_ENDPOINT_URL` for moto.
pub async fn client() -> aws_sdk_dynamodbstreams::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(30))
        .build();
    aws_sdk_dynamodbstreams::Client::new(&twincell_dynamodb::sdk_config(timeouts).await)
}

/// A DynamoDB stream attribute value in the JSON Lambda sends.
#[must_use]
pub fn attribute_json(value: &AttributeValue) -> Value {
    let b64 = |b: &aws_sdk_dynamodbstreams::primitives::Blob| {
        base64::engine::general_purpose::STANDARD.encode(b.as_ref())
    };
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::B(b) => json!({"B": b64(b)}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(n) => json!({"NULL": n}),
        AttributeValue::Ss(v) => json!({"SS": v}),
        AttributeValue::Ns(v) => json!({"NS": v}),
        AttributeValue::Bs(v) => json!({"BS": v.iter().map(b64).collect::<Vec<_>>()}),
        AttributeValue::L(v) => json!({"L": v.iter().map(attribute_json).collect::<Vec<_>>()}),
        AttributeValue::M(m) => json!({"M": item_json(m)}),
        _ => json!({"NULL": true}),
    }
}

fn item_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), attribute_json(v)))
            .collect(),
    )
}

/// One stream record as the `Records` entry of a Lambda DynamoDB event.
#[must_use]
pub fn record_json(record: &Record, stream_arn: &str) -> Value {
    let change = record.dynamodb();
    let mut dynamodb = serde_json::Map::new();
    if let Some(c) = change {
        if let Some(t) = c.approximate_creation_date_time() {
            dynamodb.insert("ApproximateCreationDateTime".into(), t.secs().into());
        }
        if let Some(k) = c.keys() {
            dynamodb.insert("Keys".into(), item_json(k));
        }
        if let Some(n) = c.new_image() {
            dynamodb.insert("NewImage".into(), item_json(n));
        }
        if let Some(o) = c.old_image() {
            dynamodb.insert("OldImage".into(), item_json(o));
        }
        if let Some(s) = c.sequence_number() {
            dynamodb.insert("SequenceNumber".into(), s.into());
        }
        dynamodb.insert("SizeBytes".into(), c.size_bytes().unwrap_or(0).into());
        if let Some(v) = c.stream_view_type() {
            dynamodb.insert("StreamViewType".into(), v.as_str().into());
        }
    }
    json!({
        "eventID": record.event_id().unwrap_or_default(),
        "eventName": record.event_name().map_or("", |n| n.as_str()),
        "eventVersion": record.event_version().unwrap_or("1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": record.aws_region().unwrap_or("us-east-1"),
        "dynamodb": dynamodb,
        "eventSourceARN": stream_arn,
    })
}

fn sequence(record: &Value) -> &str {
    record
        .get("dynamodb")
        .and_then(|d| d.get("SequenceNumber"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// What an invocation answered about a batch of `n` records: how many
/// from the start are done.
fn done_of(outcome: &Result<Outcome, String>, batch: &[Value]) -> usize {
    let Ok(Outcome::Response(answer)) = outcome else {
        return 0;
    };
    let Some(failures) = answer.get("batchItemFailures").and_then(Value::as_array) else {
        // Without the field the whole batch succeeded.
        return batch.len();
    };
    let mut first = batch.len();
    for f in failures {
        let id = f
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match batch
            .iter()
            .position(|r| !id.is_empty() && sequence(r) == id)
        {
            Some(i) => first = first.min(i),
            None => return 0,
        }
    }
    first
}

/// Runs the mapping forever: waits for the table's stream, then reads its
/// shards and invokes `function`.
pub async fn run(
    config: MappingConfig,
    function: Emulator,
    stats: Arc<MappingStats>,
) -> anyhow::Result<()> {
    let streams = client().await;
    let stream_arn = loop {
        match streams
            .list_streams()
            .table_name(&config.table)
            .send()
            .await
        {
            Ok(r) => {
                if let Some(arn) = r
                    .streams()
                    .iter()
                    .filter_map(|s| s.stream_arn())
                    .next_back()
                {
                    break arn.to_owned();
                }
            }
            Err(e) => {
                tracing::debug!(error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(&e), "no stream yet")
            }
        }
        tokio::time::sleep(config.poll).await;
    };
    tracing::info!(%stream_arn, "reading the table's stream");
    let function = Arc::new(Mutex::new(function));
    let mut readers: HashMap<String, tokio::task::JoinHandle<anyhow::Result<()>>> = HashMap::new();
    loop {
        let described = streams
            .describe_stream()
            .stream_arn(&stream_arn)
            .send()
            .await?;
        if let Some(d) = described.stream_description() {
            for shard in d.shards() {
                let Some(id) = shard.shard_id() else { continue };
                readers.entry(id.to_owned()).or_insert_with(|| {
                    tokio::spawn(read_shard(
                        streams.clone(),
                        stream_arn.clone(),
                        id.to_owned(),
                        config.clone(),
                        Arc::clone(&function),
                        Arc::clone(&stats),
                    ))
                });
            }
        }
        for (id, reader) in &readers {
            if reader.is_finished() {
                anyhow::bail!("the reader of shard {id} stopped");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn read_shard(
    streams: aws_sdk_dynamodbstreams::Client,
    arn: String,
    shard: String,
    config: MappingConfig,
    function: Arc<Mutex<Emulator>>,
    stats: Arc<MappingStats>,
) -> anyhow::Result<()> {
    let mut iterator = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?
        .shard_iterator()
        .map(str::to_owned);
    // Records read but not yet reported done, in stream order.
    let mut backlog: Vec<Value> = Vec::new();
    while iterator.is_some() || !backlog.is_empty() {
        if backlog.is_empty() {
            let Some(it) = iterator.take() else { break };
            let page = streams
                .get_records()
                .shard_iterator(&it)
                .limit(config.batch_size)
                .send()
                .await?;
            iterator = page.next_shard_iterator().map(str::to_owned);
            backlog = page
                .records()
                .iter()
                .map(|r| record_json(r, &arn))
                .collect();
            if backlog.is_empty() {
                tokio::time::sleep(config.poll).await;
                continue;
            }
        }
        let size = usize::try_from(config.batch_size)
            .unwrap_or(100)
            .min(backlog.len());
        let batch: Vec<Value> = backlog.drain(..size).collect();
        let rest = process(&batch, &config, &function, &stats).await;
        // Whatever failed for good went to the on-failure destination; the
        // rest of the backlog goes on.
        if rest > 0 {
            stats
                .records_failed
                .fetch_add(u64::try_from(rest).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }
    tracing::info!(%shard, "the shard is closed and read to its end");
    Ok(())
}

/// Invokes `batch` until it is done or out of retries; returns how many
/// records went to the on-failure destination. Bisects on function errors.
async fn process(
    batch: &[Value],
    config: &MappingConfig,
    function: &Mutex<Emulator>,
    stats: &MappingStats,
) -> usize {
    let mut remaining: Vec<Value> = batch.to_vec();
    let mut attempts = 0u32;
    let mut backoff = config.retry_backoff;
    while !remaining.is_empty() {
        stats.invocations.fetch_add(1, Ordering::Relaxed);
        let event = json!({"Records": remaining});
        let outcome = function.lock().await.invoke(event, config.timeout).await;
        let function_error = !matches!(outcome, Ok(Outcome::Response(_)));
        let done = done_of(&outcome, &remaining);
        stats
            .records_done
            .fetch_add(u64::try_from(done).unwrap_or(u64::MAX), Ordering::Relaxed);
        remaining.drain(..done);
        if remaining.is_empty() {
            return 0;
        }
        if function_error && remaining.len() > 1 {
            // BisectBatchOnFunctionError: each half on its own.
            let half = remaining.len() / 2;
            let (a, b) = remaining.split_at(half);
            let failed = Box::pin(process(a, config, function, stats)).await;
            return failed + Box::pin(process(b, config, function, stats)).await;
        }
        attempts += 1;
        stats.retries.fetch_add(1, Ordering::Relaxed);
        if attempts > config.max_retries {
            tracing::error!(
                first = remaining.first().map(sequence).unwrap_or_default(),
                last = remaining.last().map(sequence).unwrap_or_default(),
                records = remaining.len(),
                "retries exhausted: the batch goes to the on-failure destination"
            );
            return remaining.len();
        }
        tracing::warn!(
            attempt = attempts,
            from = remaining.first().map(sequence).unwrap_or_default(),
            "retrying from the first record not done"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.retry_backoff * 32);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sequences: &[&str]) -> Vec<Value> {
        sequences
            .iter()
            .map(|s| json!({"dynamodb": {"SequenceNumber": s}}))
            .collect()
    }

    fn answered(v: Value) -> Result<Outcome, String> {
        Ok(Outcome::Response(v))
    }

    #[test]
    fn partial_failures_checkpoint_before_the_lowest_named_record() {
        let b = batch(&["10", "11", "12", "13"]);
        assert_eq!(done_of(&answered(json!({"batchItemFailures": []})), &b), 4);
        assert_eq!(done_of(&answered(json!({})), &b), 4, "no field: success");
        let both =
            json!({"batchItemFailures": [{"itemIdentifier": "13"}, {"itemIdentifier": "11"}]});
        assert_eq!(done_of(&answered(both), &b), 1);
    }

    #[test]
    fn an_empty_or_unknown_identifier_or_an_error_fails_the_whole_batch() {
        let b = batch(&["10", "11"]);
        let empty = json!({"batchItemFailures": [{"itemIdentifier": ""}]});
        assert_eq!(done_of(&answered(empty), &b), 0);
        let unknown = json!({"batchItemFailures": [{"itemIdentifier": "99"}]});
        assert_eq!(done_of(&answered(unknown), &b), 0);
        assert_eq!(done_of(&Ok(Outcome::Error("boom".into())), &b), 0);
        assert_eq!(done_of(&Err("timeout".into()), &b), 0);
    }

    #[test]
    fn stream_attribute_values_take_lambdas_json_shape() {
        let v = AttributeValue::M(HashMap::from([
            ("s".to_owned(), AttributeValue::S("x".into())),
            ("n".to_owned(), AttributeValue::N("5".into())),
            (
                "l".to_owned(),
                AttributeValue::L(vec![AttributeValue::Bool(true)]),
            ),
        ]));
        assert_eq!(
            attribute_json(&v),
            json!({"M": {"s": {"S": "x"}, "n": {"N": "5"}, "l": {"L": [{"BOOL": true}]}}})
        );
    }
}
