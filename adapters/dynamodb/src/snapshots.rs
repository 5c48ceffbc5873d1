//! Snapshots in the events table, apart from the events.
//!
//! A stream's snapshot lives in the item collection
//! `snapshot#<aggregate's pk>`, never in the aggregate's own, so no event
//! query reads it; its items carry no `origin_shard`, so the origin index
//! never lists them, and `kind = snapshot`, so the replicator skips them
//! on the table's stream. One item per part, keyed `<cell>#<part, 2
//! digits>` and overwritten in place by the next save: at most
//! [`MAX_SNAPSHOT_PARTS`](twincell_core::MAX_SNAPSHOT_PARTS) items per
//! stream, however often it is saved.
//!
//! | attribute | type | holds |
//! |---|---|---|
//! | `pk` | S | `snapshot#<aggregate's pk>` |
//! | `sk` | S | `<cell>#<part>` |
//! | `kind` | S | `snapshot` |
//! | `version`, `format` | N | the snapshot's stream version and body format |
//! | `parts` | N | how many parts this save wrote |
//! | `body` | S | this part of the body |
//!
//! A save is one `TransactWriteItems`: every part or none, part 0 on the
//! condition that the stored snapshot is older, so an older save never
//! replaces a newer one. A smaller save leaves a larger one's last parts
//! behind, with their old version: a load takes the parts of part 0's save
//! only.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use twincell_core::{
    AggregateId, CellId, Snapshot, SnapshotPart, StoreError, StreamId, WriteFailure,
    join_snapshot_parts, snapshot_parts,
};

use crate::{DynamoDbEventStore, PK, SK, partition_key, refuse_oversized, unavailable};

/// The value of `kind` on snapshot items.
pub const SNAPSHOT_KIND: &str = "snapshot";

/// The item collection of `aggregate`'s snapshots.
#[must_use]
pub fn snapshot_partition_key(aggregate: &AggregateId) -> String {
    format!("{SNAPSHOT_KIND}#{}", partition_key(aggregate))
}

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// One stored part: `(index, count, version, format, text)`.
type Part = (usize, usize, u64, u32, String);

fn decode_part(item: &HashMap<String, AttributeValue>) -> Result<(CellId, Part), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("a snapshot item {what}"));
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.as_str()),
        _ => Err(corrupt(&format!("has no string `{name}`"))),
    };
    let num = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse::<u64>()
            .map_err(|_| corrupt(&format!("has `{name}` {n}"))),
        _ => Err(corrupt(&format!("has no number `{name}`"))),
    };
    let sk = text(SK)?;
    let (cell, index) = sk
        .rsplit_once('#')
        .ok_or_else(|| corrupt(&format!("has key {sk}")))?;
    let cell = CellId::new(cell).map_err(|_| corrupt(&format!("has key {sk}")))?;
    let index = index
        .parse::<usize>()
        .map_err(|_| corrupt(&format!("has key {sk}")))?;
    let count = usize::try_from(num("parts")?).map_err(|_| corrupt("has too many parts"))?;
    let format = u32::try_from(num("format")?).map_err(|_| corrupt("has a format out of range"))?;
    Ok((
        cell,
        (
            index,
            count,
            num("version")?,
            format,
            text("body")?.to_owned(),
        ),
    ))
}

impl DynamoDbEventStore {
    pub(crate) async fn save_snapshot_items(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let parts = snapshot_parts(snapshot)?;
        let pk = snapshot_partition_key(&snapshot.stream.aggregate);
        let mut actions = Vec::with_capacity(parts.len());
        for (index, body) in parts.iter().enumerate() {
            let item = HashMap::from([
                (PK.to_owned(), AttributeValue::S(pk.clone())),
                (
                    SK.to_owned(),
                    AttributeValue::S(format!("{}#{index:02}", snapshot.stream.origin)),
                ),
                (
                    "kind".to_owned(),
                    AttributeValue::S(SNAPSHOT_KIND.to_owned()),
                ),
                ("version".to_owned(), number(snapshot.version)),
                ("format".to_owned(), number(snapshot.format)),
                ("parts".to_owned(), number(parts.len())),
                ("body".to_owned(), AttributeValue::S((*body).to_owned())),
            ]);
            refuse_oversized(&item, || {
                format!("part {index} of the snapshot of {}", snapshot.stream)
            })?;
            let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
            if index == 0 {
                put = put
                    .condition_expression("attribute_not_exists(pk) OR version < :v")
                    .expression_attribute_values(":v", number(snapshot.version));
            }
            let put = put
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        let written = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await
            .map_err(|e| crate::write_failure("TransactWriteItems", &e));
        match written {
            // A snapshot at least as new is stored (or being stored).
            Ok(_) | Err(WriteFailure::Taken) => Ok(()),
            Err(WriteFailure::TooLarge(why)) => Err(StoreError::TooLarge(why)),
            Err(WriteFailure::Unavailable(why)) => Err(StoreError::Unavailable(why)),
            Err(WriteFailure::Corrupt(why)) => Err(StoreError::Corrupt(why)),
        }
    }

    pub(crate) async fn load_snapshot_items(
        &self,
        aggregate: &AggregateId,
    ) -> Result<Vec<Snapshot>, StoreError> {
        let pk = snapshot_partition_key(aggregate);
        let mut by_cell: BTreeMap<CellId, Vec<Part>> = BTreeMap::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .consistent_read(true)
                .set_return_consumed_capacity(self.capacity_wanted())
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Query", &e))?;
            self.count_reads(page.consumed_capacity());
            for item in page.items() {
                let (cell, part) = decode_part(item)?;
                by_cell.entry(cell).or_default().push(part);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let mut snapshots = Vec::with_capacity(by_cell.len());
        for (cell, parts) in by_cell {
            let stream = StreamId::new(aggregate.clone(), cell);
            let parts = parts
                .iter()
                .map(|(index, count, version, format, text)| SnapshotPart {
                    index: *index,
                    count: *count,
                    version: *version,
                    format: *format,
                    text,
                });
            snapshots.extend(join_snapshot_parts(&stream, parts)?);
        }
        Ok(snapshots)
    }
}
