//! Stock quantities: how many units one command moves.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Units moved by one command: an integer from 1 to 1 000 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Quantity(u32);

/// Why a number is not a [`Quantity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be an integer from {} to {}", Quantity::MIN, Quantity::MAX)]
pub struct QuantityError;

impl Quantity {
    /// The smallest quantity.
    pub const MIN: u32 = 1;
    /// The largest quantity one command may move.
    pub const MAX: u32 = 1_000_000;

    /// Checks the range.
    ///
    /// # Errors
    /// Returns [`QuantityError`] outside `1..=1_000_000`.
    pub fn new(value: u64) -> Result<Self, QuantityError> {
        u32::try_from(value)
            .ok()
            .filter(|v| (Self::MIN..=Self::MAX).contains(v))
            .map(Self)
            .ok_or(QuantityError)
    }

    /// The quantity as a `u64`, the type stock levels are counted in.
    #[must_use]
    pub fn get(self) -> u64 {
        u64::from(self.0)
    }
}

impl TryFrom<u64> for Quantity {
    type Error = QuantityError;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Quantity> for u64 {
    fn from(value: Quantity) -> u64 {
        value.get()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantity_bounds_are_inclusive() {
        assert_eq!(Quantity::new(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::new(1_000_000).map(Quantity::get), Ok(1_000_000));
    }

    #[test]
    fn zero_and_above_a_million_are_rejected() {
        assert_eq!(Quantity::new(0), Err(QuantityError));
        assert_eq!(Quantity::new(1_000_001), Err(QuantityError));
        assert_eq!(Quantity::new(u64::MAX), Err(QuantityError));
    }

    proptest! {
        #[test]
        fn quantity_accepts_exactly_its_range(v in any::<u64>()) {
            let ok = (1..=1_000_000).contains(&v);
            prop_assert_eq!(Quantity::new(v).is_ok(), ok);
        }
    }
}
