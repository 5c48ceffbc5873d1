//! W3C Trace Context's `traceparent`, as a value: the trace a request
//! belongs to and the span that wrote something. Events keep the one of the
//! request that committed them ([`crate::event::EventMetadata`]), so that a
//! payment taken in one cell can be followed to its apply in the other.
//!
//! The grammar (`version-traceid-parentid-flags`) is small and exact, so it
//! is parsed here rather than by pulling an OpenTelemetry SDK into the core.

use serde::{Deserialize, Serialize};

/// A valid `traceparent`: a trace id and a span id, neither all zero, and
/// whether the trace is sampled. Written as version `00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

/// Why a text is not a `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent: {0:?}")]
pub struct TraceParentError(String);

impl TraceParent {
    /// A trace context from its parts; `None` when an id is all zero.
    #[must_use]
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            sampled,
        })
    }

    /// Parses a header value. Version `00` exactly as specified; a later
    /// version is read by its first four fields (the specification's rule
    /// for versions it does not know); `ff`, upper-case hex and all-zero
    /// ids are invalid.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let mut fields = value.trim().split('-');
        let [version] = from_hex::<1>(fields.next()?)?;
        let trace = from_hex::<16>(fields.next()?)?;
        let span = from_hex::<8>(fields.next()?)?;
        let flags = fields.next()?;
        if version == 0xff || (version == 0 && (fields.next().is_some() || flags.len() != 2)) {
            return None;
        }
        let [flags] = flags.get(..2).and_then(from_hex::<1>)?;
        Self::new(trace, span, flags & 1 == 1)
    }

    /// The trace id.
    #[must_use]
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The trace id, 32 lower-case hex digits (the `trace_id` log field).
    #[must_use]
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span that wrote it.
    #[must_use]
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// The span id, 16 lower-case hex digits.
    #[must_use]
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }

    /// Whether the trace is sampled (flag `01`).
    #[must_use]
    pub fn sampled(&self) -> bool {
        self.sampled
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("00-")?;
        f.write_str(&to_hex(&self.trace_id))?;
        f.write_str("-")?;
        f.write_str(&to_hex(&self.span_id))?;
        f.write_str(if self.sampled { "-01" } else { "-00" })
    }
}

impl TryFrom<String> for TraceParent {
    type Error = TraceParentError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or(TraceParentError(value))
    }
}

impl From<TraceParent> for String {
    fn from(value: TraceParent) -> Self {
        value.to_string()
    }
}

/// Lower-case hex of `bytes`.
#[must_use]
pub fn to_hex(bytes: &[u8]) -> String {
    // Digit by digit rather than `write!("{b:02x}")`: this runs several
    // times per request (the log fields, the `traceparent` answered), and
    // the formatter was a visible share of a request's CPU.
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// `N` bytes from exactly `N * 2` lower-case hex digits (upper case is
/// invalid in W3C Trace Context).
#[must_use]
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let (high, low) = match pair {
            [h, l] => (digit(*h)?, digit(*l)?),
            _ => return None,
        };
        *slot = high << 4 | low;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_example_round_trips() {
        let t = TraceParent::parse(VALID).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id_hex(), "00f067aa0ba902b7");
        assert!(t.sampled());
        assert_eq!(t.to_string(), VALID);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, format!("\"{VALID}\""));
        assert_eq!(serde_json::from_str::<TraceParent>(&json).unwrap(), t);
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        assert!(serde_json::from_str::<TraceParent>("\"nope\"").is_err());
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let t = TraceParent::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes-next",
        )
        .unwrap();
        assert!(!t.sampled());
        assert_eq!(
            t.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }
}
