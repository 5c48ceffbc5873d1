//! What the ingest benchmarks share: where the release binaries are, the
//! deliveries they send, and how events per second are timed.

use std::path::PathBuf;
use std::time::Instant;

use twincell_core::event::{AggregateId, DomainEvent, RecordedEvent, StreamId};
use twincell_core::{CellId, Quantity, Sku, Timestamp};
use twincell_replication::signing::Signer;
use twincell_replication::wire;

/// Events per round.
pub(crate) const EVENTS: u64 = 2_000;
/// Events per delivery, as Event Grid delivers them at most.
pub(crate) const BATCH: usize = 100;

/// The release binaries: `TWINCELL_BENCH_BIN_DIR`, default `target/release`.
pub(crate) fn bin_dir() -> PathBuf {
    std::env::var_os("TWINCELL_BENCH_BIN_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release")),
        PathBuf::from,
    )
}

/// `EVENTS` receipts of `origin` over 20 SKUs (`prefix-0` …), as
/// CloudEvents batches of `BATCH`, each holding 5 SKUs' consecutive
/// versions; signed by `signer` when there is one.
pub(crate) fn deliveries(origin: &str, prefix: &str, signer: Option<&Signer>) -> Vec<Vec<u8>> {
    let skus = 20u64;
    let per_sku = EVENTS / skus;
    let mut events = Vec::new();
    for chunk in 0..per_sku / 20 {
        for s in 0..skus {
            let stream = StreamId::new(
                AggregateId::inventory(&Sku::new(format!("{prefix}-{s}")).unwrap()),
                CellId::new(origin).unwrap(),
            );
            for v in chunk * 20 + 1..=chunk * 20 + 20 {
                events.push(
                    RecordedEvent::new(
                        stream.clone(),
                        v,
                        Timestamp::from_unix_millis(1_795_320_745_007).unwrap(),
                        DomainEvent::StockReceived {
                            quantity: Quantity::new(1).unwrap(),
                        },
                    )
                    .unwrap(),
                );
            }
        }
    }
    wire::batches(&events, signer, wire::MAX_BATCH_BYTES, BATCH)
        .unwrap()
        .into_iter()
        .map(|b| b.body)
        .collect()
}

/// Events per second of `batches` (built before the clock starts)
/// through `url`'s `/replication/events`, delivered with `key`.
pub(crate) async fn throughput(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    batches: Vec<Vec<u8>>,
) -> u64 {
    let start = Instant::now();
    for body in batches {
        let r = client
            .post(format!("{url}/replication/events"))
            .header("content-type", wire::BATCH_CONTENT_TYPE)
            .header("x-twincell-replication-key", key)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert_eq!(status, 200, "{}", r.text().await.unwrap());
    }
    let micros = start.elapsed().as_micros().max(1);
    u64::try_from(u128::from(EVENTS) * 1_000_000 / micros).unwrap_or(u64::MAX)
}
