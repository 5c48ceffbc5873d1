//! The change feed on the SDK's emulator, as the Functions host's Cosmos DB
//! trigger reads it: every document once, from the beginning, then new
//! writes as they come.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use twincell_core::{
    AggregateId, CellId, DomainEvent, EventStore, Quantity, RecordedEvent, Sku, StreamId, Timestamp,
};

fn events(sku: &str, n: u64) -> Vec<RecordedEvent> {
    let stream = StreamId::new(
        AggregateId::inventory(&Sku::new(sku).unwrap()),
        CellId::new("azure").unwrap(),
    );
    (1..=n)
        .map(|v| {
            RecordedEvent::new(
                stream.clone(),
                v,
                Timestamp::from_unix_millis(1_000).unwrap(),
                DomainEvent::StockReceived {
                    quantity: Quantity::new(v).unwrap(),
                },
            )
            .unwrap()
        })
        .collect()
}

fn id(doc: &serde_json::Value) -> String {
    format!(
        "{}/{}",
        doc["pk"].as_str().unwrap(),
        doc["id"].as_str().unwrap()
    )
}

#[tokio::test]
async fn the_change_feed_gives_every_document_once_and_then_new_ones() {
    let store = twincell_cosmos::emulator::fresh_store().await.unwrap();
    let mut written = Vec::new();
    for sku in ["cf-a", "cf-b", "cf-c"] {
        let e = events(sku, 4);
        store.append(e[0].stream(), 0, &e).await.unwrap();
        written.extend(e);
    }
    let mut reader = store.change_feed().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.extend(reader.next_page().await.unwrap().iter().map(id));
    }
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "a document came twice");
    assert_eq!(ids.len(), written.len());
    // Caught up: new writes are what the feed gives next.
    let more = events("cf-d", 2);
    store.append(more[0].stream(), 0, &more).await.unwrap();
    let mut new = Vec::new();
    for _ in 0..20 {
        new.extend(reader.next_page().await.unwrap());
    }
    assert_eq!(new.len(), 2);
    assert!(
        new.iter()
            .all(|d| d["pk"] == "inventory#cf-d" && d["origin"] == "azure")
    );
    assert!(new[0]["event"].is_object(), "the document as stored");
}
