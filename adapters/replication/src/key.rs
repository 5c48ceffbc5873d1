//! Shared secrets: compared in constant time, never printed.

use subtle::ConstantTimeEq;

/// The fewest characters a key may have: 32 visible ASCII characters carry
/// at least 190 bits when generated at random (`openssl rand -base64 32`
/// gives 44).
pub const MIN_KEY_CHARS: usize = 32;
/// The most characters a key may have.
pub const MAX_KEY_CHARS: usize = 1024;

/// A key: the replication key a deliverer must present, or the key this
/// cell presents to its target (an Event Grid topic key, or the peer's
/// replication key). `Debug` shows `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Why text is not a usable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Shorter than [`MIN_KEY_CHARS`] or longer than [`MAX_KEY_CHARS`].
    #[error("a key has {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters; this one has {0}")]
    Length(usize),
    /// A character outside visible ASCII (a key travels in an HTTP header),
    /// or a comma (a repeated header is read as a comma-separated list).
    #[error("a key holds visible ASCII characters only, without spaces or commas")]
    Characters,
}

impl Secret {
    /// Checks `text` (surrounding whitespace is ignored: keys are often
    /// pasted with a newline).
    ///
    /// # Errors
    /// [`SecretError`] for a key too short, too long or with other
    /// characters than visible ASCII.
    pub fn new(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if !(MIN_KEY_CHARS..=MAX_KEY_CHARS).contains(&text.len()) {
            return Err(SecretError::Length(text.chars().count()));
        }
        if !text
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(SecretError::Characters);
        }
        Ok(Self(text.to_owned()))
    }

    /// The key itself, to send in a header.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this key, in time that does not depend on where
    /// they differ (only on the length, which is no secret).
    #[must_use]
    pub fn matches(&self, given: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(given).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_key_matches_itself_only() {
        let key = Secret::new(KEY).unwrap();
        assert!(key.matches(KEY.as_bytes()));
        assert!(!key.matches(b"0123456789abcdef0123456789abcdeF"));
        assert!(!key.matches(&KEY.as_bytes()[..31]));
        assert!(!key.matches(b""));
    }

    #[test]
    fn short_long_and_spaced_keys_are_refused() {
        assert_eq!(Secret::new(&KEY[..31]), Err(SecretError::Length(31)));
        assert!(Secret::new(&"k".repeat(1025)).is_err());
        assert_eq!(
            Secret::new("0123456789abcdef 0123456789abcdef"),
            Err(SecretError::Characters)
        );
        assert_eq!(
            Secret::new("0123456789abcdef,0123456789abcdef"),
            Err(SecretError::Characters)
        );
        assert_eq!(Secret::new(&format!(" {KEY}\n")).unwrap().expose(), KEY);
    }

    #[test]
    fn a_key_never_prints() {
        let key = Secret::new(KEY).unwrap();
        assert!(!format!("{key:?}").contains("0123"));
    }
}
