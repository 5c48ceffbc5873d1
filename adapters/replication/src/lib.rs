//! # twincell-replication
//!
//! How one cell's events reach the other: the wire format ([`wire`]:
//! CloudEvents 1.0, structured JSON, batches as
//! `application/cloudevents-batch+json`), the shared keys ([`Secret`]) and
//! configuration ([`Settings`]), origin signatures ([`signing`]: every event
//! signed by the cell it comes from), what a receiving cell has seen
//! ([`ReceiveLog`]), and — with the `publish` feature — the HTTP publisher
//! that sends a cell's own events to an Event Grid topic or straight to the
//! peer's `/replication/events`.
//!
//! The router (`twincell-http`) receives with this crate; the AWS
//! `replicator` Lambda and the Azure handler publish with it. Nothing here
//! crosses the core's ports: the core sees [`RecordedEvent`]s only.
//!
//! [`RecordedEvent`]: twincell_core::RecordedEvent

pub mod config;
mod key;
mod log;
pub mod metrics;
#[cfg(feature = "publish")]
pub mod publish;
pub mod signing;
pub mod wire;

pub use config::{Settings, SettingsError, Target, TargetKind};
pub use key::{MAX_KEY_CHARS, MIN_KEY_CHARS, Secret, SecretError};
pub use log::{MAX_GAPS_PER_PEER, PeerStatus, ReceiveLog};

use std::future::Future;
use std::pin::Pin;

use twincell_core::RecordedEvent;

/// The header a deliverer sends the receiving cell's replication key in
/// (Event Grid sends it through a secret delivery attribute mapping).
pub const KEY_HEADER: &str = "x-twincell-replication-key";

/// Why events were not (all) published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({published} events published before)")]
pub struct PublishError {
    /// How many of the events, from the first, were published before the
    /// failure (whole batches only).
    pub published: usize,
    /// Whether trying again later may succeed (unreachable, timeouts, 5xx,
    /// 408, 429) or not (the target refused the request as such).
    pub retryable: bool,
    /// What happened, for logs; never holds a key.
    pub reason: String,
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends a cell's own events on: to an Event Grid topic or straight to the
/// peer. The router's resync route publishes through it.
pub trait Publish: Send + Sync {
    /// Publishes `events` in order, in batches the target accepts; returns
    /// how many were published (all of them on success).
    ///
    /// # Errors
    /// [`PublishError`] saying how many went out before the failure.
    fn publish<'a>(
        &'a self,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<usize, PublishError>>;
}
