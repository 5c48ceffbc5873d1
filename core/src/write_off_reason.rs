//! Why stock was written off: the reason a write-off carries.

use serde::{Deserialize, Serialize};

const REASON_MAX_CHARS: usize = 200;

/// Why stock was written off: 1–200 characters, not blank, with no
/// control characters, no format characters (bidi controls such as U+202E,
/// zero-width characters) and no line or paragraph separators, so a reason
/// always shows as the text it is, on one line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RecordedReason", into = "String")]
pub struct WriteOffReason(String);

/// A reason as events carry it, read by the rules it was recorded under
/// (see [`WriteOffReason::recorded`]).
#[derive(Deserialize)]
#[serde(transparent)]
struct RecordedReason(String);

impl TryFrom<RecordedReason> for WriteOffReason {
    type Error = WriteOffReasonError;
    fn try_from(value: RecordedReason) -> Result<Self, Self::Error> {
        Self::recorded(value.0)
    }
}

/// Why a string is not a [`WriteOffReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteOffReasonError {
    /// Empty or longer than 200 characters.
    #[error("must be 1 to {REASON_MAX_CHARS} characters long")]
    Length,
    /// Holds a control character (newline, tab, ...).
    #[error("must not contain control characters")]
    ControlCharacter,
    /// Holds a format character (a bidi control, a zero-width character) or
    /// a line or paragraph separator.
    #[error(
        "must not contain format characters (such as bidi controls) or line or paragraph separators"
    )]
    InvisibleCharacter,
    /// Only white space.
    #[error("must not be blank")]
    Blank,
}

/// Whether a write-off reason may hold `c` (see [`WriteOffReason`]).
#[must_use]
pub fn reason_allows(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    !c.is_control()
        && !matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

impl WriteOffReason {
    /// Checks a reason a client sends: length, characters, not blank.
    ///
    /// # Errors
    /// [`WriteOffReasonError`].
    pub fn new(value: impl Into<String>) -> Result<Self, WriteOffReasonError> {
        let reason = Self::recorded(value.into())?;
        if reason.0.chars().any(|c| !reason_allows(c)) {
            return Err(WriteOffReasonError::InvisibleCharacter);
        }
        if reason.0.chars().all(char::is_whitespace) {
            return Err(WriteOffReasonError::Blank);
        }
        Ok(reason)
    }

    /// Reads a reason back from a recorded event, by the rules it was
    /// recorded under: length and no control characters. The rules on
    /// format characters and blank reasons came later; an event a cell
    /// stored before them must stay readable in every cell, or its SKU
    /// could no longer be folded.
    fn recorded(value: String) -> Result<Self, WriteOffReasonError> {
        if value.is_empty() || value.chars().count() > REASON_MAX_CHARS {
            return Err(WriteOffReasonError::Length);
        }
        if value.chars().any(char::is_control) {
            return Err(WriteOffReasonError::ControlCharacter);
        }
        Ok(Self(value))
    }

    /// The reason.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WriteOffReason {
    type Error = WriteOffReasonError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<WriteOffReason> for String {
    fn from(value: WriteOffReason) -> String {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_off_reason_is_bounded_and_printable() {
        assert!(WriteOffReason::new("x".repeat(200)).is_ok());
        assert_eq!(
            WriteOffReason::new("x".repeat(201)),
            Err(WriteOffReasonError::Length)
        );
        assert_eq!(WriteOffReason::new(""), Err(WriteOffReasonError::Length));
        assert_eq!(
            WriteOffReason::new("a\tb"),
            Err(WriteOffReasonError::ControlCharacter)
        );
        assert!(
            WriteOffReason::new("ü".repeat(200)).is_ok(),
            "counted in characters, not bytes"
        );
    }

    #[test]
    fn write_off_reason_is_never_blank_and_shows_as_the_text_it_is() {
        for blank in [" ", "   ", "\u{a0}", "\u{3000} \u{2003}"] {
            assert_eq!(
                WriteOffReason::new(blank),
                Err(WriteOffReasonError::Blank),
                "{blank:?}"
            );
        }
        // Bidi controls, zero-width characters, a byte order mark, soft
        // hyphen, line and paragraph separators.
        for hidden in [
            "\u{202e}gnp.exe",
            "a\u{200b}b",
            "\u{feff}x",
            "soft\u{ad}hyphen",
            "one\u{2028}two",
            "one\u{2029}two",
            "\u{2066}isolate\u{2069}",
        ] {
            assert_eq!(
                WriteOffReason::new(hidden),
                Err(WriteOffReasonError::InvisibleCharacter),
                "{hidden:?}"
            );
        }
        for fine in [
            " damaged ",
            "dañado en tránsito",
            "破損",
            "emoji 📦",
            "a\u{a0}b",
        ] {
            assert!(WriteOffReason::new(fine).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn a_reason_recorded_before_the_newer_rules_still_reads_back() {
        // An event stored by an older version (or another cell) with a
        // reason the newer rules refuse must not make its SKU unreadable.
        let json = serde_json::json!("\u{202e} ");
        let reason: WriteOffReason = serde_json::from_value(json).unwrap();
        assert_eq!(reason.as_str(), "\u{202e} ");
        // What was never allowed still is not.
        assert!(serde_json::from_value::<WriteOffReason>(serde_json::json!("a\nb")).is_err());
        assert!(serde_json::from_value::<WriteOffReason>(serde_json::json!("")).is_err());
    }
}
