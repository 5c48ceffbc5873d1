//! Why a service call failed: one error type for every use case of the
//! [`Service`](crate::Service), typed so that an HTTP adapter maps each
//! one to a status without knowing any rule.

use crate::event::EventError;
use crate::ids::TransactionId;
use crate::inventory::InventoryError;
use crate::ports::StoreError;

/// Why a service call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// An inventory rule refused the command.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// No cell has created this transaction (as far as this cell sees).
    #[error("transaction {0} not found")]
    TransactionNotFound(TransactionId),
    /// The idempotency key was used with another payload.
    #[error("the idempotency key was already used with a different payload")]
    IdempotencyKeyReused,
    /// Every attempt lost a version race; the caller may retry.
    #[error("too much contention on one aggregate, retry")]
    Contention,
    /// The store can't be reached; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A replicated event differs from the one stored at its version.
    #[error("replicated event {stream} v{version} differs from the stored one")]
    ReplicaDiverged {
        /// The stream.
        stream: String,
        /// The version.
        version: u64,
    },
    /// A replicated event claims to come from this cell, which never
    /// receives its own events.
    #[error("replicated event comes from this cell ({0})")]
    OwnEventReplicated(String),
    /// A listing cursor that no store of this kind gave.
    #[error("invalid listing cursor: {0}")]
    InvalidCursor(String),
    /// A bug or corrupt data; details are for logs, not for clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::Contention,
            StoreError::Diverged { stream, version } => Self::ReplicaDiverged {
                stream: stream.to_string(),
                version,
            },
            StoreError::Unavailable(reason) => Self::Unavailable(reason),
            StoreError::InvalidCursor(reason) => Self::InvalidCursor(reason),
            e
            @ (StoreError::InvalidBatch(_) | StoreError::TooLarge(_) | StoreError::Corrupt(_)) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<EventError> for ServiceError {
    fn from(e: EventError) -> Self {
        Self::Internal(e.to_string())
    }
}
