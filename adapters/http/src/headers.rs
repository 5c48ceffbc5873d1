//! Reading single-valued request headers the same way behind every front
//! door. API Gateway REST (v1) and ALB events keep only the last of repeated
//! headers; HTTP API (v2) events join them with commas (RFC 9110 §5.3); a
//! direct connection delivers them all. The one reading every transport can
//! honour: the header is a list, and its last item is the value.

use http::HeaderMap;
use http::header::AsHeaderName;

/// The last item of header `name`: the last occurrence, then the text after
/// its last comma, trimmed. `None` when absent; `Some(Err(()))` when the
/// value is not visible ASCII text.
pub fn last_item<K: AsHeaderName>(headers: &HeaderMap, name: K) -> Option<Result<&str, ()>> {
    let value = headers.get_all(name).iter().next_back()?;
    Some(
        value
            .to_str()
            .map(|text| text.rsplit(',').next().unwrap_or_default().trim())
            .map_err(|_| ()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("idempotency-key", HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn repeated_and_comma_joined_values_read_as_their_last_item() {
        assert_eq!(
            last_item(&map(&["a", "b"]), "idempotency-key"),
            Some(Ok("b"))
        );
        assert_eq!(last_item(&map(&["a, b"]), "idempotency-key"), Some(Ok("b")));
        assert_eq!(
            last_item(&map(&["a,b", "c"]), "idempotency-key"),
            Some(Ok("c"))
        );
        assert_eq!(last_item(&map(&["a,"]), "idempotency-key"), Some(Ok("")));
        assert_eq!(last_item(&map(&[]), "idempotency-key"), None);
    }
}
