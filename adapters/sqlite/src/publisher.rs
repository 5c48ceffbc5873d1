//! A cell's outbound publisher on its change feed: what the `replicator`
//! Lambda is to DynamoDB Streams and `replicate-outbound` to the Cosmos DB
//! change feed, for a cell on SQLite. Each pass reads what follows the
//! reader's checkpoint, publishes the events of the cell's own origin in
//! commit order through the same [`Publish`] path as the clouds (the events
//! it received from other cells are never published again), and moves the
//! checkpoint past what went out. At least once: a process that stops
//! between a publish and its checkpoint publishes those events again,
//! which the receiving cell applies as a no-op.

use std::sync::Arc;
use std::time::Duration;

use twincell_core::{CellId, StoreError};
use twincell_replication::{Publish, PublishError};

use crate::ChangeFeed;

/// The change-feed reader name the publisher keeps its checkpoint under.
pub const PUBLISHER_READER: &str = "publisher";

/// How often a caught-up publisher looks for new events (the Cosmos DB
/// trigger's `feedPollDelay` is 5 s; a local feed costs nothing to read).
pub const FEED_POLL: Duration = Duration::from_millis(250);

/// Events one pass reads at most (a publish sends them in the batches the
/// target accepts).
pub const PASS_EVENTS: usize = 500;

/// The gauge (on the `metrics` facade) of this cell's own events on the
/// change feed not yet published, set after every pass.
pub const BACKLOG_METRIC: &str = twincell_replication::metrics::PUBLISHER_BACKLOG;

/// Why a pass stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// The file could not be read or the checkpoint written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The target refused or could not be reached; the checkpoint stays
    /// before the first event not published.
    #[error("publishing failed after {published} events: {reason}")]
    Publish {
        /// Own events published in this pass before the failure.
        published: usize,
        /// Whether a later pass may succeed.
        retryable: bool,
        /// What happened (never a key).
        reason: String,
    },
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Own events published.
    pub published: usize,
    /// Whether the feed had nothing more to read.
    pub caught_up: bool,
}

/// Publishes one cell's own events from its change feed.
#[derive(Clone)]
pub struct FeedPublisher {
    feed: ChangeFeed,
    origin: CellId,
    publisher: Arc<dyn Publish>,
}

impl std::fmt::Debug for FeedPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedPublisher")
            .field("feed", &self.feed)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl FeedPublisher {
    /// Publishes the events of `origin` read from `feed` through
    /// `publisher`.
    #[must_use]
    pub fn new(feed: ChangeFeed, origin: CellId, publisher: Arc<dyn Publish>) -> Self {
        Self {
            feed,
            origin,
            publisher,
        }
    }

    /// One pass: up to [`PASS_EVENTS`] events after the checkpoint.
    ///
    /// # Errors
    /// [`PassError`]; what was published before a failure is checkpointed.
    pub async fn pass(&self) -> Result<Pass, PassError> {
        let read = self.feed.next(PASS_EVENTS).await?;
        let Some(last) = read.last().map(|e| e.seq) else {
            return Ok(Pass {
                published: 0,
                caught_up: true,
            });
        };
        let caught_up = read.len() < PASS_EVENTS;
        // Own events only, with their positions: a failure checkpoints
        // just before the first one not sent.
        let (seqs, events): (Vec<u64>, Vec<_>) = read
            .into_iter()
            .filter(|e| e.event.origin() == &self.origin)
            .map(|e| (e.seq, e.event))
            .unzip();
        let result = self.publisher.publish(&events).await;
        twincell_replication::metrics::record_publish(&events, &result);
        match result {
            Ok(_) => {
                self.feed.commit(last).await?;
                Ok(Pass {
                    published: events.len(),
                    caught_up,
                })
            }
            Err(PublishError {
                published,
                retryable,
                reason,
            }) => {
                // Past every event before the first one not published.
                let done = seqs
                    .get(published)
                    .map_or(last, |first_not| first_not.saturating_sub(1));
                self.feed.commit(done).await?;
                Err(PassError::Publish {
                    published,
                    retryable,
                    reason,
                })
            }
        }
    }

    /// Passes until `stop` resolves: at once while there is more to read,
    /// every `poll` when caught up, and with a growing wait (up to a
    /// minute) after a failure, which is logged.
    pub async fn run(self, poll: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut failures = 0u32;
        loop {
            let pass = self.pass().await;
            if let Ok(backlog) = self.feed.backlog(&self.origin).await {
                metrics::gauge!(BACKLOG_METRIC).set(u32::try_from(backlog).unwrap_or(u32::MAX));
            }
            let wait = match pass {
                Ok(pass) => {
                    failures = 0;
                    if pass.published > 0 {
                        tracing::debug!(
                            published = pass.published,
                            "published own events from the change feed"
                        );
                    }
                    if pass.caught_up { poll } else { Duration::ZERO }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "publishing from the change feed failed; it is retried");
                    poll.saturating_mul(1u32 << failures.min(6))
                        .min(Duration::from_secs(60))
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
