//! The writer of the crash test (`tests/crash.rs`; built only with the
//! `test-util` feature): appends to a SQLite store as fast as it can until
//! it is killed, and prints each append once it is acknowledged.
//!
//! `twincell-sqlite-crash-writer PATH` resumes on the file at `PATH`:
//! append `n` (counting on from the file's last) puts `k = n % 3 + 1`
//! receipts of `k` units on stream `crash-<n % 4>` of cell `aws`, each
//! recorded at `n` ms, so that the test can tell which events one append
//! wrote. After an acknowledged append it prints `ok <sku> <from> <to> <n>`
//! on a line of its own. The first line is `ready`.

use std::io::Write;

use twincell_core::{
    AggregateId, CellId, DomainEvent, EventStore, Quantity, RecordedEvent, Sku, StreamId, Timestamp,
};
use twincell_sqlite::SqliteEventStore;

const STREAMS: u64 = 4;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: twincell-sqlite-crash-writer PATH")?;
    let store = SqliteEventStore::open(&path).await?;
    let cell = CellId::new("aws")?;
    let mut versions = Vec::new();
    let mut next = 0u64;
    for i in 0..STREAMS {
        let sku = Sku::new(format!("crash-{i}"))?;
        let events = store.load(&AggregateId::inventory(&sku)).await?;
        versions.push(events.last().map_or(0, RecordedEvent::version));
        for e in &events {
            next = next.max(u64::try_from(e.recorded_at().unix_millis())? + 1);
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    loop {
        let index = next % STREAMS;
        let k = next % 3 + 1;
        let sku = Sku::new(format!("crash-{index}"))?;
        let stream = StreamId::new(AggregateId::inventory(&sku), cell.clone());
        let slot = usize::try_from(index)?;
        let from = versions.get(slot).copied().ok_or("no such stream")? + 1;
        let at = Timestamp::from_unix_millis(i64::try_from(next)?)?;
        let events = (from..from + k)
            .map(|v| {
                RecordedEvent::new(
                    stream.clone(),
                    v,
                    at,
                    DomainEvent::StockReceived {
                        quantity: Quantity::new(k)?,
                    },
                )
                .map_err(Box::<dyn std::error::Error>::from)
            })
            .collect::<Result<Vec<_>, _>>()?;
        store.append(&stream, from - 1, &events).await?;
        if let Some(v) = versions.get_mut(slot) {
            *v = from + k - 1;
        }
        writeln!(out, "ok crash-{index} {from} {} {next}", from + k - 1)?;
        out.flush()?;
        next += 1;
    }
}
