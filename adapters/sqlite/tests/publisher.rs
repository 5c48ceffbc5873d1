//! The outbound publisher on the change feed: a cell's own events go out
//! in commit order, received ones never; the checkpoint moves past what
//! went out and no further, so a failure or a restart loses nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};

use twincell_core::{
    AggregateId, CellId, DomainEvent, EventStore, Quantity, RecordedEvent, Sku, StreamId, Timestamp,
};
use twincell_replication::{BoxFuture, Publish, PublishError};
use twincell_sqlite::publisher::{Pass, PassError};
use twincell_sqlite::testing::fresh_path;
use twincell_sqlite::{FeedPublisher, PUBLISHER_READER, SqliteEventStore};

/// Records what it is asked to publish; with `fail_at`, publishes that
/// many events of the next call, then fails.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<RecordedEvent>>,
    fail_at: Mutex<Option<usize>>,
}

impl Publish for Recorder {
    fn publish<'a>(
        &'a self,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<usize, PublishError>> {
        Box::pin(async move {
            if let Some(n) = self.fail_at.lock().unwrap().take() {
                self.sent.lock().unwrap().extend_from_slice(&events[..n]);
                return Err(PublishError {
                    published: n,
                    retryable: true,
                    reason: "target down".to_owned(),
                });
            }
            self.sent.lock().unwrap().extend_from_slice(events);
            Ok(events.len())
        })
    }
}

fn stream(sku: &str, origin: &str) -> StreamId {
    StreamId::new(
        AggregateId::inventory(&Sku::new(sku).unwrap()),
        CellId::new(origin).unwrap(),
    )
}

fn receipt(stream: &StreamId, version: u64) -> RecordedEvent {
    RecordedEvent::new(
        stream.clone(),
        version,
        Timestamp::from_unix_millis(1_000).unwrap(),
        DomainEvent::StockReceived {
            quantity: Quantity::new(version).unwrap(),
        },
    )
    .unwrap()
}

fn versions(events: &[RecordedEvent]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| (e.stream().to_string(), e.version()))
        .collect()
}

fn publisher(store: &SqliteEventStore, recorder: &Arc<Recorder>) -> FeedPublisher {
    let publish: Arc<dyn Publish> = recorder.clone();
    FeedPublisher::new(
        store.change_feed(PUBLISHER_READER),
        CellId::new("azure").unwrap(),
        publish,
    )
}

#[tokio::test]
async fn own_events_go_out_in_commit_order_and_received_ones_never() {
    let path = fresh_path("publisher");
    let store = SqliteEventStore::open(&path).await.unwrap();
    let own = stream("sku-1", "azure");
    let peer = stream("sku-1", "aws");
    store.append(&own, 0, &[receipt(&own, 1)]).await.unwrap();
    store.apply_replicated(&receipt(&peer, 1)).await.unwrap();
    store
        .append(&own, 1, &[receipt(&own, 2), receipt(&own, 3)])
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let publisher = publisher(&store, &recorder);
    // The backlog counts own events only.
    assert_eq!(
        store.backlog(PUBLISHER_READER, &own.origin).await.unwrap(),
        3
    );
    assert_eq!(
        store.backlog(PUBLISHER_READER, &peer.origin).await.unwrap(),
        1
    );
    assert_eq!(
        publisher.pass().await.unwrap(),
        Pass {
            published: 3,
            caught_up: true
        }
    );
    assert_eq!(
        store.backlog(PUBLISHER_READER, &own.origin).await.unwrap(),
        0
    );
    let own_name = own.to_string();
    assert_eq!(
        versions(&recorder.sent.lock().unwrap()),
        [
            (own_name.clone(), 1),
            (own_name.clone(), 2),
            (own_name.clone(), 3)
        ]
    );
    assert_eq!(store.checkpoint(PUBLISHER_READER).await.unwrap(), 4);
    // Nothing new: nothing sent.
    assert_eq!(publisher.pass().await.unwrap().published, 0);
    assert_eq!(recorder.sent.lock().unwrap().len(), 3);
    // A received event alone moves the checkpoint, and sends nothing.
    store.apply_replicated(&receipt(&peer, 2)).await.unwrap();
    assert_eq!(publisher.pass().await.unwrap().published, 0);
    assert_eq!(store.checkpoint(PUBLISHER_READER).await.unwrap(), 5);
    assert_eq!(recorder.sent.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_failed_publish_is_retried_from_the_first_event_not_sent_also_after_a_restart() {
    let path = fresh_path("publisher-failure");
    let own = stream("sku-2", "azure");
    let recorder = Arc::new(Recorder::default());
    {
        let store = SqliteEventStore::open(&path).await.unwrap();
        store
            .append(
                &own,
                0,
                &[receipt(&own, 1), receipt(&own, 2), receipt(&own, 3)],
            )
            .await
            .unwrap();
        *recorder.fail_at.lock().unwrap() = Some(1);
        let failed = publisher(&store, &recorder).pass().await.unwrap_err();
        assert!(matches!(
            failed,
            PassError::Publish {
                published: 1,
                retryable: true,
                ..
            }
        ));
        assert_eq!(store.checkpoint(PUBLISHER_READER).await.unwrap(), 1);
    }
    // The next process resumes after the checkpoint: the second event on.
    let store = SqliteEventStore::open(&path).await.unwrap();
    store.append(&own, 3, &[receipt(&own, 4)]).await.unwrap();
    assert_eq!(
        publisher(&store, &recorder).pass().await.unwrap().published,
        3
    );
    let name = own.to_string();
    assert_eq!(
        versions(&recorder.sent.lock().unwrap()),
        [1, 2, 3, 4].map(|v| (name.clone(), v))
    );
}

#[tokio::test]
async fn running_publishes_what_is_committed_while_it_runs_until_stopped() {
    let path = fresh_path("publisher-run");
    let store = SqliteEventStore::open(&path).await.unwrap();
    let own = stream("sku-3", "azure");
    let recorder = Arc::new(Recorder::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(publisher(&store, &recorder).run(
        std::time::Duration::from_millis(20),
        async {
            let _ = stopped.await;
        },
    ));
    for v in 1..=5 {
        store
            .append(&own, v - 1, &[receipt(&own, v)])
            .await
            .unwrap();
    }
    for _ in 0..200 {
        if recorder.sent.lock().unwrap().len() == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(recorder.sent.lock().unwrap().len(), 5);
    stop.send(()).unwrap();
    running.await.unwrap();
}
