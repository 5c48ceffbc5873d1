//! What the Event Grid stand-in accepted and has not yet delivered, kept on
//! disk. Event Grid stores a published event durably until it is
//! delivered, dead-lettered or expired; the stand-in keeps that promise
//! across its own restarts (a matrix started again on its data directory)
//! with a journal per subscription: one line per event accepted, written
//! before the publish is answered 200, and one line per event done with
//! (delivered or dead-lettered). Opening the journal replays it and
//! rewrites it with what is still pending; a journal grown well past what
//! is pending is rewritten the same way between two deliveries.
//!
//! A line cut short by a crash (the last one) is skipped. An event whose
//! "done" line was not written is delivered again after a restart, which
//! at-least-once delivery allows.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Journal lines beyond which, once they are more than twice what is
/// pending, the journal is rewritten.
const COMPACT_AFTER_LINES: usize = 10_000;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Accepted(Value),
    Done(String),
}

/// One subscription's journal.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    file: Mutex<File>,
    lines: AtomicUsize,
}

fn id_of(event: &Value) -> &str {
    event.get("id").and_then(Value::as_str).unwrap_or_default()
}

impl Spool {
    /// Opens (or creates) the journal at `path` and answers the events it
    /// still holds, in the order they were accepted.
    pub(crate) fn open(path: &Path) -> anyhow::Result<(Self, Vec<Value>)> {
        let mut pending: Vec<Option<Value>> = Vec::new();
        let mut by_id: HashMap<String, VecDeque<usize>> = HashMap::new();
        match File::open(path) {
            Ok(file) => {
                for line in BufReader::new(file).lines() {
                    let line = line.with_context(|| format!("reading {}", path.display()))?;
                    match serde_json::from_str::<Line>(&line) {
                        Ok(Line::Accepted(event)) => {
                            by_id
                                .entry(id_of(&event).to_owned())
                                .or_default()
                                .push_back(pending.len());
                            pending.push(Some(event));
                        }
                        Ok(Line::Done(id)) => {
                            if let Some(slot) = by_id.get_mut(&id).and_then(VecDeque::pop_front)
                                && let Some(entry) = pending.get_mut(slot)
                            {
                                *entry = None;
                            }
                        }
                        // Only a crash mid-write leaves one, as the last line.
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "skipping a journal line cut short");
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        }
        let pending: Vec<Value> = pending.into_iter().flatten().collect();
        let file = rewrite(path, &pending)?;
        Ok((
            Self {
                path: path.to_owned(),
                file: Mutex::new(file),
                lines: AtomicUsize::new(pending.len()),
            },
            pending,
        ))
    }

    fn append(&self, lines: &[Line]) -> std::io::Result<()> {
        let mut text = String::new();
        for line in lines {
            text.push_str(&serde_json::to_string(line).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        file.write_all(text.as_bytes())?;
        self.lines.fetch_add(lines.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Records `events` as accepted: the publish may be answered 200 once
    /// this returns `Ok`.
    pub(crate) fn accepted(&self, events: &[Value]) -> std::io::Result<()> {
        let lines: Vec<Line> = events.iter().cloned().map(Line::Accepted).collect();
        self.append(&lines)
    }

    /// Records `events` as done with. A failure only means they may be
    /// delivered again after a restart; it is logged.
    pub(crate) fn done<'a>(&self, events: impl Iterator<Item = &'a Value>) {
        let lines: Vec<Line> = events.map(|e| Line::Done(id_of(e).to_owned())).collect();
        if let Err(e) = self.append(&lines) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not record deliveries; they may be delivered again after a restart");
        }
    }

    /// Rewrites the journal with `pending` (every event not yet done, in
    /// flight ones included) when it has grown well past it.
    pub(crate) fn compact_if_large(&self, pending: &[&Value]) {
        let lines = self.lines.load(Ordering::Relaxed);
        if lines < COMPACT_AFTER_LINES || lines < 2 * pending.len() {
            return;
        }
        let owned: Vec<Value> = pending.iter().map(|v| (*v).clone()).collect();
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match rewrite(&self.path, &owned) {
            Ok(new) => {
                *file = new;
                self.lines.store(owned.len(), Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not rewrite the journal; it keeps growing");
            }
        }
    }
}

/// Writes `pending` to a new file beside `path`, moves it over `path`, and
/// answers it open for appending.
fn rewrite(path: &Path, pending: &[Value]) -> anyhow::Result<File> {
    let fresh = path.with_extension("jsonl.new");
    {
        let mut file =
            File::create(&fresh).with_context(|| format!("creating {}", fresh.display()))?;
        let mut text = String::new();
        for event in pending {
            text.push_str(&serde_json::to_string(&Line::Accepted(event.clone()))?);
            text.push('\n');
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&fresh, path)
        .with_context(|| format!("moving {} to {}", fresh.display(), path.display()))?;
    OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fresh(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "twincell-spool-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let _ = std::fs::create_dir_all(&dir);
        dir.join("sub.jsonl")
    }

    fn ids(events: &[Value]) -> Vec<&str> {
        events.iter().map(id_of).collect()
    }

    #[test]
    fn what_was_accepted_and_not_done_survives_a_reopen_in_order() -> anyhow::Result<()> {
        let path = fresh("reopen");
        let (spool, pending) = Spool::open(&path)?;
        assert!(pending.is_empty());
        let events: Vec<Value> = ["a", "b", "c", "b"]
            .iter()
            .map(|id| json!({"id": id}))
            .collect();
        spool.accepted(&events)?;
        // One copy of b done: the other stays, as a duplicate delivery would.
        spool.done([json!({"id": "a"}), json!({"id": "b"})].iter());
        drop(spool);
        let (_, pending) = Spool::open(&path)?;
        assert_eq!(ids(&pending), ["c", "b"]);
        // Opening rewrote it with the pending events only.
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text.lines().count(), 2, "{text}");
        Ok(())
    }

    #[test]
    fn a_line_cut_short_is_skipped() -> anyhow::Result<()> {
        let path = fresh("torn");
        let (spool, _) = Spool::open(&path)?;
        spool.accepted(&[json!({"id": "a"}), json!({"id": "b"})])?;
        drop(spool);
        let mut file = OpenOptions::new().append(true).open(&path)?;
        file.write_all(br#"{"done":"#)?;
        drop(file);
        let (_, pending) = Spool::open(&path)?;
        assert_eq!(ids(&pending), ["a", "b"]);
        Ok(())
    }

    #[test]
    fn a_large_journal_is_rewritten_with_what_is_pending() -> anyhow::Result<()> {
        let path = fresh("compact");
        let (spool, _) = Spool::open(&path)?;
        let events: Vec<Value> = (0..COMPACT_AFTER_LINES / 2 + 1)
            .map(|i| json!({"id": i.to_string()}))
            .collect();
        spool.accepted(&events)?;
        spool.done(events.iter().skip(1));
        let first = events.first().cloned().unwrap_or_default();
        spool.compact_if_large(&[&first]);
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(
            text.lines().count(),
            1,
            "rewritten to the one pending event"
        );
        spool.accepted(&[json!({"id": "late"})])?;
        drop(spool);
        let (_, pending) = Spool::open(&path)?;
        assert_eq!(ids(&pending), ["0", "late"]);
        Ok(())
    }
}
