//! One cell's ledger saved as a [`Snapshot`], and read back.
//!
//! A ledger is the fold of one stream, so it is snapshotted per stream: the
//! body is the ledger's state in a compact JSON form (arrays rather than
//! objects, instants as Unix milliseconds), and [`LEDGER_SNAPSHOT_FORMAT`]
//! names that form. Reading checks everything a fold would have made true
//! (the format, the stream, the version, every value's range and the
//! ledger's balances), so a snapshot of another format or a damaged one is
//! refused and the ledger is folded from its events instead: never misread.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::keys::{KEYS_REMEMBERED, KeyEntry, KeyMemory, KeyedWrite, WriteKind};
use super::ledger::{CellLedger, RequestKind, ReservationState, ReservationStatus};
use crate::event::{AggregateId, StockFigures, StreamId};
use crate::ids::{CellId, OrderId};
use crate::ports::Snapshot;
use crate::quantity::Quantity;
use crate::timestamp::Timestamp;

/// The encoding of a ledger snapshot's body. Raised whenever the body's
/// shape or meaning changes; a snapshot of any other format is ignored.
pub const LEDGER_SNAPSHOT_FORMAT: u32 = 2;

/// Why a snapshot is not read as a ledger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot of {stream} v{version} is not used: {reason}")]
pub struct SnapshotError {
    /// The snapshot's stream.
    pub stream: StreamId,
    /// The snapshot's version.
    pub version: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// `[order, quantity, reserved at (Unix ms), status (0 held, 1 released,
/// 2 fulfilled)]`.
type ReservationRow = (OrderId, u64, i64, u8);
/// `[order, [[owner, kind (0 release, 1 fulfil)], …]]`.
type RequestRow = (OrderId, Vec<(CellId, u8)>);

/// `[version of the write, key digest, request digest, kind (0 receipt,
/// 1 write-off, 2 transfer), quantity, recorded at (Unix ms), answer
/// [[cell, on hand, reserved, shortage], …], voided (0 or 1)]`.
type KeyRow = (
    u64,
    u64,
    u64,
    u8,
    u64,
    i64,
    Vec<(CellId, u64, u64, u64)>,
    u8,
);
/// `[version, kind, quantity, request digest]` of the last keyable write.
type WriteRow = (u64, u8, u64, u64);

/// The body, format 2 (format 1 had no keys, voids or shortage). Field names are short: the body of a SKU with tens
/// of thousands of orders must stay within [`crate::MAX_SNAPSHOT_BYTES`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    cell: CellId,
    version: u64,
    on_hand: u64,
    reserved: u64,
    received: u64,
    written_off: u64,
    shipped: u64,
    transferred_out: u64,
    transferred_in: u64,
    reservations: Vec<ReservationRow>,
    requests: Vec<RequestRow>,
    transfers_out: Vec<(u64, CellId, u64)>,
    transfers_in: Vec<(CellId, Vec<u64>)>,
    transfers_voided: Vec<u64>,
    transfers_in_voided: Vec<(CellId, u64)>,
    shortage: u64,
    keys: Vec<KeyRow>,
    last_write: Option<WriteRow>,
}

fn status_code(status: ReservationStatus) -> u8 {
    match status {
        ReservationStatus::Held => 0,
        ReservationStatus::Released => 1,
        ReservationStatus::Fulfilled => 2,
    }
}

fn kind_code(kind: RequestKind) -> u8 {
    match kind {
        RequestKind::Release => 0,
        RequestKind::Fulfil => 1,
    }
}

impl CellLedger {
    /// This ledger as a snapshot of its stream of `aggregate`, or `None`
    /// for a ledger that nothing was folded into or whose fold stalled (a
    /// stalled ledger is rare and folds from its events each time).
    #[must_use]
    pub fn snapshot(&self, aggregate: &AggregateId) -> Option<Snapshot> {
        if self.version == 0 || self.stalled.is_some() {
            return None;
        }
        let mut reservations: Vec<ReservationRow> = self
            .reservations
            .iter()
            .map(|(order, r)| {
                (
                    order.clone(),
                    r.quantity.get(),
                    r.reserved_at.unix_millis(),
                    status_code(r.status),
                )
            })
            .collect();
        reservations.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut requests: Vec<RequestRow> = self
            .requests
            .iter()
            .map(|(order, asked)| {
                (
                    order.clone(),
                    asked
                        .iter()
                        .map(|(cell, kind)| (cell.clone(), kind_code(*kind)))
                        .collect(),
                )
            })
            .collect();
        requests.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let body = Body {
            cell: self.cell.clone(),
            version: self.version,
            on_hand: self.on_hand,
            reserved: self.reserved,
            received: self.received,
            written_off: self.written_off,
            shipped: self.shipped,
            transferred_out: self.transferred_out,
            transferred_in: self.transferred_in,
            reservations,
            requests,
            transfers_out: self
                .transfers_out
                .iter()
                .map(|(v, (cell, q))| (*v, cell.clone(), q.get()))
                .collect(),
            transfers_in: self
                .transfers_in
                .iter()
                .map(|(cell, versions)| (cell.clone(), versions.iter().copied().collect()))
                .collect(),
            transfers_voided: self.transfers_voided.iter().copied().collect(),
            transfers_in_voided: self.transfers_in_voided.iter().cloned().collect(),
            shortage: self.shortage,
            keys: self
                .keys
                .iter()
                .map(|(version, e)| {
                    (
                        version,
                        e.digest,
                        e.write.request,
                        e.write.kind.code(),
                        e.write.quantity.get(),
                        e.at.unix_millis(),
                        e.answer
                            .iter()
                            .map(|(cell, f)| (cell.clone(), f.on_hand, f.reserved, f.shortage))
                            .collect(),
                        u8::from(e.voided),
                    )
                })
                .collect(),
            last_write: self
                .last_write
                .map(|(v, w)| (v, w.kind.code(), w.quantity.get(), w.request)),
        };
        // Only strings and integers: serializing cannot fail.
        let body = serde_json::to_string(&body).ok()?;
        Some(Snapshot {
            stream: StreamId::new(aggregate.clone(), self.cell.clone()),
            version: self.version,
            format: LEDGER_SNAPSHOT_FORMAT,
            body,
        })
    }

    /// The ledger a snapshot holds.
    ///
    /// # Errors
    /// [`SnapshotError`] when the snapshot is of another format, of
    /// another stream or version than it says, or holds a state no fold
    /// makes (a value out of range, balances that do not add up).
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<Self, SnapshotError> {
        let refuse = |reason: String| SnapshotError {
            stream: snapshot.stream.clone(),
            version: snapshot.version,
            reason,
        };
        if snapshot.format != LEDGER_SNAPSHOT_FORMAT {
            return Err(refuse(format!(
                "format {} is not {LEDGER_SNAPSHOT_FORMAT}",
                snapshot.format
            )));
        }
        let body: Body = serde_json::from_str(&snapshot.body)
            .map_err(|e| refuse(format!("the body does not decode: {e}")))?;
        if body.cell != snapshot.stream.origin || body.version != snapshot.version {
            return Err(refuse(format!(
                "the body is {} v{}",
                body.cell, body.version
            )));
        }
        let quantity = |q: u64| Quantity::new(q).map_err(|e| refuse(format!("quantity {q}: {e}")));
        let mut reservations = HashMap::with_capacity(body.reservations.len());
        let mut held = 0u64;
        for (order, q, at, status) in body.reservations {
            let status = match status {
                0 => ReservationStatus::Held,
                1 => ReservationStatus::Released,
                2 => ReservationStatus::Fulfilled,
                other => return Err(refuse(format!("reservation status {other}"))),
            };
            let state = ReservationState {
                quantity: quantity(q)?,
                reserved_at: Timestamp::from_unix_millis(at)
                    .map_err(|e| refuse(format!("instant {at}: {e}")))?,
                status,
            };
            if status == ReservationStatus::Held {
                held = held
                    .checked_add(q)
                    .ok_or_else(|| refuse("reserved units overflow".into()))?;
            }
            match reservations.entry(order) {
                std::collections::hash_map::Entry::Occupied(taken) => {
                    return Err(refuse(format!("order {} is listed twice", taken.key())));
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(state);
                }
            }
        }
        let mut requests = HashMap::with_capacity(body.requests.len());
        for (order, asked) in body.requests {
            let mut kinds = Vec::with_capacity(asked.len());
            for (cell, kind) in asked {
                let kind = match kind {
                    0 => RequestKind::Release,
                    1 => RequestKind::Fulfil,
                    other => return Err(refuse(format!("request kind {other}"))),
                };
                kinds.push((cell, kind));
            }
            requests.insert(order, kinds);
        }
        let mut transfers_out = BTreeMap::new();
        for (v, cell, q) in body.transfers_out {
            transfers_out.insert(v, (cell, quantity(q)?));
        }
        let transfers_in: BTreeMap<CellId, BTreeSet<u64>> = body
            .transfers_in
            .into_iter()
            .map(|(cell, versions)| (cell, versions.into_iter().collect()))
            .collect();
        let write = |kind: u8, q: u64, request: u64| -> Result<KeyedWrite, SnapshotError> {
            Ok(KeyedWrite {
                kind: WriteKind::from_code(kind)
                    .ok_or_else(|| refuse(format!("write kind {kind}")))?,
                quantity: quantity(q)?,
                request,
            })
        };
        if body.keys.len() > KEYS_REMEMBERED {
            return Err(refuse(format!(
                "{} keys are more than a ledger keeps",
                body.keys.len()
            )));
        }
        let mut keys = Vec::with_capacity(body.keys.len());
        let mut last_key_version = 0;
        for (version, digest, request, kind, q, at, answer, voided) in body.keys {
            if version <= last_key_version || version >= body.version || voided > 1 {
                return Err(refuse(format!("key row of version {version}")));
            }
            last_key_version = version;
            keys.push((
                version,
                KeyEntry {
                    digest,
                    write: write(kind, q, request)?,
                    at: Timestamp::from_unix_millis(at)
                        .map_err(|e| refuse(format!("instant {at}: {e}")))?,
                    answer: answer
                        .into_iter()
                        .map(|(cell, on_hand, reserved, shortage)| {
                            (
                                cell,
                                StockFigures {
                                    on_hand,
                                    reserved,
                                    shortage,
                                },
                            )
                        })
                        .collect(),
                    voided: voided == 1,
                },
            ));
        }
        let last_write = match body.last_write {
            Some((v, kind, q, request)) if v <= body.version => Some((v, write(kind, q, request)?)),
            Some((v, ..)) => return Err(refuse(format!("last write at version {v}"))),
            None => None,
        };
        let transfers_voided: BTreeSet<u64> = body.transfers_voided.into_iter().collect();
        if !transfers_voided
            .iter()
            .all(|v| transfers_out.contains_key(v))
        {
            return Err(refuse("a voided transfer that was never sent".into()));
        }
        let transfers_in_voided: BTreeSet<(CellId, u64)> =
            body.transfers_in_voided.into_iter().collect();
        if !transfers_in_voided
            .iter()
            .all(|(cell, v)| transfers_in.get(cell).is_some_and(|vs| vs.contains(v)))
        {
            return Err(refuse("a voided transfer that was never taken in".into()));
        }
        let balance = body
            .received
            .checked_add(body.transferred_in)
            .and_then(|inflow| inflow.checked_add(body.shortage))
            .and_then(|inflow| {
                inflow.checked_sub(
                    body.written_off
                        .checked_add(body.shipped)?
                        .checked_add(body.transferred_out)?,
                )
            });
        if balance != Some(body.on_hand) || held != body.reserved || body.reserved > body.on_hand {
            return Err(refuse("its balances do not add up".into()));
        }
        Ok(Self {
            cell: body.cell,
            version: body.version,
            on_hand: body.on_hand,
            reserved: body.reserved,
            received: body.received,
            written_off: body.written_off,
            shipped: body.shipped,
            transferred_out: body.transferred_out,
            transferred_in: body.transferred_in,
            reservations,
            requests,
            transfers_out,
            transfers_in,
            transfers_voided,
            transfers_in_voided,
            shortage: body.shortage,
            keys: KeyMemory::from_entries(keys),
            last_write,
            stalled: None,
        })
    }
}

impl super::Inventory {
    /// `sku` as far as `snapshots` hold it: each cell's ledger from its
    /// snapshot where there is a usable one, empty otherwise, to be
    /// [`advance`](super::Inventory::advance)d with the events after
    /// [`held`](super::Inventory::held). Advanced so, it equals the full
    /// fold. A snapshot of another SKU or of a cell outside `topology`
    /// is not used; one that does not read is reported and not used.
    #[must_use]
    pub fn from_snapshots(
        sku: &crate::ids::Sku,
        topology: &crate::topology::Topology,
        snapshots: &[Snapshot],
    ) -> (Self, Vec<SnapshotError>) {
        let mut inventory = Self::empty(sku, topology);
        let aggregate = AggregateId::inventory(sku);
        let mut refused = Vec::new();
        for snapshot in snapshots {
            if snapshot.stream.aggregate != aggregate {
                continue;
            }
            let Some(slot) = inventory.ledgers.get_mut(&snapshot.stream.origin) else {
                continue;
            };
            match CellLedger::from_snapshot(snapshot) {
                Ok(ledger) => *slot = ledger,
                Err(e) => refused.push(e),
            }
        }
        (inventory, refused)
    }
}
