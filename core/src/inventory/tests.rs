use std::collections::BTreeMap;

use super::*;
use crate::event::{AggregateId, DomainEvent, FulfilCause, RecordedEvent, ReleaseCause, StreamId};
use crate::ids::{CellId, OrderId, Sku};
use crate::ports::MAX_EVENTS_PER_APPEND;
use crate::quantity::Quantity;
use crate::timestamp::Timestamp;
use crate::topology::Topology;
use crate::write_off_reason::WriteOffReason;

fn cell(name: &str) -> CellId {
    CellId::new(name).unwrap()
}

fn sku() -> Sku {
    Sku::new("sku-1").unwrap()
}

fn order(id: &str) -> OrderId {
    OrderId::new(id).unwrap()
}

fn q(n: u64) -> Quantity {
    Quantity::new(n).unwrap()
}

fn topology(this: &str) -> Topology {
    Topology::new(cell(this), [cell("aws"), cell("azure")])
}

/// Streams written so far: each `(cell, event)` is appended to that
/// cell's stream at the next version, one millisecond after the last.
fn given(history: &[(&str, DomainEvent)]) -> Vec<RecordedEvent> {
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    history
        .iter()
        .zip(1i64..)
        .map(|((origin, event), at)| {
            let v = versions.entry((*origin).to_owned()).or_default();
            *v += 1;
            RecordedEvent::new(
                StreamId::new(AggregateId::inventory(&sku()), cell(origin)),
                *v,
                Timestamp::from_unix_millis(at).unwrap(),
                event.clone(),
            )
            .unwrap()
        })
        .collect()
}

fn fold(this: &str, events: &[RecordedEvent]) -> Inventory {
    Inventory::fold(&sku(), &topology(this), events).unwrap()
}

fn when(
    this: &str,
    history: &[(&str, DomainEvent)],
    command: InventoryCommand,
) -> Result<InventoryDecision, InventoryError> {
    fold(this, &given(history)).decide(&command, Timestamp::from_unix_millis(1_000).unwrap())
}

fn received(n: u64) -> DomainEvent {
    DomainEvent::StockReceived { quantity: q(n) }
}

fn reserved(o: &str, n: u64) -> DomainEvent {
    DomainEvent::StockReserved {
        order_id: order(o),
        quantity: q(n),
    }
}

fn view_of(outcome: &InventoryOutcome) -> &InventoryView {
    match outcome {
        InventoryOutcome::Applied(v)
        | InventoryOutcome::Requested(v)
        | InventoryOutcome::Replayed(v) => v,
        InventoryOutcome::Reserved { .. } => panic!("expected a view, got {outcome:?}"),
    }
}

#[test]
fn receiving_raises_on_hand_and_available() {
    let d = when(
        "aws",
        &[("aws", received(5))],
        InventoryCommand::Receive(q(3), None),
    )
    .unwrap();
    assert_eq!(d.events, vec![received(3)]);
    let v = view_of(&d.outcome);
    assert_eq!((v.on_hand, v.reserved, v.available), (8, 0, 8));
    assert_eq!(v.cells[&cell("aws")].on_hand, 8);
    assert_eq!(v.cells[&cell("azure")].on_hand, 0);
}

#[test]
fn unknown_sku_has_every_known_cell_at_zero() {
    let v = fold("aws", &[]).view();
    assert_eq!((v.on_hand, v.reserved, v.available), (0, 0, 0));
    assert_eq!(v.cells.len(), 2);
}

#[test]
fn writing_off_more_than_available_is_refused() {
    let history = [("aws", received(5)), ("aws", reserved("o1", 4))];
    let r = when(
        "aws",
        &history,
        InventoryCommand::WriteOff(q(2), WriteOffReason::new("broken").unwrap(), None),
    );
    assert_eq!(
        r,
        Err(InventoryError::InsufficientStock {
            requested: 2,
            available: 1
        })
    );
}

#[test]
fn reserving_within_available_stock_holds_it() {
    let d = when(
        "aws",
        &[("aws", received(5))],
        InventoryCommand::Reserve(order("o1"), q(5)),
    )
    .unwrap();
    assert_eq!(d.events, vec![reserved("o1", 5)]);
    assert!(matches!(
        d.outcome,
        InventoryOutcome::Reserved {
            replayed: false,
            ..
        }
    ));
}

#[test]
fn reserving_more_than_this_cells_available_is_refused_even_if_another_cell_has_stock() {
    let history = [("aws", received(2)), ("azure", received(100))];
    let r = when(
        "aws",
        &history,
        InventoryCommand::Reserve(order("o1"), q(3)),
    );
    assert_eq!(
        r,
        Err(InventoryError::InsufficientStock {
            requested: 3,
            available: 2
        })
    );
}

#[test]
fn same_order_and_quantity_again_replays_without_events() {
    let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
    let d = when(
        "aws",
        &history,
        InventoryCommand::Reserve(order("o1"), q(2)),
    )
    .unwrap();
    assert!(d.events.is_empty());
    let InventoryOutcome::Reserved {
        reservation,
        replayed,
    } = d.outcome
    else {
        panic!()
    };
    assert!(replayed);
    assert_eq!(reservation.cell, cell("aws"));
}

#[test]
fn same_order_with_another_quantity_is_a_mismatch() {
    let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
    let r = when(
        "aws",
        &history,
        InventoryCommand::Reserve(order("o1"), q(3)),
    );
    assert_eq!(
        r,
        Err(InventoryError::ReservationMismatch {
            order_id: order("o1"),
            held: q(2)
        })
    );
}

#[test]
fn retry_in_the_other_cell_after_replication_replays_the_owners_reservation() {
    let history = [
        ("aws", received(5)),
        ("aws", reserved("o1", 2)),
        ("azure", received(5)),
    ];
    let d = when(
        "azure",
        &history,
        InventoryCommand::Reserve(order("o1"), q(2)),
    )
    .unwrap();
    assert!(d.events.is_empty());
    let InventoryOutcome::Reserved {
        reservation,
        replayed,
    } = d.outcome
    else {
        panic!()
    };
    assert!(replayed);
    assert_eq!(reservation.cell, cell("aws"));
}

#[test]
fn reserving_a_released_order_again_is_refused() {
    let history = [
        ("aws", received(5)),
        ("aws", reserved("o1", 2)),
        (
            "aws",
            DomainEvent::ReservationReleased {
                order_id: order("o1"),
                quantity: q(2),
                cause: ReleaseCause::Client,
            },
        ),
    ];
    let r = when(
        "aws",
        &history,
        InventoryCommand::Reserve(order("o1"), q(2)),
    );
    assert_eq!(
        r,
        Err(InventoryError::ReservationClosed {
            order_id: order("o1"),
            status: ReservationStatus::Released
        })
    );
}

#[test]
fn releasing_an_own_reservation_frees_the_units() {
    let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
    let d = when("aws", &history, InventoryCommand::Release(order("o1"))).unwrap();
    assert_eq!(
        d.events,
        vec![DomainEvent::ReservationReleased {
            order_id: order("o1"),
            quantity: q(2),
            cause: ReleaseCause::Client
        }]
    );
    let InventoryOutcome::Applied(v) = d.outcome else {
        panic!()
    };
    assert_eq!((v.reserved, v.available), (0, 5));
}

#[test]
fn releasing_another_cells_reservation_records_a_request_once() {
    let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
    let d = when("azure", &history, InventoryCommand::Release(order("o1"))).unwrap();
    let request = DomainEvent::ReleaseRequested {
        order_id: order("o1"),
        owner: cell("aws"),
    };
    assert_eq!(d.events, vec![request.clone()]);
    assert!(matches!(d.outcome, InventoryOutcome::Requested(_)));
    // Asking again records nothing new and still answers "requested".
    let mut again = history.to_vec();
    again.push(("azure", request));
    let d = when("azure", &again, InventoryCommand::Release(order("o1"))).unwrap();
    assert!(d.events.is_empty());
    assert!(matches!(d.outcome, InventoryOutcome::Requested(_)));
}

#[test]
fn owner_applies_a_release_request_when_it_sees_it() {
    let history = [
        ("aws", received(5)),
        ("aws", reserved("o1", 2)),
        (
            "azure",
            DomainEvent::ReleaseRequested {
                order_id: order("o1"),
                owner: cell("aws"),
            },
        ),
    ];
    let d = when("aws", &history, InventoryCommand::Reconcile).unwrap();
    assert_eq!(
        d.events,
        vec![DomainEvent::ReservationReleased {
            order_id: order("o1"),
            quantity: q(2),
            cause: ReleaseCause::Requested { by: cell("azure") }
        }]
    );
}

#[test]
fn a_fulfilment_request_wins_over_a_release_request() {
    let history = [
        ("aws", received(5)),
        ("aws", reserved("o1", 2)),
        (
            "azure",
            DomainEvent::ReleaseRequested {
                order_id: order("o1"),
                owner: cell("aws"),
            },
        ),
        (
            "azure",
            DomainEvent::FulfilmentRequested {
                order_id: order("o1"),
                owner: cell("aws"),
            },
        ),
    ];
    let d = when("aws", &history, InventoryCommand::Reconcile).unwrap();
    assert_eq!(
        d.events,
        vec![DomainEvent::ReservationFulfilled {
            order_id: order("o1"),
            quantity: q(2),
            cause: FulfilCause::Requested { by: cell("azure") }
        }]
    );
    let v = view_of(&d.outcome);
    assert_eq!(
        v.cells[&cell("aws")],
        CellView {
            on_hand: 3,
            reserved: 0,
            available: 3,
            shortage: 0,
        }
    );
}

#[test]
fn releasing_an_unknown_order_is_not_found() {
    let r = when(
        "aws",
        &[("aws", received(5))],
        InventoryCommand::Release(order("nope")),
    );
    assert_eq!(
        r,
        Err(InventoryError::ReservationNotFound {
            order_id: order("nope")
        })
    );
}

#[test]
fn releasing_twice_is_idempotent_but_releasing_a_fulfilled_order_is_refused() {
    let released = [
        ("aws", received(5)),
        ("aws", reserved("o1", 2)),
        (
            "aws",
            DomainEvent::ReservationReleased {
                order_id: order("o1"),
                quantity: q(2),
                cause: ReleaseCause::Client,
            },
        ),
    ];
    let d = when("aws", &released, InventoryCommand::Release(order("o1"))).unwrap();
    assert!(d.events.is_empty());
    assert!(matches!(d.outcome, InventoryOutcome::Applied(_)));
    let fulfilled = [
        ("aws", received(5)),
        ("aws", reserved("o1", 2)),
        (
            "aws",
            DomainEvent::ReservationFulfilled {
                order_id: order("o1"),
                quantity: q(2),
                cause: FulfilCause::Client,
            },
        ),
    ];
    let r = when("aws", &fulfilled, InventoryCommand::Release(order("o1")));
    assert_eq!(
        r,
        Err(InventoryError::ReservationClosed {
            order_id: order("o1"),
            status: ReservationStatus::Fulfilled
        })
    );
    let d = when("aws", &fulfilled, InventoryCommand::Fulfil(order("o1"))).unwrap();
    assert!(d.events.is_empty(), "fulfilling twice is idempotent");
}

#[test]
fn fulfilling_ships_the_reserved_units() {
    let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
    let d = when("aws", &history, InventoryCommand::Fulfil(order("o1"))).unwrap();
    let InventoryOutcome::Applied(v) = d.outcome else {
        panic!()
    };
    assert_eq!((v.on_hand, v.reserved, v.available), (3, 0, 3));
}

#[test]
fn fulfilling_another_cells_reservation_records_a_request() {
    let history = [("aws", received(5)), ("aws", reserved("o1", 2))];
    let d = when("azure", &history, InventoryCommand::Fulfil(order("o1"))).unwrap();
    assert_eq!(
        d.events,
        vec![DomainEvent::FulfilmentRequested {
            order_id: order("o1"),
            owner: cell("aws")
        }]
    );
    assert!(matches!(d.outcome, InventoryOutcome::Requested(_)));
}

#[test]
fn transfer_moves_available_units_and_the_receiver_takes_them_in_once() {
    let history = [("aws", received(5))];
    let d = when(
        "aws",
        &history,
        InventoryCommand::Transfer(cell("azure"), q(4), None),
    )
    .unwrap();
    let v = view_of(&d.outcome);
    assert_eq!(v.cells[&cell("aws")].on_hand, 1);
    let transferred = DomainEvent::AllocationTransferred {
        to_cell: cell("azure"),
        quantity: q(4),
    };
    assert_eq!(d.events, vec![transferred.clone()]);

    let sent = [("aws", received(5)), ("aws", transferred)];
    let d = when("azure", &sent, InventoryCommand::Reconcile).unwrap();
    let receipt = DomainEvent::AllocationReceived {
        from_cell: cell("aws"),
        transfer_version: 2,
        quantity: q(4),
    };
    assert_eq!(d.events, vec![receipt.clone()]);
    assert_eq!(view_of(&d.outcome).cells[&cell("azure")].available, 4);

    let mut taken = sent.to_vec();
    taken.push(("azure", receipt));
    let d = when("azure", &taken, InventoryCommand::Reconcile).unwrap();
    assert!(d.events.is_empty(), "a transfer is taken in once");
}

#[test]
fn transfer_of_more_than_available_or_to_itself_is_refused() {
    let history = [("aws", received(5)), ("aws", reserved("o1", 3))];
    let r = when(
        "aws",
        &history,
        InventoryCommand::Transfer(cell("azure"), q(3), None),
    );
    assert_eq!(
        r,
        Err(InventoryError::InsufficientStock {
            requested: 3,
            available: 2
        })
    );
    let r = when(
        "aws",
        &history,
        InventoryCommand::Transfer(cell("aws"), q(1), None),
    );
    assert_eq!(r, Err(InventoryError::InvalidTransferTarget(cell("aws"))));
    let r = when(
        "aws",
        &history,
        InventoryCommand::Transfer(cell("gcp"), q(1), None),
    );
    assert_eq!(r, Err(InventoryError::InvalidTransferTarget(cell("gcp"))));
}

#[test]
fn a_command_sees_stock_transferred_in_before_it_decides() {
    let history = [
        ("aws", received(5)),
        (
            "aws",
            DomainEvent::AllocationTransferred {
                to_cell: cell("azure"),
                quantity: q(5),
            },
        ),
    ];
    let d = when(
        "azure",
        &history,
        InventoryCommand::Reserve(order("o1"), q(5)),
    )
    .unwrap();
    assert_eq!(
        d.events,
        vec![
            DomainEvent::AllocationReceived {
                from_cell: cell("aws"),
                transfer_version: 2,
                quantity: q(5)
            },
            reserved("o1", 5)
        ]
    );
}

#[test]
fn duplicate_reservation_is_released_by_the_cell_that_loses_the_tie_break() {
    // azure reserved first (t=2), aws later (t=3): aws loses.
    let history = [
        ("azure", received(5)),
        ("azure", reserved("o1", 2)),
        ("aws", received(5)),
        ("aws", reserved("o1", 2)),
    ];
    let events = given(&history);
    let loser = fold("aws", &events)
        .decide(&InventoryCommand::Reconcile, Timestamp::EPOCH)
        .unwrap();
    assert_eq!(
        loser.events,
        vec![DomainEvent::ReservationReleased {
            order_id: order("o1"),
            quantity: q(2),
            cause: ReleaseCause::Duplicate {
                winner: cell("azure")
            }
        }]
    );
    let winner = fold("azure", &events)
        .decide(&InventoryCommand::Reconcile, Timestamp::EPOCH)
        .unwrap();
    assert!(winner.events.is_empty());
}

#[test]
fn fold_uses_only_the_contiguous_prefix_of_another_cells_stream() {
    let mut events = given(&[
        ("azure", received(1)),
        ("azure", received(2)),
        ("azure", received(4)),
    ]);
    events.remove(1);
    let inv = fold("aws", &events);
    assert_eq!(inv.ledgers()[&cell("azure")].on_hand(), 1);
    assert_eq!(inv.ledgers()[&cell("azure")].version(), 1);
}

#[test]
fn an_impossible_event_from_another_cell_stalls_only_that_ledger() {
    let events = given(&[("azure", reserved("o1", 1)), ("aws", received(3))]);
    let inv = fold("aws", &events);
    assert!(matches!(
        inv.ledgers()[&cell("azure")].stalled(),
        Some((1, LedgerError::Insufficient { .. }))
    ));
    assert_eq!(inv.view().cells[&cell("aws")].on_hand, 3);
}

#[test]
fn an_impossible_event_in_the_own_stream_is_a_fold_error() {
    let events = given(&[("aws", reserved("o1", 1))]);
    let err = Inventory::fold(&sku(), &topology("aws"), &events).unwrap_err();
    assert_eq!(err.version, 1);
}

#[test]
fn an_unknown_origin_cell_is_folded_and_shown() {
    let events = given(&[("gcp", received(7))]);
    assert_eq!(fold("aws", &events).view().cells[&cell("gcp")].on_hand, 7);
}

#[test]
fn what_is_owed_beyond_one_append_comes_in_chunks_before_the_command() {
    let n = 150;
    let mut history = vec![("azure", received(n))];
    for o in 0..n {
        history.push(("azure", reserved(&format!("o{o}"), 1)));
    }
    for o in 0..n {
        history.push((
            "aws",
            DomainEvent::ReleaseRequested {
                order_id: order(&format!("o{o}")),
                owner: cell("azure"),
            },
        ));
    }
    let d = when("azure", &history, InventoryCommand::Receive(q(5), None)).unwrap();
    assert!(d.command_pending);
    assert_eq!(d.events.len(), MAX_EVENTS_PER_APPEND);
    assert!(
        d.events
            .iter()
            .all(|e| matches!(e, DomainEvent::ReservationReleased { .. }))
    );
    let InventoryOutcome::Applied(view) = &d.outcome else {
        panic!("a chunk answers with the view after it: {:?}", d.outcome);
    };
    assert_eq!(view.cells[&cell("azure")].reserved, 50);
    // The chunk appended, the rest and the command fit the next one.
    history.extend(d.events.into_iter().map(|e| ("azure", e)));
    let d = when("azure", &history, InventoryCommand::Receive(q(5), None)).unwrap();
    assert!(!d.command_pending);
    assert_eq!(d.events.len(), 51);
    assert_eq!(
        d.events.last(),
        Some(&DomainEvent::StockReceived { quantity: q(5) })
    );
}

#[test]
fn owed_events_that_leave_no_room_for_the_command_go_first_alone() {
    // 99 owed and a receipt fit; with two cells a command needs room
    // for two events, so 99 owed go alone.
    let n = 99;
    let mut history = vec![("azure", received(n))];
    for o in 0..n {
        history.push(("azure", reserved(&format!("o{o}"), 1)));
    }
    for o in 0..n {
        history.push((
            "aws",
            DomainEvent::ReleaseRequested {
                order_id: order(&format!("o{o}")),
                owner: cell("azure"),
            },
        ));
    }
    let d = when("azure", &history, InventoryCommand::Receive(q(5), None)).unwrap();
    assert!(d.command_pending);
    assert_eq!(d.events.len(), 99);
    history.pop();
    let d = when("azure", &history, InventoryCommand::Receive(q(5), None)).unwrap();
    assert!(!d.command_pending, "98 owed leave room for the command");
    assert_eq!(d.events.len(), 99);
}

/// A ledger of `orders` reservations of one unit each, with 16-character
/// order ids, and some of everything else.
fn busy_ledger(orders: u64) -> CellLedger {
    let mut ledger = CellLedger::new(cell("aws"));
    let at = Timestamp::from_unix_millis(1_795_320_745_007).unwrap();
    let mut version = 0;
    let mut apply = |ledger: &mut CellLedger, e: DomainEvent| {
        version += 1;
        ledger.apply(version, at, &e).unwrap();
    };
    apply(
        &mut ledger,
        DomainEvent::StockReceived {
            quantity: q(1_000_000),
        },
    );
    apply(
        &mut ledger,
        DomainEvent::StockReceived {
            quantity: q(1_000_000),
        },
    );
    for n in 0..orders {
        let order_id = order(&format!("order-{n:010}"));
        apply(
            &mut ledger,
            DomainEvent::StockReserved {
                order_id,
                quantity: q(1),
            },
        );
    }
    let first = order(&format!("order-{:010}", 0));
    apply(
        &mut ledger,
        DomainEvent::ReservationFulfilled {
            order_id: first,
            quantity: q(1),
            cause: FulfilCause::Client,
        },
    );
    apply(
        &mut ledger,
        DomainEvent::AllocationTransferred {
            to_cell: cell("azure"),
            quantity: q(5),
        },
    );
    apply(
        &mut ledger,
        DomainEvent::AllocationReceived {
            from_cell: cell("azure"),
            transfer_version: 3,
            quantity: q(2),
        },
    );
    apply(
        &mut ledger,
        DomainEvent::ReleaseRequested {
            order_id: order("theirs"),
            owner: cell("azure"),
        },
    );
    // Keyed writes, one voided, and a received transfer taken back out
    // with a shortage.
    let answer = BTreeMap::from([(cell("aws"), figures(7, 1)), (cell("azure"), figures(0, 0))]);
    apply(&mut ledger, received(3));
    let receipt = ledger.version();
    apply(&mut ledger, keyed("pallet-1", &answer));
    apply(
        &mut ledger,
        DomainEvent::StockWrittenOff {
            quantity: q(1),
            reason: WriteOffReason::new("damaged").unwrap(),
        },
    );
    apply(&mut ledger, keyed("pallet-2", &answer));
    apply(&mut ledger, voided(receipt, "azure", 0));
    apply(
        &mut ledger,
        DomainEvent::ReceivedTransferVoided {
            from_cell: cell("azure"),
            transfer_version: 3,
            quantity: q(2),
            shortage: 1,
        },
    );
    ledger
}

fn figures(on_hand: u64, reserved: u64) -> crate::event::StockFigures {
    crate::event::StockFigures {
        on_hand,
        reserved,
        shortage: 0,
    }
}

/// `winner`'s copy stands: this cell voids its keyed write at `version`.
fn voided(version: u64, winner: &str, shortage: u64) -> DomainEvent {
    DomainEvent::DuplicateWriteVoided {
        version,
        winner: cell(winner),
        shortage,
    }
}

fn keyed(key: &str, answer: &BTreeMap<CellId, crate::event::StockFigures>) -> DomainEvent {
    DomainEvent::IdempotencyKeyRecorded {
        key: crate::ids::IdempotencyKey::new(key).unwrap(),
        answer: answer.clone(),
    }
}

#[test]
fn a_ledger_reads_back_from_its_snapshot_exactly() {
    let ledger = busy_ledger(50);
    let aggregate = AggregateId::inventory(&sku());
    let snapshot = ledger.snapshot(&aggregate).unwrap();
    assert_eq!(snapshot.version, ledger.version());
    assert_eq!(snapshot.stream, StreamId::new(aggregate, cell("aws")));
    assert_eq!(CellLedger::from_snapshot(&snapshot).unwrap(), ledger);
}

#[test]
fn a_snapshot_that_is_not_what_it_says_is_refused() {
    let ledger = busy_ledger(3);
    let aggregate = AggregateId::inventory(&sku());
    let good = ledger.snapshot(&aggregate).unwrap();
    let mut cases = Vec::new();
    let mut other_format = good.clone();
    other_format.format = LEDGER_SNAPSHOT_FORMAT + 1;
    cases.push(("another format", other_format));
    let mut other_version = good.clone();
    other_version.version += 1;
    cases.push(("another version", other_version));
    let mut other_cell = good.clone();
    other_cell.stream = StreamId::new(aggregate.clone(), cell("azure"));
    cases.push(("another cell", other_cell));
    let mut unbalanced = good.clone();
    unbalanced.body = unbalanced.body.replacen("\"on_hand\":", "\"on_hand\":1", 1);
    cases.push(("balances that do not add up", unbalanced));
    let mut unknown = good.clone();
    unknown.body = unknown.body.replacen('{', "{\"extra\":1,", 1);
    cases.push(("an unknown field", unknown));
    let mut truncated = good;
    truncated.body.truncate(truncated.body.len() / 2);
    cases.push(("a truncated body", truncated));
    for (what, snapshot) in cases {
        assert!(
            CellLedger::from_snapshot(&snapshot).is_err(),
            "{what} was read"
        );
    }
}

#[test]
fn a_stalled_or_empty_ledger_has_no_snapshot() {
    let aggregate = AggregateId::inventory(&sku());
    assert_eq!(CellLedger::new(cell("aws")).snapshot(&aggregate), None);
    let events = [RecordedEvent::new(
        StreamId::new(aggregate.clone(), cell("azure")),
        1,
        Timestamp::EPOCH,
        DomainEvent::StockReserved {
            order_id: order("o"),
            quantity: q(1),
        },
    )
    .unwrap()];
    let inventory = Inventory::fold(&sku(), &topology("aws"), &events).unwrap();
    let azure = inventory.ledgers().get(&cell("azure")).unwrap();
    assert!(azure.stalled().is_some());
    assert_eq!(azure.snapshot(&aggregate), None);
}

#[test]
fn a_ledger_of_twenty_thousand_orders_fits_one_snapshot() {
    // The documented reach of a snapshot: about 41 bytes per order of a
    // 16-character id, so 20 000 orders fit and 30 000 do not.
    let aggregate = AggregateId::inventory(&sku());
    let fits = busy_ledger(20_000).snapshot(&aggregate).unwrap();
    assert!(
        crate::store_support::snapshot_parts(&fits).is_ok(),
        "{} bytes",
        fits.body.len()
    );
    let per_order = fits.body.len() / 20_000;
    assert!(
        (35..=45).contains(&per_order),
        "{per_order} bytes per order"
    );
    let too_big = busy_ledger(30_000).snapshot(&aggregate).unwrap();
    assert!(crate::store_support::snapshot_parts(&too_big).is_err());
}

/// Events of every kind on a few orders, most of which fit a ledger of
/// `aws` that has some history.
fn any_ledger_event() -> impl proptest::strategy::Strategy<Value = DomainEvent> {
    use proptest::prelude::*;
    let order_of = |o: usize| order(&format!("o{o}"));
    prop_oneof![
        3 => (1u64..=5).prop_map(received),
        1 => (1u64..=3).prop_map(|n| DomainEvent::StockWrittenOff {
            quantity: q(n),
            reason: WriteOffReason::new("broken").unwrap(),
        }),
        3 => (0..4usize, 1u64..=3).prop_map(move |(o, n)| reserved(&format!("o{o}"), n)),
        2 => (0..4usize, 1u64..=3, any::<bool>()).prop_map(move |(o, n, ship)| if ship {
            DomainEvent::ReservationFulfilled {
                order_id: order_of(o),
                quantity: q(n),
                cause: FulfilCause::Client,
            }
        } else {
            DomainEvent::ReservationReleased {
                order_id: order_of(o),
                quantity: q(n),
                cause: ReleaseCause::Client,
            }
        }),
        2 => (0..4usize, any::<bool>()).prop_map(move |(o, ship)| if ship {
            DomainEvent::FulfilmentRequested { order_id: order_of(o), owner: cell("azure") }
        } else {
            DomainEvent::ReleaseRequested { order_id: order_of(o), owner: cell("azure") }
        }),
        1 => (1u64..=3).prop_map(|n| DomainEvent::AllocationTransferred {
            to_cell: cell("azure"),
            quantity: q(n),
        }),
        1 => (1u64..=4, 1u64..=3).prop_map(|(v, n)| DomainEvent::AllocationReceived {
            from_cell: cell("azure"),
            transfer_version: v,
            quantity: q(n),
        }),
    ]
}

proptest::proptest! {
    /// What a lost race relies on: a decision's events, taken back in
    /// reverse, leave the ledger exactly as it was, whatever they were and
    /// whatever the ledger held; an event that does not fit changes nothing.
    #[test]
    fn events_taken_back_in_reverse_leave_the_ledger_as_it_was(
        history in proptest::collection::vec(any_ledger_event(), 0..40),
        decided in proptest::collection::vec(any_ledger_event(), 1..12),
    ) {
        let at = Timestamp::from_unix_millis(1_000).unwrap();
        let mut ledger = CellLedger::new(cell("aws"));
        for e in &history {
            let _ = ledger.apply(ledger.version() + 1, at, e);
        }
        let before = ledger.clone();
        let mut undo = Vec::new();
        for e in &decided {
            let unchanged = ledger.clone();
            match ledger.apply_undoable(ledger.version() + 1, at, e) {
                Ok(u) => undo.push(u),
                Err(_) => proptest::prop_assert_eq!(&ledger, &unchanged),
            }
        }
        for u in undo.into_iter().rev() {
            ledger.undo(u);
        }
        proptest::prop_assert_eq!(ledger, before);
    }
}

#[test]
fn a_rewound_decision_leaves_the_inventory_as_it_was() {
    // azure asks aws to release o1 and sends it 3 units: aws owes a release
    // and a receipt before its own command, then reserves o2.
    let history = [
        ("aws", received(5)),
        ("aws", reserved("o1", 2)),
        (
            "azure",
            DomainEvent::ReleaseRequested {
                order_id: order("o1"),
                owner: cell("aws"),
            },
        ),
        ("azure", received(4)),
        (
            "azure",
            DomainEvent::AllocationTransferred {
                to_cell: cell("aws"),
                quantity: q(3),
            },
        ),
    ];
    let before = fold("aws", &given(&history));
    let now = Timestamp::from_unix_millis(1_000).unwrap();
    let (decision, mut after, rewind) = before
        .clone()
        .decide_rewindable(&InventoryCommand::Reserve(order("o2"), q(8)), now);
    assert_eq!(
        decision.unwrap().events.len(),
        3,
        "release, receipt, reserve"
    );
    assert_ne!(after, before);
    after.rewind(rewind);
    assert_eq!(after, before);
    // A refusal after owed events gives the state back as it was too.
    let (refused, kept) = before
        .clone()
        .decide_keeping(&InventoryCommand::Reserve(order("o3"), q(100)), now);
    assert!(matches!(
        refused,
        Err(InventoryError::InsufficientStock { .. })
    ));
    assert_eq!(kept, before);
}

fn key(k: &str) -> Option<crate::ids::IdempotencyKey> {
    Some(crate::ids::IdempotencyKey::new(k).unwrap())
}

fn three_cells(this: &str) -> Topology {
    Topology::new(cell(this), [cell("aws"), cell("azure"), cell("gcp")])
}

/// Decides `command` in `this` at `now`, on `history`, for `topology`.
fn decide_at(
    topology: &Topology,
    history: &[(&str, DomainEvent)],
    command: InventoryCommand,
    now: i64,
) -> Result<InventoryDecision, InventoryError> {
    Inventory::fold(&sku(), topology, &given(history))
        .unwrap()
        .decide(&command, Timestamp::from_unix_millis(now).unwrap())
}

#[test]
fn a_keyed_receipt_records_its_key_and_answer_and_a_retry_replays_that_answer() {
    let first = when(
        "aws",
        &[("aws", received(5))],
        InventoryCommand::Receive(q(3), key("pallet-7")),
    )
    .unwrap();
    let answer = BTreeMap::from([(cell("aws"), figures(8, 0)), (cell("azure"), figures(0, 0))]);
    assert_eq!(first.events, vec![received(3), keyed("pallet-7", &answer)]);
    // Stock moved on since; the retry is answered as the first request was.
    let mut history = vec![("aws", received(5))];
    history.extend(first.events.into_iter().map(|e| ("aws", e)));
    history.push(("aws", reserved("o1", 2)));
    let retry = when(
        "aws",
        &history,
        InventoryCommand::Receive(q(3), key("pallet-7")),
    )
    .unwrap();
    assert!(retry.events.is_empty());
    let InventoryOutcome::Replayed(view) = &retry.outcome else {
        panic!("a retry replays: {:?}", retry.outcome);
    };
    assert_eq!((view.on_hand, view.reserved, view.available), (8, 0, 8));
    // Another request under the key is refused, whatever it is.
    for other in [
        InventoryCommand::Receive(q(4), key("pallet-7")),
        InventoryCommand::WriteOff(q(3), WriteOffReason::new("x").unwrap(), key("pallet-7")),
        InventoryCommand::Transfer(cell("azure"), q(3), key("pallet-7")),
    ] {
        assert_eq!(
            when("aws", &history, other),
            Err(InventoryError::IdempotencyKeyReused)
        );
    }
    // The same request under another key is another receipt.
    let again = when(
        "aws",
        &history,
        InventoryCommand::Receive(q(3), key("pallet-8")),
    )
    .unwrap();
    assert_eq!(again.events.len(), 2);
}

#[test]
fn a_retry_in_the_other_cell_after_replication_replays_the_first_cells_answer() {
    let answer = BTreeMap::from([(cell("aws"), figures(3, 0)), (cell("azure"), figures(0, 0))]);
    let history = [("aws", received(3)), ("aws", keyed("pallet-7", &answer))];
    let retry = when(
        "azure",
        &history,
        InventoryCommand::Receive(q(3), key("pallet-7")),
    )
    .unwrap();
    assert!(retry.events.is_empty());
    assert_eq!(
        retry.outcome,
        InventoryOutcome::Replayed(InventoryView::of_figures(sku(), &answer))
    );
    // A keyed transfer retried in the cell it goes to replays too, rather
    // than being refused as a transfer to itself.
    let history = [
        ("aws", received(9)),
        (
            "aws",
            DomainEvent::AllocationTransferred {
                to_cell: cell("azure"),
                quantity: q(4),
            },
        ),
        ("aws", keyed("move-1", &answer)),
    ];
    let retry = when(
        "azure",
        &history,
        InventoryCommand::Transfer(cell("azure"), q(4), key("move-1")),
    )
    .unwrap();
    assert!(matches!(retry.outcome, InventoryOutcome::Replayed(_)));
    assert!(
        retry
            .events
            .iter()
            .all(|e| matches!(e, DomainEvent::AllocationReceived { .. })),
        "only the transfer in is owed: {:?}",
        retry.events
    );
}

#[test]
fn a_key_counts_for_its_retention_and_then_is_a_new_write() {
    let answer = BTreeMap::new();
    let history = [("aws", received(3)), ("aws", keyed("pallet-7", &answer))];
    let recorded_at = 2; // `given` stamps the second event at 2 ms
    let retry = |now| {
        decide_at(
            &topology("aws"),
            &history,
            InventoryCommand::Receive(q(3), key("pallet-7")),
            now,
        )
        .unwrap()
    };
    assert!(retry(recorded_at + KEY_RETENTION_MS - 2).events.is_empty());
    assert_eq!(retry(recorded_at + KEY_RETENTION_MS).events.len(), 2);
}

#[test]
fn the_later_copy_of_a_receipt_made_in_two_cells_is_voided_by_its_own_cell() {
    let aws = BTreeMap::from([(cell("aws"), figures(3, 0)), (cell("azure"), figures(0, 0))]);
    let azure = BTreeMap::from([(cell("aws"), figures(0, 0)), (cell("azure"), figures(3, 0))]);
    // aws recorded it first (1 ms), azure's copy is later (3 ms).
    let history = [
        ("aws", received(3)),
        ("aws", keyed("pallet-7", &aws)),
        ("azure", received(3)),
        ("azure", keyed("pallet-7", &azure)),
    ];
    let d = when("azure", &history, InventoryCommand::Reconcile).unwrap();
    assert_eq!(d.events, vec![voided(1, "aws", 0)]);
    let v = view_of(&d.outcome);
    assert_eq!((v.on_hand, v.shortage), (3, 0), "counted once");
    // The winner owes nothing.
    assert!(
        when("aws", &history, InventoryCommand::Reconcile)
            .unwrap()
            .events
            .is_empty()
    );
}

#[test]
fn a_voided_receipt_whose_units_were_reserved_leaves_a_shortage_the_winner_covers() {
    let answer = BTreeMap::new();
    // azure's copy is later, and 2 of its 3 units are reserved already.
    let mut history = vec![
        ("aws", received(10)),
        ("aws", received(3)),
        ("aws", keyed("pallet-7", &answer)),
        ("azure", received(3)),
        ("azure", keyed("pallet-7", &answer)),
        ("azure", reserved("o1", 2)),
    ];
    let d = when("azure", &history, InventoryCommand::Reconcile).unwrap();
    assert_eq!(d.events, vec![voided(1, "aws", 2)]);
    let v = view_of(&d.outcome);
    assert_eq!(v.cells[&cell("azure")].shortage, 2);
    assert_eq!(v.cells[&cell("azure")].available, 0);
    assert_eq!(v.shortage, 2);
    history.extend(d.events.into_iter().map(|e| ("azure", e)));
    // aws covers it from its available stock.
    let d = when("aws", &history, InventoryCommand::Reconcile).unwrap();
    let cover = DomainEvent::AllocationTransferred {
        to_cell: cell("azure"),
        quantity: q(2),
    };
    assert_eq!(d.events, vec![cover.clone()]);
    history.extend(d.events.into_iter().map(|e| ("aws", e)));
    assert!(
        when("aws", &history, InventoryCommand::Reconcile)
            .unwrap()
            .events
            .is_empty(),
        "a cover on its way is not sent twice"
    );
    // azure takes it in and settles its shortage with it.
    let d = when("azure", &history, InventoryCommand::Reconcile).unwrap();
    assert_eq!(
        d.events,
        vec![
            DomainEvent::AllocationReceived {
                from_cell: cell("aws"),
                transfer_version: 4,
                quantity: q(2),
            },
            DomainEvent::ShortageSettled { quantity: q(2) },
        ]
    );
    let v = view_of(&d.outcome);
    assert_eq!(
        (v.shortage, v.on_hand, v.reserved),
        (0, 13, 2),
        "13 units: 10 and the pallet once"
    );
}

#[test]
fn a_shortage_no_cell_can_cover_is_settled_as_units_free_up() {
    let answer = BTreeMap::new();
    let mut history = vec![
        ("aws", received(3)),
        ("aws", keyed("pallet-7", &answer)),
        ("aws", reserved("o9", 3)),
        ("azure", received(3)),
        ("azure", keyed("pallet-7", &answer)),
        ("azure", reserved("o1", 3)),
    ];
    let d = when("azure", &history, InventoryCommand::Reconcile).unwrap();
    history.extend(d.events.into_iter().map(|e| ("azure", e)));
    assert!(
        when("aws", &history, InventoryCommand::Reconcile)
            .unwrap()
            .events
            .is_empty(),
        "aws has nothing available to cover with"
    );
    let d = when("azure", &history, InventoryCommand::Release(order("o1"))).unwrap();
    assert_eq!(
        d.events.last(),
        Some(&DomainEvent::ReservationReleased {
            order_id: order("o1"),
            quantity: q(3),
            cause: ReleaseCause::Client,
        })
    );
    history.extend(d.events.into_iter().map(|e| ("azure", e)));
    let d = when("azure", &history, InventoryCommand::Reconcile).unwrap();
    assert_eq!(
        d.events,
        vec![DomainEvent::ShortageSettled { quantity: q(3) }]
    );
    let v = view_of(&d.outcome);
    assert_eq!(
        (v.on_hand, v.shortage, v.cells[&cell("azure")].on_hand),
        (3, 0, 0)
    );
}

#[test]
fn a_write_off_made_in_two_cells_gives_the_later_copys_units_back() {
    let answer = BTreeMap::new();
    let damaged = || DomainEvent::StockWrittenOff {
        quantity: q(2),
        reason: WriteOffReason::new("damaged").unwrap(),
    };
    let history = [
        ("azure", received(5)),
        ("aws", received(5)),
        ("aws", damaged()),
        ("aws", keyed("broken-1", &answer)),
        ("azure", damaged()),
        ("azure", keyed("broken-1", &answer)),
    ];
    let d = when("azure", &history, InventoryCommand::Reconcile).unwrap();
    assert_eq!(d.events, vec![voided(2, "aws", 0)]);
    assert_eq!(view_of(&d.outcome).on_hand, 8);
}

#[test]
fn a_transfer_made_twice_from_two_cells_is_given_back_and_taken_back_out() {
    let answer = BTreeMap::new();
    let to_azure = || DomainEvent::AllocationTransferred {
        to_cell: cell("azure"),
        quantity: q(4),
    };
    // aws and gcp both sent "move-1" to azure; gcp's is later.
    let mut history = vec![
        ("aws", received(10)),
        ("gcp", received(10)),
        ("aws", to_azure()),
        ("aws", keyed("move-1", &answer)),
        ("gcp", to_azure()),
        ("gcp", keyed("move-1", &answer)),
    ];
    // azure took both in before it saw that they were one.
    for (from, v) in [("aws", 2), ("gcp", 2)] {
        history.push((
            "azure",
            DomainEvent::AllocationReceived {
                from_cell: cell(from),
                transfer_version: v,
                quantity: q(4),
            },
        ));
    }
    history.push(("azure", reserved("o1", 5)));
    let d = decide_at(
        &three_cells("gcp"),
        &history,
        InventoryCommand::Reconcile,
        1_000,
    )
    .unwrap();
    assert_eq!(d.events, vec![voided(2, "aws", 0)]);
    assert_eq!(view_of(&d.outcome).cells[&cell("gcp")].on_hand, 10);
    history.extend(d.events.into_iter().map(|e| ("gcp", e)));
    // azure gives back what it can: 3 of 4 are available, 1 is short.
    let d = decide_at(
        &three_cells("azure"),
        &history,
        InventoryCommand::Reconcile,
        1_000,
    )
    .unwrap();
    assert_eq!(
        d.events,
        vec![DomainEvent::ReceivedTransferVoided {
            from_cell: cell("gcp"),
            transfer_version: 2,
            quantity: q(4),
            shortage: 1,
        }]
    );
    let v = view_of(&d.outcome);
    assert_eq!(
        (
            v.cells[&cell("azure")].on_hand,
            v.cells[&cell("azure")].shortage
        ),
        (5, 1)
    );
    // A cell that had not taken the voided transfer in never does.
    history.truncate(8);
    let d = decide_at(
        &three_cells("azure"),
        &history,
        InventoryCommand::Reconcile,
        1_000,
    );
    assert!(d.unwrap().events.is_empty());
    history.truncate(6);
    history.push(("gcp", voided(2, "aws", 0)));
    let d = decide_at(
        &three_cells("azure"),
        &history,
        InventoryCommand::Reconcile,
        1_000,
    )
    .unwrap();
    assert_eq!(
        d.events,
        vec![DomainEvent::AllocationReceived {
            from_cell: cell("aws"),
            transfer_version: 2,
            quantity: q(4),
        }]
    );
}

#[test]
fn the_keys_of_a_ledger_fit_its_snapshot_however_many_it_sees() {
    let mut ledger = CellLedger::new(cell("aws"));
    let at = Timestamp::from_unix_millis(1_795_320_745_007).unwrap();
    let answer = BTreeMap::from([
        (cell("aws"), figures(1_000_000_000, 1_000_000)),
        (cell("azure"), figures(1_000_000_000, 1_000_000)),
    ]);
    let mut version = 0;
    for n in 0..(u64::try_from(KEYS_REMEMBERED).unwrap() + 500) {
        version += 1;
        ledger.apply(version, at, &received(1)).unwrap();
        version += 1;
        let long = format!("{n:0>255}");
        ledger.apply(version, at, &keyed(&long, &answer)).unwrap();
    }
    assert_eq!(ledger.keys().len(), KEYS_REMEMBERED);
    let snapshot = ledger.snapshot(&AggregateId::inventory(&sku())).unwrap();
    eprintln!(
        "a ledger of {KEYS_REMEMBERED} keys: {} bytes",
        snapshot.body.len()
    );
    assert!(
        snapshot.body.len() < 300_000,
        "{} bytes with {KEYS_REMEMBERED} keys",
        snapshot.body.len()
    );
    assert_eq!(CellLedger::from_snapshot(&snapshot).unwrap(), ledger);
}
