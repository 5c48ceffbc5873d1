//! Reading a JSON request body the same way in every cell: the media type,
//! the 64 KiB limit, UTF-8, and a strict parse.
//!
//! Checks run in this order, and the first failure answers:
//! 1. `Content-Type` (its last value, see [`crate::headers`]) is
//!    `application/json` (any case, parameters allowed; a `charset` must be
//!    UTF-8) → else 415;
//! 2. at most 64 KiB (`Content-Length` first, then the bytes read) → else 413;
//! 3. non-empty UTF-8 (a leading byte order mark is ignored, RFC 8259 §8.1)
//!    → else 400;
//! 4. one JSON value, no trailing data, no object with a repeated key (two
//!    parsers could read it two ways), fewer than 128 levels deep (serde_json's recursion limit) → else 400.
//!
//! Field validation (422) is the core's job, on the parsed value.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::problem::{Problem, ProblemKind};

/// The largest accepted body, in bytes, in both cells.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A request body parsed into a JSON value by the rules above.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Problem;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Problem> {
        check_content_type(req.headers())?;
        check_content_length(req.headers(), BODY_LIMIT)?;
        let bytes = read_limited(req.into_body(), BODY_LIMIT).await?;
        parse(&bytes).map(JsonBody)
    }
}

fn unsupported(detail: &str) -> Problem {
    Problem::new(ProblemKind::UnsupportedMediaType, detail)
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        ProblemKind::PayloadTooLarge,
        format!("the body is larger than {limit} bytes"),
    )
}

fn malformed(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemKind::MalformedBody, detail)
}

/// Whether a `Content-Type` value names JSON in UTF-8.
#[must_use]
pub fn is_json_media_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            value.eq_ignore_ascii_case("utf-8")
        }
        // Other parameters are allowed; a parameter without '=' is not.
        Some(_) => true,
        None => param.trim().is_empty(),
    })
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    // Read as a list, like every single-valued header (see crate::headers).
    match crate::headers::last_item(headers, header::CONTENT_TYPE) {
        None => Err(unsupported(
            "this route takes a JSON body: send Content-Type: application/json",
        )),
        Some(Ok(v)) if is_json_media_type(v) => Ok(()),
        Some(_) => Err(unsupported("Content-Type must be application/json (UTF-8)")),
    }
}

/// 413 when `Content-Length` declares more than `limit` bytes.
pub(crate) fn check_content_length(headers: &HeaderMap, limit: usize) -> Result<(), Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > u64::try_from(limit).unwrap_or(u64::MAX) => Err(too_large(limit)),
        _ => Ok(()),
    }
}

/// The body, or 413 once more than `limit` bytes arrive.
pub(crate) async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, Problem> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(_) => Err(malformed("the body could not be read")),
    }
}

/// Parses body bytes by the rules of this module.
///
/// # Errors
/// A 400 [`Problem`] saying what is wrong.
pub fn parse(bytes: &[u8]) -> Result<Value, Problem> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("the body is empty; a JSON object is expected"));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(malformed("the body is not valid UTF-8"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue::deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v.0))
        .map_err(|e| malformed(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// A JSON value whose objects never repeat a key.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    // A JSON number with a fraction or exponent is only passed through into
    // the value (where the core rejects it for every field); no arithmetic
    // and never money.
    #[allow(clippy::disallowed_types)]
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(r: Result<Value, Problem>) -> Option<ProblemKind> {
        r.err().map(|p| p.kind())
    }

    #[test]
    fn json_media_type_allows_case_and_utf8_charset_only() {
        for ok in [
            "application/json",
            "APPLICATION/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json; foo=bar",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/json-patch+json",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin1",
            "application/json; garbage",
            "",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn a_valid_object_parses() {
        assert_eq!(
            parse(br#"{"a":[1,"x",null,true]}"#).unwrap(),
            json!({"a":[1,"x",null,true]})
        );
    }

    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        assert_eq!(parse(b"\xEF\xBB\xBF{\"a\":1}").unwrap(), json!({"a":1}));
    }

    #[test]
    fn duplicate_keys_are_malformed_at_any_depth() {
        assert_eq!(
            kind(parse(br#"{"a":1,"a":1}"#)),
            Some(ProblemKind::MalformedBody)
        );
        assert_eq!(
            kind(parse(br#"{"x":{"b":1,"b":2}}"#)),
            Some(ProblemKind::MalformedBody)
        );
        assert_eq!(
            kind(parse(br#"[{"b":1,"b":2}]"#)),
            Some(ProblemKind::MalformedBody)
        );
    }

    #[test]
    fn empty_non_utf8_trailing_and_too_deep_bodies_are_malformed() {
        for bad in [
            &b""[..],
            b"   ",
            b"{\"a\":\"\xff\"}",
            b"{} {}",
            b"{\"a\":1,}",
            b"1e400",
        ] {
            assert_eq!(
                kind(parse(bad)),
                Some(ProblemKind::MalformedBody),
                "{bad:?}"
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(
            kind(parse(deep.as_bytes())),
            Some(ProblemKind::MalformedBody)
        );
        let ok = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(ok.as_bytes()).is_ok());
        // The boundary docs/api.md states: 127 levels parse, 128 do not.
        let levels = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(parse(levels(127).as_bytes()).is_ok());
        assert_eq!(
            kind(parse(levels(128).as_bytes())),
            Some(ProblemKind::MalformedBody)
        );
    }

    #[test]
    fn unicode_escapes_decode() {
        assert_eq!(parse(br#"{"a":"\u00e9"}"#).unwrap(), json!({"a":"é"}));
        // A lone surrogate is not a character.
        assert_eq!(
            kind(parse(br#"{"a":"\ud800"}"#)),
            Some(ProblemKind::MalformedBody)
        );
    }
}
