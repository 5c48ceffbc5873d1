//! The change feed: every committed event once, in commit order, with no
//! gap, never a snapshot; each reader resumes from its own durable
//! checkpoint, in another process too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use twincell_core::{
    AggregateId, CellId, DomainEvent, EventStore, Quantity, RecordedEvent, Sku, Snapshot,
    StoreError, StreamId, Timestamp,
};
use twincell_sqlite::SqliteEventStore;
use twincell_sqlite::testing::{fresh_path, fresh_store};

fn stream(sku: &str, origin: &str) -> StreamId {
    StreamId::new(
        AggregateId::inventory(&Sku::new(sku).unwrap()),
        CellId::new(origin).unwrap(),
    )
}

fn receipts(stream: &StreamId, from: u64, n: u64) -> Vec<RecordedEvent> {
    (from..from + n)
        .map(|v| {
            RecordedEvent::new(
                stream.clone(),
                v,
                Timestamp::from_unix_millis(1_000 + i64::try_from(v).unwrap()).unwrap(),
                DomainEvent::StockReceived {
                    quantity: Quantity::new(v).unwrap(),
                },
            )
            .unwrap()
        })
        .collect()
}

fn positions(feed: &[twincell_sqlite::FeedEvent]) -> Vec<u64> {
    feed.iter().map(|f| f.seq).collect()
}

#[tokio::test]
async fn the_feed_numbers_each_committed_event_once_in_commit_order_and_never_a_snapshot() {
    let store = fresh_store("feed-order").await;
    let a = stream("sku-a", "aws");
    let b = stream("sku-b", "aws");
    let peer = stream("sku-a", "azure");
    store.append(&a, 0, &receipts(&a, 1, 2)).await.unwrap();
    // Refused writes take no position.
    assert!(matches!(
        store.append(&a, 0, &receipts(&a, 1, 1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        store.append(&b, 0, &receipts(&b, 2, 1)).await,
        Err(StoreError::InvalidBatch(_))
    ));
    store
        .save_snapshot(&Snapshot {
            stream: a.clone(),
            version: 2,
            format: 1,
            body: "{}".to_owned(),
        })
        .await
        .unwrap();
    store
        .apply_replicated(&receipts(&peer, 3, 1)[0])
        .await
        .unwrap();
    store.append(&b, 0, &receipts(&b, 1, 3)).await.unwrap();
    // A replay changes nothing, not even the feed.
    store
        .apply_replicated(&receipts(&peer, 3, 1)[0])
        .await
        .unwrap();
    let feed = store.feed_after(0, 100).await.unwrap();
    assert_eq!(positions(&feed), [1, 2, 3, 4, 5, 6]);
    let order: Vec<(String, u64)> = feed
        .iter()
        .map(|f| (f.event.stream().to_string(), f.event.version()))
        .collect();
    assert_eq!(
        order,
        [
            (a.to_string(), 1),
            (a.to_string(), 2),
            (peer.to_string(), 3),
            (b.to_string(), 1),
            (b.to_string(), 2),
            (b.to_string(), 3),
        ]
    );
    assert_eq!(positions(&store.feed_after(4, 1).await.unwrap()), [5]);
    assert!(store.feed_after(6, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_leave_a_feed_without_gaps_in_commit_order() {
    let store = Arc::new(fresh_store("feed-race").await);
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            // Four streams shared by sixteen writers: many lose races.
            let s = stream(&format!("race-{}", t % 4), "aws");
            let mut won = 0u64;
            for _ in 0..20 {
                let current = store
                    .load(&s.aggregate)
                    .await
                    .unwrap()
                    .last()
                    .map_or(0, RecordedEvent::version);
                match store
                    .append(&s, current, &receipts(&s, current + 1, t % 3 + 1))
                    .await
                {
                    Ok(()) => won += t % 3 + 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            won
        }));
    }
    let mut written = 0;
    for task in tasks {
        written += task.await.unwrap();
    }
    let feed = store.feed_after(0, usize::MAX).await.unwrap();
    assert_eq!(positions(&feed), (1..=written).collect::<Vec<_>>());
    // Each stream's events come in version order: commit order.
    for i in 0..4 {
        let name = stream(&format!("race-{i}"), "aws");
        let versions: Vec<u64> = feed
            .iter()
            .filter(|f| f.event.stream() == &name)
            .map(|f| f.event.version())
            .collect();
        assert_eq!(
            versions,
            (1..=u64::try_from(versions.len()).unwrap()).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn a_reader_resumes_from_its_durable_checkpoint_in_another_process() {
    let path = fresh_path("feed-checkpoint");
    let s = stream("sku-c", "aws");
    {
        let store = SqliteEventStore::open(&path).await.unwrap();
        store.append(&s, 0, &receipts(&s, 1, 5)).await.unwrap();
        let publisher = store.change_feed("publisher");
        let first = publisher.next(3).await.unwrap();
        assert_eq!(positions(&first), [1, 2, 3]);
        // Read, not yet done with: read again.
        assert_eq!(positions(&publisher.next(3).await.unwrap()), [1, 2, 3]);
        publisher.commit(3).await.unwrap();
        assert_eq!(positions(&publisher.next(10).await.unwrap()), [4, 5]);
        // Another reader has its own checkpoint.
        assert_eq!(
            positions(&store.change_feed("audit").next(2).await.unwrap()),
            [1, 2]
        );
    }
    let store = SqliteEventStore::open(&path).await.unwrap();
    store.append(&s, 5, &receipts(&s, 6, 1)).await.unwrap();
    let publisher = store.change_feed("publisher");
    assert_eq!(store.checkpoint("publisher").await.unwrap(), 3);
    assert_eq!(positions(&publisher.next(10).await.unwrap()), [4, 5, 6]);
    // A checkpoint never goes back.
    publisher.commit(6).await.unwrap();
    publisher.commit(2).await.unwrap();
    assert_eq!(store.checkpoint("publisher").await.unwrap(), 6);
    assert!(publisher.next(10).await.unwrap().is_empty());
    assert_eq!(store.checkpoint("never-read").await.unwrap(), 0);
}
