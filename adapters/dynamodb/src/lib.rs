//! The AWS cell's event store: twincell's [`EventStore`] on DynamoDB.
//!
//! # Table design
//!
//! One table; an event item is written once and never updated or deleted.
//! The table also holds each stream's latest snapshot, in item collections
//! of their own (see `snapshots.rs`: `pk = snapshot#<aggregate>`, replaced
//! in place, never read as events, skipped by the replicator).
//!
//! | attribute | type | holds |
//! |---|---|---|
//! | `pk` (partition key) | S | the aggregate: `inventory#<sku>` or `transaction#<uuid>` |
//! | `sk` (sort key) | S | the stream and version: `<origin cell>#<version, 20 digits>` |
//! | `origin` | S | the cell that wrote the event |
//! | `version` | N | the event's version in its origin's stream |
//! | `type` | S | the event type, e.g. `twincell.inventory.stock-reserved.v1` |
//! | `event` | S | the whole recorded event as JSON (what [`EventStore::load`] decodes) |
//! | `origin_shard` | S | `<origin cell>#<shard>`, the shard `00`–`15` a hash of `pk` |
//! | `recorded_at` | N | when the origin recorded the event, Unix milliseconds |
//!
//! One global secondary index, [`ORIGIN_INDEX`] (`origin_shard`,
//! `recorded_at`, projecting `event`), lists one origin's events for a
//! resync ([`EventStore::list_origin`]) without scanning the table: 16
//! index partitions per origin, so a cell's writes spread over 16
//! partitions of the index instead of queueing behind one, read in turn.
//! The index is eventually consistent: an event written in the last moment
//! may be missing from a listing (a resync is for events older than the
//! replication transports keep, hours at least).
//!
//! - One aggregate is one item collection, so [`load`](EventStore::load) is
//!   a single strongly consistent `Query` on `pk`, followed page by page,
//!   and [`load_after`](EventStore::load_after) one such `Query` per origin
//!   on the key range `sk BETWEEN <origin>#<held + 1> AND <origin>#<max>`,
//!   sent together: it reads only the newer items, however long the
//!   history, in one round trip.
//! - An append writes each new version as a put conditioned on
//!   `attribute_not_exists(pk)`: a version can be written once, so of
//!   concurrent writers at one version exactly one wins. One event is a
//!   conditional `PutItem`; more are one `TransactWriteItems` (at most 100
//!   puts), all or nothing. A failed condition is
//!   [`StoreError::Conflict`].
//! - An append does not prove that `expected_version` itself is stored:
//!   that costs a second item in every write. Callers pass the version they
//!   loaded from this store, and items are never deleted, so it is.
//! - A replicated event is the same conditional put; when the version is
//!   already taken the stored item is read back (strongly consistent) and
//!   compared: equal is [`ReplicatedApply::AlreadyPresent`], different is
//!   [`StoreError::Diverged`].
//! - The table has a stream (`NEW_IMAGE`) for replication to other cells.
//! - An item over DynamoDB's 400 KB limit (or a transaction over its 4 MB
//!   limit) is refused before anything is sent: [`StoreError::TooLarge`].
//! - Throttling, 5xx answers, timeouts and unreachable endpoints are
//!   [`StoreError::Unavailable`] once the SDK's retries are spent. No SDK
//!   type crosses the port.
//!
//! `template.yaml` declares this table; [`DynamoDbEventStore::create_table`]
//! makes the same one on a local server.

use std::collections::HashMap;
use std::time::Duration;

mod snapshots;
pub use snapshots::{SNAPSHOT_KIND, snapshot_partition_key};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::Region;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, Put, ScalarAttributeType, StreamSpecification,
    StreamViewType, TransactWriteItem,
};
use twincell_core::{
    AggregateId, CellId, EventPage, EventStore, ListCursor, Listing, RecordedEvent,
    ReplicatedApply, Snapshot, StoreError, StreamId, WriteFailure, apply_by_create, check_batch,
};

/// DynamoDB's largest item, in bytes (names and values).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's largest `TransactWriteItems` request, in bytes.
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// DynamoDB's largest number of actions in one transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

// The core's limits fit this backend: one append is one transaction, and
// an event plus its keys and attributes is one item.
const _: () = assert!(twincell_core::MAX_EVENTS_PER_APPEND <= MAX_TRANSACTION_ITEMS);
const _: () = assert!(twincell_core::MAX_EVENT_BYTES + 1024 < MAX_ITEM_BYTES);

/// The IAM actions the store needs on its table: `GetItem` (replays,
/// health), `PutItem` (appends, alone or inside `TransactWriteItems`) and
/// `Query` (loads, and listings on [`ORIGIN_INDEX`]). `template.yaml`
/// grants exactly these, on the table and that index.
pub const IAM_ACTIONS: [&str; 3] = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"];

const PK: &str = "pk";
const SK: &str = "sk";
const EVENT: &str = "event";
const ORIGIN_SHARD: &str = "origin_shard";
const RECORDED_AT: &str = "recorded_at";

/// The index listing one origin's events by time: partition key
/// `origin_shard`, sort key `recorded_at`, projecting `event`.
pub const ORIGIN_INDEX: &str = "by-origin";
/// Index partitions per origin.
pub const ORIGIN_SHARDS: u8 = 16;
/// The key [`EventStore::check`] reads: no event can have it, since no
/// aggregate type is called `twincell`.
const HEALTH_PK: &str = "twincell#health";

/// How the store reaches DynamoDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The table's name.
    pub table: String,
    /// Another endpoint than AWS's (a local server such as moto); read from
    /// `AWS_ENDPOINT_URL` by [`Settings::from_env`].
    pub endpoint: Option<String>,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time for one attempt of one call.
    pub attempt_timeout: Duration,
    /// Time for one call, retries included.
    pub call_timeout: Duration,
    /// Attempts per call (the SDK's standard retry strategy, with backoff).
    pub max_attempts: u32,
}

impl Settings {
    /// Defaults for `table`: AWS's endpoint, a 1 s connect timeout, 2 s per
    /// attempt, 5 s per call, 3 attempts.
    #[must_use]
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            endpoint: None,
            connect_timeout: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            max_attempts: 3,
        }
    }
}

impl Settings {
    /// [`Settings::new`] for `TWINCELL_DYNAMODB_TABLE`, with
    /// `AWS_ENDPOINT_URL` as the endpoint; `None` when the table is not set.
    #[must_use]
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut settings = Self::new(var("TWINCELL_DYNAMODB_TABLE")?);
        settings.endpoint = var("AWS_ENDPOINT_URL");
        Some(settings)
    }

    fn timeouts(&self) -> aws_config::timeout::TimeoutConfig {
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.call_timeout)
            .build()
    }

    fn retries(&self) -> aws_config::retry::RetryConfig {
        aws_config::retry::RetryConfig::standard().with_max_attempts(self.max_attempts)
    }
}

/// The HTTP client every AWS SDK client of the cell uses: hyper with
/// rustls on *ring*, the binaries' one TLS stack (the SDK's default client
/// would bring aws-lc).
#[must_use]
pub fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The AWS configuration the cell's other clients share (Secrets Manager,
/// the local stream reader): [`http_client`], `timeouts`, region and
/// credentials from the standard sources (`AWS_ENDPOINT_URL` for a local
/// server), and `us-east-1` when no source names a region (a local
/// server takes any).
pub async fn sdk_config(timeouts: aws_config::timeout::TimeoutConfig) -> aws_config::SdkConfig {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(timeouts)
        .load()
        .await;
    if config.region().is_some() {
        return config;
    }
    config
        .to_builder()
        .region(Region::from_static("us-east-1"))
        .build()
}

/// [`EventStore`] on one DynamoDB table (see the [crate docs](crate)).
#[derive(Debug, Clone)]
pub struct DynamoDbEventStore {
    client: Client,
    table: String,
    /// Read capacity consumed, when counting (benchmarks).
    reads: Option<std::sync::Arc<ReadCapacity>>,
}

/// Read capacity units consumed by a store's strongly consistent reads
/// (`Query`, `GetItem`), in thousandths, as DynamoDB reports them.
#[derive(Debug, Default)]
pub struct ReadCapacity(std::sync::atomic::AtomicU64);

impl ReadCapacity {
    /// Thousandths of read capacity units consumed so far.
    #[must_use]
    pub fn milli_units(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn add(&self, consumed: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>) {
        // The SDK gives a float; formatting it is no arithmetic on it.
        let Some(units) =
            consumed.and_then(aws_sdk_dynamodb::types::ConsumedCapacity::capacity_units)
        else {
            return;
        };
        let text = format!("{units:.3}");
        let milli = text
            .split_once('.')
            .and_then(|(whole, frac)| {
                Some(whole.parse::<u64>().ok()? * 1000 + frac.parse::<u64>().ok()?)
            })
            .unwrap_or(0);
        self.0.fetch_add(milli, std::sync::atomic::Ordering::SeqCst);
    }
}

impl DynamoDbEventStore {
    /// The items of `pk`, or only those with `from <= sk <= to`, strongly
    /// consistent, every page.
    async fn query_range(
        &self,
        pk: &str,
        range: Option<(String, String)>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
                .consistent_read(true)
                .set_return_consumed_capacity(self.capacity_wanted())
                .set_exclusive_start_key(start);
            query = match &range {
                Some((from, to)) => query
                    .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                    .expression_attribute_values(":from", AttributeValue::S(from.clone()))
                    .expression_attribute_values(":to", AttributeValue::S(to.clone())),
                None => query.key_condition_expression("pk = :pk"),
            };
            let page = query.send().await.map_err(|e| unavailable("Query", &e))?;
            self.count_reads(page.consumed_capacity());
            for item in page.items() {
                events.push(decode(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(events),
            }
        }
    }

    /// A store on `settings.table`, with credentials and region from the
    /// standard AWS sources (environment, profile, container or instance
    /// role). The HTTP client is built once here (rustls with *ring*) and
    /// shared by every call; nothing is sent until the first call.
    pub async fn connect(settings: &Settings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http_client())
            .timeout_config(settings.timeouts())
            .retry_config(settings.retries());
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let config = loader.load().await;
        let mut dynamo = aws_sdk_dynamodb::config::Builder::from(&config);
        if config.region().is_none() {
            // A local server needs no particular region, but the SDK
            // refuses to sign without one.
            dynamo = dynamo.region(Region::from_static("us-east-1"));
        }
        Self::with_client(Client::from_conf(dynamo.build()), &settings.table)
    }

    /// A store on `table` through an already configured client.
    #[must_use]
    pub fn with_client(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            reads: None,
        }
    }

    /// This store, asking DynamoDB for the capacity every read consumes
    /// and adding it up (for benchmarks; a production store does not ask).
    #[must_use]
    pub fn counting_read_capacity(mut self) -> (Self, std::sync::Arc<ReadCapacity>) {
        let reads = std::sync::Arc::new(ReadCapacity::default());
        self.reads = Some(std::sync::Arc::clone(&reads));
        (self, reads)
    }

    fn capacity_wanted(&self) -> Option<aws_sdk_dynamodb::types::ReturnConsumedCapacity> {
        self.reads
            .as_ref()
            .map(|_| aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
    }

    fn count_reads(&self, consumed: Option<&aws_sdk_dynamodb::types::ConsumedCapacity>) {
        if let Some(reads) = &self.reads {
            reads.add(consumed);
        }
    }

    /// The table's name.
    #[must_use]
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table as `template.yaml` declares it (on-demand, with a
    /// `NEW_IMAGE` stream): for local servers and tests. Creating a table
    /// that already exists is not an error.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when DynamoDB refuses or can't be reached.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(ORIGIN_INDEX)
            .key_schema(key(ORIGIN_SHARD, KeyType::Hash)?)
            .key_schema(key(RECORDED_AT, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .non_key_attributes(EVENT)
                    .build(),
            )
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let number = AttributeDefinition::builder()
            .attribute_name(RECORDED_AT)
            .attribute_type(ScalarAttributeType::N)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let stream = StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(StreamViewType::NewImage)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr(PK)?)
            .attribute_definitions(attr(SK)?)
            .attribute_definitions(attr(ORIGIN_SHARD)?)
            .attribute_definitions(number)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .global_secondary_indexes(index)
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(stream)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
            Err(e) => Err(unavailable("CreateTable", &e)),
        }
    }

    async fn put_one(&self, event: &RecordedEvent) -> Result<(), WriteFailure> {
        let (item, _) = item(event)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| write_failure("PutItem", &e))
    }

    /// Writes a batch [`check_batch`] passed: at most
    /// [`MAX_EVENTS_PER_APPEND`](twincell_core::MAX_EVENTS_PER_APPEND)
    /// events, which one transaction holds.
    async fn put_all(&self, events: &[RecordedEvent]) -> Result<(), WriteFailure> {
        let mut total = 0usize;
        let mut actions = Vec::with_capacity(events.len());
        for event in events {
            let (item, size) = item(event)?;
            total += size;
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| WriteFailure::Unavailable(e.to_string()))?;
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        if total > MAX_TRANSACTION_BYTES {
            return Err(WriteFailure::TooLarge(format!(
                "the append is {total} bytes; a DynamoDB transaction holds at most {MAX_TRANSACTION_BYTES}"
            )));
        }
        self.client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| write_failure("TransactWriteItems", &e))
    }

    async fn get(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(partition_key(&stream.aggregate)))
            .key(SK, AttributeValue::S(sort_key(stream, version)))
            .consistent_read(true)
            .set_return_consumed_capacity(self.capacity_wanted())
            .send()
            .await
            .map_err(|e| unavailable("GetItem", &e))?;
        self.count_reads(got.consumed_capacity());
        got.item().map(decode).transpose()
    }
}

/// The write failure an SDK error stands for: a failed condition (alone or
/// inside a cancelled transaction) is a taken version.
fn write_failure<E, R>(call: &str, err: &SdkError<E, R>) -> WriteFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let Some(service) = err.as_service_error() else {
        return WriteFailure::Unavailable(describe(call, err));
    };
    match service.code() {
        Some("ConditionalCheckFailedException") => WriteFailure::Taken,
        Some("TransactionCanceledException") => {
            // The message lists one reason per action, e.g.
            // "[None, ConditionalCheckFailed]".
            let message = service.message().unwrap_or_default();
            if message.contains("ConditionalCheckFailed") || message.contains("TransactionConflict")
            {
                WriteFailure::Taken
            } else if is_size_message(message) {
                WriteFailure::TooLarge(describe(call, err))
            } else {
                WriteFailure::Unavailable(describe(call, err))
            }
        }
        Some("ValidationException") if is_size_message(service.message().unwrap_or_default()) => {
            WriteFailure::TooLarge(describe(call, err))
        }
        _ => WriteFailure::Unavailable(describe(call, err)),
    }
}

fn is_size_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("size has exceeded") || m.contains("item size") || m.contains("too large")
}

/// The SDK error with its service code and message, or its cause chain.
fn describe<E, R>(call: &str, err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(service) = err.as_service_error() {
        return format!(
            "DynamoDB {call}: {}: {}",
            service.code().unwrap_or("unknown error"),
            service.message().unwrap_or_default()
        );
    }
    let mut text = format!("DynamoDB {call}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn unavailable<E, R>(call: &str, err: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(describe(call, err))
}

/// The partition key of `aggregate`.
#[must_use]
pub fn partition_key(aggregate: &AggregateId) -> String {
    format!("{}#{}", aggregate.kind().as_str(), aggregate.id())
}

/// The sort key of `version` of `stream`: zero-padded, so keys sort by
/// `(origin, version)`.
#[must_use]
pub fn sort_key(stream: &StreamId, version: u64) -> String {
    format!("{}#{version:020}", stream.origin)
}

/// The index shard of an aggregate: FNV-1a of its partition key, so every
/// process agrees.
fn shard_of(partition_key: &str) -> u8 {
    let hash = partition_key
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    u8::try_from(hash % u64::from(ORIGIN_SHARDS)).unwrap_or(0)
}

/// The index partition of `origin`'s events in `shard`.
fn origin_shard(origin: &CellId, shard: u8) -> String {
    format!("{origin}#{shard:02}")
}

/// The item of `event` and its size as DynamoDB counts it.
fn item(event: &RecordedEvent) -> Result<(HashMap<String, AttributeValue>, usize), StoreError> {
    let json = serde_json::to_string(event)
        .map_err(|e| StoreError::Corrupt(format!("event does not serialize: {e}")))?;
    let item = HashMap::from([
        (
            PK.to_owned(),
            AttributeValue::S(partition_key(&event.stream().aggregate)),
        ),
        (
            SK.to_owned(),
            AttributeValue::S(sort_key(event.stream(), event.version())),
        ),
        (
            "origin".to_owned(),
            AttributeValue::S(event.origin().to_string()),
        ),
        (
            "version".to_owned(),
            AttributeValue::N(event.version().to_string()),
        ),
        (
            "type".to_owned(),
            AttributeValue::S(event.event().type_name().to_owned()),
        ),
        (EVENT.to_owned(), AttributeValue::S(json)),
        (
            ORIGIN_SHARD.to_owned(),
            AttributeValue::S(origin_shard(
                event.origin(),
                shard_of(&partition_key(&event.stream().aggregate)),
            )),
        ),
        (
            RECORDED_AT.to_owned(),
            AttributeValue::N(event.recorded_at().unix_millis().to_string()),
        ),
    ]);
    let size = refuse_oversized(&item, || {
        format!("event {} v{}", event.stream(), event.version())
    })?;
    Ok((item, size))
}

/// Refuses an item DynamoDB would not store, naming it with `what`;
/// otherwise its size.
fn refuse_oversized(
    item: &HashMap<String, AttributeValue>,
    what: impl FnOnce() -> String,
) -> Result<usize, StoreError> {
    let size = item_size(item);
    if size > MAX_ITEM_BYTES {
        return Err(StoreError::TooLarge(format!(
            "{} is a {size}-byte item; DynamoDB holds at most {MAX_ITEM_BYTES}",
            what()
        )));
    }
    Ok(size)
}

/// An item's size as DynamoDB counts it: attribute names plus values
/// (a number counted at its largest, 21 bytes).
#[must_use]
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(_) => 21,
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 1,
                }
        })
        .sum()
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<RecordedEvent, StoreError> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.as_str()),
        _ => Err(StoreError::Corrupt(format!(
            "an item has no string attribute `{name}`"
        ))),
    };
    let (pk, sk) = (text(PK)?, text(SK)?);
    let event: RecordedEvent = serde_json::from_str(text(EVENT)?)
        .map_err(|e| StoreError::Corrupt(format!("item {pk} {sk}: {e}")))?;
    if partition_key(&event.stream().aggregate) != pk
        || sort_key(event.stream(), event.version()) != sk
    {
        return Err(StoreError::Corrupt(format!(
            "item {pk} {sk} holds event {} v{}",
            event.stream(),
            event.version()
        )));
    }
    Ok(event)
}

/// Where a listing of one origin resumes: the shard, and the index key of
/// the last item read there (`None`: the shard's start).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    v: u8,
    origin: String,
    shard: u8,
    key: Option<CursorKey>,
}

/// The four attributes of an index key (`recorded_at` as its number text).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorKey {
    pk: String,
    sk: String,
    origin_shard: String,
    recorded_at: String,
}

impl Cursor {
    fn encode(&self) -> Result<ListCursor, StoreError> {
        serde_json::to_string(self)
            .map(ListCursor::new)
            .map_err(|e| StoreError::Corrupt(format!("listing cursor: {e}")))
    }

    fn decode(cursor: &ListCursor, origin: &CellId) -> Result<Self, StoreError> {
        let invalid = || StoreError::InvalidCursor(format!("{cursor:?} is not a DynamoDB cursor"));
        let c: Self = serde_json::from_str(cursor.as_str()).map_err(|_| invalid())?;
        let key_fits = c.key.as_ref().is_none_or(|k| {
            k.origin_shard == origin_shard(origin, c.shard) && k.recorded_at.parse::<i64>().is_ok()
        });
        if c.v != 1 || c.origin != origin.as_str() || c.shard >= ORIGIN_SHARDS || !key_fits {
            return Err(StoreError::InvalidCursor(format!(
                "{cursor:?} was not made for a listing of {origin}"
            )));
        }
        Ok(c)
    }

    fn start_key(&self) -> Option<HashMap<String, AttributeValue>> {
        self.key.as_ref().map(|k| {
            HashMap::from([
                (PK.to_owned(), AttributeValue::S(k.pk.clone())),
                (SK.to_owned(), AttributeValue::S(k.sk.clone())),
                (
                    ORIGIN_SHARD.to_owned(),
                    AttributeValue::S(k.origin_shard.clone()),
                ),
                (
                    RECORDED_AT.to_owned(),
                    AttributeValue::N(k.recorded_at.clone()),
                ),
            ])
        })
    }

    fn key_from(last: &HashMap<String, AttributeValue>) -> Result<CursorKey, StoreError> {
        let text = |name: &str| match last.get(name) {
            Some(AttributeValue::S(s) | AttributeValue::N(s)) => Ok(s.clone()),
            _ => Err(StoreError::Corrupt(format!(
                "the index's last key has no `{name}`"
            ))),
        };
        Ok(CursorKey {
            pk: text(PK)?,
            sk: text(SK)?,
            origin_shard: text(ORIGIN_SHARD)?,
            recorded_at: text(RECORDED_AT)?,
        })
    }
}

impl DynamoDbEventStore {
    /// One `Query` page of one shard of the origin index.
    async fn list_shard(
        &self,
        listing: &Listing,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<CursorKey>), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(ORIGIN_INDEX)
            .expression_attribute_values(
                ":shard",
                AttributeValue::S(origin_shard(&listing.origin, cursor.shard)),
            )
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(cursor.start_key());
        query = match listing.since {
            Some(since) => query
                .key_condition_expression("origin_shard = :shard AND recorded_at >= :since")
                .expression_attribute_values(
                    ":since",
                    AttributeValue::N(since.unix_millis().to_string()),
                ),
            None => query.key_condition_expression("origin_shard = :shard"),
        };
        let page = query.send().await.map_err(|e| unavailable("Query", &e))?;
        let events = page
            .items()
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        let next = match page.last_evaluated_key {
            Some(key) if !key.is_empty() => Some(Cursor::key_from(&key)?),
            _ => None,
        };
        Ok((events, next))
    }
}

impl EventStore for DynamoDbEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        check_batch(stream, expected_version, events)?;
        let written = match events {
            [one] => self.put_one(one).await,
            many => self.put_all(many).await,
        };
        written.map_err(|f| f.into_store_error(stream, expected_version))
    }

    async fn load(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self.query_range(&partition_key(aggregate), None).await?;
        // Keys already sort by (origin, version); sorting again makes that
        // independent of which characters a cell id may hold.
        events.sort_by(|a, b| (a.origin(), a.version()).cmp(&(b.origin(), b.version())));
        Ok(events)
    }

    async fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &std::collections::BTreeMap<CellId, u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        // One key range per origin, the queries sent together: one round
        // trip, and only the newer items read, however long the history.
        let pk = partition_key(aggregate);
        let queries = after
            .iter()
            .filter(|(_, version)| **version < u64::MAX)
            .map(|(origin, version)| {
                let stream = StreamId::new(aggregate.clone(), origin.clone());
                self.query_range(
                    &pk,
                    Some((
                        sort_key(&stream, version.saturating_add(1)),
                        sort_key(&stream, u64::MAX),
                    )),
                )
            });
        let ranges = futures_util::future::try_join_all(queries).await?;
        Ok(ranges.into_iter().flatten().collect())
    }

    async fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        self.get(stream, version).await
    }

    async fn apply_replicated(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        apply_by_create(event, self.put_one(event), || {
            self.get(event.stream(), event.version())
        })
        .await
    }

    async fn list_origin(&self, listing: &Listing) -> Result<EventPage, StoreError> {
        let limit = listing.limit.max(1);
        let mut cursor = match &listing.after {
            Some(after) => Cursor::decode(after, &listing.origin)?,
            None => Cursor {
                v: 1,
                origin: listing.origin.to_string(),
                shard: 0,
                key: None,
            },
        };
        let mut page = EventPage::default();
        // Shards in turn until the page is full or the last shard is done.
        loop {
            let (events, last) = self
                .list_shard(listing, &cursor, limit - page.events.len())
                .await?;
            page.events.extend(events);
            cursor.key = last;
            if cursor.key.is_none() {
                if cursor.shard + 1 >= ORIGIN_SHARDS {
                    return Ok(page);
                }
                cursor.shard += 1;
            }
            if page.events.len() >= limit {
                page.next = Some(cursor.encode()?);
                return Ok(page);
            }
        }
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.save_snapshot_items(snapshot).await
    }

    async fn load_snapshots(&self, aggregate: &AggregateId) -> Result<Vec<Snapshot>, StoreError> {
        self.load_snapshot_items(aggregate).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(HEALTH_PK.to_owned()))
            .key(SK, AttributeValue::S("-".to_owned()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("GetItem", &e))
    }
}

#[cfg(feature = "test-util")]
pub mod testing;

#[cfg(test)]
mod tests {
    use super::*;
    use twincell_core::{CellId, DomainEvent, Quantity, Sku, Timestamp};

    fn event(sku: &str, version: u64) -> RecordedEvent {
        let stream = StreamId::new(
            AggregateId::inventory(&Sku::new(sku).unwrap()),
            CellId::new("aws").unwrap(),
        );
        RecordedEvent::new(
            stream,
            version,
            Timestamp::from_unix_millis(1).unwrap(),
            DomainEvent::StockReceived {
                quantity: Quantity::new(3).unwrap(),
            },
        )
        .unwrap()
    }

    #[test]
    fn sort_keys_order_versions_numerically() {
        let e = event("a", 1);
        assert!(sort_key(e.stream(), 9) < sort_key(e.stream(), 10));
        assert!(sort_key(e.stream(), 10) < sort_key(e.stream(), u64::MAX));
    }

    #[test]
    fn an_item_decodes_back_to_its_event() {
        let e = event("sku-1", 7);
        assert_eq!(decode(&item(&e).unwrap().0).unwrap(), e);
    }

    #[test]
    fn an_item_under_another_key_is_corrupt() {
        let (mut it, _) = item(&event("sku-1", 7)).unwrap();
        it.insert(
            SK.to_owned(),
            AttributeValue::S("aws#00000000000000000008".to_owned()),
        );
        assert!(matches!(decode(&it), Err(StoreError::Corrupt(_))));
        it.remove(EVENT);
        assert!(matches!(decode(&it), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn an_item_over_400_kb_is_refused_and_one_at_the_limit_is_not() {
        let sized = |n: usize| HashMap::from([("e".to_owned(), AttributeValue::S("x".repeat(n)))]);
        assert!(refuse_oversized(&sized(MAX_ITEM_BYTES - 1), String::new).is_ok());
        let refused = refuse_oversized(&sized(MAX_ITEM_BYTES), || "big".to_owned());
        assert!(
            matches!(&refused, Err(StoreError::TooLarge(m)) if m.contains("big is a 409601-byte item")),
            "{refused:?}"
        );
    }

    #[test]
    fn item_size_counts_names_and_values() {
        let it = HashMap::from([
            ("ab".to_owned(), AttributeValue::S("xyz".to_owned())),
            ("n".to_owned(), AttributeValue::N("5".to_owned())),
        ]);
        assert_eq!(item_size(&it), 2 + 3 + 1 + 21);
    }
}
