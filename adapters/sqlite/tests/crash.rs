//! Crash safety, shown: a writer process appends to one file and is killed
//! with SIGKILL at a random point, over and over; after every kill the file
//! is reopened and checked:
//! - every append the writer acknowledged is there;
//! - every append is whole or absent (its events share their recorded
//!   time, and their count is the number they carry);
//! - every stream's versions run 1, 2, 3 … with no gap;
//! - the change feed runs 1, 2, 3 … over every event, each once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::as_conversions,
    clippy::print_stdout
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use twincell_core::{AggregateId, DomainEvent, EventStore, RecordedEvent, Sku};
use twincell_sqlite::SqliteEventStore;

/// Kills per run: enough to land in every phase of an append many times,
/// few enough for a few seconds.
const KILLS: u32 = 30;

/// An acknowledged append: stream, first and last version, append number.
type Ack = (String, u64, u64, i64);

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.split_whitespace();
    let (Some("ok"), Some(sku), Some(from), Some(to), Some(n)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    Some((
        sku.to_owned(),
        from.parse().ok()?,
        to.parse().ok()?,
        n.parse().ok()?,
    ))
}

/// A small deterministic generator for the kill times (a run's seed is
/// printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Runs the writer on `path` until it is killed `after` its `ready`;
/// returns the appends it acknowledged (whole lines only: a line cut by the
/// kill was not acknowledged).
fn run_and_kill(path: &std::path::Path, after: Duration) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_twincell-sqlite-crash-writer"))
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the writer");
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.ends_with('\n') => {
                    if lines.send(line).is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    });
    let ready = received
        .recv_timeout(Duration::from_secs(20))
        .expect("the writer did not say ready");
    assert_eq!(ready.trim(), "ready");
    std::thread::sleep(after);
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the writer was killed, not done: {status}"
    );
    reader.join().unwrap();
    received
        .try_iter()
        .map(|line| parse_ack(&line).unwrap_or_else(|| panic!("not an ack: {line:?}")))
        .collect()
}

async fn check(path: &std::path::Path, acked: &[Ack]) -> (usize, usize) {
    let store = SqliteEventStore::open(path).await.unwrap();
    let mut all: Vec<RecordedEvent> = Vec::new();
    for i in 0..4 {
        let sku = Sku::new(format!("crash-{i}")).unwrap();
        let events = store.load(&AggregateId::inventory(&sku)).await.unwrap();
        let versions: Vec<u64> = events.iter().map(RecordedEvent::version).collect();
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, expected, "crash-{i}: versions have a gap");
        all.extend(events);
    }
    // Whole or absent: the events of append n share its time, and there
    // are as many as each carries units.
    let mut appends: BTreeMap<i64, Vec<&RecordedEvent>> = BTreeMap::new();
    for e in &all {
        appends
            .entry(e.recorded_at().unix_millis())
            .or_default()
            .push(e);
    }
    for (n, events) in &appends {
        let DomainEvent::StockReceived { quantity } = events[0].event() else {
            panic!("append {n} holds another event");
        };
        assert_eq!(
            events.len() as u64,
            quantity.get(),
            "append {n} is partial: {events:?}"
        );
        assert!(events.iter().all(|e| e.stream() == events[0].stream()));
    }
    // Every acknowledged append is there, as acknowledged.
    let stored: BTreeMap<(String, u64), i64> = all
        .iter()
        .map(|e| {
            (
                (e.stream().aggregate.id().to_owned(), e.version()),
                e.recorded_at().unix_millis(),
            )
        })
        .collect();
    for (sku, from, to, n) in acked {
        for v in *from..=*to {
            assert_eq!(
                stored.get(&(sku.clone(), v)),
                Some(n),
                "acknowledged append {n} ({sku} v{from}..v{to}) lost v{v}"
            );
        }
    }
    // The feed: 1, 2, 3 … over every event, each once.
    let feed = store.feed_after(0, usize::MAX).await.unwrap();
    let seqs: Vec<u64> = feed.iter().map(|f| f.seq).collect();
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(seqs, expected, "the feed has a gap or a duplicate");
    let fed: BTreeSet<(String, u64)> = feed
        .iter()
        .map(|f| {
            (
                f.event.stream().aggregate.id().to_owned(),
                f.event.version(),
            )
        })
        .collect();
    assert_eq!(fed.len(), all.len(), "an event appears twice in the feed");
    assert_eq!(fed, stored.keys().cloned().collect::<BTreeSet<_>>());
    (appends.len(), all.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_sigkill_whole_and_in_order() {
    let path = twincell_sqlite::testing::fresh_path("crash");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash test seed {seed}, file {}", path.display());
    let mut rng = Lcg(seed);
    let mut acked: Vec<Ack> = Vec::new();
    let started = Instant::now();
    let mut kills = 0u32;
    for _ in 0..KILLS {
        // Anywhere from just after opening to well into a run of appends.
        let after = Duration::from_millis(rng.below(80));
        acked.extend(run_and_kill(&path, after));
        kills += 1;
        check(&path, &acked).await;
    }
    let (appends, events) = check(&path, &acked).await;
    println!(
        "{kills} kills in {:?}: {} acknowledged appends, {appends} appends and {events} events stored",
        started.elapsed(),
        acked.len()
    );
    assert!(
        acked.len() >= KILLS as usize,
        "the writer acknowledged only {} appends: the kills did not land in running writes",
        acked.len()
    );
    assert!(appends >= acked.len());
}
