//! Each store operation as SQL on the store's one connection, run by the
//! connection thread inside the group's transaction ([`crate::worker`]).

use std::collections::BTreeMap;

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use twincell_core::{
    AggregateId, CellId, EventPage, ListCursor, RecordedEvent, ReplicatedApply, Snapshot,
    StoreError, StreamId,
};

/// What a SQLite failure means to the service: the file could not be read
/// or written (corrupt, read-only, full, locked by another process past the
/// busy timeout, an I/O error), so the store is unavailable and the caller
/// may retry. Nothing committed is lost: a failed statement leaves the
/// transaction's earlier statements to its savepoint, and a failed commit
/// leaves the file as it was.
pub(crate) fn unavailable(e: &rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("sqlite: {e}"))
}

fn int(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n)
        .map_err(|_| StoreError::TooLarge(format!("{what} {n} is beyond SQLite's integers")))
}

fn uint(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(format!("a negative number {n} is stored")))
}

/// An event as a row: its key, time and JSON, made before it reaches the
/// connection thread so that the thread only runs SQL.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) stream: StreamId,
    pub(crate) version: i64,
    pub(crate) recorded_at: i64,
    pub(crate) json: String,
}

impl Row {
    pub(crate) fn of(event: &RecordedEvent) -> Result<Self, StoreError> {
        Ok(Self {
            stream: event.stream().clone(),
            version: int(event.version(), "version")?,
            recorded_at: event.recorded_at().unix_millis(),
            json: serde_json::to_string(event).map_err(corrupt)?,
        })
    }
}

fn decode(json: &str) -> Result<RecordedEvent, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

fn kind(aggregate: &AggregateId) -> &'static str {
    aggregate.kind().as_str()
}

/// Appends `rows` (a checked batch of `stream`) if the stream is at
/// `expected`.
pub(crate) fn append(c: &Connection, expected: u64, rows: &[Row]) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Err(StoreError::InvalidBatch("no events".to_owned()));
    };
    let stream = &first.stream;
    let current: i64 = c
        .prepare_cached(
            "SELECT COALESCE(MAX(version), 0) FROM events
             WHERE kind = ?1 AND aggregate = ?2 AND origin = ?3",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    kind(&stream.aggregate),
                    stream.aggregate.id(),
                    stream.origin.as_str()
                ],
                |r| r.get(0),
            )
        })
        .map_err(|e| unavailable(&e))?;
    if uint(current)? != expected {
        return Err(StoreError::Conflict {
            stream: stream.clone(),
            expected,
        });
    }
    for row in rows {
        insert(c, row).map_err(|e| match e.sqlite_error_code() {
            // Another connection took the version first.
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict {
                stream: stream.clone(),
                expected,
            },
            _ => unavailable(&e),
        })?;
    }
    Ok(())
}

fn events(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut statement = c.prepare_cached(sql).map_err(|e| unavailable(&e))?;
    let rows = statement
        .query_map(params, |r| r.get::<_, String>(0))
        .map_err(|e| unavailable(&e))?;
    let mut out = Vec::new();
    for json in rows {
        out.push(decode(&json.map_err(|e| unavailable(&e))?)?);
    }
    Ok(out)
}

/// Every event of `aggregate`, by `(origin, version)`.
pub(crate) fn load(
    c: &Connection,
    aggregate: &AggregateId,
) -> Result<Vec<RecordedEvent>, StoreError> {
    events(
        c,
        "SELECT event FROM events WHERE kind = ?1 AND aggregate = ?2 ORDER BY origin, version",
        params![kind(aggregate), aggregate.id()],
    )
}

/// The events of each listed origin above its version.
pub(crate) fn load_after(
    c: &Connection,
    aggregate: &AggregateId,
    after: &BTreeMap<CellId, u64>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut out = Vec::new();
    for (origin, version) in after {
        out.extend(events(
            c,
            "SELECT event FROM events
             WHERE kind = ?1 AND aggregate = ?2 AND origin = ?3 AND version > ?4
             ORDER BY version",
            params![
                kind(aggregate),
                aggregate.id(),
                origin.as_str(),
                int(*version, "version")?
            ],
        )?);
    }
    Ok(out)
}

fn stored_at(
    c: &Connection,
    stream: &StreamId,
    version: i64,
) -> Result<Option<String>, StoreError> {
    c.prepare_cached(
        "SELECT event FROM events
         WHERE kind = ?1 AND aggregate = ?2 AND origin = ?3 AND version = ?4",
    )
    .and_then(|mut s| {
        s.query_row(
            params![
                kind(&stream.aggregate),
                stream.aggregate.id(),
                stream.origin.as_str(),
                version
            ],
            |r| r.get(0),
        )
        .optional()
    })
    .map_err(|e| unavailable(&e))
}

/// The event at `(stream, version)`.
pub(crate) fn read(
    c: &Connection,
    stream: &StreamId,
    version: u64,
) -> Result<Option<RecordedEvent>, StoreError> {
    let Ok(version) = i64::try_from(version) else {
        return Ok(None);
    };
    stored_at(c, stream, version)?
        .as_deref()
        .map(decode)
        .transpose()
}

/// Stores a replicated event unless it, or a different one, is there.
pub(crate) fn apply_replicated(
    c: &Connection,
    event: &RecordedEvent,
    row: &Row,
) -> Result<ReplicatedApply, StoreError> {
    if let Some(stored) = stored_at(c, &row.stream, row.version)? {
        return if decode(&stored)?.same_fact(event) {
            Ok(ReplicatedApply::AlreadyPresent)
        } else {
            Err(StoreError::Diverged {
                stream: row.stream.clone(),
                version: event.version(),
            })
        };
    }
    insert(c, row).map_err(|e| unavailable(&e))?;
    Ok(ReplicatedApply::Stored)
}

/// Inserts `row`, taking the next feed position.
fn insert(c: &Connection, row: &Row) -> Result<(), rusqlite::Error> {
    c.prepare_cached(
        "INSERT INTO events (kind, aggregate, origin, version, recorded_at, event)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        kind(&row.stream.aggregate),
        row.stream.aggregate.id(),
        row.stream.origin.as_str(),
        row.version,
        row.recorded_at,
        row.json,
    ])
    .map(|_| ())
}

/// A listing cursor: `sq1:<seq>`, the change-feed position of the last
/// event of the page. It stays valid in any process on the same file.
fn cursor(seq: i64) -> ListCursor {
    ListCursor::new(format!("sq1:{seq}"))
}

fn parse_cursor(cursor: &ListCursor) -> Result<i64, StoreError> {
    cursor
        .as_str()
        .strip_prefix("sq1:")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            StoreError::InvalidCursor(format!("{cursor:?} is not a SQLite store's cursor"))
        })
}

/// One page of `origin`'s events in feed order, from the origin index.
pub(crate) fn list_origin(
    c: &Connection,
    origin: &CellId,
    since: Option<i64>,
    after: Option<&ListCursor>,
    limit: usize,
) -> Result<EventPage, StoreError> {
    let after = after.map(parse_cursor).transpose()?.unwrap_or(0);
    let limit = limit.max(1);
    let mut statement = c
        .prepare_cached(
            "SELECT seq, event FROM events
             WHERE origin = ?1 AND seq > ?2 AND recorded_at >= ?3
             ORDER BY seq LIMIT ?4",
        )
        .map_err(|e| unavailable(&e))?;
    let rows = statement
        .query_map(
            params![
                origin.as_str(),
                after,
                since.unwrap_or(i64::MIN),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .map_err(|e| unavailable(&e))?;
    let mut page = EventPage::default();
    let mut last = None;
    for row in rows {
        let (seq, json) = row.map_err(|e| unavailable(&e))?;
        page.events.push(decode(&json)?);
        last = Some(seq);
    }
    if page.events.len() == limit {
        page.next = last.map(cursor);
    }
    Ok(page)
}

/// Saves `snapshot` unless one as new is stored.
pub(crate) fn save_snapshot(c: &Connection, snapshot: &Snapshot) -> Result<(), StoreError> {
    let aggregate = &snapshot.stream.aggregate;
    let version = int(snapshot.version, "version")?;
    c.prepare_cached(
        "INSERT INTO snapshots (kind, aggregate, origin, version, format, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (kind, aggregate, origin) DO UPDATE
         SET version = excluded.version, format = excluded.format, body = excluded.body
         WHERE excluded.version > snapshots.version",
    )
    .and_then(|mut s| {
        s.execute(params![
            kind(aggregate),
            aggregate.id(),
            snapshot.stream.origin.as_str(),
            version,
            snapshot.format,
            snapshot.body,
        ])
    })
    .map(|_| ())
    .map_err(|e| unavailable(&e))
}

/// The snapshot of each stream of `aggregate`, by origin.
pub(crate) fn load_snapshots(
    c: &Connection,
    aggregate: &AggregateId,
) -> Result<Vec<Snapshot>, StoreError> {
    let mut statement = c
        .prepare_cached(
            "SELECT origin, version, format, body FROM snapshots
             WHERE kind = ?1 AND aggregate = ?2 ORDER BY origin",
        )
        .map_err(|e| unavailable(&e))?;
    let rows = statement
        .query_map(params![kind(aggregate), aggregate.id()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(|e| unavailable(&e))?;
    let mut out = Vec::new();
    for row in rows {
        let (origin, version, format, body) = row.map_err(|e| unavailable(&e))?;
        out.push(Snapshot {
            stream: StreamId::new(aggregate.clone(), CellId::new(&origin).map_err(corrupt)?),
            version: uint(version)?,
            format,
            body,
        });
    }
    Ok(out)
}

/// A read of the events table's last page: fails when the file can't be
/// read.
pub(crate) fn check(c: &Connection) -> Result<(), StoreError> {
    c.prepare_cached("SELECT seq FROM events ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)).optional())
        .map(|_| ())
        .map_err(|e| unavailable(&e))
}

/// Committed events after feed position `after`, in commit order.
pub(crate) fn feed_after(
    c: &Connection,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, RecordedEvent)>, StoreError> {
    let mut statement = c
        .prepare_cached("SELECT seq, event FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .map_err(|e| unavailable(&e))?;
    let rows = statement
        .query_map(
            params![
                int(after, "position")?,
                i64::try_from(limit.max(1)).unwrap_or(i64::MAX)
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .map_err(|e| unavailable(&e))?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, json) = row.map_err(|e| unavailable(&e))?;
        out.push((uint(seq)?, decode(&json)?));
    }
    Ok(out)
}

/// The position a feed reader has committed (0 before its first).
pub(crate) fn checkpoint(c: &Connection, reader: &str) -> Result<u64, StoreError> {
    let seq: Option<i64> = c
        .prepare_cached("SELECT seq FROM feed_checkpoints WHERE reader = ?1")
        .and_then(|mut s| s.query_row(params![reader], |r| r.get(0)).optional())
        .map_err(|e| unavailable(&e))?;
    seq.map_or(Ok(0), uint)
}

/// How many of `origin`'s events follow `reader`'s checkpoint: what a
/// publisher reading for that origin has still to send.
pub(crate) fn backlog(c: &Connection, reader: &str, origin: &str) -> Result<u64, StoreError> {
    let after = int(checkpoint(c, reader)?, "position")?;
    let count: i64 = c
        .prepare_cached("SELECT count(*) FROM events WHERE origin = ?1 AND seq > ?2")
        .and_then(|mut s| s.query_row(params![origin, after], |r| r.get(0)))
        .map_err(|e| unavailable(&e))?;
    uint(count)
}

/// Moves a reader's checkpoint forward to `seq` (never back).
pub(crate) fn set_checkpoint(c: &Connection, reader: &str, seq: u64) -> Result<(), StoreError> {
    let seq = int(seq, "position")?;
    c.prepare_cached(
        "INSERT INTO feed_checkpoints (reader, seq) VALUES (?1, ?2)
         ON CONFLICT (reader) DO UPDATE SET seq = excluded.seq
         WHERE excluded.seq > feed_checkpoints.seq",
    )
    .and_then(|mut s| s.execute(params![reader, seq]))
    .map(|_| ())
    .map_err(|e| unavailable(&e))
}
