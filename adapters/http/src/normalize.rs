//! One path normalization for every transport, applied before routing:
//! - an encoded slash (`%2F`) is a path separator: API Gateway REST (v1)
//!   events carry only the percent-decoded path, so that is all one of the
//!   front doors can ever see, and every other one must see the same;
//! - dot segments (`.`, `..`, also percent-encoded as `%2e`) are resolved,
//!   as RFC 3986 §5.2.4 and URL parsers do (`lambda_http`'s and Kestrel's
//!   already do; the bare handler must route the same path).

use http::Uri;
use http::uri::PathAndQuery;

fn is_dot(segment: &str) -> bool {
    segment == "." || segment.eq_ignore_ascii_case("%2e")
}

fn is_dot_dot(segment: &str) -> bool {
    matches!(
        segment.to_ascii_lowercase().as_str(),
        ".." | ".%2e" | "%2e." | "%2e%2e"
    )
}

/// Resolves dot segments in `path` (which starts with `/`).
#[must_use]
pub fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.into_iter().enumerate() {
        if is_dot(segment) {
            if i == last {
                out.push("");
            }
        } else if is_dot_dot(segment) {
            out.pop();
            if i == last {
                out.push("");
            }
        } else {
            out.push(segment);
        }
    }
    format!("/{}", out.join("/"))
}

/// `path` with every `%2F` (either case) turned into `/`.
#[must_use]
pub fn decode_slashes(path: &str) -> std::borrow::Cow<'_, str> {
    if path.contains("%2F") || path.contains("%2f") {
        std::borrow::Cow::Owned(path.replace("%2F", "/").replace("%2f", "/"))
    } else {
        std::borrow::Cow::Borrowed(path)
    }
}

/// The request with encoded slashes decoded and dot segments resolved;
/// unchanged when it has neither.
pub(crate) fn normalize<B>(mut request: http::Request<B>) -> http::Request<B> {
    let original = request.uri().path();
    let path = decode_slashes(original);
    let has_dots = path
        .split('/')
        .any(|segment| is_dot(segment) || is_dot_dot(segment));
    if !has_dots && path == original {
        return request;
    }
    let path = remove_dot_segments(&path);
    replace_path(&mut request, &path);
    request
}

/// Replaces the path of `request`'s URI by `path`, keeping the query.
/// Leaves the URI unchanged when `path` is not a valid URI path.
pub fn replace_path<B>(request: &mut http::Request<B>, path: &str) {
    let path_and_query = match request.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::remove_dot_segments as r;

    #[test]
    fn dot_segments_resolve_like_a_url_parser() {
        assert_eq!(r("/inventory/../health"), "/health");
        assert_eq!(r("/./health"), "/health");
        assert_eq!(r("/a/b/./../c"), "/a/c");
        assert_eq!(r("/../../health"), "/health");
        assert_eq!(r("/inventory/sku/%2E%2e/x"), "/inventory/x");
        assert_eq!(r("/inventory/."), "/inventory/");
        assert_eq!(r("/inventory/.."), "/");
        assert_eq!(r("/health"), "/health");
        assert_eq!(r("/a..b/.c/..."), "/a..b/.c/...");
    }

    #[test]
    fn encoded_slashes_become_separators() {
        assert_eq!(super::decode_slashes("/inventory/a%2Fb"), "/inventory/a/b");
        assert_eq!(
            super::decode_slashes("/inventory/a%2fb%252F"),
            "/inventory/a/b%252F"
        );
    }
}
