//! Identifiers that cross the API: account, SKU, order, cell, idempotency key
//! and transaction id. Each one can only be built through its constructor, so
//! a value of these types is always valid.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    /// The string is empty.
    #[error("must not be empty")]
    Empty,
    /// The string is longer than allowed.
    #[error("must be at most {max} characters long")]
    TooLong {
        /// The largest allowed length, in characters.
        max: usize,
    },
    /// The string holds a character outside the allowed set.
    #[error("must contain only {allowed}")]
    InvalidCharacter {
        /// The allowed characters, in words.
        allowed: &'static str,
    },
    /// `.` or `..`: a URL path resolves these as dot segments (RFC 3986
    /// §5.2.4), so a resource named so could never be addressed.
    #[error("must not be \".\" or \"..\"")]
    DotSegment,
}

const ID_MAX_LEN: usize = 64;
const ID_ALLOWED: &str = "letters, digits, '.', '_' and '-'";

fn check_identifier(s: &str) -> Result<(), IdentifierError> {
    if s.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(IdentifierError::InvalidCharacter {
            allowed: ID_ALLOWED,
        });
    }
    // Only ASCII is left, so bytes are characters.
    if s.len() > ID_MAX_LEN {
        return Err(IdentifierError::TooLong { max: ID_MAX_LEN });
    }
    if s == "." || s == ".." {
        return Err(IdentifierError::DotSegment);
    }
    Ok(())
}

/// Implements the string plumbing shared by every string identifier: a
/// validating `TryFrom<String>`, `FromStr`, `Display`, `AsRef<str>` and serde
/// through the constructor.
macro_rules! string_identifier {
    ($(#[$meta:meta])* $name:ident, $check:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses `value`.
            ///
            /// # Errors
            /// Returns [`IdentifierError`] when `value` breaks the grammar.
            pub fn new(value: impl Into<String>) -> Result<Self, IdentifierError> {
                let value = value.into();
                $check(&value)?;
                Ok(Self(value))
            }

            /// The identifier as a string slice.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdentifierError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl FromStr for $name {
            type Err = IdentifierError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_identifier!(
    /// An account: 1–64 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    AccountId,
    check_identifier
);
string_identifier!(
    /// A stock keeping unit: 1–64 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    Sku,
    check_identifier
);
string_identifier!(
    /// An order that stock is reserved for: 1–64 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    OrderId,
    check_identifier
);

const CELL_MAX_LEN: usize = 32;

fn check_cell(s: &str) -> Result<(), IdentifierError> {
    let mut bytes = s.bytes();
    match bytes.next() {
        None => return Err(IdentifierError::Empty),
        Some(first) if !first.is_ascii_lowercase() => {
            return Err(IdentifierError::InvalidCharacter {
                allowed: "lower-case letters, digits and '-', starting with a letter",
            });
        }
        Some(_) => {}
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(IdentifierError::InvalidCharacter {
            allowed: "lower-case letters, digits and '-', starting with a letter",
        });
    }
    if s.len() > CELL_MAX_LEN {
        return Err(IdentifierError::TooLong { max: CELL_MAX_LEN });
    }
    Ok(())
}

string_identifier!(
    /// A cell (one cloud deployment), such as `aws` or `azure`: 1–32
    /// characters of `[a-z0-9-]`, starting with a letter.
    CellId,
    check_cell
);

const KEY_MAX_LEN: usize = 255;

fn check_idempotency_key(s: &str) -> Result<(), IdentifierError> {
    if s.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(IdentifierError::InvalidCharacter {
            allowed: "visible ASCII characters (0x21 to 0x7E)",
        });
    }
    if s.len() > KEY_MAX_LEN {
        return Err(IdentifierError::TooLong { max: KEY_MAX_LEN });
    }
    Ok(())
}

string_identifier!(
    /// The value of an `Idempotency-Key` header: 1–255 visible ASCII
    /// characters (0x21–0x7E).
    IdempotencyKey,
    check_idempotency_key
);

/// The namespace of the UUIDv5 transaction ids derived from idempotency keys.
/// Fixed forever: changing it would give a retried payment a new id.
const TRANSACTION_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_4f0e_2b7a_5c43_9e1d_8a52_c0b3_7f21);

/// A transaction id: a UUID rendered in lower-case hyphenated form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TransactionId(Uuid);

/// Why a string is not a transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be a UUID in hyphenated form")]
pub struct TransactionIdError;

impl TransactionId {
    /// The id of a transaction created with an idempotency key: UUIDv5 over
    /// `"{account}:{key}"` in twincell's namespace. An account id holds no `:`,
    /// so the name is unambiguous; every cell derives the same id for the
    /// same retry.
    #[must_use]
    pub fn for_idempotency_key(account: &AccountId, key: &IdempotencyKey) -> Self {
        let mut name = String::with_capacity(account.as_str().len() + 1 + key.as_str().len());
        name.push_str(account.as_str());
        name.push(':');
        name.push_str(key.as_str());
        Self(Uuid::new_v5(&TRANSACTION_NAMESPACE, name.as_bytes()))
    }

    /// Wraps a generated UUID (a UUIDv7 from the id generator).
    #[must_use]
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID.
    #[must_use]
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// Parses the 36-character hyphenated form (either case).
    ///
    /// # Errors
    /// Returns [`TransactionIdError`] for anything else.
    pub fn parse(value: &str) -> Result<Self, TransactionIdError> {
        if value.len() != 36 {
            return Err(TransactionIdError);
        }
        Uuid::try_parse(value)
            .map(Self)
            .map_err(|_| TransactionIdError)
    }
}

impl FromStr for TransactionId {
    type Err = TransactionIdError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

impl TryFrom<String> for TransactionId {
    type Error = TransactionIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TransactionId> for String {
    fn from(value: TransactionId) -> String {
        value.to_string()
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn constructors_never_panic_and_accept_exactly_their_grammar(s in "\\PC{0,300}") {
            let id_ok = (1..=64).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                && s != "."
                && s != "..";
            prop_assert_eq!(Sku::new(s.as_str()).is_ok(), id_ok);
            prop_assert_eq!(AccountId::new(s.as_str()).is_ok(), id_ok);
            prop_assert_eq!(OrderId::new(s.as_str()).is_ok(), id_ok);
            let key_ok = (1..=255).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
            prop_assert_eq!(IdempotencyKey::new(s.as_str()).is_ok(), key_ok);
            let _ = CellId::new(s.as_str());
            let _ = TransactionId::parse(&s);
        }

        #[test]
        fn valid_identifiers_round_trip_through_serde(s in "[A-Za-z0-9._-]{1,64}") {
            prop_assume!(s != "." && s != "..");
            let sku = Sku::new(s.as_str()).unwrap();
            let json = serde_json::to_string(&sku).unwrap();
            prop_assert_eq!(serde_json::from_str::<Sku>(&json).unwrap(), sku);
        }
    }

    #[test]
    fn identifier_of_64_allowed_characters_is_accepted() {
        let id = "a".repeat(63) + "Z";
        assert_eq!(Sku::new(id.clone()).map(String::from), Ok(id));
        assert!(OrderId::new("ord-1_2.3").is_ok());
    }

    #[test]
    fn identifier_of_65_characters_is_rejected_as_too_long() {
        assert_eq!(
            AccountId::new("a".repeat(65)),
            Err(IdentifierError::TooLong { max: 64 })
        );
    }

    #[test]
    fn dot_segments_are_not_identifiers_but_longer_dot_runs_are() {
        for bad in [".", ".."] {
            assert_eq!(Sku::new(bad), Err(IdentifierError::DotSegment));
            assert_eq!(OrderId::new(bad), Err(IdentifierError::DotSegment));
            assert_eq!(AccountId::new(bad), Err(IdentifierError::DotSegment));
        }
        for good in ["...", ".a", "a.", "..a"] {
            assert!(Sku::new(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn empty_identifier_is_rejected() {
        assert_eq!(Sku::new(""), Err(IdentifierError::Empty));
    }

    #[test]
    fn identifier_with_slash_space_or_unicode_is_rejected() {
        for bad in ["a/b", "a b", "café", "a:b", "a\u{0}"] {
            assert!(
                matches!(
                    OrderId::new(bad),
                    Err(IdentifierError::InvalidCharacter { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cell_id_must_be_lower_case_and_start_with_a_letter() {
        assert!(CellId::new("aws").is_ok());
        assert!(CellId::new("azure-westeurope-1").is_ok());
        assert!(CellId::new("AWS").is_err());
        assert!(CellId::new("1aws").is_err());
        assert!(CellId::new("a_ws").is_err());
        assert_eq!(
            CellId::new("a".repeat(33)),
            Err(IdentifierError::TooLong { max: 32 })
        );
    }

    #[test]
    fn idempotency_key_allows_visible_ascii_only() {
        assert!(IdempotencyKey::new("!~key:with/punct").is_ok());
        assert!(IdempotencyKey::new("x".repeat(255)).is_ok());
        assert!(IdempotencyKey::new("x".repeat(256)).is_err());
        assert!(IdempotencyKey::new("has space").is_err());
        assert!(IdempotencyKey::new("tab\t").is_err());
        assert!(IdempotencyKey::new("ü").is_err());
        assert!(IdempotencyKey::new("").is_err());
    }

    #[test]
    fn same_account_and_key_give_the_same_transaction_id_everywhere() {
        let account = AccountId::new("acct-1").unwrap();
        let key = IdempotencyKey::new("k-1").unwrap();
        let a = TransactionId::for_idempotency_key(&account, &key);
        let b = TransactionId::for_idempotency_key(&account, &key);
        assert_eq!(a, b);
        assert_eq!(a.as_uuid().get_version_num(), 5);
        // Pinned (cross-checked with Python's uuid.uuid5): a change of namespace or name encoding would re-key every
        // stored idempotent transaction.
        assert_eq!(a.to_string(), "a24d1dfa-f214-553b-97e5-42bfa0a5d401");
    }

    #[test]
    fn other_account_or_key_gives_another_transaction_id() {
        let a = AccountId::new("acct-1").unwrap();
        let b = AccountId::new("acct-2").unwrap();
        let k = IdempotencyKey::new("k").unwrap();
        let l = IdempotencyKey::new("l").unwrap();
        let id = TransactionId::for_idempotency_key(&a, &k);
        assert_ne!(id, TransactionId::for_idempotency_key(&b, &k));
        assert_ne!(id, TransactionId::for_idempotency_key(&a, &l));
    }

    #[test]
    fn transaction_id_parses_only_the_hyphenated_form_and_renders_lower_case() {
        let id = TransactionId::parse("0193A5B2-7C4D-7E8F-9A0B-1C2D3E4F5A6B").unwrap();
        assert_eq!(id.to_string(), "0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b");
        assert!(TransactionId::parse("0193a5b27c4d7e8f9a0b1c2d3e4f5a6b").is_err());
        assert!(TransactionId::parse("{0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b}").is_err());
        assert!(TransactionId::parse("not-a-uuid").is_err());
    }
}
