//! What a ledger remembers of the idempotency keys of its receipts,
//! write-offs and transfers: enough to answer a retry exactly as its first
//! request was answered, and to find the same key used in two cells.
//!
//! Remembered: the key's digest (not the key: a key is up to 255
//! characters and a hot SKU's snapshot must stay small), a digest of the
//! request, the write's kind and quantity, when it was recorded, the answer
//! and whether it was voided. Bounded twice: a key counts for
//! [`KEY_RETENTION_MS`] after its write, and a ledger keeps the last
//! [`KEYS_REMEMBERED`] keyed writes (the oldest leaves first), so the keys
//! of any SKU fit its snapshot however many it sees.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::event::{DomainEvent, StockFigures};
use crate::ids::{CellId, IdempotencyKey};
use crate::quantity::Quantity;
use crate::timestamp::Timestamp;

/// How long a key counts after its write: 24 hours, the time Event Grid
/// keeps retrying a delivery, so a copy of the write made in another cell
/// during any partition replication outlasts is still found when the cells
/// meet.
pub const KEY_RETENTION_MS: i64 = 24 * 60 * 60 * 1_000;

/// How many keyed writes a ledger remembers: the last 2 048 (about 270 KB
/// of a snapshot at most).
pub const KEYS_REMEMBERED: usize = 2_048;

/// The namespace of key and request digests. Fixed forever: a change
/// would make every remembered key unknown.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x4b0e_91c2_d7a3_5f18_8c64_2e9b_a1f0_63d7);

fn digest(text: &str) -> u64 {
    let bytes = Uuid::new_v5(&KEY_NAMESPACE, text.as_bytes()).into_bytes();
    let mut head = [0u8; 8];
    head.copy_from_slice(bytes.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(head)
}

/// The digest a ledger remembers a key by.
#[must_use]
pub fn key_digest(key: &IdempotencyKey) -> u64 {
    digest(key.as_str())
}

/// Which write a key was used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// A receipt.
    Receive,
    /// A write-off.
    WriteOff,
    /// A transfer out.
    Transfer,
}

impl WriteKind {
    pub(super) fn code(self) -> u8 {
        match self {
            Self::Receive => 0,
            Self::WriteOff => 1,
            Self::Transfer => 2,
        }
    }

    pub(super) fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::Receive),
            1 => Some(Self::WriteOff),
            2 => Some(Self::Transfer),
            _ => None,
        }
    }
}

/// A write that can carry a key: its kind, units, and the digest of the
/// request (kind and payload), which tells a retry from another request
/// under the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedWrite {
    /// The kind.
    pub kind: WriteKind,
    /// Units.
    pub quantity: Quantity,
    /// Digest of the request.
    pub request: u64,
}

impl KeyedWrite {
    /// The write `event` is, when it is one that can carry a key.
    ///
    /// Every receipt, write-off and transfer a ledger folds passes here,
    /// keyed or not, so the request digest is FNV-1a over the fields, with
    /// no allocation: a SHA-1 of a formatted string here made a fold half
    /// as slow again. It only tells one client's requests under one key
    /// apart; the key itself is digested with SHA-1 ([`key_digest`]).
    #[must_use]
    pub fn of(event: &DomainEvent) -> Option<Self> {
        let (kind, quantity, text) = match event {
            DomainEvent::StockReceived { quantity } => (WriteKind::Receive, *quantity, ""),
            DomainEvent::StockWrittenOff { quantity, reason } => {
                (WriteKind::WriteOff, *quantity, reason.as_str())
            }
            DomainEvent::AllocationTransferred { to_cell, quantity } => {
                (WriteKind::Transfer, *quantity, to_cell.as_str())
            }
            _ => return None,
        };
        Some(Self {
            kind,
            quantity,
            request: fnv1a(&[
                &[kind.code()],
                &quantity.get().to_le_bytes(),
                text.as_bytes(),
            ]),
        })
    }
}

/// 64-bit FNV-1a over `parts`, each followed by a separator byte (0xff,
/// which no part's text holds), so that no two field lists hash alike by
/// running into each other.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// One remembered keyed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key's digest.
    pub digest: u64,
    /// The write.
    pub write: KeyedWrite,
    /// When its cell recorded it: the first half of the tie-break between
    /// copies in two cells.
    pub at: Timestamp,
    /// What its request was answered.
    pub answer: BTreeMap<CellId, StockFigures>,
    /// Whether a copy recorded earlier in another cell voided it.
    pub voided: bool,
}

impl KeyEntry {
    /// Whether the key still counts at `now`.
    #[must_use]
    pub fn live_at(&self, now: Timestamp) -> bool {
        now.unix_millis().saturating_sub(self.at.unix_millis()) < KEY_RETENTION_MS
    }
}

/// The keyed writes a ledger remembers, by the version of the write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyMemory {
    entries: BTreeMap<u64, KeyEntry>,
    /// Per digest, the version of its latest write.
    latest: HashMap<u64, u64>,
    /// The version of the newest write (0 when none is): what
    /// [`newest`](Self::newest) answers without walking the tree.
    newest: u64,
}

/// What [`KeyMemory::insert`] changed, to take it back.
#[derive(Debug)]
pub(super) struct KeyInsert {
    version: u64,
    digest: u64,
    prior_latest: Option<u64>,
    prior_newest: u64,
    evicted: Option<(u64, KeyEntry, bool)>,
}

impl KeyMemory {
    /// Remembered writes, oldest first, by version.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &KeyEntry)> {
        self.entries.iter().map(|(v, e)| (*v, e))
    }

    /// How many writes are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The version of the newest remembered write (0 when none is).
    #[must_use]
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// The write at `version`, when it is remembered.
    #[must_use]
    pub fn at_version(&self, version: u64) -> Option<&KeyEntry> {
        self.entries.get(&version)
    }

    /// The latest write under `digest`, with its version.
    #[must_use]
    pub fn latest(&self, digest: u64) -> Option<(u64, &KeyEntry)> {
        let version = *self.latest.get(&digest)?;
        self.entries.get(&version).map(|e| (version, e))
    }

    pub(super) fn insert(&mut self, version: u64, entry: KeyEntry) -> KeyInsert {
        let digest = entry.digest;
        let prior_latest = self.latest.insert(digest, version);
        let prior_newest = self.newest;
        self.newest = self.newest.max(version);
        self.entries.insert(version, entry);
        let evicted = if self.entries.len() > KEYS_REMEMBERED {
            self.entries.pop_first().map(|(v, e)| {
                let was_latest = self.latest.get(&e.digest) == Some(&v);
                if was_latest {
                    self.latest.remove(&e.digest);
                }
                (v, e, was_latest)
            })
        } else {
            None
        };
        KeyInsert {
            version,
            digest,
            prior_latest,
            prior_newest,
            evicted,
        }
    }

    pub(super) fn undo_insert(&mut self, undo: KeyInsert) {
        if let Some((v, e, was_latest)) = undo.evicted {
            if was_latest {
                self.latest.insert(e.digest, v);
            }
            self.entries.insert(v, e);
        }
        self.entries.remove(&undo.version);
        self.newest = undo.prior_newest;
        match undo.prior_latest {
            Some(prior) => self.latest.insert(undo.digest, prior),
            None => self.latest.remove(&undo.digest),
        };
    }

    pub(super) fn set_voided(&mut self, version: u64, voided: bool) {
        if let Some(entry) = self.entries.get_mut(&version) {
            entry.voided = voided;
        }
    }

    /// Rebuilds the memory from its entries (a snapshot's), oldest first.
    pub(super) fn from_entries(entries: impl IntoIterator<Item = (u64, KeyEntry)>) -> Self {
        let mut memory = Self::default();
        for (version, entry) in entries {
            memory.latest.insert(entry.digest, version);
            memory.newest = memory.newest.max(version);
            memory.entries.insert(version, entry);
        }
        memory
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(digest: u64, at: i64) -> KeyEntry {
        KeyEntry {
            digest,
            write: KeyedWrite {
                kind: WriteKind::Receive,
                quantity: Quantity::new(1).unwrap(),
                request: 7,
            },
            at: Timestamp::from_unix_millis(at).unwrap(),
            answer: BTreeMap::new(),
            voided: false,
        }
    }

    #[test]
    fn the_oldest_write_leaves_first_and_an_insert_taken_back_restores_it() {
        let mut memory = KeyMemory::default();
        for v in 1..=u64::try_from(KEYS_REMEMBERED).unwrap() {
            let _ = memory.insert(v, entry(v, 0));
        }
        let before = memory.clone();
        let undo = memory.insert(10_000, entry(1, 5));
        assert_eq!(memory.len(), KEYS_REMEMBERED);
        assert!(memory.at_version(1).is_none());
        assert_eq!(memory.latest(1).map(|(v, _)| v), Some(10_000));
        memory.undo_insert(undo);
        assert_eq!(memory, before);
        assert_eq!(memory.latest(1).map(|(v, _)| v), Some(1));
    }

    #[test]
    fn a_key_counts_for_the_retention_and_not_a_millisecond_longer() {
        let e = entry(1, 1_000);
        assert!(e.live_at(Timestamp::from_unix_millis(1_000 + KEY_RETENTION_MS - 1).unwrap()));
        assert!(!e.live_at(Timestamp::from_unix_millis(1_000 + KEY_RETENTION_MS).unwrap()));
    }

    #[test]
    fn a_request_digest_tells_payloads_apart() {
        let q = |n| Quantity::new(n).unwrap();
        let one = KeyedWrite::of(&DomainEvent::StockReceived { quantity: q(5) }).unwrap();
        let same = KeyedWrite::of(&DomainEvent::StockReceived { quantity: q(5) }).unwrap();
        let other = KeyedWrite::of(&DomainEvent::StockReceived { quantity: q(6) }).unwrap();
        assert_eq!(one, same);
        assert_ne!(one.request, other.request);
        let write_off = |reason: &str| {
            KeyedWrite::of(&DomainEvent::StockWrittenOff {
                quantity: q(5),
                reason: crate::WriteOffReason::new(reason).unwrap(),
            })
            .unwrap()
            .request
        };
        let transfer = |to: &str| {
            KeyedWrite::of(&DomainEvent::AllocationTransferred {
                to_cell: CellId::new(to).unwrap(),
                quantity: q(5),
            })
            .unwrap()
            .request
        };
        let requests = [
            one.request,
            write_off("damaged"),
            write_off("crushed"),
            transfer("aws"),
            transfer("azure"),
        ];
        let distinct: std::collections::BTreeSet<u64> = requests.iter().copied().collect();
        assert_eq!(distinct.len(), requests.len(), "{requests:?}");
    }
}
