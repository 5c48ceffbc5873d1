//! Money: an ISO 4217 currency and an exact decimal amount.
//!
//! Amounts travel as JSON strings in plain decimal notation, grammar
//! `(0|[1-9][0-9]{0,11})(\.[0-9]{1,k})?` with `k` the currency's minor units,
//! and must be greater than zero. They are held as [`rust_decimal::Decimal`]
//! rescaled to `k`, so `"19.9"` USD renders as `"19.90"`. No binary floating
//! point is involved anywhere.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

include!("currency_table.rs");

/// An active ISO 4217 currency with its minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: &'static str,
    minor_units: u8,
}

/// Why a string is not a [`Currency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    /// Not three upper-case ASCII letters.
    #[error("must be three upper-case letters (ISO 4217 alpha-3)")]
    InvalidFormat,
    /// Well formed, but not an active ISO 4217 code with minor units.
    #[error("is not an active ISO 4217 currency code")]
    Unknown,
}

impl Currency {
    /// Looks `code` up in the ISO 4217 table.
    ///
    /// # Errors
    /// [`CurrencyError::InvalidFormat`] unless `code` is three upper-case
    /// letters; [`CurrencyError::Unknown`] if it is not in the table.
    pub fn from_code(code: &str) -> Result<Self, CurrencyError> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(CurrencyError::InvalidFormat);
        }
        TABLE
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .ok()
            .and_then(|i| TABLE.get(i))
            .map(|&(code, minor_units)| Self { code, minor_units })
            .ok_or(CurrencyError::Unknown)
    }

    /// The alpha-3 code, such as `"USD"`.
    #[must_use]
    pub fn code(self) -> &'static str {
        self.code
    }

    /// Digits after the decimal point (USD 2, JPY 0, BHD 3, CLF 4).
    #[must_use]
    pub fn minor_units(self) -> u32 {
        u32::from(self.minor_units)
    }

    /// Every currency the table knows, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        TABLE
            .iter()
            .map(|&(code, minor_units)| Self { code, minor_units })
    }
}

impl FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::from_code(code)
    }
}

impl TryFrom<String> for Currency {
    type Error = CurrencyError;
    fn try_from(code: String) -> Result<Self, Self::Error> {
        Self::from_code(&code)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> String {
        value.code.to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// Why a string is not a valid amount. Checked in this order; the first
/// failing rule is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not plain decimal notation (sign, exponent, leading zero, spaces, ...).
    #[error("must be a decimal number in plain notation, such as \"19.99\"")]
    InvalidFormat,
    /// More than 12 digits before the decimal point.
    #[error(
        "must have at most {} digits before the decimal point",
        MAX_INTEGER_DIGITS
    )]
    TooLarge,
    /// More digits after the point than the currency has minor units.
    #[error("must have at most {max} digits after the decimal point for this currency")]
    TooManyDecimals {
        /// The currency's minor units.
        max: u32,
    },
    /// Zero.
    #[error("must be greater than zero")]
    NotPositive,
}

const MAX_INTEGER_DIGITS: usize = 12;

/// Checks `amount` against the grammar. With `max_scale = None` (the currency
/// is unknown) every rule but the number of decimals is checked, so a payload
/// with a bad currency still gets every other amount error reported.
///
/// # Errors
/// The first rule of [`AmountError`] that `amount` breaks.
pub fn check_amount(amount: &str, max_scale: Option<u32>) -> Result<(), AmountError> {
    let (int, frac) = match amount.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (amount, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || (int.len() > 1 && int.starts_with('0')) || frac.is_some_and(|f| !digits(f)) {
        return Err(AmountError::InvalidFormat);
    }
    if int.len() > MAX_INTEGER_DIGITS {
        return Err(AmountError::TooLarge);
    }
    if let (Some(max), Some(frac)) = (max_scale, frac)
        && frac.len() > usize::try_from(max).unwrap_or(usize::MAX)
    {
        return Err(AmountError::TooManyDecimals { max });
    }
    if amount.bytes().all(|b| b == b'0' || b == b'.') {
        return Err(AmountError::NotPositive);
    }
    Ok(())
}

/// A positive amount of one currency, exact, at the currency's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyRepr", into = "MoneyRepr")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Parses `amount` (the API's string form) for `currency`.
    ///
    /// # Errors
    /// The first [`AmountError`] rule that `amount` breaks.
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, AmountError> {
        check_amount(amount, Some(currency.minor_units()))?;
        // At most 12 + 4 digits now: Decimal holds that exactly, so this
        // cannot fail; the error arm only keeps it panic-free.
        let mut amount = Decimal::from_str_exact(amount).map_err(|_| AmountError::InvalidFormat)?;
        amount.rescale(currency.minor_units());
        Ok(Self { amount, currency })
    }

    /// The amount, at the currency's scale.
    #[must_use]
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    #[must_use]
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount in minor units (cents for USD): exact, as an integer.
    #[must_use]
    pub fn minor_units(&self) -> i128 {
        self.amount.mantissa()
    }

    /// The amount with exactly the currency's number of decimals.
    #[must_use]
    pub fn amount_string(&self) -> String {
        // rescale in the constructor fixed the scale; Decimal renders it.
        self.amount.to_string()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Wire form of [`Money`] in events: `{"amount":"19.90","currency":"USD"}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyRepr {
    amount: String,
    currency: String,
}

/// Why stored money could not be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyReprError {
    /// The currency is not valid.
    #[error("currency {0}")]
    Currency(CurrencyError),
    /// The amount is not valid for the currency.
    #[error("amount {0}")]
    Amount(AmountError),
}

impl TryFrom<MoneyRepr> for Money {
    type Error = MoneyReprError;
    fn try_from(repr: MoneyRepr) -> Result<Self, Self::Error> {
        let currency = Currency::from_code(&repr.currency).map_err(MoneyReprError::Currency)?;
        Money::parse(&repr.amount, currency).map_err(MoneyReprError::Amount)
    }
}

impl From<Money> for MoneyRepr {
    fn from(money: Money) -> Self {
        Self {
            amount: money.amount_string(),
            currency: money.currency.code.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    #[test]
    fn currency_table_is_sorted_and_has_the_minor_units_of_iso_4217() {
        let codes: Vec<_> = Currency::all().map(Currency::code).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
        for (code, units) in [
            ("USD", 2),
            ("EUR", 2),
            ("JPY", 0),
            ("BHD", 3),
            ("KWD", 3),
            ("CLF", 4),
        ] {
            assert_eq!(
                Currency::from_code(code).map(Currency::minor_units),
                Ok(units),
                "{code}"
            );
        }
    }

    #[test]
    fn lower_case_or_wrong_length_currency_is_a_format_error() {
        for bad in ["usd", "US", "USDD", "", "U$D"] {
            assert_eq!(
                Currency::from_code(bad),
                Err(CurrencyError::InvalidFormat),
                "{bad}"
            );
        }
    }

    #[test]
    fn withdrawn_or_unitless_currency_is_unknown() {
        for code in ["HRK", "XAU", "XXX", "XDR", "ABC"] {
            assert_eq!(
                Currency::from_code(code),
                Err(CurrencyError::Unknown),
                "{code}"
            );
        }
    }

    #[test]
    fn amount_renders_with_exactly_the_currency_minor_units() {
        assert_eq!(
            Money::parse("19.9", usd()).unwrap().amount_string(),
            "19.90"
        );
        assert_eq!(Money::parse("19", usd()).unwrap().amount_string(), "19.00");
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(Money::parse("1500", jpy).unwrap().amount_string(), "1500");
        let bhd = Currency::from_code("BHD").unwrap();
        assert_eq!(Money::parse("0.5", bhd).unwrap().amount_string(), "0.500");
    }

    #[test]
    fn amount_with_three_decimals_is_rejected_for_usd() {
        assert_eq!(
            Money::parse("1.001", usd()),
            Err(AmountError::TooManyDecimals { max: 2 })
        );
    }

    #[test]
    fn any_fraction_is_rejected_for_jpy() {
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(
            Money::parse("1.0", jpy),
            Err(AmountError::TooManyDecimals { max: 0 })
        );
    }

    #[test]
    fn non_plain_decimal_notation_is_rejected() {
        for bad in [
            "", ".5", "5.", "+5", "-5", "05", "00.1", "1e3", "1,00", " 1", "1 ", "1..0", "١",
        ] {
            assert_eq!(
                Money::parse(bad, usd()),
                Err(AmountError::InvalidFormat),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn zero_in_any_notation_is_not_positive() {
        for zero in ["0", "0.0", "0.00"] {
            assert_eq!(
                Money::parse(zero, usd()),
                Err(AmountError::NotPositive),
                "{zero}"
            );
        }
    }

    #[test]
    fn twelve_integer_digits_are_allowed_and_thirteen_are_too_large() {
        assert!(Money::parse("999999999999.99", usd()).is_ok());
        assert_eq!(
            Money::parse("1000000000000", usd()),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn minor_units_are_exact() {
        assert_eq!(Money::parse("0.1", usd()).unwrap().minor_units(), 10);
        assert_eq!(
            Money::parse("999999999999.99", usd())
                .unwrap()
                .minor_units(),
            99_999_999_999_999
        );
    }

    #[test]
    fn money_serializes_to_canonical_strings_and_back() {
        let m = Money::parse("19.9", usd()).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"19.90","currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Money>(r#"{"amount":"1.001","currency":"USD"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":1,"currency":"USD"}"#).is_err());
    }

    fn currency() -> impl Strategy<Value = Currency> {
        let all: Vec<Currency> = Currency::all().collect();
        proptest::sample::select(all)
    }

    proptest! {
        #[test]
        fn amount_parse_then_render_round_trips_exactly(
            c in currency(),
            int in 0u64..=999_999_999_999,
            frac in proptest::collection::vec(0u8..10, 0..=4),
        ) {
            let k = usize::try_from(c.minor_units()).unwrap();
            let frac: String = frac.iter().take(k).map(|d| char::from(b'0' + d)).collect();
            let text = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
            match Money::parse(&text, c) {
                Ok(m) => {
                    let rendered = m.amount_string();
                    // Canonical: exactly k decimals, and the same value.
                    let expected_frac = format!("{frac:0<k$}");
                    let expected = if k == 0 { int.to_string() } else { format!("{int}.{expected_frac}") };
                    prop_assert_eq!(&rendered, &expected);
                    // Rendering is a fixed point of parsing.
                    prop_assert_eq!(Money::parse(&rendered, c), Ok(m));
                }
                Err(e) => {
                    prop_assert_eq!(e, AmountError::NotPositive);
                    prop_assert_eq!(int, 0);
                    prop_assert!(frac.bytes().all(|b| b == b'0'));
                }
            }
        }

        #[test]
        fn amount_parse_never_panics(s in "\\PC{0,40}", c in currency()) {
            let _ = Money::parse(&s, c);
            let _ = check_amount(&s, None);
        }

        #[test]
        fn currency_lookup_never_panics(s in "\\PC{0,8}") {
            let _ = Currency::from_code(&s);
        }
    }
}
