//! The Azure cell's event store: twincell's [`EventStore`] on Cosmos DB
//! (NoSQL API), with Microsoft's `azure_data_cosmos` (pinned to
//! `=1.1.0-beta.1`, the version this store is tested with).
//!
//! # Container design
//!
//! One container partitioned on `/pk`; event documents are created once
//! and never replaced or deleted. The container also holds each stream's
//! latest snapshot, in logical partitions of their own (see
//! `snapshots.rs`: `pk = snapshot#<aggregate>`, replaced in place, never
//! read as events, skipped by the change-feed function).
//!
//! ```json
//! {
//!   "id": "aws.00000000000000000007",
//!   "pk": "inventory#sku-1",
//!   "origin": "aws",
//!   "version": 7,
//!   "type": "twincell.inventory.stock-reserved.v1",
//!   "recorded_at": 1795320745007,
//!   "event": { "…": "the whole recorded event" }
//! }
//! ```
//!
//! - `pk` is the aggregate (`inventory#<sku>` or `transaction#<uuid>`), so
//!   one aggregate is one logical partition: [`load`](EventStore::load) is a
//!   single-partition query, followed page by page.
//! - `id` is the stream's origin cell and the zero-padded version (Cosmos
//!   ids can't hold `#`, and a cell id can't hold `.`). Ids are unique per
//!   partition, so a create of a taken version fails with 409: of
//!   concurrent writers at one version exactly one wins.
//! - One event is a `create_item`; more are one transactional batch of
//!   creates (at most 100, 2 MB), all or nothing. 409 and 412 are
//!   [`StoreError::Conflict`].
//! - An append does not prove that `expected_version` itself is stored;
//!   callers pass the version they loaded from this store, and documents are
//!   never deleted, so it is.
//! - A replicated event is the same create; on 409 the stored document is
//!   read back and compared: equal is [`ReplicatedApply::AlreadyPresent`],
//!   different is [`StoreError::Diverged`].
//! - [`EventStore::load_after`] is one query per origin in the aggregate's
//!   partition, `SELECT * FROM c WHERE c.origin = @origin AND c.version >
//!   @version`, served by the default index: only the newer documents are
//!   read.
//! - A resync lists one origin's events ([`EventStore::list_origin`]) with
//!   the query `SELECT * FROM c WHERE c.origin = @origin` (and
//!   `c.recorded_at >= @since`) across partitions, served by the
//!   container's default index (every path indexed). Not the change feed:
//!   the change feed returns every document of every origin and never ends
//!   (a caught-up feed answers "no changes", on each partition range
//!   separately), while the indexed query reads only the origin's documents
//!   and ends. A cursor is the query's continuation token and the number
//!   of items of its next page already returned.
//! - A document over 2 MB is refused before anything is sent
//!   ([`StoreError::TooLarge`]); 429 after the SDK's retries, 408, 5xx and
//!   transport failures are [`StoreError::Unavailable`]. No SDK type crosses
//!   the port.

use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::feed::FeedScope;
use azure_data_cosmos::{CosmosError, Query, TransactionalBatch};
use serde::{Deserialize, Serialize};
use twincell_core::{
    AggregateId, CellId, EventPage, EventStore, ListCursor, Listing, RecordedEvent,
    ReplicatedApply, Snapshot, StoreError, StreamId, WriteFailure, apply_by_create, check_batch,
};

#[cfg(feature = "emulator")]
pub mod emulator;
mod snapshots;
pub use snapshots::{SNAPSHOT_KIND, snapshot_partition_key};

/// Cosmos DB's largest document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 2 * 1024 * 1024;
/// Cosmos DB's largest transactional batch request, in bytes.
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// Cosmos DB's largest number of operations in one transactional batch.
pub const MAX_BATCH_OPERATIONS: usize = 100;

// The core's limits fit this backend: one append is one transactional
// batch, and an event plus its keys is one document.
const _: () = assert!(twincell_core::MAX_EVENTS_PER_APPEND <= MAX_BATCH_OPERATIONS);
const _: () = assert!(twincell_core::MAX_EVENT_BYTES + 1024 < MAX_DOCUMENT_BYTES);

/// The partition [`EventStore::check`] reads; no aggregate type is called
/// `twincell`.
const HEALTH_PK: &str = "twincell#health";

/// How the store reaches Cosmos DB.
#[derive(Clone)]
pub struct Settings {
    /// The account endpoint, e.g. `https://<account>.documents.azure.com:443/`.
    pub endpoint: String,
    /// The account key.
    pub key: String,
    /// The database (default `twincell`).
    pub database: String,
    /// The container (default `events`), partitioned on `/pk`.
    pub container: String,
    /// The Azure region the cell runs in, for the SDK's routing by proximity
    /// (e.g. `West Europe`).
    pub region: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("key", &"<redacted>")
            .field("database", &self.database)
            .field("container", &self.container)
            .field("region", &self.region)
            .finish()
    }
}

/// A setting that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

impl Settings {
    /// The settings from `TWINCELL_COSMOS_ENDPOINT`, `TWINCELL_COSMOS_KEY`,
    /// `TWINCELL_COSMOS_DATABASE`, `TWINCELL_COSMOS_CONTAINER` and
    /// `TWINCELL_COSMOS_REGION` (else Azure Functions' `REGION_NAME`);
    /// `None` when no endpoint is set.
    ///
    /// # Errors
    /// When an endpoint is set but the key or the region is not.
    pub fn from_env() -> Result<Option<Self>, SettingsError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(endpoint) = var("TWINCELL_COSMOS_ENDPOINT") else {
            return Ok(None);
        };
        let key = var("TWINCELL_COSMOS_KEY").ok_or_else(|| {
            SettingsError("TWINCELL_COSMOS_ENDPOINT is set but TWINCELL_COSMOS_KEY is not".into())
        })?;
        let region = var("TWINCELL_COSMOS_REGION")
            .or_else(|| var("REGION_NAME"))
            .ok_or_else(|| {
                SettingsError(
                    "TWINCELL_COSMOS_ENDPOINT is set but neither TWINCELL_COSMOS_REGION nor \
                     REGION_NAME names the cell's Azure region"
                        .into(),
                )
            })?;
        Ok(Some(Self {
            endpoint,
            key,
            database: var("TWINCELL_COSMOS_DATABASE").unwrap_or_else(|| "twincell".to_owned()),
            container: var("TWINCELL_COSMOS_CONTAINER").unwrap_or_else(|| "events".to_owned()),
            region,
        }))
    }
}

/// [`EventStore`] on one Cosmos DB container (see the [crate docs](crate)).
#[derive(Clone)]
pub struct CosmosEventStore {
    container: ContainerClient,
}

impl std::fmt::Debug for CosmosEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosmosEventStore").finish_non_exhaustive()
    }
}

/// One stored event, as a document.
#[derive(Debug, Serialize, Deserialize)]
struct Document {
    id: String,
    pk: String,
    origin: String,
    version: u64,
    #[serde(rename = "type")]
    kind: String,
    /// Unix milliseconds, for listings since an instant (absent in
    /// documents written before listings existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recorded_at: Option<i64>,
    event: serde_json::Value,
}

impl CosmosEventStore {
    /// Connects with the account key. The client is built once; building
    /// the container client reads the account and container metadata, so
    /// the connection is open when this returns.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the endpoint is malformed or the
    /// account or container can't be reached.
    pub async fn connect(settings: &Settings) -> Result<Self, StoreError> {
        install_crypto();
        let endpoint: azure_data_cosmos::AccountEndpoint =
            settings.endpoint.parse().map_err(|e| {
                StoreError::Unavailable(format!("Cosmos endpoint {}: {e}", settings.endpoint))
            })?;
        let account = azure_data_cosmos::AccountReference::with_authentication_key(
            endpoint,
            azure_core::credentials::Secret::new(settings.key.clone()),
        );
        let client = azure_data_cosmos::CosmosClient::builder()
            .build(
                account,
                azure_data_cosmos::RoutingStrategy::ProximityTo(settings.region.clone().into()),
            )
            .await
            .map_err(|e| unavailable("connect", &e))?;
        let container = client
            .database_client(&settings.database)
            .container_client(&settings.container, None)
            .await
            .map_err(|e| unavailable("open container", &e))?;
        Ok(Self::with_container(container))
    }

    /// A store on an already opened container.
    #[must_use]
    pub fn with_container(container: ContainerClient) -> Self {
        Self { container }
    }

    async fn create_one(&self, event: &RecordedEvent) -> Result<(), WriteFailure> {
        let (doc, _) = document(event)?;
        self.container
            .create_item(doc.pk.clone(), &doc.id.clone(), doc, None)
            .await
            .map(|_| ())
            .map_err(|e| write_failure("create_item", &e))
    }

    /// Writes a batch [`check_batch`] passed: at most
    /// [`MAX_EVENTS_PER_APPEND`](twincell_core::MAX_EVENTS_PER_APPEND)
    /// events, which one transactional batch holds.
    async fn create_all(&self, events: &[RecordedEvent]) -> Result<(), WriteFailure> {
        let pk = partition_key(
            &events
                .first()
                .ok_or(WriteFailure::Unavailable("empty batch".into()))?
                .stream()
                .aggregate,
        );
        let mut batch = TransactionalBatch::new(pk);
        let mut total = 0usize;
        for event in events {
            let (doc, size) = document(event)?;
            total += size;
            batch = batch
                .create_item(doc)
                .map_err(|e| WriteFailure::Corrupt(format!("batch item: {e}")))?;
        }
        if total > MAX_BATCH_BYTES {
            return Err(WriteFailure::TooLarge(format!(
                "the append is {total} bytes; a Cosmos DB batch holds at most {MAX_BATCH_BYTES}"
            )));
        }
        let response = self
            .container
            .execute_transactional_batch(batch, None)
            .await
            .map_err(|e| write_failure("transactional batch", &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failure_of_status(
                "transactional batch",
                u16::from(status.status_code()),
                "",
            ));
        }
        let results = response
            .into_model()
            .map_err(|e| WriteFailure::Unavailable(format!("transactional batch response: {e}")))?;
        match results
            .results()
            .iter()
            .find(|r| !r.is_success() && r.status_code() != 424)
        {
            None => Ok(()),
            Some(failed) => Err(failure_of_status(
                "transactional batch",
                failed.status_code(),
                "",
            )),
        }
    }

    async fn read_one(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        let read = self
            .container
            .read_item(
                partition_key(&stream.aggregate),
                &document_id(stream, version),
                None,
            )
            .await;
        match read {
            Ok(response) => {
                let doc: Document = response.into_model().map_err(|e| {
                    StoreError::Corrupt(format!("document {}: {e}", document_id(stream, version)))
                })?;
                decode(doc).map(Some)
            }
            Err(e) if e.status().is_not_found() => Ok(None),
            Err(e) => Err(unavailable("read_item", &e)),
        }
    }
}

/// Installs *ring* as the process's TLS crypto provider unless one is
/// installed already (the HTTP client is built without a provider of its
/// own, so the binary carries one TLS implementation).
pub(crate) fn install_crypto() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The write failure an HTTP status stands for.
fn failure_of_status(call: &str, status: u16, detail: &str) -> WriteFailure {
    match status {
        409 | 412 => WriteFailure::Taken,
        413 => WriteFailure::TooLarge(format!("Cosmos DB {call}: 413 {detail}")),
        _ => WriteFailure::Unavailable(format!("Cosmos DB {call}: {status} {detail}")),
    }
}

fn write_failure(call: &str, err: &CosmosError) -> WriteFailure {
    failure_of_status(
        call,
        u16::from(err.status().status_code()),
        &err.to_string(),
    )
}

fn unavailable(call: &str, err: &CosmosError) -> StoreError {
    StoreError::Unavailable(format!("Cosmos DB {call}: {err}"))
}

/// The partition key of `aggregate`.
#[must_use]
pub fn partition_key(aggregate: &AggregateId) -> String {
    format!("{}#{}", aggregate.kind().as_str(), aggregate.id())
}

/// The document id of `version` of `stream`: origin and zero-padded version.
#[must_use]
pub fn document_id(stream: &StreamId, version: u64) -> String {
    format!("{}.{version:020}", stream.origin)
}

/// The document of `event` and its size in bytes.
fn document(event: &RecordedEvent) -> Result<(Document, usize), StoreError> {
    let json = serde_json::to_value(event)
        .map_err(|e| StoreError::Corrupt(format!("event does not serialize: {e}")))?;
    let doc = Document {
        id: document_id(event.stream(), event.version()),
        pk: partition_key(&event.stream().aggregate),
        origin: event.origin().to_string(),
        version: event.version(),
        kind: event.event().type_name().to_owned(),
        recorded_at: Some(event.recorded_at().unix_millis()),
        event: json,
    };
    let size = serde_json::to_vec(&doc).map_or(0, |b| b.len());
    refuse_oversized(size, || {
        format!("event {} v{}", event.stream(), event.version())
    })?;
    Ok((doc, size))
}

/// Refuses a document Cosmos DB would not store, naming it with `what`.
fn refuse_oversized(size: usize, what: impl FnOnce() -> String) -> Result<(), StoreError> {
    if size > MAX_DOCUMENT_BYTES {
        return Err(StoreError::TooLarge(format!(
            "{} is a {size}-byte document; Cosmos DB holds at most {MAX_DOCUMENT_BYTES}",
            what()
        )));
    }
    Ok(())
}

fn decode(doc: Document) -> Result<RecordedEvent, StoreError> {
    let event: RecordedEvent = serde_json::from_value(doc.event)
        .map_err(|e| StoreError::Corrupt(format!("document {} {}: {e}", doc.pk, doc.id)))?;
    if partition_key(&event.stream().aggregate) != doc.pk
        || document_id(event.stream(), event.version()) != doc.id
    {
        return Err(StoreError::Corrupt(format!(
            "document {} {} holds event {} v{}",
            doc.pk,
            doc.id,
            event.stream(),
            event.version()
        )));
    }
    Ok(event)
}

/// Where a listing resumes: the continuation token of the query page to
/// read next (`None`: the first), and how many of that page's items were
/// already returned (pages are re-read from their token, so a page larger
/// than the listing's limit can be returned in parts).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    v: u8,
    origin: String,
    token: Option<String>,
    skip: usize,
}

impl Cursor {
    fn encode(&self) -> Result<ListCursor, StoreError> {
        serde_json::to_string(self)
            .map(ListCursor::new)
            .map_err(|e| StoreError::Corrupt(format!("listing cursor: {e}")))
    }

    fn decode(cursor: &ListCursor, origin: &CellId) -> Result<Self, StoreError> {
        let c: Self = serde_json::from_str(cursor.as_str()).map_err(|_| {
            StoreError::InvalidCursor(format!("{cursor:?} is not a Cosmos DB cursor"))
        })?;
        if c.v != 1 || c.origin != origin.as_str() {
            return Err(StoreError::InvalidCursor(format!(
                "{cursor:?} was not made for a listing of {origin}"
            )));
        }
        Ok(c)
    }
}

impl CosmosEventStore {
    /// Every document `query` finds in the partition `pk`, decoded.
    async fn query_partition(
        &self,
        query: Query,
        pk: String,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        use futures_util::TryStreamExt;
        let mut docs = self
            .container
            .query_items::<Document>(query, FeedScope::partition(pk), None)
            .await
            .map_err(|e| unavailable("query", &e))?;
        let mut events = Vec::new();
        while let Some(doc) = docs
            .try_next()
            .await
            .map_err(|e| unavailable("query", &e))?
        {
            events.push(decode(doc)?);
        }
        Ok(events)
    }

    async fn list_page(&self, listing: &Listing, cursor: Cursor) -> Result<EventPage, StoreError> {
        use azure_data_cosmos::options::{MaxItemCountHint, QueryOptions};
        use futures_util::TryStreamExt;
        let limit = listing.limit.max(1);
        let text = match listing.since {
            Some(_) => "SELECT * FROM c WHERE c.origin = @origin AND c.recorded_at >= @since",
            None => "SELECT * FROM c WHERE c.origin = @origin",
        };
        let mut query = Query::from(text)
            .with_parameter("@origin", listing.origin.as_str())
            .map_err(|e| unavailable("query", &e))?;
        if let Some(since) = listing.since {
            query = query
                .with_parameter("@since", since.unix_millis())
                .map_err(|e| unavailable("query", &e))?;
        }
        let count = u32::try_from(limit)
            .ok()
            .and_then(std::num::NonZeroU32::new)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let mut options =
            QueryOptions::default().with_max_item_count(MaxItemCountHint::Limit(count));
        if let Some(token) = &cursor.token {
            options = options.with_continuation_token(
                azure_data_cosmos::feed::ContinuationToken::from_string(token.clone()),
            );
        }
        let mut pages = self
            .container
            .query_items::<Document>(query, FeedScope::full_container(), Some(options))
            .await
            .map_err(|e| listing_error(&e, cursor.token.is_some()))?
            .into_pages();
        let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| listing_error(&e, cursor.token.is_some()))?
        else {
            return Ok(EventPage::default());
        };
        let items = page.into_items();
        let rest = items.len().saturating_sub(cursor.skip);
        let take = rest.min(limit);
        let mut events = Vec::with_capacity(take);
        for doc in items.into_iter().skip(cursor.skip).take(take) {
            events.push(decode(doc)?);
        }
        let next = if rest > take {
            Cursor {
                skip: cursor.skip + take,
                ..cursor
            }
        } else {
            let token = pages
                .to_continuation_token()
                .map_err(|e| unavailable("query continuation", &e))?;
            Cursor {
                v: 1,
                origin: cursor.origin,
                token: Some(token.as_str().to_owned()),
                skip: 0,
            }
        };
        Ok(EventPage {
            events,
            next: Some(next.encode()?),
        })
    }
}

/// A reader of the container's change feed (latest-version mode, every
/// partition, from the beginning): what the Functions host's
/// `cosmosDBTrigger` reads, for a stand-in of it. It holds the SDK's feed
/// iterator, which visits the partition ranges in turn, for as long as it
/// lives (a lease holder).
pub struct ChangeFeedReader {
    pages: azure_data_cosmos::feed::ChangeFeedPageIterator<
        azure_data_cosmos::models::ChangeFeedItem<serde_json::Value>,
    >,
}

impl std::fmt::Debug for ChangeFeedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeedReader").finish_non_exhaustive()
    }
}

impl ChangeFeedReader {
    /// The next page: documents changed since the last page of their
    /// partition range, as stored (system properties included), in write
    /// order per partition. Empty when that range has nothing new.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the account can't be reached (the
    /// reader then stays where it was).
    pub async fn next_page(&mut self) -> Result<Vec<serde_json::Value>, StoreError> {
        use futures_util::TryStreamExt;
        let page = self
            .pages
            .try_next()
            .await
            .map_err(|e| unavailable("change feed", &e))?;
        Ok(page
            .map(|p| {
                p.into_items()
                    .into_iter()
                    .filter_map(|item| item.current().cloned())
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl CosmosEventStore {
    /// A [`ChangeFeedReader`] from the beginning of the container.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the account can't be reached.
    pub async fn change_feed(&self) -> Result<ChangeFeedReader, StoreError> {
        use azure_data_cosmos::options::ChangeFeedStartFrom;
        let pages = self
            .container
            .query_change_feed::<serde_json::Value>(
                FeedScope::full_container(),
                ChangeFeedStartFrom::Beginning,
                None,
            )
            .await
            .map_err(|e| unavailable("change feed", &e))?;
        Ok(ChangeFeedReader { pages })
    }
}

/// A failed listing query: a resumed one refused as a bad request had a
/// token the SDK does not accept.
fn listing_error(err: &CosmosError, resumed: bool) -> StoreError {
    if resumed && u16::from(err.status().status_code()) == 400 {
        StoreError::InvalidCursor(format!("Cosmos DB refused the continuation token: {err}"))
    } else {
        unavailable("query", err)
    }
}

impl EventStore for CosmosEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        check_batch(stream, expected_version, events)?;
        let written = match events {
            [one] => self.create_one(one).await,
            many => self.create_all(many).await,
        };
        written.map_err(|f| f.into_store_error(stream, expected_version))
    }

    async fn load(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = self
            .query_partition(Query::from("SELECT * FROM c"), partition_key(aggregate))
            .await?;
        events.sort_by(|a, b| (a.origin(), a.version()).cmp(&(b.origin(), b.version())));
        Ok(events)
    }

    async fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &std::collections::BTreeMap<CellId, u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let pk = partition_key(aggregate);
        let mut events = Vec::new();
        for (origin, version) in after {
            // One query per origin, in the aggregate's partition: only the
            // newer documents are read.
            let query =
                Query::from("SELECT * FROM c WHERE c.origin = @origin AND c.version > @version")
                    .with_parameter("@origin", origin.as_str())
                    .and_then(|q| q.with_parameter("@version", *version))
                    .map_err(|e| unavailable("query", &e))?;
            let mut newer = self.query_partition(query, pk.clone()).await?;
            newer.sort_by_key(RecordedEvent::version);
            events.extend(newer);
        }
        Ok(events)
    }

    async fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        self.read_one(stream, version).await
    }

    async fn apply_replicated(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        apply_by_create(event, self.create_one(event), || {
            self.read_one(event.stream(), event.version())
        })
        .await
    }

    async fn list_origin(&self, listing: &Listing) -> Result<EventPage, StoreError> {
        let cursor = match &listing.after {
            Some(after) => Cursor::decode(after, &listing.origin)?,
            None => Cursor {
                v: 1,
                origin: listing.origin.to_string(),
                token: None,
                skip: 0,
            },
        };
        self.list_page(listing, cursor).await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.save_snapshot_documents(snapshot).await
    }

    async fn load_snapshots(&self, aggregate: &AggregateId) -> Result<Vec<Snapshot>, StoreError> {
        self.load_snapshot_documents(aggregate).await
    }

    async fn check(&self) -> Result<(), StoreError> {
        match self.container.read_item(HEALTH_PK, "health", None).await {
            Ok(_) => Ok(()),
            Err(e) if e.status().is_not_found() => Ok(()),
            Err(e) => Err(unavailable("read_item", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twincell_core::{CellId, DomainEvent, Quantity, Sku, Timestamp};

    fn event(version: u64) -> RecordedEvent {
        let stream = StreamId::new(
            AggregateId::inventory(&Sku::new("sku-1").unwrap()),
            CellId::new("azure").unwrap(),
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
    fn a_document_decodes_back_to_its_event() {
        let e = event(7);
        let (doc, _) = document(&e).unwrap();
        assert_eq!(doc.id, "azure.00000000000000000007");
        assert_eq!(doc.pk, "inventory#sku-1");
        assert_eq!(decode(doc).unwrap(), e);
    }

    #[test]
    fn a_document_under_another_id_is_corrupt() {
        let (mut doc, _) = document(&event(7)).unwrap();
        doc.id = document_id(event(8).stream(), 8);
        assert!(matches!(decode(doc), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_document_over_2_mb_is_refused_and_one_at_the_limit_is_not() {
        assert!(refuse_oversized(MAX_DOCUMENT_BYTES, String::new).is_ok());
        let refused = refuse_oversized(MAX_DOCUMENT_BYTES + 1, || "big".to_owned());
        assert!(
            matches!(&refused, Err(StoreError::TooLarge(m)) if m.contains("big is a 2097153-byte")),
            "{refused:?}"
        );
    }

    #[test]
    fn conflicts_are_409_and_412_and_limits_are_413() {
        assert!(matches!(
            failure_of_status("x", 409, ""),
            WriteFailure::Taken
        ));
        assert!(matches!(
            failure_of_status("x", 412, ""),
            WriteFailure::Taken
        ));
        assert!(matches!(
            failure_of_status("x", 413, ""),
            WriteFailure::TooLarge(_)
        ));
        for status in [408, 429, 500, 503] {
            assert!(
                matches!(
                    failure_of_status("x", status, ""),
                    WriteFailure::Unavailable(_)
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn settings_never_print_the_key() {
        let s = Settings {
            endpoint: "https://a.documents.azure.com:443/".into(),
            key: "c2VjcmV0".into(),
            database: "d".into(),
            container: "c".into(),
            region: "West Europe".into(),
        };
        assert!(!format!("{s:?}").contains("c2VjcmV0"));
    }
}
