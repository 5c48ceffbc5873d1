//! What a cell keeps to make a command's cost independent of a SKU's
//! history, read once at start by both cells:
//!
//! - `TWINCELL_CACHE_SKUS` (default 1024): how many SKUs' folded stock the
//!   process keeps between requests ([`Service::with_cache_capacity`];
//!   0 keeps none).
//! - `TWINCELL_SNAPSHOT_EVERY` (default 1000): every how many events of a
//!   ledger its snapshot is saved beside the events
//!   ([`Service::with_snapshot_every`]; 0 saves none).

use twincell_core::service::{DEFAULT_CACHE_CAPACITY, DEFAULT_SNAPSHOT_EVERY};
use twincell_core::{Clock, EventStore, IdGenerator, Service};

/// The largest cache a cell accepts: a bound on memory, not a tuning
/// knob (a SKU's folded state is a few hundred bytes plus its orders).
pub const MAX_CACHE_SKUS: usize = 1_000_000;

/// A cell's cache and snapshot settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// SKUs kept between requests.
    pub cache_skus: usize,
    /// Events between a ledger's snapshots (0: none).
    pub snapshot_every: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            cache_skus: DEFAULT_CACHE_CAPACITY,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

impl Tuning {
    /// The settings from `env` (a variable's value, `None` when unset).
    ///
    /// # Errors
    /// A message naming the variable whose value is not a whole number in
    /// range.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut tuning = Self::default();
        if let Some(v) = env("TWINCELL_CACHE_SKUS") {
            tuning.cache_skus = v
                .trim()
                .parse()
                .ok()
                .filter(|n| *n <= MAX_CACHE_SKUS)
                .ok_or_else(|| {
                    format!(
                        "TWINCELL_CACHE_SKUS={v:?} is not a whole number from 0 to {MAX_CACHE_SKUS}"
                    )
                })?;
        }
        if let Some(v) = env("TWINCELL_SNAPSHOT_EVERY") {
            tuning.snapshot_every = v.trim().parse().map_err(|_| {
                format!(
                    "TWINCELL_SNAPSHOT_EVERY={v:?} is not a whole number (0 saves no snapshots)"
                )
            })?;
        }
        Ok(tuning)
    }

    /// `service` with these settings.
    #[must_use]
    pub fn apply<S: EventStore, C: Clock, I: IdGenerator>(
        self,
        service: Service<S, C, I>,
    ) -> Service<S, C, I> {
        service
            .with_cache_capacity(self.cache_skus)
            .with_snapshot_every(self.snapshot_every)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Tuning, String> {
        Tuning::from_env(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn unset_is_the_default_and_values_are_read() {
        assert_eq!(from(&[]), Ok(Tuning::default()));
        assert_eq!(
            from(&[
                ("TWINCELL_CACHE_SKUS", "0"),
                ("TWINCELL_SNAPSHOT_EVERY", " 250 ")
            ]),
            Ok(Tuning {
                cache_skus: 0,
                snapshot_every: 250
            })
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (name, value) in [
            ("TWINCELL_CACHE_SKUS", "-1"),
            ("TWINCELL_CACHE_SKUS", "1000001"),
            ("TWINCELL_CACHE_SKUS", "many"),
            ("TWINCELL_SNAPSHOT_EVERY", "1e3"),
        ] {
            let err = from(&[(name, value)]).unwrap_err();
            assert!(err.starts_with(name), "{err}");
        }
    }
}
