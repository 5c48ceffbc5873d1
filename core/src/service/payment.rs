//! `POST /transactions` in the command loop: a transaction's few events,
//! loaded whole, and the create-or-replay decision on them.

use std::collections::BTreeMap;

use super::command_loop::{Attempt, Decided, Decider, Fold, Then};
use crate::api::CreatedTransaction;
use crate::error::ServiceError;
use crate::event::RecordedEvent;
use crate::ids::{CellId, TransactionId};
use crate::ports::{Clock, EventStore};
use crate::transaction::{self, CreateDecision, CreateError};
use crate::validation::CreateTransaction;

/// A transaction's events, every one loaded each time (there are few).
pub(super) struct TransactionFold;

impl Fold for TransactionFold {
    type State = Vec<RecordedEvent>;

    async fn start<S: EventStore>(&self, _: &S) -> Self::State {
        Vec::new()
    }

    fn held(&self, _: &Self::State) -> Option<BTreeMap<CellId, u64>> {
        None
    }

    fn advance(
        &self,
        state: &mut Self::State,
        events: &[RecordedEvent],
    ) -> Result<(), ServiceError> {
        state.extend_from_slice(events);
        Ok(())
    }

    fn rewind(&self, _: Self::State) -> Option<Self::State> {
        None
    }
}

/// Creates the transaction `id`, or replays it when it exists with the
/// same payload.
pub(super) struct CreateTransactionDecider<'a, C> {
    pub(super) id: TransactionId,
    pub(super) cmd: &'a CreateTransaction,
    pub(super) clock: &'a C,
}

impl<C: Clock> Decider for CreateTransactionDecider<'_, C> {
    type State = Vec<RecordedEvent>;
    type Answer = CreatedTransaction;

    fn decide(&mut self, events: Self::State) -> Decided<CreatedTransaction, Self::State> {
        let id = self.id;
        let existing = match transaction::merge(id, &events) {
            Ok(existing) => existing,
            Err(e) => return (Err(ServiceError::Internal(e.to_string())), None),
        };
        let attempt = match transaction::decide_create(existing.as_ref(), id, self.cmd) {
            Ok(CreateDecision::Replay(transaction)) => Ok(Attempt::Done(CreatedTransaction {
                transaction,
                replayed: true,
            })),
            Ok(CreateDecision::Create(event)) => Ok(Attempt::Append {
                expected: 0,
                now: self.clock.now(),
                events: vec![event],
                then: Then::Answer(Box::new(move |records: &[RecordedEvent]| {
                    let transaction = transaction::merge(id, records)
                        .map_err(|e| ServiceError::Internal(e.to_string()))?
                        .ok_or_else(|| {
                            ServiceError::Internal("created transaction does not fold".to_owned())
                        })?;
                    Ok(CreatedTransaction {
                        transaction,
                        replayed: false,
                    })
                })),
            }),
            Err(CreateError::IdempotencyKeyReused) => Err(ServiceError::IdempotencyKeyReused),
        };
        (attempt, None)
    }
}
