//! A store fault in the middle of an append never leaves part of it behind.
//!
//! A TCP proxy between the store and DynamoDB (moto, or any compatible
//! server at the same address) breaks connections on purpose:
//! it cuts requests part-way (DynamoDB never sees a whole request) or
//! forwards a whole request and throws the answer away (DynamoDB applies
//! it; the store never hears). Each append is a five-event transaction;
//! after every one, the table (read directly, not through the proxy) must
//! hold each batch whole or not at all.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use twincell_core::{
    AggregateId, CellId, DomainEvent, EventStore, Quantity, RecordedEvent, Sku, StoreError,
    StreamId, Timestamp,
};
use twincell_dynamodb::Settings;
use twincell_dynamodb::testing::{fresh_store, shared_endpoint, store_with};

/// What the proxy does to the connections it accepts.
const PASS: u64 = 0;
const LOSE_ANSWER: u64 = u64::MAX;
// Any other value: cut the request after that many bytes.

/// A proxy to `target` that applies the current plan to each connection it
/// accepts. When the plan changes, open connections are closed, so a pooled
/// keep-alive connection can't carry requests past a change.
async fn proxy(target: String, plan: Arc<watch::Sender<u64>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let mut changes = plan.subscribe();
            let current = *changes.borrow_and_update();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&target).await else {
                    return;
                };
                let serve = async {
                    match current {
                        PASS => pass(client, server).await,
                        LOSE_ANSWER => lose_answer(client, server).await,
                        cut => cut_request(client, server, cut).await,
                    }
                };
                tokio::select! {
                    () = serve => {},
                    _ = changes.changed() => {},
                }
            });
        }
    });
    format!("http://{address}")
}

async fn pass(mut client: TcpStream, mut server: TcpStream) {
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// Forwards the client's bytes; reads the server's answer and drops it,
/// then closes the client's connection.
async fn lose_answer(client: TcpStream, server: TcpStream) {
    let (mut client_read, _client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let forward = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let swallow = async {
        let mut buf = [0u8; 4096];
        // The first bytes of the answer prove the request was taken.
        let _ = server_read.read(&mut buf).await;
    };
    tokio::select! {
        () = forward => {},
        () = swallow => {},
    }
}

/// Forwards `limit` bytes of the request, then closes both sides.
async fn cut_request(mut client: TcpStream, mut server: TcpStream, limit: u64) {
    let mut buf = vec![0u8; 4096];
    let mut left = usize::try_from(limit).unwrap_or(usize::MAX);
    while left > 0 {
        let n = match client.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n.min(left),
        };
        if server.write_all(&buf[..n]).await.is_err() {
            break;
        }
        left -= n;
    }
    let _ = server.shutdown().await;
}

fn batch(stream: &StreamId, after: u64, marker: u64) -> Vec<RecordedEvent> {
    (after + 1..=after + 5)
        .map(|v| {
            RecordedEvent::new(
                stream.clone(),
                v,
                Timestamp::from_unix_millis(1).unwrap(),
                DomainEvent::StockReceived {
                    quantity: Quantity::new(marker).unwrap(),
                },
            )
            .unwrap()
        })
        .collect()
}

/// A tiny deterministic generator (xorshift), so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_never_leaves_half_an_append() {
    let direct = fresh_store("faults").await;
    let moto = shared_endpoint().unwrap();
    let plan = Arc::new(watch::Sender::new(PASS));
    let through = proxy(
        moto.trim_start_matches("http://").to_owned(),
        Arc::clone(&plan),
    )
    .await;
    let mut settings = Settings::new(direct.table());
    settings.attempt_timeout = Duration::from_secs(1);
    settings.max_attempts = 2;
    let faulty = store_with(&through, &settings);

    let stream = StreamId::new(
        AggregateId::inventory(&Sku::new("fault-sku").unwrap()),
        CellId::new("aws").unwrap(),
    );
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut applied_unheard, mut not_applied) = (0, 0, 0);
    let mut version = 0u64;
    for marker in 1..=36u64 {
        let choice = match rng.next(3) {
            0 => PASS,
            1 => LOSE_ANSWER,
            _ => 1 + rng.next(1500),
        };
        plan.send_replace(choice);
        let result = faulty
            .append(&stream, version, &batch(&stream, version, marker))
            .await;
        plan.send_replace(PASS);

        let stored = direct.load(&stream.aggregate).await.unwrap();
        assert_eq!(
            stored.len() % 5,
            0,
            "after batch {marker} ({result:?}): {} events",
            stored.len()
        );
        for (i, chunk) in stored.chunks(5).enumerate() {
            let first = chunk.first().unwrap().event().clone();
            assert!(
                chunk.iter().all(|e| e.event() == &first),
                "batch {i} is mixed: {chunk:?}"
            );
        }
        let landed = u64::try_from(stored.len()).unwrap() > version;
        match result {
            Ok(()) => {
                assert!(landed, "batch {marker} reported stored but is not");
                ok += 1;
            }
            Err(StoreError::Unavailable(_) | StoreError::Conflict { .. }) if landed => {
                applied_unheard += 1;
            }
            Err(StoreError::Unavailable(_)) => not_applied += 1,
            Err(other) => panic!("batch {marker}: {other:?}"),
        }
        if landed {
            version += 5;
        }
    }
    assert!(
        ok > 0 && applied_unheard > 0 && not_applied > 0,
        "every kind of outcome happens: {ok} stored, {applied_unheard} stored unheard, {not_applied} not stored"
    );
}
