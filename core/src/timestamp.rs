//! Instants, in whole milliseconds since the Unix epoch, rendered as RFC 3339
//! UTC with exactly three fractional digits (`2026-11-22T03:52:25.123Z`), so
//! both cells render the same instant as the same bytes.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::macros::format_description;

/// An instant with millisecond precision, between 1970 and the end of 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Timestamp(i64);

/// Rendered straight into the serializer's output (no `String` between).
impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a value is not a [`Timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Before 1970 or after 9999.
    #[error("must be between 1970-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z")]
    OutOfRange,
    /// Not of the form `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    #[error("must be of the form YYYY-MM-DDTHH:MM:SS.mmmZ")]
    InvalidFormat,
}

const FORMAT: &[time::format_description::FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

impl Timestamp {
    /// 1970-01-01T00:00:00.000Z.
    pub const EPOCH: Self = Self(0);

    /// The largest instant: 9999-12-31T23:59:59.999Z.
    pub const MAX_MILLIS: i64 = 253_402_300_799_999;

    /// From milliseconds since the Unix epoch.
    ///
    /// # Errors
    /// Returns [`TimestampError::OutOfRange`] before 1970 or after 9999.
    pub fn from_unix_millis(millis: i64) -> Result<Self, TimestampError> {
        if (0..=Self::MAX_MILLIS).contains(&millis) {
            Ok(Self(millis))
        } else {
            Err(TimestampError::OutOfRange)
        }
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    /// Parses exactly the rendered form, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    ///
    /// # Errors
    /// Returns [`TimestampError::InvalidFormat`] for any other text.
    pub fn parse(value: &str) -> Result<Self, TimestampError> {
        let parsed = time::PrimitiveDateTime::parse(value, FORMAT)
            .map_err(|_| TimestampError::InvalidFormat)?
            .assume_utc();
        let millis = parsed.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis)
            .map_err(|_| TimestampError::OutOfRange)
            .and_then(Self::from_unix_millis)
    }
}

impl fmt::Display for Timestamp {
    // `time` does the calendar; the digits are written here rather than
    // through `FORMAT` or `write!`, whose interpreters were 2–3 % of a
    // request's CPU in the handler's load profile (every response and every
    // stored event renders a timestamp). A test holds this to `FORMAT`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0) * 1_000_000;
        // The range check in the constructor keeps this infallible (years
        // 1970–9999, always four digits); the error arms exist so that no
        // input can panic here.
        let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| fmt::Error)?;
        let year = u16::try_from(t.year()).map_err(|_| fmt::Error)?;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let fields: [(usize, usize, u16); 7] = [
            (0, 4, year),
            (5, 2, u16::from(u8::from(t.month()))),
            (8, 2, u16::from(t.day())),
            (11, 2, u16::from(t.hour())),
            (14, 2, u16::from(t.minute())),
            (17, 2, u16::from(t.second())),
            (20, 3, t.millisecond()),
        ];
        for (at, width, mut value) in fields {
            for slot in out.iter_mut().skip(at).take(width).rev() {
                // A digit: `value % 10` is below 10.
                *slot = b'0' + u8::try_from(value % 10).unwrap_or(0);
                value /= 10;
            }
        }
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl TryFrom<String> for Timestamp {
    type Error = TimestampError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Timestamp> for String {
    fn from(value: Timestamp) -> String {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamp_renders_utc_with_three_fraction_digits() {
        let t = Timestamp::from_unix_millis(1_795_320_745_007).unwrap();
        assert_eq!(t.to_string(), "2026-11-22T04:12:25.007Z");
        assert_eq!(
            Timestamp::from_unix_millis(0).unwrap().to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(Timestamp::MAX_MILLIS)
                .unwrap()
                .to_string(),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn timestamp_outside_1970_to_9999_is_rejected() {
        assert_eq!(
            Timestamp::from_unix_millis(-1),
            Err(TimestampError::OutOfRange)
        );
        assert_eq!(
            Timestamp::from_unix_millis(Timestamp::MAX_MILLIS + 1),
            Err(TimestampError::OutOfRange)
        );
    }

    #[test]
    fn timestamp_parse_accepts_only_the_rendered_form() {
        assert!(Timestamp::parse("2026-11-22T03:32:25.007Z").is_ok());
        for bad in [
            "2026-11-22T03:32:25Z",
            "2026-11-22T03:32:25.007+00:00",
            "2026-11-22 03:32:25.007Z",
            "2026-13-22T03:32:25.007Z",
            "",
        ] {
            assert_eq!(
                Timestamp::parse(bad),
                Err(TimestampError::InvalidFormat),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn timestamp_render_then_parse_round_trips(ms in 0..=Timestamp::MAX_MILLIS) {
            let t = Timestamp::from_unix_millis(ms).unwrap();
            prop_assert_eq!(Timestamp::parse(&t.to_string()), Ok(t));
        }

        #[test]
        fn timestamp_renders_as_its_format_description_does(ms in 0..=Timestamp::MAX_MILLIS) {
            let t = Timestamp::from_unix_millis(ms).unwrap();
            let by_format = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap()
                .format(FORMAT)
                .unwrap();
            prop_assert_eq!(t.to_string(), by_format.clone());
            prop_assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{by_format}\""));
        }

        #[test]
        fn timestamp_parse_never_panics(s in ".{0,40}") {
            let _ = Timestamp::parse(&s);
        }
    }
}
