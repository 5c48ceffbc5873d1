//! The service's own tests: the command loop, the cache and the
//! replicated apply, on the in-memory store.

use std::time::Duration;

use super::*;
use crate::event::{DomainEvent, RecordedEvent, StreamId};
use crate::ids::{AccountId, CellId};
use crate::inventory::{Inventory, InventoryError};
use crate::memory::InMemoryEventStore;
use crate::money::{Currency, Money};
use crate::ports::{ReplicatedApply, StoreError};
use crate::testing::{ManualClock, SequentialIds, block_on};
use crate::timestamp::Timestamp;

type Svc = Service<InMemoryEventStore, ManualClock, SequentialIds>;

fn service(this: &str) -> Svc {
    let topology = Topology::new(
        CellId::new(this).unwrap(),
        [CellId::new("aws").unwrap(), CellId::new("azure").unwrap()],
    );
    Service::new(
        topology,
        InMemoryEventStore::new(),
        ManualClock::new(Timestamp::from_unix_millis(1_000).unwrap(), 1),
        SequentialIds::default(),
    )
}

fn payment(amount: &str) -> CreateTransaction {
    CreateTransaction {
        account_id: AccountId::new("acct").unwrap(),
        money: Money::parse(amount, Currency::from_code("USD").unwrap()).unwrap(),
    }
}

fn sku() -> Sku {
    Sku::new("sku").unwrap()
}

#[test]
fn transaction_without_key_takes_the_generated_id() {
    let s = service("aws");
    let created = block_on(s.create_transaction(&payment("1"), None)).unwrap();
    assert_eq!(
        created.transaction.id().to_string(),
        "00000000-0000-7000-8000-000000000001"
    );
    assert!(!created.replayed);
    assert_eq!(
        block_on(s.transaction(created.transaction.id())),
        Ok(created.transaction)
    );
}

#[test]
fn retry_with_the_same_key_replays_and_another_payload_is_refused() {
    let s = service("aws");
    let key = IdempotencyKey::new("k").unwrap();
    let first = block_on(s.create_transaction(&payment("1"), Some(&key))).unwrap();
    let again = block_on(s.create_transaction(&payment("1.00"), Some(&key))).unwrap();
    assert!(again.replayed);
    assert_eq!(again.transaction, first.transaction);
    assert_eq!(
        block_on(s.create_transaction(&payment("2"), Some(&key))),
        Err(ServiceError::IdempotencyKeyReused)
    );
    assert_eq!(s.store().len(), 1, "nothing doubled");
}

#[test]
fn the_events_a_command_appends_keep_the_requests_trace_and_a_replay_appends_none() {
    let s = service("aws");
    let trace =
        crate::trace::TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
    let metadata = EventMetadata::traced(trace);
    let key = IdempotencyKey::new("k").unwrap();
    let created =
        block_on(s.create_transaction_with(&payment("1"), Some(&key), &metadata)).unwrap();
    block_on(s.execute_with(
        &sku(),
        &InventoryCommand::Receive(Quantity::new(3).unwrap(), None),
        &metadata,
    ))
    .unwrap();
    let other =
        EventMetadata::traced(crate::trace::TraceParent::new([7; 16], [7; 8], false).unwrap());
    let replayed = block_on(s.create_transaction_with(&payment("1"), Some(&key), &other)).unwrap();
    assert!(replayed.replayed);
    block_on(s.receive(&sku(), Quantity::new(1).unwrap())).unwrap();
    let payment_events = block_on(
        s.store()
            .load(&AggregateId::transaction(created.transaction.id())),
    )
    .unwrap();
    let stock_events = block_on(s.store().load(&AggregateId::inventory(&sku()))).unwrap();
    let traces = |events: &[RecordedEvent]| -> Vec<Option<String>> {
        events
            .iter()
            .map(|e| e.metadata().traceparent.map(|t| t.to_string()))
            .collect()
    };
    let ours = Some(trace.to_string());
    assert_eq!(traces(&payment_events), vec![ours.clone()]);
    assert_eq!(traces(&stock_events), vec![ours, None]);
}

#[test]
fn unknown_transaction_is_not_found() {
    let id = TransactionId::from_uuid(uuid::Uuid::nil());
    assert_eq!(
        block_on(service("aws").transaction(id)),
        Err(ServiceError::TransactionNotFound(id))
    );
}

#[test]
fn an_unreachable_store_is_unavailable_and_nothing_is_written() {
    let s = service("aws");
    s.store().set_available(false);
    assert!(matches!(
        block_on(s.health()),
        Err(ServiceError::Unavailable(_))
    ));
    assert!(matches!(
        block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
        Err(ServiceError::Unavailable(_))
    ));
    s.store().set_available(true);
    assert_eq!(block_on(s.health()), Ok(()));
    assert!(s.store().is_empty());
}

#[test]
fn replicated_events_apply_once_and_a_different_replay_is_reported() {
    let aws = service("aws");
    let azure = service("azure");
    block_on(aws.receive(&sku(), Quantity::new(3).unwrap())).unwrap();
    let event = aws
        .store()
        .events_from(&CellId::new("aws").unwrap())
        .remove(0);
    assert_eq!(
        block_on(azure.apply_replicated(&event)),
        Ok(ReplicatedApply::Stored)
    );
    assert_eq!(
        block_on(azure.apply_replicated(&event)),
        Ok(ReplicatedApply::AlreadyPresent)
    );

    let forged = RecordedEvent::new(
        event.stream().clone(),
        1,
        event.recorded_at(),
        DomainEvent::StockReceived {
            quantity: Quantity::new(300).unwrap(),
        },
    )
    .unwrap();
    assert!(matches!(
        block_on(azure.apply_replicated(&forged)),
        Err(ServiceError::ReplicaDiverged { version: 1, .. })
    ));
    assert_eq!(
        block_on(azure.inventory(&sku())).unwrap().on_hand,
        3,
        "never overwritten"
    );
}

#[test]
fn a_cell_refuses_its_own_events_as_replicated() {
    let aws = service("aws");
    block_on(aws.receive(&sku(), Quantity::new(3).unwrap())).unwrap();
    let event = aws
        .store()
        .events_from(&CellId::new("aws").unwrap())
        .remove(0);
    assert!(matches!(
        block_on(aws.apply_replicated(&event)),
        Err(ServiceError::OwnEventReplicated(_))
    ));
}

#[test]
fn a_transfer_arrives_when_the_receiver_gets_the_event() {
    let aws = service("aws");
    let azure = service("azure");
    block_on(aws.receive(&sku(), Quantity::new(5).unwrap())).unwrap();
    let to_azure = TransferStock {
        to_cell: CellId::new("azure").unwrap(),
        quantity: Quantity::new(2).unwrap(),
    };
    block_on(aws.transfer(&sku(), to_azure)).unwrap();
    for event in aws.store().events_from(&CellId::new("aws").unwrap()) {
        block_on(azure.apply_replicated(&event)).unwrap();
    }
    let view = block_on(azure.inventory(&sku())).unwrap();
    assert_eq!(view.cells[&CellId::new("azure").unwrap()].available, 2);
    assert_eq!(view.cells[&CellId::new("aws").unwrap()].on_hand, 3);
    assert_eq!(view.on_hand, 5);
}

#[test]
fn a_batch_is_stored_in_stream_order_and_each_sku_reconciled_once() {
    let aws = service("aws");
    let azure = service("azure");
    block_on(aws.receive(&sku(), Quantity::new(5).unwrap())).unwrap();
    let to_azure = TransferStock {
        to_cell: CellId::new("azure").unwrap(),
        quantity: Quantity::new(2).unwrap(),
    };
    block_on(aws.transfer(&sku(), to_azure)).unwrap();
    let sent = aws.store().events_from(&CellId::new("aws").unwrap());
    let own = {
        block_on(azure.receive(&Sku::new("mine").unwrap(), Quantity::new(1).unwrap())).unwrap();
        azure
            .store()
            .events_from(&CellId::new("azure").unwrap())
            .remove(0)
    };
    // Newest first, a repeat, and one of azure's own.
    let batch = vec![sent[1].clone(), own, sent[0].clone(), sent[1].clone()];
    let report = block_on(azure.apply_replicated_batch(&batch));
    assert_eq!(report.outcomes[0], Ok(ReplicatedApply::Stored));
    assert!(matches!(
        report.outcomes[1],
        Err(ServiceError::OwnEventReplicated(_))
    ));
    assert_eq!(report.outcomes[2], Ok(ReplicatedApply::Stored));
    assert_eq!(report.outcomes[3], Ok(ReplicatedApply::AlreadyPresent));
    assert_eq!(report.follow_up, Ok(()));
    assert!(!report.is_complete(), "the own event was refused");
    assert_eq!(report.streams.len(), 1);
    assert!(!report.streams[0].has_gap());
    assert_eq!(report.streams[0].contiguous, 2);
    let received = azure
        .store()
        .events_from(&CellId::new("azure").unwrap())
        .into_iter()
        .filter(|e| matches!(e.event(), DomainEvent::AllocationReceived { .. }))
        .count();
    assert_eq!(received, 1, "the transfer is taken in once");
}

#[test]
fn a_batch_with_a_gap_reports_it_and_folds_nothing_past_it() {
    let aws = service("aws");
    let azure = service("azure");
    for n in 1..=3 {
        block_on(aws.receive(&sku(), Quantity::new(n).unwrap())).unwrap();
    }
    let sent = aws.store().events_from(&CellId::new("aws").unwrap());
    let report = block_on(azure.apply_replicated_batch(&[sent[2].clone()]));
    assert!(report.is_complete());
    assert_eq!(report.streams[0].missing, [1, 2]);
    assert_eq!(
        block_on(azure.inventory(&sku())).unwrap().on_hand,
        0,
        "nothing past the gap"
    );
    let report = block_on(azure.apply_replicated_batch(&sent[..2]));
    assert!(report.is_complete() && !report.streams[0].has_gap());
    assert_eq!(block_on(azure.inventory(&sku())).unwrap().on_hand, 6);
}

#[test]
fn a_batch_on_an_unavailable_store_tries_nothing_more_and_says_so() {
    let aws = service("aws");
    let azure = service("azure");
    block_on(aws.receive(&sku(), Quantity::new(1).unwrap())).unwrap();
    block_on(aws.receive(&sku(), Quantity::new(1).unwrap())).unwrap();
    let sent = aws.store().events_from(&CellId::new("aws").unwrap());
    azure.store().set_available(false);
    let report = block_on(azure.apply_replicated_batch(&sent));
    assert!(
        report
            .outcomes
            .iter()
            .all(|o| matches!(o, Err(ServiceError::Unavailable(_))))
    );
    assert!(matches!(
        report.follow_up,
        Err(ServiceError::Unavailable(_))
    ));
    azure.store().set_available(true);
    assert!(azure.store().is_empty());
}

fn counting(
    capacity: usize,
) -> Service<crate::testing::Counted<InMemoryEventStore>, ManualClock, SequentialIds> {
    let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
    Service::new(
        topology,
        crate::testing::Counted::new(InMemoryEventStore::new()),
        ManualClock::new(Timestamp::from_unix_millis(1_000).unwrap(), 1),
        SequentialIds::default(),
    )
    .with_cache_capacity(capacity)
}

fn reserve(order: &str) -> ReserveStock {
    ReserveStock {
        order_id: OrderId::new(order).unwrap(),
        quantity: Quantity::new(1).unwrap(),
    }
}

#[test]
fn a_warm_sku_reads_only_what_is_new_however_long_its_history() {
    let s = counting(DEFAULT_CACHE_CAPACITY);
    block_on(s.receive(&sku(), Quantity::new(300).unwrap())).unwrap();
    for n in 0..200 {
        block_on(s.reserve(&sku(), reserve(&format!("o-{n}")))).unwrap();
    }
    // Every command so far read only the events it had not seen: each
    // of its own once (the first receipt found nothing).
    let (full, after) = s.store().reads();
    assert_eq!(full, 0, "never a full load");
    assert_eq!(after, 0, "its own events are kept, not read back");
    // Another process of the cell appends; this one reads just that.
    let stream = StreamId::new(AggregateId::inventory(&sku()), CellId::new("aws").unwrap());
    let next = RecordedEvent::new(
        stream.clone(),
        202,
        Timestamp::EPOCH,
        DomainEvent::StockReceived {
            quantity: Quantity::new(5).unwrap(),
        },
    )
    .unwrap();
    block_on(s.store().inner().append(&stream, 201, &[next])).unwrap();
    let view = block_on(s.inventory(&sku())).unwrap();
    assert_eq!(view.on_hand, 305);
    assert_eq!(s.store().reads(), (0, 1), "one new event read");
    // A refusal keeps the state too.
    let too_many = ReserveStock {
        order_id: OrderId::new("big").unwrap(),
        quantity: Quantity::new(1_000).unwrap(),
    };
    assert!(matches!(
        block_on(s.reserve(&sku(), too_many)),
        Err(ServiceError::Inventory(
            InventoryError::InsufficientStock { .. }
        ))
    ));
    block_on(s.reserve(&sku(), reserve("after-refusal"))).unwrap();
    assert_eq!(s.store().reads(), (0, 1), "nothing read again");
}

#[test]
fn without_a_cache_every_command_reads_the_whole_history() {
    let s = counting(0);
    block_on(s.receive(&sku(), Quantity::new(10).unwrap())).unwrap();
    for n in 0..5 {
        block_on(s.reserve(&sku(), reserve(&format!("o-{n}")))).unwrap();
    }
    // 1 + 2 + … + 5 events read by the reservations.
    assert_eq!(s.store().reads(), (0, 15));
}

#[test]
fn the_cache_keeps_at_most_its_capacity_least_recently_used_first() {
    let s = counting(2);
    for name in ["a", "b", "c"] {
        block_on(s.receive(&Sku::new(name).unwrap(), Quantity::new(1).unwrap())).unwrap();
    }
    assert_eq!(s.inventories.len(), 2);
    assert!(
        s.inventories.take(&Sku::new("a").unwrap()).is_none(),
        "a left first"
    );
    assert!(s.inventories.take(&Sku::new("c").unwrap()).is_some());
}

/// A store shared with another process that appends first: with
/// `wins` unset, every append loses the race (unit tests of the retry
/// bound); with `wins` at n, the rival appends a one-unit receipt just
/// before each of this service's next n appends, which then lose.
struct Rival {
    store: crate::testing::Counted<InMemoryEventStore>,
    wins: Option<std::sync::atomic::AtomicU32>,
}

impl Rival {
    fn always() -> Self {
        Self {
            store: crate::testing::Counted::new(InMemoryEventStore::new()),
            wins: None,
        }
    }

    fn winning(n: u32) -> Self {
        Self {
            wins: Some(std::sync::atomic::AtomicU32::new(n)),
            ..Self::always()
        }
    }
}

impl EventStore for Rival {
    async fn append(
        &self,
        stream: &StreamId,
        expected: u64,
        events: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(wins) = &self.wins else {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
            });
        };
        if wins
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let receipt = DomainEvent::StockReceived {
                quantity: Quantity::new(1).unwrap(),
            };
            let first = RecordedEvent::new(stream.clone(), expected + 1, Timestamp::EPOCH, receipt)
                .unwrap();
            self.store
                .inner()
                .append(stream, expected, &[first])
                .await?;
        }
        self.store.append(stream, expected, events).await
    }
    async fn load(&self, aggregate: &AggregateId) -> Result<Vec<RecordedEvent>, StoreError> {
        self.store.load(aggregate).await
    }
    async fn load_after(
        &self,
        aggregate: &AggregateId,
        after: &std::collections::BTreeMap<crate::ids::CellId, u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.store.load_after(aggregate, after).await
    }
    async fn apply_replicated(&self, event: &RecordedEvent) -> Result<ReplicatedApply, StoreError> {
        self.store.apply_replicated(event).await
    }
    async fn read(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        self.store.read(stream, version).await
    }
    async fn list_origin(
        &self,
        listing: &crate::ports::Listing,
    ) -> Result<crate::ports::EventPage, StoreError> {
        self.store.list_origin(listing).await
    }
    async fn save_snapshot(&self, snapshot: &crate::ports::Snapshot) -> Result<(), StoreError> {
        self.store.save_snapshot(snapshot).await
    }
    async fn load_snapshots(
        &self,
        aggregate: &AggregateId,
    ) -> Result<Vec<crate::ports::Snapshot>, StoreError> {
        self.store.load_snapshots(aggregate).await
    }
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[test]
fn a_lost_race_reads_only_what_the_winner_appended() {
    let topology = Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()]);
    let s = Service::new(
        topology.clone(),
        Rival::winning(0),
        ManualClock::new(Timestamp::from_unix_millis(1_000).unwrap(), 1),
        SequentialIds::default(),
    );
    block_on(s.receive(&sku(), Quantity::new(300).unwrap())).unwrap();
    for n in 0..200 {
        block_on(s.reserve(&sku(), reserve(&format!("o-{n}")))).unwrap();
    }
    assert_eq!(s.store().store.reads(), (0, 0));
    // Another process of the cell wins the next two races.
    let wins = s.store().wins.as_ref().unwrap();
    wins.store(2, std::sync::atomic::Ordering::SeqCst);
    let outcome = block_on(s.reserve(&sku(), reserve("contended"))).unwrap();
    assert!(matches!(
        outcome,
        InventoryOutcome::Reserved {
            replayed: false,
            ..
        }
    ));
    assert_eq!(s.store().store.conflicts(), 2);
    assert_eq!(
        s.store().store.reads(),
        (0, 2),
        "each retry read the one event the rival appended, nothing older"
    );
    // What it kept is what the stored events fold to.
    let stored = block_on(s.store().load(&AggregateId::inventory(&sku()))).unwrap();
    let folded = Inventory::fold(&sku(), &topology, &stored).unwrap().view();
    let kept = block_on(s.inventory(&sku())).unwrap();
    assert_eq!(kept, folded);
    assert_eq!((kept.on_hand, kept.reserved), (302, 201));
}

#[test]
fn losing_every_race_ends_in_contention_after_the_configured_attempts() {
    let topology = Topology::new(CellId::new("aws").unwrap(), []);
    let s = Service::new(
        topology,
        Rival::always(),
        ManualClock::new(Timestamp::EPOCH, 1),
        SequentialIds::default(),
    )
    .with_max_attempts(3);
    assert_eq!(
        block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
        Err(ServiceError::Contention)
    );
    assert_eq!(
        block_on(s.create_transaction(&payment("1"), None)),
        Err(ServiceError::Contention)
    );
}

/// A clock that records the pauses asked of it.
#[derive(Default)]
struct PauseLog(std::sync::Mutex<Vec<Duration>>);

impl Clock for PauseLog {
    fn now(&self) -> Timestamp {
        Timestamp::EPOCH
    }
    fn pause(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        self.0.lock().unwrap().push(duration);
        std::future::ready(())
    }
}

#[test]
fn a_lost_race_is_followed_by_a_jittered_pause_that_grows_to_the_cap() {
    let topology = Topology::new(CellId::new("aws").unwrap(), []);
    let s = Service::new(
        topology,
        Rival::always(),
        PauseLog::default(),
        SequentialIds::default(),
    )
    .with_max_attempts(5);
    assert_eq!(
        block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
        Err(ServiceError::Contention)
    );
    let pauses = s.clock.0.lock().unwrap().clone();
    assert_eq!(
        pauses.len(),
        4,
        "a pause between attempts, none before the first"
    );
    for (lost, pause) in (0u32..).zip(&pauses) {
        assert!(
            *pause <= BACKOFF_BASE * 2u32.pow(lost),
            "pause {lost}: {pause:?}"
        );
    }
}

#[test]
fn both_aggregates_back_off_the_same_way_in_the_one_loop() {
    let topology = Topology::new(CellId::new("aws").unwrap(), []);
    let s = Service::new(
        topology,
        Rival::always(),
        PauseLog::default(),
        SequentialIds::default(),
    )
    .with_max_attempts(4);
    assert_eq!(
        block_on(s.create_transaction(&payment("1"), None)),
        Err(ServiceError::Contention)
    );
    let after_create = s.clock.0.lock().unwrap().len();
    assert_eq!(after_create, 3, "a transaction backs off like stock does");
    assert_eq!(
        block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
        Err(ServiceError::Contention)
    );
    assert_eq!(s.clock.0.lock().unwrap().len(), after_create + 3);
}

/// The library example's service (docs/library.md), on the system clock, under any executor: a
/// lost race really waits before the next attempt.
#[test]
fn the_system_clock_really_pauses_without_a_runtime() {
    let topology = Topology::new(CellId::new("aws").unwrap(), []);
    let s = Service::new(
        topology,
        Rival::always(),
        crate::system::SystemClock,
        SequentialIds::default(),
    )
    .with_max_attempts(2);
    let pause = Duration::from_millis(30);
    let started = std::time::Instant::now();
    block_on(s.clock.pause(pause));
    assert!(
        started.elapsed() >= pause,
        "waited only {:?}",
        started.elapsed()
    );
    // And the service's loop goes through it (one pause, then gives up).
    assert_eq!(
        block_on(s.receive(&sku(), Quantity::new(1).unwrap())),
        Err(ServiceError::Contention)
    );
}

#[test]
fn backoff_stays_under_its_ceiling_and_uses_all_of_it() {
    for lost in [0u32, 1, 3, 5, 6, 20, u32::MAX] {
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << lost.min(16))
            .min(BACKOFF_CAP);
        let samples: Vec<Duration> = (0..400).map(|_| backoff(lost)).collect();
        assert!(samples.iter().all(|d| *d <= ceiling), "lost {lost}");
        assert!(
            samples.iter().any(|d| *d > ceiling / 2),
            "lost {lost}: no pause above half the ceiling in 400 draws"
        );
        assert!(samples.iter().any(|d| *d < ceiling / 2), "lost {lost}");
    }
    assert_eq!(
        BACKOFF_BASE.saturating_mul(1 << 16).min(BACKOFF_CAP),
        BACKOFF_CAP
    );
}
