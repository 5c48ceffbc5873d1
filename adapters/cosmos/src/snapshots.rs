//! Snapshots in the events container, apart from the events.
//!
//! A stream's snapshot lives in the logical partition
//! `snapshot#<aggregate's pk>`, never in the aggregate's own, so no event
//! query reads it; its documents have no `origin`, so a resync listing
//! never finds them, and `kind: "snapshot"`, so the change-feed function
//! skips them. One document per part, id `<cell>.<part, 2 digits>`,
//! replaced in place by the next save: at most
//! [`MAX_SNAPSHOT_PARTS`](twincell_core::MAX_SNAPSHOT_PARTS) documents per
//! stream, however often it is saved.
//!
//! ```json
//! { "id": "aws.00", "pk": "snapshot#inventory#sku-1", "kind": "snapshot",
//!   "cell": "aws", "version": 1000, "format": 1, "parts": 2, "part": 0,
//!   "body": "…" }
//! ```
//!
//! A save reads part 0 and writes nothing when the stored snapshot is as
//! new; otherwise it writes every part in one transactional batch, part 0
//! replaced only if its ETag is still the one read (created only if still
//! absent), so of concurrent saves one wins whole and none mixes parts. A
//! smaller save leaves a larger one's last parts behind, with their old
//! version: a load takes the parts of part 0's save only.

use std::collections::BTreeMap;

use azure_data_cosmos::feed::FeedScope;
use azure_data_cosmos::options::{BatchReplaceOptions, Precondition};
use azure_data_cosmos::{Query, TransactionalBatch};
use serde::{Deserialize, Serialize};
use twincell_core::{
    AggregateId, CellId, Snapshot, SnapshotPart, StoreError, StreamId, join_snapshot_parts,
    snapshot_parts,
};

use crate::{CosmosEventStore, MAX_BATCH_BYTES, partition_key, refuse_oversized, unavailable};

/// The value of `kind` on snapshot documents.
pub const SNAPSHOT_KIND: &str = "snapshot";

/// The logical partition of `aggregate`'s snapshots.
#[must_use]
pub fn snapshot_partition_key(aggregate: &AggregateId) -> String {
    format!("{SNAPSHOT_KIND}#{}", partition_key(aggregate))
}

/// One part of a snapshot, as a document.
#[derive(Debug, Serialize, Deserialize)]
struct Part {
    id: String,
    pk: String,
    kind: String,
    cell: String,
    version: u64,
    format: u32,
    parts: usize,
    part: usize,
    body: String,
}

fn part_id(cell: &CellId, part: usize) -> String {
    format!("{cell}.{part:02}")
}

impl CosmosEventStore {
    pub(crate) async fn save_snapshot_documents(
        &self,
        snapshot: &Snapshot,
    ) -> Result<(), StoreError> {
        let parts = snapshot_parts(snapshot)?;
        let pk = snapshot_partition_key(&snapshot.stream.aggregate);
        let first = part_id(&snapshot.stream.origin, 0);
        let stored = match self.container.read_item(pk.clone(), &first, None).await {
            Ok(response) => {
                let etag = response.headers().etag().cloned();
                let part: Part = response.into_model().map_err(|e| {
                    StoreError::Corrupt(format!("snapshot document {pk} {first}: {e}"))
                })?;
                Some((part.version, etag))
            }
            Err(e) if e.status().is_not_found() => None,
            Err(e) => return Err(unavailable("read_item", &e)),
        };
        if stored
            .as_ref()
            .is_some_and(|(version, _)| *version >= snapshot.version)
        {
            return Ok(());
        }
        let mut batch = TransactionalBatch::new(pk.clone());
        let mut total = 0usize;
        for (index, body) in parts.iter().enumerate() {
            let doc = Part {
                id: part_id(&snapshot.stream.origin, index),
                pk: pk.clone(),
                kind: SNAPSHOT_KIND.to_owned(),
                cell: snapshot.stream.origin.to_string(),
                version: snapshot.version,
                format: snapshot.format,
                parts: parts.len(),
                part: index,
                body: (*body).to_owned(),
            };
            let size = serde_json::to_vec(&doc).map_or(0, |b| b.len());
            refuse_oversized(size, || {
                format!("part {index} of the snapshot of {}", snapshot.stream)
            })?;
            total += size;
            let corrupt =
                |e: azure_data_cosmos::CosmosError| StoreError::Corrupt(format!("batch item: {e}"));
            batch = match (index, &stored) {
                (0, Some((_, Some(etag)))) => batch
                    .replace_item(
                        doc.id.clone(),
                        doc,
                        Some(
                            BatchReplaceOptions::default()
                                .with_precondition(Precondition::IfMatch(etag.clone())),
                        ),
                    )
                    .map_err(corrupt)?,
                (0, None) => batch.create_item(doc).map_err(corrupt)?,
                _ => batch.upsert_item(doc, None).map_err(corrupt)?,
            };
        }
        if total > MAX_BATCH_BYTES {
            return Err(StoreError::TooLarge(format!(
                "the snapshot of {} is {total} bytes; a Cosmos DB batch holds at most {MAX_BATCH_BYTES}",
                snapshot.stream
            )));
        }
        let response = self
            .container
            .execute_transactional_batch(batch, None)
            .await
            .map_err(|e| unavailable("transactional batch", &e))?;
        let status = u16::from(response.status().status_code());
        let results = if response.status().is_success() {
            response.into_model().map_err(|e| {
                StoreError::Unavailable(format!("transactional batch response: {e}"))
            })?
        } else {
            return match status {
                // Another save got there first: a snapshot at least as
                // new is stored.
                409 | 412 => Ok(()),
                _ => Err(StoreError::Unavailable(format!(
                    "Cosmos DB transactional batch: {status}"
                ))),
            };
        };
        match results
            .results()
            .iter()
            .find(|r| !r.is_success() && r.status_code() != 424)
            .map(azure_data_cosmos::models::TransactionalBatchOperationResult::status_code)
        {
            None | Some(409 | 412) => Ok(()),
            Some(status) => Err(StoreError::Unavailable(format!(
                "Cosmos DB transactional batch: {status}"
            ))),
        }
    }

    pub(crate) async fn load_snapshot_documents(
        &self,
        aggregate: &AggregateId,
    ) -> Result<Vec<Snapshot>, StoreError> {
        use futures_util::TryStreamExt;
        let pk = snapshot_partition_key(aggregate);
        let mut docs = self
            .container
            .query_items::<Part>(
                Query::from("SELECT * FROM c"),
                FeedScope::partition(pk.clone()),
                None,
            )
            .await
            .map_err(|e| unavailable("query", &e))?;
        let mut by_cell: BTreeMap<String, Vec<Part>> = BTreeMap::new();
        while let Some(doc) = docs
            .try_next()
            .await
            .map_err(|e| unavailable("query", &e))?
        {
            if doc.kind != SNAPSHOT_KIND || doc.pk != pk {
                return Err(StoreError::Corrupt(format!(
                    "document {} {} in the snapshot partition is not a snapshot",
                    doc.pk, doc.id
                )));
            }
            by_cell.entry(doc.cell.clone()).or_default().push(doc);
        }
        let mut snapshots = Vec::with_capacity(by_cell.len());
        for (cell, parts) in by_cell {
            let cell = CellId::new(&cell).map_err(|_| {
                StoreError::Corrupt(format!("a snapshot document names the cell {cell:?}"))
            })?;
            let stream = StreamId::new(aggregate.clone(), cell);
            let parts = parts.iter().map(|p| SnapshotPart {
                index: p.part,
                count: p.parts,
                version: p.version,
                format: p.format,
                text: &p.body,
            });
            snapshots.extend(join_snapshot_parts(&stream, parts)?);
        }
        Ok(snapshots)
    }
}
