//! Snapshots on the in-memory store: for many random histories, a
//! ledger's snapshot plus the events after it folds to exactly the full
//! fold (the durable stores run the same check on fewer histories, in the
//! store contract), and snapshots change no answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use twincell_core::testing::store_contract::snapshot_and_tail_fold_for_seed;
use twincell_core::testing::{ManualClock, SequentialIds, block_on};
use twincell_core::{
    AggregateId, CellId, EventStore, InMemoryEventStore, OrderId, Quantity, ReserveStock, Service,
    Sku, Snapshot, StreamId, Timestamp, Topology,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_snapshot_and_its_tail_fold_to_the_full_fold(seed in any::<u64>()) {
        let store = InMemoryEventStore::new();
        if let Err(e) = block_on(snapshot_and_tail_fold_for_seed(&store, seed)) {
            panic!("{e}");
        }
    }
}

fn sku() -> Sku {
    Sku::new("snap").unwrap()
}

fn service(
    store: &InMemoryEventStore,
    every: u64,
) -> Service<&InMemoryEventStore, ManualClock, SequentialIds> {
    let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
    Service::new(
        topology,
        store,
        ManualClock::new(Timestamp::from_unix_millis(5_000).unwrap(), 3),
        SequentialIds::default(),
    )
    .with_cache_capacity(0)
    .with_snapshot_every(every)
}

/// 1 receipt and `n` reservations, one every command.
fn history(s: &Service<&InMemoryEventStore, ManualClock, SequentialIds>, n: u32) {
    block_on(s.receive(&sku(), Quantity::new(1_000).unwrap())).unwrap();
    reserve(s, "o", n);
}

/// `n` reservations of one unit, orders `<prefix>-0`, `<prefix>-1`, ….
fn reserve(s: &Service<&InMemoryEventStore, ManualClock, SequentialIds>, prefix: &str, n: u32) {
    for i in 0..n {
        let cmd = ReserveStock {
            order_id: OrderId::new(format!("{prefix}-{i}")).unwrap(),
            quantity: Quantity::new(1).unwrap(),
        };
        block_on(s.reserve(&sku(), cmd)).unwrap();
    }
}

#[test]
fn deleting_every_snapshot_changes_no_answer() {
    let store = InMemoryEventStore::new();
    let s = service(&store, 10);
    history(&s, 45);
    assert!(store.snapshot_count() > 0, "the history saved a snapshot");
    let with = block_on(s.inventory(&sku())).unwrap();
    store.forget_snapshots();
    let without = block_on(service(&store, 0).inventory(&sku())).unwrap();
    assert_eq!(with, without);
    assert_eq!(with.on_hand, 1_000);
    assert_eq!(with.reserved, 45);
}

#[test]
fn a_snapshot_of_another_format_is_ignored_and_rebuilt() {
    let store = InMemoryEventStore::new();
    let s = service(&store, 0);
    history(&s, 20);
    let expected = block_on(s.inventory(&sku())).unwrap();
    // What an older release might have written at the current version: a
    // body this release would misread as an empty ledger.
    let stream = StreamId::new(AggregateId::inventory(&sku()), CellId::new("aws").unwrap());
    let old = Snapshot {
        stream: stream.clone(),
        version: 21,
        format: 0,
        body: r#"{"cell":"aws","version":21,"on_hand":0,"reserved":0,"received":0,"written_off":0,"shipped":0,"transferred_out":0,"transferred_in":0,"reservations":[],"requests":[],"transfers_out":[],"transfers_in":[]}"#.to_owned(),
    };
    block_on(store.save_snapshot(&old)).unwrap();
    let s = service(&store, 5);
    assert_eq!(
        block_on(s.inventory(&sku())).unwrap(),
        expected,
        "never misread"
    );
    // The next command saves a snapshot of the current format over it.
    reserve(&s, "more", 1);
    let saved = block_on(store.load_snapshots(&stream.aggregate)).unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(
        saved[0].format,
        twincell_core::inventory::LEDGER_SNAPSHOT_FORMAT
    );
    assert_eq!(saved[0].version, 22);
    let fresh = service(&store, 0);
    assert_eq!(block_on(fresh.inventory(&sku())).unwrap().reserved, 21);
}

#[test]
fn a_cold_command_reads_only_the_events_after_the_snapshots() {
    let counted = twincell_core::testing::Counted::new(InMemoryEventStore::new());
    let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
    let make = |every: u64| {
        Service::new(
            topology.clone(),
            counted.clone(),
            ManualClock::new(Timestamp::from_unix_millis(5_000).unwrap(), 3),
            SequentialIds::default(),
        )
        .with_cache_capacity(0)
        .with_snapshot_every(every)
    };
    let s = make(100);
    block_on(s.receive(&sku(), Quantity::new(1_000).unwrap())).unwrap();
    for i in 0..250 {
        let cmd = ReserveStock {
            order_id: OrderId::new(format!("o-{i}")).unwrap(),
            quantity: Quantity::new(1).unwrap(),
        };
        block_on(s.reserve(&sku(), cmd)).unwrap();
    }
    assert_eq!(counted.snapshots_saved(), 2, "at versions 100 and 200");
    let before = counted.reads();
    let view = block_on(make(100).inventory(&sku())).unwrap();
    let after = counted.reads();
    assert_eq!(view.reserved, 250);
    assert_eq!(after.0, before.0, "no full load");
    assert_eq!(after.1 - before.1, 51, "versions 201 to 251 only");
}
