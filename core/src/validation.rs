//! Payload validation: the one place that turns an untrusted JSON payload
//! into a typed command, or into the complete list of what is wrong with it.
//!
//! Every adapter hands the parsed body (a [`serde_json::Value`]) to the
//! `from_json` function of a command, so every cell rejects exactly the same
//! payloads with exactly the same violations. Each field yields at most one
//! violation (the first rule it breaks); unknown fields yield one each. The
//! list is sorted by JSON pointer, so its order never depends on the order of
//! keys in the body.
//!
//! Codes are stable API (see [`ViolationCode::as_str`]); messages are for
//! people and may be reworded.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ids::{AccountId, CellId, IdempotencyKey, IdentifierError, OrderId};
use crate::inventory::InventoryCommand;
use crate::money::{AmountError, Currency, CurrencyError, Money, check_amount};
use crate::quantity::Quantity;
use crate::topology::Topology;
use crate::write_off_reason::{WriteOffReason, WriteOffReasonError};

/// What rule a field breaks. The `snake_case` name is the API's `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationCode {
    /// A required field is absent.
    Required,
    /// The body has a field the command does not know.
    UnknownField,
    /// The JSON type is wrong (a number where a string is needed, ...).
    InvalidType,
    /// The text does not follow the field's grammar.
    InvalidFormat,
    /// Too short or too long.
    InvalidLength,
    /// A character outside the field's allowed set.
    InvalidCharacters,
    /// A number with a fraction, an exponent, or beyond 64 bits.
    NotAnInteger,
    /// An integer outside the allowed range.
    OutOfRange,
    /// An amount with more than 12 digits before the point.
    TooLarge,
    /// An amount with more decimals than the currency's minor units.
    TooManyDecimals,
    /// An amount of zero.
    NotPositive,
    /// A well-formed but not active ISO 4217 code.
    UnknownCurrency,
    /// A cell that is not part of the deployment.
    UnknownCell,
    /// A transfer to the cell that received the request.
    SameCell,
}

impl ViolationCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ViolationCode; 14] = [
        Self::Required,
        Self::UnknownField,
        Self::InvalidType,
        Self::InvalidFormat,
        Self::InvalidLength,
        Self::InvalidCharacters,
        Self::NotAnInteger,
        Self::OutOfRange,
        Self::TooLarge,
        Self::TooManyDecimals,
        Self::NotPositive,
        Self::UnknownCurrency,
        Self::UnknownCell,
        Self::SameCell,
    ];

    /// The stable code string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::UnknownField => "unknown_field",
            Self::InvalidType => "invalid_type",
            Self::InvalidFormat => "invalid_format",
            Self::InvalidLength => "invalid_length",
            Self::InvalidCharacters => "invalid_characters",
            Self::NotAnInteger => "not_an_integer",
            Self::OutOfRange => "out_of_range",
            Self::TooLarge => "too_large",
            Self::TooManyDecimals => "too_many_decimals",
            Self::NotPositive => "not_positive",
            Self::UnknownCurrency => "unknown_currency",
            Self::UnknownCell => "unknown_cell",
            Self::SameCell => "same_cell",
        }
    }
}

/// One thing wrong with a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pointer: String,
    code: ViolationCode,
    message: String,
}

impl Violation {
    /// A violation at `pointer` (RFC 6901; `""` is the whole body).
    #[must_use]
    pub fn new(
        pointer: impl Into<String>,
        code: ViolationCode,
        message: impl Into<String>,
    ) -> Self {
        Self {
            pointer: pointer.into(),
            code,
            message: message.into(),
        }
    }

    /// The JSON pointer of the offending value.
    #[must_use]
    pub fn pointer(&self) -> &str {
        &self.pointer
    }

    /// The stable code.
    #[must_use]
    pub fn code(&self) -> ViolationCode {
        self.code
    }

    /// A sentence for people.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Every violation of a payload: never empty, sorted by pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Violations(Vec<Violation>);

impl Violations {
    fn from_unsorted(mut list: Vec<Violation>) -> Self {
        list.sort_by(|a, b| a.pointer.cmp(&b.pointer).then(a.code.cmp(&b.code)));
        Self(list)
    }

    /// The violations in their deterministic order.
    #[must_use]
    pub fn as_slice(&self) -> &[Violation] {
        &self.0
    }

    /// Consumes the list.
    #[must_use]
    pub fn into_vec(self) -> Vec<Violation> {
        self.0
    }
}

impl std::fmt::Display for Violations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {} ({})", v.pointer, v.message, v.code.as_str())?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// Escapes one object key as a JSON pointer segment (RFC 6901).
fn pointer_to(key: &str) -> String {
    let mut p = String::with_capacity(key.len() + 1);
    p.push('/');
    for c in key.chars() {
        match c {
            '~' => p.push_str("~0"),
            '/' => p.push_str("~1"),
            c => p.push(c),
        }
    }
    p
}

type Rule = (ViolationCode, String);

/// Walks one JSON object, collecting a violation per bad field.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    known: &'static [&'static str],
    violations: Vec<Violation>,
}

impl<'a> Fields<'a> {
    fn of(body: &'a Value, known: &'static [&'static str]) -> Result<Self, Violations> {
        match body {
            Value::Object(object) => Ok(Self {
                object,
                known,
                violations: Vec::new(),
            }),
            _ => Err(Violations(vec![Violation::new(
                "",
                ViolationCode::InvalidType,
                "must be a JSON object",
            )])),
        }
    }

    /// Parses field `name` with `rule`; records a violation and yields `None`
    /// when it is missing or breaks the rule.
    fn field<T>(
        &mut self,
        name: &'static str,
        rule: impl FnOnce(&'a Value) -> Result<T, Rule>,
    ) -> Option<T> {
        let Some(value) = self.object.get(name) else {
            self.violations.push(Violation::new(
                pointer_to(name),
                ViolationCode::Required,
                "is required",
            ));
            return None;
        };
        match rule(value) {
            Ok(v) => Some(v),
            Err((code, message)) => {
                self.violations
                    .push(Violation::new(pointer_to(name), code, message));
                None
            }
        }
    }

    fn finish<T>(mut self, typed: Option<T>) -> Result<T, Violations> {
        for key in self.object.keys() {
            if !self.known.contains(&key.as_str()) {
                self.violations.push(Violation::new(
                    pointer_to(key),
                    ViolationCode::UnknownField,
                    "is not a known field",
                ));
            }
        }
        match typed {
            Some(t) if self.violations.is_empty() => Ok(t),
            _ => Err(Violations::from_unsorted(self.violations)),
        }
    }
}

fn string(value: &Value) -> Result<&str, Rule> {
    value
        .as_str()
        .ok_or_else(|| (ViolationCode::InvalidType, "must be a string".to_owned()))
}

fn identifier_rule(e: IdentifierError) -> Rule {
    match e {
        IdentifierError::Empty => (ViolationCode::InvalidLength, "must not be empty".to_owned()),
        IdentifierError::TooLong { .. } => (ViolationCode::InvalidLength, e.to_string()),
        IdentifierError::InvalidCharacter { .. } => {
            (ViolationCode::InvalidCharacters, e.to_string())
        }
        IdentifierError::DotSegment => (ViolationCode::InvalidFormat, e.to_string()),
    }
}

fn account_id(value: &Value) -> Result<AccountId, Rule> {
    AccountId::new(string(value)?).map_err(identifier_rule)
}

fn order_id(value: &Value) -> Result<OrderId, Rule> {
    OrderId::new(string(value)?).map_err(identifier_rule)
}

fn quantity(value: &Value) -> Result<Quantity, Rule> {
    let range = || {
        format!(
            "must be an integer from {} to {}",
            Quantity::MIN,
            Quantity::MAX
        )
    };
    let Value::Number(n) = value else {
        return Err((ViolationCode::InvalidType, range()));
    };
    match (n.as_u64(), n.as_i64()) {
        (Some(v), _) => Quantity::new(v).map_err(|_| (ViolationCode::OutOfRange, range())),
        (None, Some(_)) => Err((ViolationCode::OutOfRange, range())),
        (None, None) => integral_value(n)
            .ok_or_else(|| (ViolationCode::NotAnInteger, range()))
            .and_then(|v| Quantity::new(v).map_err(|_| (ViolationCode::OutOfRange, range()))),
    }
}

/// The value of a number written with a fraction or an exponent (`5.0`,
/// `5e0`) when it is a whole number, as JSON Schema counts integers: a
/// document that says `"type": "integer"` accepts those, so the router must
/// too. `None` for a fraction; `u64::MAX` for a whole number too large or
/// negative, so the range check refuses it. Read through `Decimal` from the
/// number's text, never through binary floating point arithmetic.
fn integral_value(n: &serde_json::Number) -> Option<u64> {
    use rust_decimal::prelude::ToPrimitive;
    let text = n.to_string();
    let parsed = text
        .parse::<rust_decimal::Decimal>()
        .or_else(|_| rust_decimal::Decimal::from_scientific(&text));
    match parsed {
        Ok(d) if !d.fract().is_zero() => None,
        Ok(d) => Some(d.to_u64().unwrap_or(u64::MAX)),
        // Beyond Decimal's 28 digits: every such double is a whole number.
        Err(_) => Some(u64::MAX),
    }
}

fn currency(value: &Value) -> Result<Currency, Rule> {
    Currency::from_code(string(value)?).map_err(|e| match e {
        CurrencyError::InvalidFormat => (ViolationCode::InvalidFormat, e.to_string()),
        CurrencyError::Unknown => (ViolationCode::UnknownCurrency, e.to_string()),
    })
}

fn amount_rule(e: AmountError) -> Rule {
    let code = match e {
        AmountError::InvalidFormat => ViolationCode::InvalidFormat,
        AmountError::TooLarge => ViolationCode::TooLarge,
        AmountError::TooManyDecimals { .. } => ViolationCode::TooManyDecimals,
        AmountError::NotPositive => ViolationCode::NotPositive,
    };
    (code, e.to_string())
}

/// Body of `POST /transactions`: `{"account_id", "amount", "currency"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTransaction {
    /// The paying account.
    pub account_id: AccountId,
    /// Amount and currency.
    pub money: Money,
}

impl CreateTransaction {
    const FIELDS: &'static [&'static str] = &["account_id", "amount", "currency"];

    /// Validates a `POST /transactions` body.
    ///
    /// # Errors
    /// Every [`Violation`] of the body.
    pub fn from_json(body: &Value) -> Result<Self, Violations> {
        let mut f = Fields::of(body, Self::FIELDS)?;
        let account_id = f.field("account_id", account_id);
        let currency = f.field("currency", currency);
        // The amount's scale depends on the currency; with a bad currency
        // every other amount rule is still checked.
        let amount = f.field("amount", |v| {
            let text = v.as_str().ok_or_else(|| {
                (
                    ViolationCode::InvalidType,
                    "must be a string in plain decimal notation, such as \"19.99\"".to_owned(),
                )
            })?;
            match currency {
                Some(c) => Money::parse(text, c).map(Some).map_err(amount_rule),
                None => check_amount(text, None).map(|()| None).map_err(amount_rule),
            }
        });
        let typed = match (account_id, amount.flatten()) {
            (Some(account_id), Some(money)) => Some(Self { account_id, money }),
            _ => None,
        };
        f.finish(typed)
    }
}

/// Body of `POST /inventory/{sku}/receipts`: `{"quantity"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveStock {
    /// Units received.
    pub quantity: Quantity,
}

impl ReceiveStock {
    /// Validates a receipt body.
    ///
    /// # Errors
    /// Every [`Violation`] of the body.
    pub fn from_json(body: &Value) -> Result<Self, Violations> {
        let mut f = Fields::of(body, &["quantity"])?;
        let quantity = f.field("quantity", quantity);
        f.finish(quantity.map(|quantity| Self { quantity }))
    }
}

/// Body of `POST /inventory/{sku}/write-offs`: `{"quantity", "reason"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOffStock {
    /// Units written off.
    pub quantity: Quantity,
    /// Why.
    pub reason: WriteOffReason,
}

impl WriteOffStock {
    /// Validates a write-off body.
    ///
    /// # Errors
    /// Every [`Violation`] of the body.
    pub fn from_json(body: &Value) -> Result<Self, Violations> {
        let mut f = Fields::of(body, &["quantity", "reason"])?;
        let quantity = f.field("quantity", quantity);
        let reason = f.field("reason", |v| {
            WriteOffReason::new(string(v)?).map_err(|e| match e {
                WriteOffReasonError::Length => (ViolationCode::InvalidLength, e.to_string()),
                WriteOffReasonError::ControlCharacter | WriteOffReasonError::InvisibleCharacter => {
                    (ViolationCode::InvalidCharacters, e.to_string())
                }
                WriteOffReasonError::Blank => (ViolationCode::InvalidFormat, e.to_string()),
            })
        });
        let typed = match (quantity, reason) {
            (Some(quantity), Some(reason)) => Some(Self { quantity, reason }),
            _ => None,
        };
        f.finish(typed)
    }
}

/// Body of `POST /inventory/{sku}/reservations`: `{"order_id", "quantity"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveStock {
    /// The order.
    pub order_id: OrderId,
    /// Units to hold.
    pub quantity: Quantity,
}

impl ReserveStock {
    /// Validates a reservation body.
    ///
    /// # Errors
    /// Every [`Violation`] of the body.
    pub fn from_json(body: &Value) -> Result<Self, Violations> {
        let mut f = Fields::of(body, &["order_id", "quantity"])?;
        let order_id = f.field("order_id", order_id);
        let quantity = f.field("quantity", quantity);
        let typed = match (order_id, quantity) {
            (Some(order_id), Some(quantity)) => Some(Self { order_id, quantity }),
            _ => None,
        };
        f.finish(typed)
    }
}

/// Body of `POST /inventory/{sku}/transfers`: `{"to_cell", "quantity"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferStock {
    /// The receiving cell: part of the topology, not the cell that takes the
    /// request.
    pub to_cell: CellId,
    /// Units moved.
    pub quantity: Quantity,
}

impl TransferStock {
    /// Validates a transfer body against the deployment's `topology`.
    ///
    /// # Errors
    /// Every [`Violation`] of the body.
    pub fn from_json(body: &Value, topology: &Topology) -> Result<Self, Violations> {
        let mut f = Fields::of(body, &["quantity", "to_cell"])?;
        let quantity = f.field("quantity", quantity);
        let to_cell = f.field("to_cell", |v| {
            let cell = CellId::new(string(v)?).map_err(identifier_rule)?;
            if !topology.contains(&cell) {
                Err((
                    ViolationCode::UnknownCell,
                    "is not a cell of this deployment".to_owned(),
                ))
            } else if &cell == topology.this() {
                Err((
                    ViolationCode::SameCell,
                    "must be another cell than the one taking the request".to_owned(),
                ))
            } else {
                Ok(cell)
            }
        });
        let typed = match (to_cell, quantity) {
            (Some(to_cell), Some(quantity)) => Some(Self { to_cell, quantity }),
            _ => None,
        };
        f.finish(typed)
    }
}

/// A request body that is one inventory command: what an inbound adapter
/// needs to serve the command with one generic handler.
pub trait InventoryRequest: Sized {
    /// Validates the body; a command that names a cell is checked against
    /// the deployment's `topology`.
    ///
    /// # Errors
    /// Every violation, in a deterministic order.
    fn parse(body: &Value, topology: &Topology) -> Result<Self, Violations>;

    /// Whether the command takes an `Idempotency-Key`: receipts,
    /// write-offs and transfers do; a reservation is keyed by its order.
    const KEYED: bool;

    /// The command the body asks for, with the request's idempotency key
    /// (dropped by a command that does not take one).
    fn into_command(self, key: Option<IdempotencyKey>) -> InventoryCommand;
}

impl InventoryRequest for ReceiveStock {
    fn parse(body: &Value, _: &Topology) -> Result<Self, Violations> {
        Self::from_json(body)
    }
    const KEYED: bool = true;
    fn into_command(self, key: Option<IdempotencyKey>) -> InventoryCommand {
        InventoryCommand::Receive(self.quantity, key)
    }
}

impl InventoryRequest for WriteOffStock {
    fn parse(body: &Value, _: &Topology) -> Result<Self, Violations> {
        Self::from_json(body)
    }
    const KEYED: bool = true;
    fn into_command(self, key: Option<IdempotencyKey>) -> InventoryCommand {
        InventoryCommand::WriteOff(self.quantity, self.reason, key)
    }
}

impl InventoryRequest for ReserveStock {
    fn parse(body: &Value, _: &Topology) -> Result<Self, Violations> {
        Self::from_json(body)
    }
    const KEYED: bool = false;
    fn into_command(self, _: Option<IdempotencyKey>) -> InventoryCommand {
        InventoryCommand::Reserve(self.order_id, self.quantity)
    }
}

impl InventoryRequest for TransferStock {
    fn parse(body: &Value, topology: &Topology) -> Result<Self, Violations> {
        Self::from_json(body, topology)
    }
    const KEYED: bool = true;
    fn into_command(self, key: Option<IdempotencyKey>) -> InventoryCommand {
        InventoryCommand::Transfer(self.to_cell, self.quantity, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn codes(v: &Violations) -> Vec<(&str, &str)> {
        v.as_slice()
            .iter()
            .map(|v| (v.pointer(), v.code().as_str()))
            .collect()
    }

    fn topology() -> Topology {
        Topology::new(CellId::new("aws").unwrap(), [CellId::new("azure").unwrap()])
    }

    #[test]
    fn valid_create_transaction_is_typed_with_canonical_amount() {
        let cmd = CreateTransaction::from_json(&json!({
            "account_id": "acct-1", "amount": "19.9", "currency": "USD"
        }))
        .unwrap();
        assert_eq!(cmd.account_id.as_str(), "acct-1");
        assert_eq!(cmd.money.amount_string(), "19.90");
    }

    #[test]
    fn every_violation_is_listed_sorted_by_pointer() {
        let err = CreateTransaction::from_json(&json!({
            "zeta": 1, "currency": "usd", "amount": 19.99, "account_id": "", "extra": null
        }))
        .unwrap_err();
        assert_eq!(
            codes(&err),
            vec![
                ("/account_id", "invalid_length"),
                ("/amount", "invalid_type"),
                ("/currency", "invalid_format"),
                ("/extra", "unknown_field"),
                ("/zeta", "unknown_field"),
            ]
        );
    }

    #[test]
    fn amount_as_json_number_is_rejected_never_parsed() {
        let err = CreateTransaction::from_json(&json!({
            "account_id": "a", "amount": 10, "currency": "USD"
        }))
        .unwrap_err();
        assert_eq!(codes(&err), vec![("/amount", "invalid_type")]);
    }

    #[test]
    fn amount_is_still_checked_when_the_currency_is_unknown() {
        let err = CreateTransaction::from_json(&json!({
            "account_id": "a", "amount": "0.000000", "currency": "ABC"
        }))
        .unwrap_err();
        assert_eq!(
            codes(&err),
            vec![
                ("/amount", "not_positive"),
                ("/currency", "unknown_currency")
            ]
        );
        // Decimals can only be judged against a known currency.
        let err = CreateTransaction::from_json(&json!({
            "account_id": "a", "amount": "1.123456789", "currency": "ABC"
        }))
        .unwrap_err();
        assert_eq!(codes(&err), vec![("/currency", "unknown_currency")]);
    }

    #[test]
    fn amount_with_three_decimals_is_rejected_for_usd_with_its_code() {
        let err = CreateTransaction::from_json(&json!({
            "account_id": "a", "amount": "1.001", "currency": "USD"
        }))
        .unwrap_err();
        assert_eq!(codes(&err), vec![("/amount", "too_many_decimals")]);
    }

    #[test]
    fn missing_fields_are_each_required() {
        let err = CreateTransaction::from_json(&json!({})).unwrap_err();
        assert_eq!(
            codes(&err),
            vec![
                ("/account_id", "required"),
                ("/amount", "required"),
                ("/currency", "required")
            ]
        );
    }

    #[test]
    fn null_is_a_wrong_type_not_a_missing_field() {
        let err = ReceiveStock::from_json(&json!({"quantity": null})).unwrap_err();
        assert_eq!(codes(&err), vec![("/quantity", "invalid_type")]);
    }

    #[test]
    fn non_object_body_is_one_violation_at_the_root() {
        for body in [json!([]), json!("x"), json!(1), json!(null), json!(true)] {
            let err = ReceiveStock::from_json(&body).unwrap_err();
            assert_eq!(codes(&err), vec![("", "invalid_type")]);
        }
    }

    #[test]
    fn quantity_distinguishes_type_fraction_and_range() {
        let q = |v: Value| ReceiveStock::from_json(&json!({ "quantity": v }));
        assert_eq!(q(json!(5)).map(|c| c.quantity.get()), Ok(5));
        assert_eq!(
            codes(&q(json!("5")).unwrap_err()),
            vec![("/quantity", "invalid_type")]
        );
        assert_eq!(
            codes(&q(json!(1.5)).unwrap_err()),
            vec![("/quantity", "not_an_integer")]
        );
        // Whole numbers written with a fraction or exponent are integers,
        // as JSON Schema (and so the OpenAPI document) counts them.
        let body = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        for (text, expected) in [("5.0", 5), ("5e0", 5), ("1e6", 1_000_000), ("2.50e1", 25)] {
            let got = ReceiveStock::from_json(&body(&format!("{{\"quantity\":{text}}}")));
            assert_eq!(got.map(|c| c.quantity.get()), Ok(expected), "{text}");
        }
        for (text, code) in [
            ("0.0", "out_of_range"),
            ("-2.0", "out_of_range"),
            ("1000001.0", "out_of_range"),
            ("123456789012345678901234567890", "out_of_range"),
            ("1e300", "out_of_range"),
            ("2.5", "not_an_integer"),
            ("1e-3", "not_an_integer"),
        ] {
            let got = ReceiveStock::from_json(&body(&format!("{{\"quantity\":{text}}}")));
            assert_eq!(
                codes(&got.unwrap_err()),
                vec![("/quantity", code)],
                "{text}"
            );
        }
        assert_eq!(
            codes(&q(json!(0)).unwrap_err()),
            vec![("/quantity", "out_of_range")]
        );
        assert_eq!(
            codes(&q(json!(-3)).unwrap_err()),
            vec![("/quantity", "out_of_range")]
        );
        assert_eq!(
            codes(&q(json!(1_000_001)).unwrap_err()),
            vec![("/quantity", "out_of_range")]
        );
    }

    #[test]
    fn unknown_field_pointer_is_escaped() {
        let err = ReceiveStock::from_json(&json!({"quantity": 1, "a/b~c": 1})).unwrap_err();
        assert_eq!(codes(&err), vec![("/a~1b~0c", "unknown_field")]);
    }

    #[test]
    fn write_off_reason_must_be_printable_and_bounded() {
        let ok = WriteOffStock::from_json(&json!({"quantity": 2, "reason": "damaged"})).unwrap();
        assert_eq!(ok.reason.as_str(), "damaged");
        let err = WriteOffStock::from_json(&json!({"quantity": 2, "reason": "a\nb"})).unwrap_err();
        assert_eq!(codes(&err), vec![("/reason", "invalid_characters")]);
        let err = WriteOffStock::from_json(&json!({"quantity": 2, "reason": ""})).unwrap_err();
        assert_eq!(codes(&err), vec![("/reason", "invalid_length")]);
        let err = WriteOffStock::from_json(&json!({"quantity": 2, "reason": "  "})).unwrap_err();
        assert_eq!(codes(&err), vec![("/reason", "invalid_format")]);
        let err =
            WriteOffStock::from_json(&json!({"quantity": 2, "reason": "\u{202e}x"})).unwrap_err();
        assert_eq!(codes(&err), vec![("/reason", "invalid_characters")]);
    }

    #[test]
    fn reservation_order_id_follows_the_identifier_grammar() {
        let err = ReserveStock::from_json(&json!({"order_id": "a b", "quantity": 1})).unwrap_err();
        assert_eq!(codes(&err), vec![("/order_id", "invalid_characters")]);
    }

    #[test]
    fn transfer_must_target_another_known_cell() {
        let t = topology();
        assert!(TransferStock::from_json(&json!({"to_cell": "azure", "quantity": 1}), &t).is_ok());
        let err =
            TransferStock::from_json(&json!({"to_cell": "aws", "quantity": 0}), &t).unwrap_err();
        assert_eq!(
            codes(&err),
            vec![("/quantity", "out_of_range"), ("/to_cell", "same_cell")]
        );
        let err =
            TransferStock::from_json(&json!({"to_cell": "gcp", "quantity": 1}), &t).unwrap_err();
        assert_eq!(codes(&err), vec![("/to_cell", "unknown_cell")]);
        let err =
            TransferStock::from_json(&json!({"to_cell": "GCP", "quantity": 1}), &t).unwrap_err();
        assert_eq!(codes(&err), vec![("/to_cell", "invalid_characters")]);
    }

    #[test]
    fn every_code_has_a_distinct_stable_name() {
        let names: std::collections::BTreeSet<_> =
            ViolationCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ViolationCode::ALL.len());
        for c in ViolationCode::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            "\\PC{0,70}".prop_map(Value::from),
            prop_oneof![
                Just("19.99"),
                Just("0"),
                Just("USD"),
                Just("JPY"),
                Just("aws"),
                Just("azure")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("account_id".to_owned()),
                        Just("amount".to_owned()),
                        Just("currency".to_owned()),
                        Just("quantity".to_owned()),
                        Just("reason".to_owned()),
                        Just("order_id".to_owned()),
                        Just("to_cell".to_owned()),
                        "\\PC{0,8}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn validators_never_panic_and_report_sorted_nonempty_violations(body in arbitrary_json()) {
            let t = topology();
            let results = [
                CreateTransaction::from_json(&body).err(),
                ReceiveStock::from_json(&body).err(),
                WriteOffStock::from_json(&body).err(),
                ReserveStock::from_json(&body).err(),
                TransferStock::from_json(&body, &t).err(),
            ];
            for v in results.into_iter().flatten() {
                let list = v.as_slice();
                prop_assert!(!list.is_empty());
                prop_assert!(list.windows(2).all(|w| w[0].pointer() <= w[1].pointer()));
            }
        }

        #[test]
        fn violations_do_not_depend_on_key_order(
            pairs in proptest::collection::vec((
                prop_oneof![Just("account_id"), Just("amount"), Just("currency"), Just("x")],
                prop_oneof![Just(json!("19.999")), Just(json!(5)), Just(json!("EUR")), Just(json!(""))],
            ), 0..4)
        ) {
            let forward: Map<String, Value> =
                pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
            let backward: Map<String, Value> =
                pairs.iter().rev().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
            // Same keys with the same (last-wins) values in both maps.
            let mut same = forward.clone();
            for (k, v) in &backward { same.insert(k.clone(), v.clone()); }
            prop_assume!(same == forward);
            prop_assert_eq!(
                CreateTransaction::from_json(&Value::Object(forward)),
                CreateTransaction::from_json(&Value::Object(backward))
            );
        }
    }
}
