//! Two cells, each with its own store, run random inventory commands —
//! among them receipts, write-offs and transfers with idempotency keys,
//! retried in the same cell and in the other — while replication between
//! them is delayed, duplicated, reordered and partitioned. The escrow invariant is checked in each cell's view after
//! every step — by an accounting model written here, independent of the
//! core's fold — and in the merged state after full delivery.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use twincell_core::event::{AggregateId, DomainEvent, RecordedEvent};
use twincell_core::inventory::{
    Inventory, InventoryCommand, InventoryError, InventoryOutcome, ReservationStatus,
};
use twincell_core::testing::{ManualClock, SequentialIds, block_on};
use twincell_core::{
    CellId, CreateTransaction, EventStore, IdempotencyKey, InMemoryEventStore, OrderId, Quantity,
    Service, ServiceError, Sku, Timestamp, Topology, WriteOffReason,
};
use uuid::Uuid;

type Cell = Service<InMemoryEventStore, ManualClock, SequentialIds>;

const SKUS: [&str; 2] = ["sku-a", "sku-b"];
const ORDERS: usize = 6;
const KEYS: usize = 4;

#[derive(Debug, Clone)]
enum Cmd {
    Receive(u64),
    WriteOff(u64),
    Reserve(usize, u64),
    Release(usize),
    Fulfil(usize),
    Transfer(u64),
    Reconcile,
    /// The keyed write `i` of the case (see [`Keyed`]), sent to the cell
    /// of the step: a first request, or a retry in the same or the other
    /// cell.
    Keyed(usize),
}

/// A client's write with an idempotency key: the same request every time
/// it is sent, in whichever cell.
#[derive(Debug, Clone, Copy)]
enum Keyed {
    Receive(u64),
    WriteOff(u64),
    /// To the cell of this index.
    Transfer(usize, u64),
}

fn keyed() -> impl Strategy<Value = Keyed> {
    prop_oneof![
        3 => (1u64..=8).prop_map(Keyed::Receive),
        1 => (1u64..=4).prop_map(Keyed::WriteOff),
        1 => (0..2usize, 1u64..=6).prop_map(|(to, n)| Keyed::Transfer(to, n)),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Command { cell: usize, sku: usize, cmd: Cmd },
    Deliver { pick: usize, duplicate: bool },
    Partition(bool),
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        3 => (1u64..=8).prop_map(Cmd::Receive),
        1 => (1u64..=4).prop_map(Cmd::WriteOff),
        5 => (0..ORDERS, 1u64..=5).prop_map(|(o, q)| Cmd::Reserve(o, q)),
        2 => (0..ORDERS).prop_map(Cmd::Release),
        2 => (0..ORDERS).prop_map(Cmd::Fulfil),
        2 => (1u64..=6).prop_map(Cmd::Transfer),
        1 => Just(Cmd::Reconcile),
        3 => (0..KEYS).prop_map(Cmd::Keyed),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..2usize, 0..SKUS.len(), cmd()).prop_map(|(cell, sku, cmd)| Step::Command { cell, sku, cmd }),
        5 => (any::<usize>(), proptest::bool::weighted(0.2)).prop_map(|(pick, duplicate)| Step::Deliver { pick, duplicate }),
        1 => any::<bool>().prop_map(Step::Partition),
    ]
}

fn cell_id(i: usize) -> CellId {
    CellId::new(["aws", "azure"][i]).unwrap()
}

struct World {
    cells: [Cell; 2],
    published: [BTreeSet<Uuid>; 2],
    in_flight: Vec<(usize, RecordedEvent)>,
    partitioned: bool,
    /// The case's keyed writes: key `key-{i}` always asks for `keyed[i]`.
    keyed: Vec<Keyed>,
    /// Per (SKU, key), the cells that applied the write (rather than
    /// answering a replay or refusing it).
    applied: BTreeMap<(usize, usize), BTreeSet<usize>>,
}

impl World {
    fn new(clock_offsets: (i64, i64)) -> Self {
        Self::with_keyed(clock_offsets, Vec::new())
    }

    fn with_keyed(clock_offsets: (i64, i64), keyed: Vec<Keyed>) -> Self {
        let make = |i: usize, offset: i64| {
            let topology = Topology::new(cell_id(i), [cell_id(0), cell_id(1)]);
            let clock = ManualClock::new(Timestamp::from_unix_millis(1_000 + offset).unwrap(), 1);
            let ids = SequentialIds::starting_after(u64::try_from(i).unwrap() * 1_000_000);
            let service = Service::new(topology, InMemoryEventStore::new(), clock, ids);
            // The second cell keeps nothing between commands and snapshots
            // every other event: its commands start from snapshots and the
            // events after them, under the same schedules.
            if i == 1 {
                service.with_cache_capacity(0).with_snapshot_every(2)
            } else {
                service
            }
        };
        Self {
            cells: [make(0, clock_offsets.0), make(1, clock_offsets.1)],
            published: [BTreeSet::new(), BTreeSet::new()],
            in_flight: Vec::new(),
            partitioned: false,
            keyed,
            applied: BTreeMap::new(),
        }
    }

    /// What the shortage of a SKU is bounded by: the units of keyed
    /// receipts and transfers applied in both cells (a retry that got
    /// ahead of replication). Zero when there was no such retry.
    fn shortage_bound(&self, sku: usize) -> u64 {
        self.applied
            .iter()
            .filter(|((s, _), cells)| *s == sku && cells.len() > 1)
            .map(|((_, key), _)| match self.keyed[*key] {
                Keyed::Receive(n) | Keyed::Transfer(_, n) => n,
                Keyed::WriteOff(_) => 0,
            })
            .sum()
    }

    /// Puts every event a cell wrote and has not sent yet on the wire to the
    /// other cell.
    fn publish(&mut self) {
        for i in 0..2 {
            for e in self.cells[i].store().events_from(&cell_id(i)) {
                if self.published[i].insert(e.event_id()) {
                    self.in_flight.push((1 - i, e));
                }
            }
        }
    }

    fn deliver(&mut self, index: usize, duplicate: bool) {
        let (to, event) = if duplicate {
            self.in_flight[index].clone()
        } else {
            self.in_flight.remove(index)
        };
        block_on(self.cells[to].apply_replicated(&event)).expect("replicated apply succeeds");
        self.publish();
    }

    fn run(&mut self, cell: usize, sku: usize, cmd: &Cmd) {
        let sku = Sku::new(SKUS[sku]).unwrap();
        let order = |o: usize| OrderId::new(format!("order-{o}")).unwrap();
        let q = |n: u64| Quantity::new(n).unwrap();
        let key = |i: usize| Some(IdempotencyKey::new(format!("key-{i}")).unwrap());
        let damaged = || WriteOffReason::new("damaged").unwrap();
        let command = match cmd {
            Cmd::Receive(n) => InventoryCommand::Receive(q(*n), None),
            Cmd::WriteOff(n) => InventoryCommand::WriteOff(q(*n), damaged(), None),
            Cmd::Keyed(i) => match self.keyed[*i % self.keyed.len()] {
                Keyed::Receive(n) => InventoryCommand::Receive(q(n), key(*i)),
                Keyed::WriteOff(n) => InventoryCommand::WriteOff(q(n), damaged(), key(*i)),
                Keyed::Transfer(to, n) => InventoryCommand::Transfer(cell_id(to), q(n), key(*i)),
            },
            Cmd::Reserve(o, n) => InventoryCommand::Reserve(order(*o), q(*n)),
            Cmd::Release(o) => InventoryCommand::Release(order(*o)),
            Cmd::Fulfil(o) => InventoryCommand::Fulfil(order(*o)),
            Cmd::Transfer(n) => InventoryCommand::Transfer(cell_id(1 - cell), q(*n), None),
            Cmd::Reconcile => InventoryCommand::Reconcile,
        };
        match block_on(self.cells[cell].execute(&sku, &command)) {
            Ok(InventoryOutcome::Applied(_)) => {
                if let Cmd::Keyed(i) = cmd {
                    let key = (
                        SKUS.iter().position(|s| *s == sku.as_str()).unwrap(),
                        *i % self.keyed.len(),
                    );
                    self.applied.entry(key).or_default().insert(cell);
                }
            }
            Ok(_) => {}
            // Refusals are the rules working; they must be the clean kinds
            // (a keyed transfer retried in the cell it goes to is refused).
            Err(ServiceError::Inventory(
                InventoryError::InsufficientStock { .. }
                | InventoryError::ReservationMismatch { .. }
                | InventoryError::ReservationClosed { .. }
                | InventoryError::ReservationNotFound { .. }
                | InventoryError::InvalidTransferTarget(_),
            )) => {}
            Err(e) => panic!("unexpected error for {cmd:?} in cell {cell}: {e}"),
        }
        self.publish();
    }

    fn events(&self, cell: usize, sku: usize) -> Vec<RecordedEvent> {
        let sku = Sku::new(SKUS[sku]).unwrap();
        block_on(self.cells[cell].store().load(&AggregateId::inventory(&sku))).unwrap()
    }
}

/// The accounting model: per origin, walk the contiguous prefix and keep
/// signed totals, asserting the escrow rule at every event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Books {
    on_hand: i128,
    reserved: i128,
    received: i128,
    written_off: i128,
    shipped: i128,
    out: i128,
    inn: i128,
    /// Units reserved that no receipt backs (voided receipts that could
    /// not be taken back out).
    shortage: i128,
    /// Keyed writes not voided, by key.
    keyed: BTreeMap<IdempotencyKey, i128>,
}

fn audit(events: &[RecordedEvent]) -> Result<BTreeMap<CellId, Books>, TestCaseError> {
    let mut by_origin: BTreeMap<CellId, Vec<&RecordedEvent>> = BTreeMap::new();
    for e in events {
        by_origin.entry(e.origin().clone()).or_default().push(e);
    }
    let mut out = BTreeMap::new();
    for (origin, mut stream) in by_origin {
        stream.sort_by_key(|e| e.version());
        let mut b = Books::default();
        let mut held: BTreeMap<OrderId, i128> = BTreeMap::new();
        // Every event so far, by version, and the key of each keyed write.
        let mut written: BTreeMap<u64, DomainEvent> = BTreeMap::new();
        let mut keys: BTreeMap<u64, IdempotencyKey> = BTreeMap::new();
        for (expected, e) in (1u64..).zip(stream) {
            if e.version() != expected {
                break;
            }
            let n = |q: &Quantity| i128::from(q.get());
            written.insert(e.version(), e.event().clone());
            match e.event() {
                DomainEvent::IdempotencyKeyRecorded { key, .. } => {
                    let before = written.get(&(expected - 1));
                    prop_assert!(
                        matches!(
                            before,
                            Some(
                                DomainEvent::StockReceived { .. }
                                    | DomainEvent::StockWrittenOff { .. }
                                    | DomainEvent::AllocationTransferred { .. }
                            )
                        ),
                        "{origin}: a key at v{expected} follows {before:?}"
                    );
                    keys.insert(expected - 1, key.clone());
                    *b.keyed.entry(key.clone()).or_default() += 1;
                }
                DomainEvent::DuplicateWriteVoided {
                    version, shortage, ..
                } => {
                    let key = keys.get(version).cloned();
                    prop_assert!(key.is_some(), "{origin}: v{version} voided but not keyed");
                    *b.keyed.entry(key.unwrap()).or_default() -= 1;
                    let s = i128::from(*shortage);
                    match written.get(version) {
                        Some(DomainEvent::StockReceived { quantity }) => {
                            b.received -= n(quantity);
                            b.on_hand -= n(quantity) - s;
                            b.shortage += s;
                        }
                        Some(DomainEvent::StockWrittenOff { quantity, .. }) => {
                            prop_assert_eq!(s, 0);
                            b.written_off -= n(quantity);
                            b.on_hand += n(quantity);
                        }
                        Some(DomainEvent::AllocationTransferred { quantity, .. }) => {
                            prop_assert_eq!(s, 0);
                            b.out -= n(quantity);
                            b.on_hand += n(quantity);
                        }
                        other => prop_assert!(false, "{origin}: voided {other:?}"),
                    }
                }
                DomainEvent::ReceivedTransferVoided {
                    quantity, shortage, ..
                } => {
                    b.inn -= n(quantity);
                    b.on_hand -= n(quantity) - i128::from(*shortage);
                    b.shortage += i128::from(*shortage);
                }
                DomainEvent::ShortageSettled { quantity } => {
                    b.on_hand -= n(quantity);
                    b.shortage -= n(quantity);
                    prop_assert!(b.shortage >= 0, "{origin}: settled more than the shortage");
                }
                DomainEvent::StockReceived { quantity } => {
                    b.on_hand += n(quantity);
                    b.received += n(quantity);
                }
                DomainEvent::StockWrittenOff { quantity, .. } => {
                    b.on_hand -= n(quantity);
                    b.written_off += n(quantity);
                }
                DomainEvent::StockReserved { order_id, quantity } => {
                    prop_assert!(held.insert(order_id.clone(), n(quantity)).is_none());
                    b.reserved += n(quantity);
                }
                DomainEvent::ReservationReleased {
                    order_id, quantity, ..
                } => {
                    prop_assert_eq!(held.remove(order_id), Some(n(quantity)));
                    b.reserved -= n(quantity);
                }
                DomainEvent::ReservationFulfilled {
                    order_id, quantity, ..
                } => {
                    prop_assert_eq!(held.remove(order_id), Some(n(quantity)));
                    b.reserved -= n(quantity);
                    b.on_hand -= n(quantity);
                    b.shipped += n(quantity);
                }
                DomainEvent::AllocationTransferred { quantity, .. } => {
                    b.on_hand -= n(quantity);
                    b.out += n(quantity);
                }
                DomainEvent::AllocationReceived { quantity, .. } => {
                    b.on_hand += n(quantity);
                    b.inn += n(quantity);
                }
                DomainEvent::ReleaseRequested { .. } | DomainEvent::FulfilmentRequested { .. } => {}
                DomainEvent::TransactionCreated { .. } => {
                    prop_assert!(false, "transaction in inventory")
                }
            }
            prop_assert!(
                b.reserved >= 0,
                "{origin}: reserved negative at v{expected}"
            );
            prop_assert!(
                b.on_hand - b.reserved >= 0,
                "{origin}: available negative at v{expected}: {b:?}"
            );
        }
        out.insert(origin, b);
    }
    Ok(out)
}

/// The invariant in one cell's view of one SKU, checked against the model
/// and against what the service reports.
fn check_view(world: &World, cell: usize, sku: usize) -> Result<(), TestCaseError> {
    let events = world.events(cell, sku);
    let books = audit(&events)?;
    let total = |f: fn(&Books) -> i128| books.values().map(f).sum::<i128>();
    // Units reserved or shipped never exceed units received minus written
    // off, but for a reported shortage; and a shortage only ever comes of
    // a keyed write retried in both cells, and never exceeds its units.
    prop_assert!(
        total(|b| b.reserved + b.shipped)
            <= total(|b| b.received - b.written_off) + total(|b| b.shortage),
        "oversold in the view of cell {cell}: {books:?}"
    );
    let bound = i128::from(world.shortage_bound(sku));
    prop_assert!(
        total(|b| b.shortage) <= bound,
        "shortage {} over the bound {bound} in the view of cell {cell}: {books:?}",
        total(|b| b.shortage)
    );
    // No stock is created by transfers: every receipt is backed (two cells:
    // a receipt is in the receiver's stream, the transfer in the sender's,
    // and each of them sees its own stream in full).
    prop_assert!(
        total(|b| b.inn) <= total(|b| b.out),
        "transfer minted stock: {books:?}"
    );
    // The service's view agrees with the model.
    let view = block_on(world.cells[cell].inventory(&Sku::new(SKUS[sku]).unwrap())).unwrap();
    for (c, b) in &books {
        let v = view.cells[c];
        prop_assert_eq!(i128::from(v.on_hand), b.on_hand);
        prop_assert_eq!(i128::from(v.reserved), b.reserved);
        prop_assert_eq!(i128::from(v.shortage), b.shortage);
    }
    Ok(())
}

fn check_all_views(world: &World) -> Result<(), TestCaseError> {
    for cell in 0..2 {
        for sku in 0..SKUS.len() {
            check_view(world, cell, sku)?;
            check_incremental_fold(world, cell, sku)?;
        }
    }
    Ok(())
}

/// Folding part of a SKU's events and advancing with what the store's
/// `load_after` gives for what that fold holds is the full fold, whatever
/// the part: a prefix of each stream, with or without some later events
/// past a gap.
fn check_incremental_fold(world: &World, cell: usize, sku: usize) -> Result<(), TestCaseError> {
    let store = world.cells[cell].store();
    let name = Sku::new(SKUS[sku]).unwrap();
    let topology = world.cells[cell].topology();
    let all = world.events(cell, sku);
    let full = Inventory::fold(&name, topology, &all).unwrap();
    let len = u64::try_from(all.len()).unwrap();
    for cut in [0, len / 2, len.saturating_sub(1)] {
        // Per origin: versions up to a cut, and every third event after it.
        let part: Vec<RecordedEvent> = all
            .iter()
            .filter(|e| e.version() <= cut || e.version() % 3 == 0)
            .cloned()
            .collect();
        let mut state = Inventory::fold(&name, topology, &part).unwrap();
        let newer =
            block_on(store.load_after(&AggregateId::inventory(&name), &state.held())).unwrap();
        state.advance(&newer).unwrap();
        prop_assert_eq!(&state, &full, "cut {}: incremental fold differs", cut);
    }
    Ok(())
}

/// Heals the partition and delivers everything, including what the
/// deliveries cause, until nothing is in flight.
fn settle(world: &mut World) -> Result<(), TestCaseError> {
    world.partitioned = false;
    for _ in 0..1_000 {
        if world.in_flight.is_empty() {
            return Ok(());
        }
        world.deliver(0, false);
        check_all_views(world)?;
    }
    Err(TestCaseError::fail("replication did not quiesce"))
}

fn check_merged(world: &World) -> Result<(), TestCaseError> {
    for (sku, name) in SKUS.iter().enumerate() {
        let a: BTreeSet<_> = world
            .events(0, sku)
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        let b: BTreeSet<_> = world
            .events(1, sku)
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        prop_assert_eq!(&a, &b, "cells hold different events after full delivery");
        let name = Sku::new(*name).unwrap();
        let va = block_on(world.cells[0].inventory(&name)).unwrap();
        let vb = block_on(world.cells[1].inventory(&name)).unwrap();
        prop_assert_eq!(&va, &vb, "views differ after full delivery");

        let events = world.events(0, sku);
        let books = audit(&events)?;
        let total = |f: fn(&Books) -> i128| books.values().map(f).sum::<i128>();
        prop_assert_eq!(
            total(|b| b.inn),
            total(|b| b.out),
            "every transfer is taken in exactly once"
        );
        prop_assert_eq!(
            total(|b| b.on_hand),
            total(|b| b.received - b.written_off - b.shipped + b.shortage),
            "units are conserved"
        );
        // Every keyed write is counted once: of its copies in the two
        // cells, one stands.
        let mut copies: BTreeMap<&IdempotencyKey, i128> = BTreeMap::new();
        for b in books.values() {
            for (key, n) in &b.keyed {
                *copies.entry(key).or_default() += n;
            }
        }
        for (key, n) in &copies {
            prop_assert_eq!(*n, 1, "{} counted {} times", key, n);
        }
        let applied = world.applied.keys().filter(|(s, _)| *s == sku).count();
        prop_assert_eq!(copies.len(), applied, "a keyed write is missing");

        // Healed: an order is held in at most one cell, and no request to a
        // cell is left unanswered.
        let mut held: BTreeMap<OrderId, Vec<CellId>> = BTreeMap::new();
        let mut requests = Vec::new();
        for e in &events {
            match e.event() {
                DomainEvent::ReleaseRequested { order_id, owner }
                | DomainEvent::FulfilmentRequested { order_id, owner } => {
                    requests.push((order_id.clone(), owner.clone()))
                }
                _ => {}
            }
        }
        let inventory = twincell_core::Inventory::fold(
            &name,
            &Topology::new(cell_id(0), [cell_id(1)]),
            &events,
        )
        .unwrap();
        for (cell, ledger) in inventory.ledgers() {
            prop_assert!(
                ledger.stalled().is_none(),
                "{cell} stalled: {:?}",
                ledger.stalled()
            );
            for (order, r) in ledger.reservations() {
                if r.status == ReservationStatus::Held {
                    held.entry(order.clone()).or_default().push(cell.clone());
                }
            }
        }
        for (order, cells) in &held {
            prop_assert!(cells.len() == 1, "order {order} still held in {cells:?}");
        }
        for (order, owner) in &requests {
            prop_assert!(
                !held.get(order).is_some_and(|cells| cells.contains(owner)),
                "request for {order} to {owner} was never applied"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn escrow_invariant_holds_under_any_replication_schedule(
        offsets in (0i64..4, 0i64..4),
        keyed in proptest::collection::vec(keyed(), KEYS),
        steps in proptest::collection::vec(step(), 50..120),
    ) {
        let mut world = World::with_keyed(offsets, keyed);
        for step in &steps {
            match step {
                Step::Command { cell, sku, cmd } => world.run(*cell, *sku, cmd),
                Step::Deliver { pick, duplicate } => {
                    if !world.partitioned && !world.in_flight.is_empty() {
                        let index = pick % world.in_flight.len();
                        world.deliver(index, *duplicate);
                    }
                }
                Step::Partition(on) => world.partitioned = *on,
            }
            check_all_views(&world)?;
        }
        settle(&mut world)?;
        check_merged(&world)?;
    }

    #[test]
    fn duplicate_reservations_made_during_a_partition_heal_to_one(
        offsets in (0i64..4, 0i64..4),
        stock in (5u64..10, 5u64..10),
        quantities in (1u64..=5, 1u64..=5),
        first in 0usize..2,
    ) {
        let mut world = World::new(offsets);
        world.run(0, 0, &Cmd::Receive(stock.0));
        world.run(1, 0, &Cmd::Receive(stock.1));
        // The client's retry overtakes replication: both cells reserve order-0.
        world.run(first, 0, &Cmd::Reserve(0, quantities.0));
        world.run(1 - first, 0, &Cmd::Reserve(0, quantities.1));
        let held_before: usize = (0..2)
            .map(|c| block_on(world.cells[c].inventory(&Sku::new(SKUS[0]).unwrap())).unwrap().cells[&cell_id(c)].reserved)
            .filter(|r| *r > 0)
            .count();
        prop_assert_eq!(held_before, 2);
        settle(&mut world)?;
        check_merged(&world)?;
        let view = block_on(world.cells[0].inventory(&Sku::new(SKUS[0]).unwrap())).unwrap();
        prop_assert!(view.reserved == quantities.0 || view.reserved == quantities.1);
    }

    #[test]
    fn a_keyed_receipt_retried_in_the_other_cell_is_counted_once_in_both(
        offsets in (0i64..4, 0i64..4),
        units in 1u64..=8,
        reserve in 0u64..=8,
        first in 0usize..2,
        stock in 0u64..=8,
    ) {
        let mut world = World::with_keyed(offsets, vec![Keyed::Receive(units)]);
        let sku = Sku::new(SKUS[0]).unwrap();
        // Some stock of the first cell's own, then a partition: the retry
        // reaches the other cell before replication does, and that cell
        // reserves units it believes it has.
        if stock > 0 {
            world.run(first, 0, &Cmd::Receive(stock));
        }
        world.partitioned = true;
        world.run(first, 0, &Cmd::Keyed(0));
        world.run(1 - first, 0, &Cmd::Keyed(0));
        let reserve = reserve.min(units);
        if reserve > 0 {
            world.run(1 - first, 0, &Cmd::Reserve(0, reserve));
        }
        prop_assert_eq!(world.applied[&(0, 0)].len(), 2, "both cells applied it");
        for c in 0..2 {
            check_view(&world, c, 0)?;
        }
        settle(&mut world)?;
        check_merged(&world)?;
        for c in 0..2 {
            let view = block_on(world.cells[c].inventory(&sku)).unwrap();
            prop_assert_eq!(view.on_hand, stock + units, "the pallet counted once in cell {}", c);
            prop_assert_eq!(view.reserved, reserve);
            // Whichever copy stood, the other cell's stock covers what the
            // voided copy had reserved: nothing is short.
            prop_assert_eq!(view.shortage, 0);
        }
        // A further retry in either cell is answered, not applied.
        for c in 0..2 {
            let again = block_on(world.cells[c].execute(&sku, &InventoryCommand::Receive(
                Quantity::new(units).unwrap(),
                Some(IdempotencyKey::new("key-0").unwrap()),
            ))).unwrap();
            prop_assert!(matches!(again, InventoryOutcome::Replayed(_)), "{:?}", again);
        }
    }

    #[test]
    fn the_same_idempotent_transaction_created_in_both_cells_merges_to_one(
        offsets in (0i64..50, 0i64..50),
        amount in 1u64..1_000_000,
        deliver_first in 0usize..2,
    ) {
        let mut world = World::new(offsets);
        let payment = CreateTransaction::from_json(&serde_json::json!({
            "account_id": "acct-1", "amount": format!("{amount}.5"), "currency": "EUR"
        })).unwrap();
        let key = IdempotencyKey::new("retry-me").unwrap();
        // Partitioned: the retry reaches the other cell before replication.
        let created: Vec<_> = (0..2)
            .map(|c| block_on(world.cells[c].create_transaction(&payment, Some(&key))).unwrap())
            .collect();
        prop_assert!(created.iter().all(|c| !c.replayed));
        prop_assert_eq!(created[0].transaction.id(), created[1].transaction.id());
        world.publish();
        if deliver_first == 1 {
            world.in_flight.reverse();
        }
        settle(&mut world)?;

        let id = created[0].transaction.id();
        let merged: Vec<_> = (0..2).map(|c| block_on(world.cells[c].transaction(id)).unwrap()).collect();
        prop_assert_eq!(&merged[0], &merged[1]);
        let earliest = created
            .iter()
            .map(|c| &c.transaction)
            .min_by_key(|t| (t.created_at(), t.cell().clone()))
            .unwrap();
        prop_assert_eq!(&merged[0], earliest);
        // A further retry in either cell replays the canonical transaction.
        for c in 0..2 {
            let again = block_on(world.cells[c].create_transaction(&payment, Some(&key))).unwrap();
            prop_assert!(again.replayed);
            prop_assert_eq!(again.transaction.view(), merged[0].view());
        }
    }
}

proptest! {
    // Each case replays some 150 deliveries over a SKU of some 500 events,
    // every one reloading it (quadratic in a debug build): a few random
    // orders and sizes on both sides of the chunk boundary.
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn more_owed_reconcile_events_than_one_append_holds_are_applied_in_chunks(
        order in (101usize..=170).prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle()),
        duplicate_every in 5usize..50,
    ) {
        let n = order.len();
        let mut world = World::new((0, 0));
        let sku = Sku::new(SKUS[0]).unwrap();
        let n64 = u64::try_from(n).unwrap();
        // azure holds n one-unit reservations; aws sees them all.
        block_on(world.cells[1].receive(&sku, Quantity::new(n64).unwrap())).unwrap();
        for o in 0..n {
            let cmd = InventoryCommand::Reserve(OrderId::new(format!("burst-{o}")).unwrap(), Quantity::new(1).unwrap());
            block_on(world.cells[1].execute(&sku, &cmd)).unwrap();
        }
        world.publish();
        settle(&mut world)?;
        // aws asks azure to release every one of them: n release requests.
        for o in 0..n {
            let cmd = InventoryCommand::Release(OrderId::new(format!("burst-{o}")).unwrap());
            block_on(world.cells[0].execute(&sku, &cmd)).unwrap();
        }
        world.publish();
        let mut burst: Vec<RecordedEvent> = world.in_flight.drain(..).map(|(_, e)| e).collect();
        burst.sort_by_key(RecordedEvent::version);
        prop_assert_eq!(burst.len(), n);
        // Delivered out of order, version 1 last: the gap closes at once
        // and azure owes n releases in one go, more than one append holds
        // (the in-memory store refuses appends over 100 as every store does).
        let first = burst.remove(0);
        for (i, index) in order.iter().filter(|i| **i > 0).enumerate() {
            let event = &burst[index - 1];
            prop_assert_eq!(block_on(world.cells[1].apply_replicated(event)), Ok(twincell_core::ReplicatedApply::Stored));
            if i % duplicate_every == 0 {
                prop_assert_eq!(block_on(world.cells[1].apply_replicated(event)), Ok(twincell_core::ReplicatedApply::AlreadyPresent));
            }
        }
        prop_assert_eq!(block_on(world.cells[1].inventory(&sku)).unwrap().reserved, n64, "nothing folds across the gap");
        prop_assert!(block_on(world.cells[1].apply_replicated(&first)).is_ok());
        let view = block_on(world.cells[1].inventory(&sku)).unwrap();
        prop_assert_eq!(view.cells[&cell_id(1)].reserved, 0);
        prop_assert_eq!(view.cells[&cell_id(1)].available, n64);
        let released = world
            .events(1, 0)
            .iter()
            .filter(|e| e.origin() == &cell_id(1) && matches!(e.event(), DomainEvent::ReservationReleased { .. }))
            .count();
        prop_assert_eq!(released, n, "each request answered exactly once");
        // The SKU keeps serving commands in that cell.
        prop_assert!(block_on(world.cells[1].receive(&sku, Quantity::new(1).unwrap())).is_ok());
        world.publish();
        settle(&mut world)?;
        check_merged(&world)?;
    }
}
