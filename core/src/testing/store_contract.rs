//! The shared store contract: one behaviour check per `# Errors` rule of
//! [`EventStore`], run against every implementation (memory, DynamoDB,
//! Cosmos DB). Each check is an `async fn` over a fresh, empty store and
//! needs no particular runtime; it returns what broke as `Err(String)`.
//!
//! [`store_contract_tests!`](crate::store_contract_tests) turns them into
//! one `#[tokio::test]` per rule for a store constructor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::event::{AggregateId, DomainEvent, EventMetadata, RecordedEvent, StreamId};
use crate::ids::{CellId, Sku};
use crate::ports::{
    EventStore, ListCursor, Listing, MAX_EVENTS_PER_APPEND, MAX_SNAPSHOT_BYTES, ReplicatedApply,
    Snapshot, StoreError,
};
use crate::quantity::Quantity;
use crate::store_support::snapshot_parts;
use crate::timestamp::Timestamp;
use crate::trace::TraceParent;

type Check = Result<(), String>;

fn cell(name: &str) -> Result<CellId, String> {
    CellId::new(name).map_err(|e| e.to_string())
}

fn stream(sku: &str, origin: &str) -> Result<StreamId, String> {
    let sku = Sku::new(sku).map_err(|e| e.to_string())?;
    Ok(StreamId::new(AggregateId::inventory(&sku), cell(origin)?))
}

/// `n` receipt events of `stream`, versions `from..from + n`.
fn received(stream: &StreamId, from: u64, n: u64) -> Result<Vec<RecordedEvent>, String> {
    (from..from + n)
        .map(|v| {
            let at = Timestamp::from_unix_millis(i64::try_from(v).unwrap_or(0))
                .map_err(|e| e.to_string())?;
            let q = Quantity::new(v % 1000 + 1).map_err(|e| e.to_string())?;
            RecordedEvent::new(
                stream.clone(),
                v,
                at,
                DomainEvent::StockReceived { quantity: q },
            )
            .map_err(|e| e.to_string())
        })
        .collect()
}

fn expect(condition: bool, what: impl FnOnce() -> String) -> Check {
    if condition { Ok(()) } else { Err(what()) }
}

/// Appended events load back, equal, in `(origin, version)` order, with
/// every origin's stream of the aggregate.
pub async fn append_then_load_round_trips<S: EventStore>(store: &S) -> Check {
    let aws = stream("rt-sku", "aws")?;
    let azure = stream("rt-sku", "azure")?;
    let a = received(&aws, 1, 3)?;
    let b = received(&azure, 1, 2)?;
    store
        .append(&azure, 0, &b)
        .await
        .map_err(|e| e.to_string())?;
    store.append(&aws, 0, &a).await.map_err(|e| e.to_string())?;
    let loaded = store
        .load(&aws.aggregate)
        .await
        .map_err(|e| e.to_string())?;
    let expected: Vec<_> = a.into_iter().chain(b).collect();
    expect(loaded == expected, || {
        format!("loaded {loaded:?}\nexpected {expected:?}")
    })?;
    let other = stream("other-sku", "aws")?;
    let none = store
        .load(&other.aggregate)
        .await
        .map_err(|e| e.to_string())?;
    expect(none.is_empty(), || {
        format!("an unknown aggregate loaded {none:?}")
    })
}

/// `load_after` returns exactly the listed origins' events above the
/// versions held, gaps and all, and nothing of other origins or aggregates.
pub async fn loading_after_what_is_held_returns_only_newer_events<S: EventStore>(
    store: &S,
) -> Check {
    use std::collections::BTreeMap;
    let aws = stream("after-sku", "aws")?;
    let azure = stream("after-sku", "azure")?;
    let gcp = stream("after-sku", "gcp")?;
    let a = received(&aws, 1, 5)?;
    let b = received(&azure, 1, 3)?;
    let c = received(&gcp, 1, 2)?;
    store.append(&aws, 0, &a).await.map_err(|e| e.to_string())?;
    store.append(&gcp, 0, &c).await.map_err(|e| e.to_string())?;
    for e in &b {
        store.apply_replicated(e).await.map_err(|e| e.to_string())?;
    }
    // A replicated stream with a gap: azure v5 arrived before v4.
    let late = received(&azure, 5, 1)?;
    for e in &late {
        store.apply_replicated(e).await.map_err(|e| e.to_string())?;
    }
    store
        .append(
            &stream("other-sku", "aws")?,
            0,
            &received(&stream("other-sku", "aws")?, 1, 2)?,
        )
        .await
        .map_err(|e| e.to_string())?;
    let held = |pairs: &[(&str, u64)]| -> Result<BTreeMap<CellId, u64>, String> {
        pairs.iter().map(|(c, v)| Ok((cell(c)?, *v))).collect()
    };
    let cases: Vec<(BTreeMap<CellId, u64>, Vec<RecordedEvent>)> = vec![
        (
            held(&[("aws", 2), ("azure", 0)])?,
            a.iter().skip(2).chain(&b).chain(&late).cloned().collect(),
        ),
        (held(&[("aws", 5), ("azure", 3)])?, late.clone()),
        (
            held(&[("azure", 4), ("gcp", 1)])?,
            late.iter().chain(c.iter().skip(1)).cloned().collect(),
        ),
        (held(&[("aws", 0), ("azure", 0), ("gcp", 0)])?, {
            store
                .load(&aws.aggregate)
                .await
                .map_err(|e| e.to_string())?
        }),
        (held(&[("aws", 99), ("nowhere", 0)])?, Vec::new()),
        (BTreeMap::new(), Vec::new()),
    ];
    for (after, expected) in cases {
        let loaded = store
            .load_after(&aws.aggregate, &after)
            .await
            .map_err(|e| e.to_string())?;
        expect(loaded == expected, || {
            format!("after {after:?} loaded {loaded:?}\nexpected {expected:?}")
        })?;
    }
    let unknown = stream("never-sku", "aws")?;
    let none = store
        .load_after(&unknown.aggregate, &held(&[("aws", 0)])?)
        .await
        .map_err(|e| e.to_string())?;
    expect(none.is_empty(), || {
        format!("an unknown aggregate loaded {none:?}")
    })
}

/// MUST return `Conflict` when the version moved, and write nothing.
pub async fn stale_expected_version_conflicts<S: EventStore>(store: &S) -> Check {
    let s = stream("stale-sku", "aws")?;
    store
        .append(&s, 0, &received(&s, 1, 2)?)
        .await
        .map_err(|e| e.to_string())?;
    let again = store.append(&s, 1, &received(&s, 2, 1)?).await;
    expect(matches!(again, Err(StoreError::Conflict { .. })), || {
        format!("stale append gave {again:?}")
    })?;
    let behind = store.append(&s, 0, &received(&s, 1, 1)?).await;
    expect(matches!(behind, Err(StoreError::Conflict { .. })), || {
        format!("append at 0 gave {behind:?}")
    })?;
    let loaded = store.load(&s.aggregate).await.map_err(|e| e.to_string())?;
    expect(loaded == received(&s, 1, 2)?, || {
        format!("a refused append wrote: {loaded:?}")
    })
}

/// MUST return `InvalidBatch` for an empty batch, an event of another
/// stream or a version out of sequence, and write nothing (all or nothing).
pub async fn invalid_batches_are_refused_whole<S: EventStore>(store: &S) -> Check {
    let s = stream("batch-sku", "aws")?;
    let other = stream("batch-sku", "azure")?;
    let empty = store.append(&s, 0, &[]).await;
    expect(matches!(empty, Err(StoreError::InvalidBatch(_))), || {
        format!("empty batch gave {empty:?}")
    })?;
    let mut mixed = received(&s, 1, 2)?;
    mixed.extend(received(&other, 3, 1)?);
    let r = store.append(&s, 0, &mixed).await;
    expect(matches!(r, Err(StoreError::InvalidBatch(_))), || {
        format!("mixed streams gave {r:?}")
    })?;
    let mut gap = received(&s, 1, 2)?;
    gap.extend(received(&s, 4, 1)?);
    let r = store.append(&s, 0, &gap).await;
    expect(matches!(r, Err(StoreError::InvalidBatch(_))), || {
        format!("a version gap gave {r:?}")
    })?;
    let loaded = store.load(&s.aggregate).await.map_err(|e| e.to_string())?;
    expect(loaded.is_empty(), || {
        format!("a refused batch left {} events", loaded.len())
    })
}

/// A commit of 100 events succeeds and loads back whole.
pub async fn a_hundred_event_commit_succeeds<S: EventStore>(store: &S) -> Check {
    let s = stream("hundred-sku", "aws")?;
    let events = received(&s, 1, 100)?;
    store
        .append(&s, 0, &events)
        .await
        .map_err(|e| e.to_string())?;
    let loaded = store.load(&s.aggregate).await.map_err(|e| e.to_string())?;
    expect(loaded == events, || {
        format!("loaded {} of 100", loaded.len())
    })
}

/// MUST return `TooLarge` for more than [`MAX_EVENTS_PER_APPEND`] events,
/// and write nothing.
pub async fn more_than_a_hundred_events_are_refused_whole<S: EventStore>(store: &S) -> Check {
    let s = stream("over-hundred-sku", "aws")?;
    let over = u64::try_from(MAX_EVENTS_PER_APPEND).unwrap_or(100) + 1;
    let events = received(&s, 1, over)?;
    let r = store.append(&s, 0, &events).await;
    expect(matches!(r, Err(StoreError::TooLarge(_))), || {
        format!("an append of 101 events gave {r:?}")
    })?;
    let loaded = store.load(&s.aggregate).await.map_err(|e| e.to_string())?;
    expect(loaded.is_empty(), || {
        format!("a refused append of 101 left {} events", loaded.len())
    })
}

/// An aggregate whose events exceed 1 MB loads completely (stores that
/// page must follow every page), through `load` and `load_after`. Events
/// are appended one at a time, as the service writes them: this rule is
/// about reading, and local stand-ins (moto) copy a whole table for every
/// item of a transaction.
pub async fn an_aggregate_over_a_megabyte_loads_completely<S: EventStore>(store: &S) -> Check {
    let s = stream("big-sku", "aws")?;
    let mut total = 0usize;
    let mut version = 0u64;
    while total < 1_100_000 {
        let event = received(&s, version + 1, 1)?;
        total += serde_json::to_vec(&event).map_or(0, |b| b.len());
        store
            .append(&s, version, &event)
            .await
            .map_err(|e| e.to_string())?;
        version += 1;
    }
    let loaded = store.load(&s.aggregate).await.map_err(|e| e.to_string())?;
    let contiguous = loaded.iter().zip(1u64..).all(|(e, v)| e.version() == v);
    expect(
        u64::try_from(loaded.len()).unwrap_or(0) == version && contiguous,
        || {
            format!(
                "loaded {} of {version} events ({total} bytes)",
                loaded.len()
            )
        },
    )?;
    // The same through load_after, which pages the same way.
    let after = std::collections::BTreeMap::from([(s.origin.clone(), 0)]);
    let newer = store
        .load_after(&s.aggregate, &after)
        .await
        .map_err(|e| e.to_string())?;
    expect(newer == loaded, || {
        format!("load_after loaded {} of {version} events", newer.len())
    })
}

/// Runs futures concurrently on the current task, whatever the runtime.
struct JoinAll<F: Future> {
    futures: Vec<Pin<Box<F>>>,
    outputs: Vec<Option<F::Output>>,
}

impl<F: Future> Future for JoinAll<F>
where
    F::Output: Unpin,
{
    type Output = Vec<F::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut pending = false;
        for (future, output) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(this.outputs.iter_mut().filter_map(Option::take).collect())
        }
    }
}

fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> JoinAll<F> {
    let futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let outputs = futures.iter().map(|_| None).collect();
    JoinAll { futures, outputs }
}

/// Of 16 concurrent appenders at the same version exactly one wins; the
/// others get `Conflict` and nothing of theirs is stored.
pub async fn of_sixteen_concurrent_appenders_exactly_one_wins<S: EventStore>(store: &S) -> Check {
    let s = stream("race-sku", "aws")?;
    let batches: Vec<Vec<RecordedEvent>> = (0..16u64)
        .map(|i| {
            let at = Timestamp::from_unix_millis(i64::try_from(i).unwrap_or(0))
                .map_err(|e| e.to_string())?;
            let q = Quantity::new(i + 1).map_err(|e| e.to_string())?;
            RecordedEvent::new(s.clone(), 1, at, DomainEvent::StockReceived { quantity: q })
                .map(|e| vec![e])
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let results = join_all(batches.iter().map(|b| store.append(&s, 0, b))).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict { .. })))
        .count();
    expect(wins == 1 && conflicts == 15, || {
        format!("{wins} wins, {conflicts} conflicts: {results:?}")
    })?;
    let loaded = store.load(&s.aggregate).await.map_err(|e| e.to_string())?;
    let winner = results
        .iter()
        .position(Result::is_ok)
        .and_then(|i| batches.get(i));
    expect(Some(&loaded) == winner, || {
        format!("stored {loaded:?}, not the winner's batch")
    })
}

/// Applying a replicated event twice stores it once (`AlreadyPresent`);
/// events may arrive with gaps and out of order.
pub async fn a_replicated_apply_is_idempotent<S: EventStore>(store: &S) -> Check {
    let s = stream("repl-sku", "azure")?;
    let events = received(&s, 1, 3)?;
    for e in events.iter().rev() {
        let r = store.apply_replicated(e).await.map_err(|e| e.to_string())?;
        expect(r == ReplicatedApply::Stored, || {
            format!("first apply of v{} gave {r:?}", e.version())
        })?;
    }
    for e in &events {
        let r = store.apply_replicated(e).await.map_err(|e| e.to_string())?;
        expect(r == ReplicatedApply::AlreadyPresent, || {
            format!("second apply of v{} gave {r:?}", e.version())
        })?;
    }
    let loaded = store.load(&s.aggregate).await.map_err(|e| e.to_string())?;
    expect(loaded == events, || format!("loaded {loaded:?}"))?;
    let gap = stream("gap-sku", "azure")?;
    let third = received(&gap, 3, 1)?;
    for e in &third {
        store.apply_replicated(e).await.map_err(|e| e.to_string())?;
    }
    let loaded = store
        .load(&gap.aggregate)
        .await
        .map_err(|e| e.to_string())?;
    expect(loaded == third, || {
        format!("an event after a gap was not stored: {loaded:?}")
    })
}

/// A different event at a stored `(stream, version)` is reported as
/// `Diverged` and never overwrites the stored one.
pub async fn a_different_replay_is_reported_and_never_overwrites<S: EventStore>(
    store: &S,
) -> Check {
    let s = stream("diverge-sku", "azure")?;
    let original = received(&s, 1, 1)?;
    let forged = RecordedEvent::new(
        s.clone(),
        1,
        Timestamp::from_unix_millis(1).map_err(|e| e.to_string())?,
        DomainEvent::StockReceived {
            quantity: Quantity::new(999).map_err(|e| e.to_string())?,
        },
    )
    .map_err(|e| e.to_string())?;
    for e in &original {
        store.apply_replicated(e).await.map_err(|e| e.to_string())?;
    }
    let r = store.apply_replicated(&forged).await;
    expect(
        matches!(r, Err(StoreError::Diverged { version: 1, .. })),
        || format!("a different replay gave {r:?}"),
    )?;
    let loaded = store.load(&s.aggregate).await.map_err(|e| e.to_string())?;
    expect(loaded == original, || {
        format!("the stored event changed: {loaded:?}")
    })
}

/// Follows a listing from `after` to its end, checking the page limit.
async fn list_all<S: EventStore>(
    store: &S,
    origin: &str,
    since: Option<Timestamp>,
    after: Option<ListCursor>,
    limit: usize,
) -> Result<Vec<RecordedEvent>, String> {
    let mut listing = Listing {
        origin: cell(origin)?,
        since,
        after,
        limit,
    };
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let page = store
            .list_origin(&listing)
            .await
            .map_err(|e| e.to_string())?;
        expect(page.events.len() <= limit, || {
            format!("a page of limit {limit} held {}", page.events.len())
        })?;
        all.extend(page.events);
        match page.next {
            // Cursors are text that may travel between processes.
            Some(next) => listing.after = Some(ListCursor::new(next.as_str().to_owned())),
            None => return Ok(all),
        }
    }
    Err("the listing did not end after 10 000 pages".to_owned())
}

/// Events of `origin` on several aggregates, appended (own) or applied
/// (replicated), plus a transaction: what a resync listing must find.
async fn stored_for_listing<S: EventStore>(
    store: &S,
    prefix: &str,
) -> Result<(Vec<RecordedEvent>, Vec<RecordedEvent>), String> {
    let mut aws = Vec::new();
    let mut azure = Vec::new();
    for n in 0..5 {
        let s = stream(&format!("{prefix}-{n}"), "aws")?;
        let events = received(&s, 1, 4)?;
        store
            .append(&s, 0, &events)
            .await
            .map_err(|e| e.to_string())?;
        aws.extend(events);
    }
    for n in 0..3 {
        let s = stream(&format!("{prefix}-{n}"), "azure")?;
        for e in received(&s, 1, 2)? {
            store
                .apply_replicated(&e)
                .await
                .map_err(|e| e.to_string())?;
            azure.push(e);
        }
    }
    let id = crate::ids::TransactionId::from_uuid(uuid::Uuid::from_u128(
        0x0193_a5b2_7c4d_7e8f_9a0b_1c2d_3e4f_5a6b,
    ));
    let tx = StreamId::new(AggregateId::transaction(id), cell("aws")?);
    let created = RecordedEvent::new(
        tx.clone(),
        1,
        Timestamp::from_unix_millis(3).map_err(|e| e.to_string())?,
        DomainEvent::TransactionCreated {
            transaction_id: id,
            account_id: crate::ids::AccountId::new("acct").map_err(|e| e.to_string())?,
            money: crate::money::Money::parse(
                "1",
                crate::money::Currency::from_code("EUR").map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
        },
    )
    .map_err(|e| e.to_string())?;
    store
        .append(&tx, 0, std::slice::from_ref(&created))
        .await
        .map_err(|e| e.to_string())?;
    aws.push(created);
    Ok((aws, azure))
}

fn same_events(got: &[RecordedEvent], want: &[RecordedEvent], what: &str) -> Check {
    let key = |e: &RecordedEvent| (e.stream().clone(), e.version());
    let mut got_keys: Vec<_> = got.iter().map(key).collect();
    got_keys.sort();
    let before = got_keys.len();
    got_keys.dedup();
    expect(got_keys.len() == before, || {
        format!("{what}: {} events listed twice", before - got_keys.len())
    })?;
    let mut want_sorted: Vec<_> = want.to_vec();
    want_sorted.sort_by_key(key);
    let mut got_sorted: Vec<_> = got.to_vec();
    got_sorted.sort_by_key(key);
    expect(got_sorted == want_sorted, || {
        format!(
            "{what}: listed {} events, expected {}: {:?}",
            got_sorted.len(),
            want_sorted.len(),
            got_sorted.iter().map(key).collect::<Vec<_>>()
        )
    })
}

/// Following a listing page by page yields every event of the origin
/// exactly once and none of another origin, whatever the page size.
pub async fn listing_an_origin_yields_each_of_its_events_once<S: EventStore>(store: &S) -> Check {
    let (aws, azure) = stored_for_listing(store, "list-sku").await?;
    for limit in [1, 3, 100] {
        let listed = list_all(store, "aws", None, None, limit).await?;
        same_events(&listed, &aws, &format!("aws, pages of {limit}"))?;
    }
    let listed = list_all(store, "azure", None, None, 2).await?;
    same_events(&listed, &azure, "azure (replicated here)")?;
    let listed = list_all(store, "gcp", None, None, 5).await?;
    same_events(&listed, &[], "an origin with no events")
}

/// A cursor resumes the listing where its page ended.
pub async fn a_listing_resumes_from_its_cursor<S: EventStore>(store: &S) -> Check {
    let (aws, _) = stored_for_listing(store, "resume-sku").await?;
    let mut listing = Listing {
        origin: cell("aws")?,
        since: None,
        after: None,
        limit: 4,
    };
    let mut seen = Vec::new();
    // Read two pages, then pick up from the second page's cursor as a
    // later process would.
    for _ in 0..2 {
        let page = store
            .list_origin(&listing)
            .await
            .map_err(|e| e.to_string())?;
        seen.extend(page.events);
        listing.after = page.next;
    }
    let after = listing
        .after
        .ok_or("a listing of 21 events ended within two pages of 4")?;
    let rest = list_all(store, "aws", None, Some(after), 7).await?;
    seen.extend(rest);
    same_events(&seen, &aws, "two pages, then the rest from the cursor")
}

/// `since` keeps the events recorded at or after it.
pub async fn a_listing_since_an_instant_keeps_later_events<S: EventStore>(store: &S) -> Check {
    let (aws, _) = stored_for_listing(store, "since-sku").await?;
    let since = Timestamp::from_unix_millis(3).map_err(|e| e.to_string())?;
    let later: Vec<_> = aws
        .iter()
        .filter(|e| e.recorded_at() >= since)
        .cloned()
        .collect();
    expect(!later.is_empty() && later.len() < aws.len(), || {
        "the fixture must have events on both sides of the instant".to_owned()
    })?;
    let listed = list_all(store, "aws", Some(since), None, 5).await?;
    same_events(&listed, &later, "since 3 ms")
}

/// MUST return `InvalidCursor` for a cursor this kind of store did not make.
pub async fn a_foreign_cursor_is_invalid<S: EventStore>(store: &S) -> Check {
    for text in ["", "not-a-cursor", "m1:inventory:sku:aws", "{\"s\":99}"] {
        let listing = Listing {
            origin: cell("aws")?,
            since: None,
            after: Some(ListCursor::new(text)),
            limit: 10,
        };
        let r = store.list_origin(&listing).await;
        expect(matches!(r, Err(StoreError::InvalidCursor(_))), || {
            format!("cursor {text:?} gave {r:?}")
        })?;
    }
    Ok(())
}

/// `read` gives the stored event at a version, `None` where there is none,
/// for own and replicated streams alike.
pub async fn a_stored_event_reads_back_by_stream_and_version<S: EventStore>(store: &S) -> Check {
    let own = stream("read-sku", "aws")?;
    let events = received(&own, 1, 3)?;
    store
        .append(&own, 0, &events)
        .await
        .map_err(|e| e.to_string())?;
    let other = stream("read-sku", "azure")?;
    let replicated = received(&other, 5, 1)?;
    for e in &replicated {
        store.apply_replicated(e).await.map_err(|e| e.to_string())?;
    }
    for e in events.iter().chain(&replicated) {
        let got = store
            .read(e.stream(), e.version())
            .await
            .map_err(|e| e.to_string())?;
        expect(got.as_ref() == Some(e), || {
            format!("read of {} v{} gave {got:?}", e.stream(), e.version())
        })?;
    }
    for (s, v) in [(&own, 4), (&other, 1), (&stream("no-sku", "aws")?, 1)] {
        let got = store.read(s, v).await.map_err(|e| e.to_string())?;
        expect(got.is_none(), || format!("read of {s} v{v} gave {got:?}"))?;
    }
    Ok(())
}

/// The trace context kept with an event ([`EventMetadata`]) comes back
/// from `load`, `read` and a listing, for appended and replicated events;
/// a replay that differs only in its metadata is already present and
/// changes nothing.
pub async fn event_metadata_is_kept_and_never_makes_a_replay_diverge<S: EventStore>(
    store: &S,
) -> Check {
    let trace = |span: u8| {
        TraceParent::new([0x4b; 16], [span; 8], true)
            .map(EventMetadata::traced)
            .ok_or_else(|| "no trace".to_owned())
    };
    let own = stream("meta-sku", "aws")?;
    let appended: Vec<RecordedEvent> = received(&own, 1, 2)?
        .into_iter()
        .map(|e| trace(1).map(|m| e.with_metadata(m)))
        .collect::<Result<_, _>>()?;
    store
        .append(&own, 0, &appended)
        .await
        .map_err(|e| e.to_string())?;
    let other = stream("meta-sku", "azure")?;
    let replicated: Vec<RecordedEvent> = received(&other, 1, 1)?
        .into_iter()
        .map(|e| trace(2).map(|m| e.with_metadata(m)))
        .collect::<Result<_, _>>()?;
    for e in &replicated {
        store.apply_replicated(e).await.map_err(|e| e.to_string())?;
    }
    let loaded = store
        .load(&own.aggregate)
        .await
        .map_err(|e| e.to_string())?;
    let all: Vec<RecordedEvent> = appended.iter().chain(&replicated).cloned().collect();
    expect(loaded == all, || {
        format!("loaded {loaded:?}\nexpected, with their metadata, {all:?}")
    })?;
    for e in &all {
        let got = store
            .read(e.stream(), e.version())
            .await
            .map_err(|e| e.to_string())?;
        expect(got.as_ref() == Some(e), || {
            format!("read of {} v{} gave {got:?}", e.stream(), e.version())
        })?;
    }
    let listed = list_all(store, "aws", None, None, 10).await?;
    same_events(&listed, &appended, "a listing, with the metadata")?;
    let mut replays = Vec::new();
    for e in &replicated {
        replays.push(e.clone().with_metadata(EventMetadata::default()));
        replays.push(e.clone().with_metadata(trace(3)?));
    }
    for replay in replays {
        let r = store.apply_replicated(&replay).await;
        expect(matches!(r, Ok(ReplicatedApply::AlreadyPresent)), || {
            format!("a replay with other metadata gave {r:?}")
        })?;
    }
    let reloaded = store
        .load(&own.aggregate)
        .await
        .map_err(|e| e.to_string())?;
    expect(reloaded == all, || {
        format!("a replay with other metadata changed the stored event: {reloaded:?}")
    })
}

/// A reachable store answers its check.
pub async fn a_reachable_store_checks_ok<S: EventStore>(store: &S) -> Check {
    store
        .check()
        .await
        .map_err(|e| format!("check failed: {e}"))
}

fn snapshot(s: &StreamId, version: u64, body: impl Into<String>) -> Snapshot {
    Snapshot {
        stream: s.clone(),
        version,
        format: 1,
        body: body.into(),
    }
}

/// A body of `target` bytes as a JSON string (within three), holding
/// quotes, backslashes, a control character and non-ASCII text, so that
/// it splits into several parts and escaping counts.
fn big_body(target: usize) -> String {
    let piece = "{\"order\":\"o-\u{e9}\u{20ac}\",\\path\u{1}\n} ";
    let piece_len = serde_json::to_string(piece).map_or(0, |s| s.len() - 2);
    let mut body = piece.repeat(target / piece_len.max(1));
    let mut len = serde_json::to_string(&body).map_or(0, |s| s.len() - 2);
    while len < target {
        body.push('x');
        len += 1;
    }
    body
}

async fn snapshots_of<S: EventStore>(
    store: &S,
    aggregate: &AggregateId,
) -> Result<Vec<Snapshot>, String> {
    store
        .load_snapshots(aggregate)
        .await
        .map_err(|e| e.to_string())
}

/// A saved snapshot loads back equal, small or in several parts, with the
/// other streams' of its aggregate and none of another aggregate.
pub async fn a_saved_snapshot_loads_back_whole<S: EventStore>(store: &S) -> Check {
    let aws = stream("snap-sku", "aws")?;
    let azure = stream("snap-sku", "azure")?;
    let other = stream("snap-other", "aws")?;
    let small = snapshot(&aws, 7, "{\"on_hand\":3}");
    let large = snapshot(&azure, 12, big_body(MAX_SNAPSHOT_BYTES));
    let parts = snapshot_parts(&large).map_err(|e| e.to_string())?.len();
    expect(parts > 3, || {
        format!("the large body makes only {parts} parts")
    })?;
    for s in [&large, &small, &snapshot(&other, 1, "other")] {
        store.save_snapshot(s).await.map_err(|e| e.to_string())?;
    }
    let loaded = snapshots_of(store, &aws.aggregate).await?;
    expect(loaded == [small.clone(), large.clone()], || {
        format!(
            "loaded {:?}\nexpected the small and the large snapshot",
            loaded
                .iter()
                .map(|s| (s.stream.to_string(), s.version, s.body.len()))
                .collect::<Vec<_>>()
        )
    })?;
    let none = snapshots_of(store, &stream("snap-never", "aws")?.aggregate).await?;
    expect(none.is_empty(), || {
        format!("an aggregate without snapshots loaded {none:?}")
    })
}

/// Only a snapshot of a higher version replaces the stored one; a smaller
/// one replacing a larger leaves none of the larger's parts behind.
pub async fn only_a_newer_snapshot_replaces_the_stored_one<S: EventStore>(store: &S) -> Check {
    let s = stream("newer-sku", "aws")?;
    let steps = [
        (snapshot(&s, 10, "ten"), 10, "ten".len()),
        (snapshot(&s, 5, "five"), 10, "ten".len()),
        (snapshot(&s, 10, "another ten"), 10, "ten".len()),
        (snapshot(&s, 20, big_body(700_000)), 20, 0),
        (snapshot(&s, 15, "fifteen"), 20, 0),
        (snapshot(&s, 30, "thirty"), 30, "thirty".len()),
    ];
    let mut expected = None;
    for (save, version, _) in steps {
        store
            .save_snapshot(&save)
            .await
            .map_err(|e| e.to_string())?;
        if save.version == version
            && expected
                .as_ref()
                .is_none_or(|e: &Snapshot| e.version < version)
        {
            expected = Some(save.clone());
        }
        let loaded = snapshots_of(store, &s.aggregate).await?;
        expect(
            loaded.len() == 1 && loaded.first() == expected.as_ref(),
            || {
                format!(
                    "after saving v{} the store holds {:?}, not v{version}",
                    save.version,
                    loaded
                        .iter()
                        .map(|l| (l.version, l.body.len()))
                        .collect::<Vec<_>>()
                )
            },
        )?;
    }
    Ok(())
}

/// A body over the limit is refused as too large, and nothing is written.
pub async fn a_snapshot_over_the_limit_is_refused_whole<S: EventStore>(store: &S) -> Check {
    let s = stream("huge-snap-sku", "aws")?;
    let kept = snapshot(&s, 1, "one");
    store
        .save_snapshot(&kept)
        .await
        .map_err(|e| e.to_string())?;
    let huge = snapshot(&s, 2, big_body(MAX_SNAPSHOT_BYTES + 1));
    match store.save_snapshot(&huge).await {
        Err(StoreError::TooLarge(_)) => {}
        other => return Err(format!("a snapshot over the limit gave {other:?}")),
    }
    let loaded = snapshots_of(store, &s.aggregate).await?;
    expect(loaded == [kept], || {
        format!(
            "after the refusal the store holds {:?}",
            loaded.iter().map(|l| l.version).collect::<Vec<_>>()
        )
    })
}

/// Snapshots never show up where events are read.
pub async fn snapshots_are_never_read_as_events<S: EventStore>(store: &S) -> Check {
    use std::collections::BTreeMap;
    let aws = stream("snap-apart-sku", "aws")?;
    let azure = stream("snap-apart-sku", "azure")?;
    let a = received(&aws, 1, 3)?;
    let b = received(&azure, 1, 2)?;
    store.append(&aws, 0, &a).await.map_err(|e| e.to_string())?;
    store
        .append(&azure, 0, &b)
        .await
        .map_err(|e| e.to_string())?;
    for s in [
        snapshot(&aws, 3, "three"),
        snapshot(&azure, 2, big_body(300_000)),
        snapshot(&stream("snap-alone-sku", "aws")?, 9, "no events"),
    ] {
        store.save_snapshot(&s).await.map_err(|e| e.to_string())?;
    }
    let all: Vec<_> = a.iter().chain(&b).cloned().collect();
    let loaded = store
        .load(&aws.aggregate)
        .await
        .map_err(|e| e.to_string())?;
    expect(loaded == all, || format!("load gave {loaded:?}"))?;
    let from_zero: BTreeMap<CellId, u64> = [(cell("aws")?, 0), (cell("azure")?, 0)].into();
    let after = store
        .load_after(&aws.aggregate, &from_zero)
        .await
        .map_err(|e| e.to_string())?;
    expect(after == all, || format!("load_after gave {after:?}"))?;
    let alone = store
        .load(&stream("snap-alone-sku", "aws")?.aggregate)
        .await
        .map_err(|e| e.to_string())?;
    expect(alone.is_empty(), || {
        format!("an aggregate with only a snapshot loaded {alone:?}")
    })?;
    for (s, v) in [(&aws, 3), (&azure, 2)] {
        let got = store.read(s, v).await.map_err(|e| e.to_string())?;
        expect(
            got.as_ref() == all.iter().find(|e| e.stream() == s && e.version() == v),
            || format!("read of {s} v{v} gave {got:?}"),
        )?;
    }
    let listed = list_all(store, "aws", None, None, 2).await?;
    expect(
        listed.len() == a.len() && a.iter().all(|e| listed.contains(e)),
        || format!("the listing of aws gave {listed:?}"),
    )
}

/// For random histories written by two cells' services (each command
/// starting from the snapshots, with no cache), the snapshots plus the
/// events after them fold to exactly the state the full fold gives, in
/// each cell's view; and snapshots were saved.
pub async fn a_snapshot_and_its_tail_fold_to_the_full_fold<S: EventStore>(store: &S) -> Check {
    for seed in 1..=4u64 {
        snapshot_and_tail_fold_for_seed(store, seed).await?;
    }
    Ok(())
}

/// A small xorshift generator: the histories are random but repeatable
/// from their seed, in any runtime.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One history of [`a_snapshot_and_its_tail_fold_to_the_full_fold`], from
/// `seed` (property tests draw many), on the SKU `prop-<seed>`.
///
/// # Errors
/// What broke.
pub async fn snapshot_and_tail_fold_for_seed<S: EventStore>(store: &S, seed: u64) -> Check {
    use crate::inventory::{Inventory, InventoryCommand};
    use crate::service::{Service, ServiceError};
    use crate::testing::{ManualClock, SequentialIds};
    use crate::topology::Topology;
    let err = |e: &dyn std::fmt::Display| format!("seed {seed}: {e}");
    let sku = Sku::new(format!("prop-{seed}")).map_err(|e| err(&e))?;
    let cells = [cell("aws")?, cell("azure")?];
    let topologies = [
        Topology::new(cells[0].clone(), [cells[1].clone()]),
        Topology::new(cells[1].clone(), [cells[0].clone()]),
    ];
    let every = [1, 2, 3, 5]
        .get(usize::try_from(seed % 4).unwrap_or(0))
        .copied()
        .unwrap_or(1);
    let start = Timestamp::from_unix_millis(1_700_000_000_000).map_err(|e| err(&e))?;
    let services: Vec<_> = topologies
        .iter()
        .map(|t| {
            Service::new(
                t.clone(),
                store,
                ManualClock::new(start, 7),
                SequentialIds::default(),
            )
            .with_cache_capacity(0)
            .with_snapshot_every(every)
        })
        .collect();
    let mut rng = Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut orders = 0u64;
    for step in 0..48u64 {
        let who = usize::try_from(rng.below(2)).unwrap_or(0);
        let (Some(service), Some(other)) = (services.get(who), cells.get(1 - who)) else {
            return Err(err(&"no such cell"));
        };
        let q = |n: u64| Quantity::new(n).map_err(|e| err(&e));
        let order = |n: u64| crate::ids::OrderId::new(format!("o-{n}")).map_err(|e| err(&e));
        let command = match rng.below(7) {
            0 | 1 => InventoryCommand::Receive(q(1 + rng.below(20))?, None),
            2 | 3 => {
                orders += 1;
                InventoryCommand::Reserve(order(orders)?, q(1 + rng.below(4))?)
            }
            4 => InventoryCommand::Release(order(1 + rng.below(orders.max(1)))?),
            5 => InventoryCommand::Fulfil(order(1 + rng.below(orders.max(1)))?),
            _ if rng.below(2) == 0 => {
                InventoryCommand::Transfer(other.clone(), q(1 + rng.below(5))?, None)
            }
            _ => InventoryCommand::WriteOff(
                q(1 + rng.below(3))?,
                crate::WriteOffReason::new("damaged").map_err(|e| err(&e))?,
                None,
            ),
        };
        match service.execute(&sku, &command).await {
            Ok(_) | Err(ServiceError::Inventory(_)) => {}
            Err(e) => return Err(err(&format!("step {step} {command:?}: {e}"))),
        }
        if step % 8 != 7 {
            continue;
        }
        let aggregate = AggregateId::inventory(&sku);
        let events = store.load(&aggregate).await.map_err(|e| err(&e))?;
        let snapshots = store
            .load_snapshots(&aggregate)
            .await
            .map_err(|e| err(&e))?;
        for topology in &topologies {
            let full = Inventory::fold(&sku, topology, &events).map_err(|e| err(&e))?;
            let (mut restored, refused) = Inventory::from_snapshots(&sku, topology, &snapshots);
            expect(refused.is_empty(), || {
                err(&format!("snapshots refused: {refused:?}"))
            })?;
            let tail = store
                .load_after(&aggregate, &restored.held())
                .await
                .map_err(|e| err(&e))?;
            restored.advance(&tail).map_err(|e| err(&e))?;
            expect(restored == full, || {
                err(&format!(
                    "step {step}, as {} sees it: snapshots {:?} + {} events folded to\n{restored:?}\nthe full fold of {} events is\n{full:?}",
                    topology.this(),
                    snapshots
                        .iter()
                        .map(|s| (s.stream.to_string(), s.version))
                        .collect::<Vec<_>>(),
                    tail.len(),
                    events.len()
                ))
            })?;
        }
    }
    let saved = store
        .load_snapshots(&AggregateId::inventory(&sku))
        .await
        .map_err(|e| err(&e))?;
    // Not vacuous: at least one ledger started commands from a snapshot. A
    // random history can leave one cell with no appended event at all
    // (every command of it refused), so both is not always reachable.
    expect(!saved.is_empty(), || err(&"no ledger was snapshotted"))
}

/// One `#[tokio::test]` per contract rule, each on a fresh store from
/// `$make`, an expression evaluated per test; `async $make` awaits it
/// (a store that needs a table created first).
#[macro_export]
macro_rules! store_contract_tests {
    (async $make:expr) => {
        $crate::store_contract_tests!(@rules $make);
    };
    ($make:expr) => {
        $crate::store_contract_tests!(@rules async { $make });
    };
    (@rules $make:expr) => {
        $crate::store_contract_tests!(@each $make;
            append_then_load_round_trips,
            loading_after_what_is_held_returns_only_newer_events,
            stale_expected_version_conflicts,
            invalid_batches_are_refused_whole,
            a_hundred_event_commit_succeeds,
            more_than_a_hundred_events_are_refused_whole,
            an_aggregate_over_a_megabyte_loads_completely,
            of_sixteen_concurrent_appenders_exactly_one_wins,
            a_replicated_apply_is_idempotent,
            a_different_replay_is_reported_and_never_overwrites,
            listing_an_origin_yields_each_of_its_events_once,
            a_listing_resumes_from_its_cursor,
            a_listing_since_an_instant_keeps_later_events,
            a_foreign_cursor_is_invalid,
            a_stored_event_reads_back_by_stream_and_version,
            event_metadata_is_kept_and_never_makes_a_replay_diverge,
            a_saved_snapshot_loads_back_whole,
            only_a_newer_snapshot_replaces_the_stored_one,
            a_snapshot_over_the_limit_is_refused_whole,
            snapshots_are_never_read_as_events,
            a_snapshot_and_its_tail_fold_to_the_full_fold,
            a_reachable_store_checks_ok
        );
    };
    (@each $make:expr; $($check:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let store = $make.await;
                if let Err(e) = $crate::testing::store_contract::$check(&store).await {
                    panic!("{}: {e}", stringify!($check));
                }
            }
        )+
    };
}
