//! Payment transactions: creation, idempotent replay and the cross-cell merge.
//!
//! A transaction's streams hold one `TransactionCreated` each. Normally only
//! one cell has such a stream; if a client's retry reached the other cell
//! before replication did, both cells created the same (deterministic) id and
//! the two creations merge: the earliest `(created_at, cell)` is canonical
//! and the other is ignored, so nothing is doubled.

use serde::Serialize;

use crate::event::{DomainEvent, RecordedEvent};
use crate::ids::{AccountId, CellId, TransactionId};
use crate::money::Money;
use crate::timestamp::Timestamp;
use crate::validation::CreateTransaction;

/// The state of a transaction as every cell renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    id: TransactionId,
    account_id: AccountId,
    money: Money,
    created_at: Timestamp,
    cell: CellId,
}

impl Transaction {
    /// Its id.
    #[must_use]
    pub fn id(&self) -> TransactionId {
        self.id
    }

    /// The paying account.
    #[must_use]
    pub fn account_id(&self) -> &AccountId {
        &self.account_id
    }

    /// Amount and currency.
    #[must_use]
    pub fn money(&self) -> Money {
        self.money
    }

    /// When the canonical creation happened.
    #[must_use]
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// The cell whose creation is canonical.
    #[must_use]
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// The API body: `{transaction_id, account_id, amount, currency, status,
    /// created_at}`, identical in every cell.
    #[must_use]
    pub fn view(&self) -> TransactionView {
        TransactionView {
            transaction_id: self.id,
            account_id: self.account_id.clone(),
            amount: self.money.amount_string(),
            currency: self.money.currency().code(),
            status: "created",
            created_at: self.created_at,
        }
    }

    /// Whether `cmd` is the same payload that created this transaction.
    #[must_use]
    pub fn matches(&self, cmd: &CreateTransaction) -> bool {
        self.account_id == cmd.account_id && self.money == cmd.money
    }

    /// The creation this transaction came from, as an event.
    #[must_use]
    pub fn created_event(&self) -> DomainEvent {
        DomainEvent::TransactionCreated {
            transaction_id: self.id,
            account_id: self.account_id.clone(),
            money: self.money,
        }
    }
}

/// The JSON body of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransactionView {
    /// Id.
    pub transaction_id: TransactionId,
    /// Account.
    pub account_id: AccountId,
    /// Amount with exactly the currency's decimals.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: &'static str,
    /// Always `"created"` for now.
    pub status: &'static str,
    /// Creation time.
    pub created_at: Timestamp,
}

/// Why a transaction's events do not fold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction stream {stream} is corrupt: {reason}")]
pub struct TransactionFoldError {
    /// The offending stream.
    pub stream: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// Merges every cell's creation of one transaction: the earliest
/// `(created_at, cell)` is canonical. `None` when no cell created it.
///
/// # Errors
/// [`TransactionFoldError`] if a stream holds anything but one creation at
/// version 1 for this id.
pub fn merge(
    id: TransactionId,
    events: &[RecordedEvent],
) -> Result<Option<Transaction>, TransactionFoldError> {
    let mut canonical: Option<Transaction> = None;
    for e in events {
        let corrupt = |reason| TransactionFoldError {
            stream: e.stream().to_string(),
            reason,
        };
        let DomainEvent::TransactionCreated {
            transaction_id,
            account_id,
            money,
        } = e.event()
        else {
            return Err(corrupt("holds a non-transaction event"));
        };
        if *transaction_id != id || e.stream().aggregate.id() != id.to_string() {
            return Err(corrupt("holds another transaction's event"));
        }
        if e.version() != 1 {
            return Err(corrupt("a transaction stream holds exactly one event"));
        }
        let candidate = Transaction {
            id,
            account_id: account_id.clone(),
            money: *money,
            created_at: e.recorded_at(),
            cell: e.origin().clone(),
        };
        let earlier = canonical
            .as_ref()
            .is_none_or(|c| (candidate.created_at, &candidate.cell) < (c.created_at, &c.cell));
        if earlier {
            canonical = Some(candidate);
        }
    }
    Ok(canonical)
}

/// The outcome of deciding a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateDecision {
    /// New: append this event to this cell's stream.
    Create(DomainEvent),
    /// Same key, same payload: answer with the stored transaction again.
    Replay(Transaction),
}

/// Why a create is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The idempotency key was used for a different payload.
    #[error("the idempotency key was already used with a different payload")]
    IdempotencyKeyReused,
}

/// Decides `cmd` for transaction `id` given its merged state.
///
/// # Errors
/// [`CreateError::IdempotencyKeyReused`] if `existing` has another payload.
pub fn decide_create(
    existing: Option<&Transaction>,
    id: TransactionId,
    cmd: &CreateTransaction,
) -> Result<CreateDecision, CreateError> {
    match existing {
        Some(t) if t.matches(cmd) => Ok(CreateDecision::Replay(t.clone())),
        Some(_) => Err(CreateError::IdempotencyKeyReused),
        None => Ok(CreateDecision::Create(DomainEvent::TransactionCreated {
            transaction_id: id,
            account_id: cmd.account_id.clone(),
            money: cmd.money,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AggregateId, StreamId};
    use crate::ids::IdempotencyKey;
    use crate::money::Currency;

    fn cmd(amount: &str) -> CreateTransaction {
        CreateTransaction {
            account_id: AccountId::new("acct").unwrap(),
            money: Money::parse(amount, Currency::from_code("EUR").unwrap()).unwrap(),
        }
    }

    fn id() -> TransactionId {
        TransactionId::for_idempotency_key(
            &AccountId::new("acct").unwrap(),
            &IdempotencyKey::new("k").unwrap(),
        )
    }

    fn created(cell: &str, at: i64, amount: &str) -> RecordedEvent {
        let CreateDecision::Create(event) = decide_create(None, id(), &cmd(amount)).unwrap() else {
            unreachable!("no existing transaction")
        };
        RecordedEvent::new(
            StreamId::new(AggregateId::transaction(id()), CellId::new(cell).unwrap()),
            1,
            Timestamp::from_unix_millis(at).unwrap(),
            event,
        )
        .unwrap()
    }

    #[test]
    fn first_create_produces_a_creation_event() {
        let d = decide_create(None, id(), &cmd("5")).unwrap();
        assert!(matches!(
            d,
            CreateDecision::Create(DomainEvent::TransactionCreated { .. })
        ));
    }

    #[test]
    fn same_key_and_same_payload_replays_the_stored_transaction() {
        let t = merge(id(), &[created("aws", 10, "5")]).unwrap().unwrap();
        // "5" and "5.00" are the same amount.
        assert_eq!(
            decide_create(Some(&t), id(), &cmd("5.00")),
            Ok(CreateDecision::Replay(t))
        );
    }

    #[test]
    fn same_key_with_another_payload_is_refused() {
        let t = merge(id(), &[created("aws", 10, "5")]).unwrap().unwrap();
        assert_eq!(
            decide_create(Some(&t), id(), &cmd("6")),
            Err(CreateError::IdempotencyKeyReused)
        );
    }

    #[test]
    fn creations_in_both_cells_merge_to_the_earliest() {
        let events = [created("azure", 20, "5"), created("aws", 30, "5")];
        let t = merge(id(), &events).unwrap().unwrap();
        assert_eq!(t.cell().as_str(), "azure");
        assert_eq!(t.created_at().unix_millis(), 20);
        // Order of delivery does not matter.
        let reversed = [events[1].clone(), events[0].clone()];
        assert_eq!(merge(id(), &reversed).unwrap().unwrap(), t);
    }

    #[test]
    fn equal_creation_times_tie_break_on_the_cell() {
        let events = [created("azure", 20, "5"), created("aws", 20, "5")];
        assert_eq!(
            merge(id(), &events).unwrap().unwrap().cell().as_str(),
            "aws"
        );
    }

    #[test]
    fn view_renders_the_api_body() {
        let t = merge(id(), &[created("aws", 1_000, "19.9")])
            .unwrap()
            .unwrap();
        let json = serde_json::to_string(&t.view()).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"transaction_id":"{}","account_id":"acct","amount":"19.90","currency":"EUR","status":"created","created_at":"1970-01-01T00:00:01.000Z"}}"#,
                id()
            )
        );
    }

    #[test]
    fn stream_with_a_second_event_is_corrupt() {
        let mut e = serde_json::to_value(created("aws", 1, "5")).unwrap();
        e["version"] = 2.into();
        let e: RecordedEvent = serde_json::from_value(e).unwrap();
        assert!(merge(id(), &[e]).is_err());
    }
}
