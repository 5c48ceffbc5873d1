//! Applying other cells' events: a delivered batch stored in `(stream,
//! version)` order, then each touched SKU reconciled once through the
//! command loop. What became of each event is a [`BatchReport`].

use super::Service;
use crate::error::ServiceError;
use crate::event::{AggregateId, AggregateType, RecordedEvent, StreamId};
use crate::ids::Sku;
use crate::inventory::InventoryCommand;
use crate::ports::{Clock, EventStore, IdGenerator, ReplicatedApply, StoreError};
use crate::replication::{BatchReport, StreamProgress};

impl<S: EventStore, C: Clock, I: IdGenerator> Service<S, C, I> {
    /// Stores an event another cell wrote and, for inventory, lets this cell
    /// act on it (take in a transfer, answer a request, heal a duplicate).
    /// Safe to call again with the same event.
    ///
    /// # Errors
    /// [`ServiceError::OwnEventReplicated`], [`ServiceError::ReplicaDiverged`],
    /// or failures of the follow-up reconcile (the event stays stored; a
    /// redelivery runs the reconcile again).
    pub async fn apply_replicated(
        &self,
        event: &RecordedEvent,
    ) -> Result<ReplicatedApply, ServiceError> {
        let report = self
            .apply_replicated_batch(std::slice::from_ref(event))
            .await;
        let outcome = report.outcomes.into_iter().next().unwrap_or_else(|| {
            Err(ServiceError::Internal(
                "a batch of one had no outcome".into(),
            ))
        })?;
        report.follow_up?;
        Ok(outcome)
    }

    /// Stores a batch of events other cells wrote (in any order, with
    /// repeats), then reconciles each SKU they touch once: what one
    /// delivery of a replication transport asks. Events are stored in
    /// `(stream, version)` order, so a gap the batch itself fills closes
    /// before anything is reconciled.
    ///
    /// Never fails as a whole: the report says what became of each event
    /// (an event of this cell's own origin is refused, never stored; a
    /// diverged one never overwrites), how far each touched stream has
    /// arrived, and whether the follow-up reconciles ran. Once the store is
    /// unavailable the remaining events are not tried.
    pub async fn apply_replicated_batch(&self, events: &[RecordedEvent]) -> BatchReport {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| events.get(i).map(|e| (e.stream(), e.version())));
        let mut outcomes: Vec<Option<Result<ReplicatedApply, ServiceError>>> =
            events.iter().map(|_| None).collect();
        let mut touched: Vec<&StreamId> = Vec::new();
        let mut down: Option<String> = None;
        for i in order {
            let (Some(event), Some(slot)) = (events.get(i), outcomes.get_mut(i)) else {
                continue;
            };
            let outcome = if let Some(reason) = &down {
                Err(ServiceError::Unavailable(format!("not tried: {reason}")))
            } else if event.origin() == self.topology.this() {
                Err(ServiceError::OwnEventReplicated(event.stream().to_string()))
            } else {
                match self.store.apply_replicated(event).await {
                    Ok(applied) => {
                        if touched.last() != Some(&event.stream()) {
                            touched.push(event.stream());
                        }
                        Ok(applied)
                    }
                    Err(StoreError::Unavailable(reason)) => {
                        down = Some(reason.clone());
                        Err(ServiceError::Unavailable(reason))
                    }
                    Err(e) => Err(e.into()),
                }
            };
            *slot = Some(outcome);
        }
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(ServiceError::Internal("event not tried".into()))))
            .collect();
        let (streams, follow_up) = match down {
            Some(reason) => (Vec::new(), Err(ServiceError::Unavailable(reason))),
            None => self.follow_up(&touched).await,
        };
        BatchReport {
            outcomes,
            streams,
            follow_up,
        }
    }

    /// Loads each aggregate the `touched` streams belong to once, records
    /// how far each stream has arrived, and reconciles each SKU.
    async fn follow_up(
        &self,
        touched: &[&StreamId],
    ) -> (Vec<StreamProgress>, Result<(), ServiceError>) {
        let mut aggregates: Vec<&AggregateId> = touched.iter().map(|s| &s.aggregate).collect();
        aggregates.sort_unstable();
        aggregates.dedup();
        let mut streams = Vec::with_capacity(touched.len());
        let mut result = Ok(());
        for aggregate in aggregates {
            let events = match self.store.load(aggregate).await {
                Ok(events) => events,
                Err(e) => {
                    result = result.and(Err(e.into()));
                    continue;
                }
            };
            streams.extend(
                touched
                    .iter()
                    .filter(|s| &s.aggregate == aggregate)
                    .map(|s| StreamProgress::of(s, &events)),
            );
            if aggregate.kind() != AggregateType::Inventory {
                continue;
            }
            let reconciled = match Sku::new(aggregate.id()) {
                Ok(sku) => self
                    .execute(&sku, &InventoryCommand::Reconcile)
                    .await
                    .map(|_| ()),
                Err(e) => Err(ServiceError::Internal(e.to_string())),
            };
            result = result.and(reconciled);
        }
        (streams, result)
    }
}
