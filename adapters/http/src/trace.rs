//! The trace context of a request, as W3C Trace Context (`traceparent`)
//! carries it, so that one trace id follows a request through both clouds.
//!
//! - `trace_id` comes from the caller's `traceparent`, else from the X-Ray
//!   root of `x-amzn-trace-id` (API Gateway and Lambda set it) converted to a
//!   W3C trace id as the X-Ray propagators do (`1-5759e988-bd862e3fe1be46a994272793`
//!   → `5759e988bd862e3fe1be46a994272793`), else a new one;
//! - every request gets a span id of its own; the caller's span (when
//!   there is one) is its parent;
//! - the response carries `traceparent` with the trace id and this span.
//!
//! The header grammars are small and exact, so they are parsed here (the
//! W3C one by the core's [`TraceParent`], which events keep) rather than by
//! pulling in an OpenTelemetry SDK for two header formats: the cells keep
//! no exporter, the trace id is a log field.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use twincell_core::EventMetadata;
use twincell_core::trace::{TraceParent, from_hex as unhex, to_hex as hex};

/// The W3C header.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The header API Gateway and Lambda carry X-Ray's trace in.
pub const XRAY_HEADER: &str = "x-amzn-trace-id";

/// A request's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// This request's span: 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// The caller's span, when it sent one.
    pub parent_id: Option<[u8; 8]>,
    /// Whether the caller sampled the trace (`01`); a new trace is.
    pub sampled: bool,
    /// The X-Ray trace id the request came with, as X-Ray writes it.
    pub xray_trace_id: Option<XrayRoot>,
}

/// An X-Ray root id (`1-{8 hex}-{24 hex}`), kept for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XrayRoot([u8; 16]);

impl std::fmt::Display for XrayRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = hex(&self.0);
        let (time, rest) = hex.split_at(8);
        write!(f, "1-{time}-{rest}")
    }
}

impl TraceContext {
    /// The context of a request with these headers: its `traceparent`
    /// when valid, else its X-Ray root, else a new trace. A header that
    /// does not parse is ignored, as the specification asks (a new trace
    /// starts), never refused.
    #[must_use]
    pub fn of(headers: &HeaderMap) -> Self {
        let xray = crate::headers::last_item(headers, XRAY_HEADER)
            .and_then(Result::ok)
            .and_then(parse_xray);
        let w3c = crate::headers::last_item(headers, TRACEPARENT_HEADER)
            .and_then(Result::ok)
            .and_then(TraceParent::parse)
            .map(|t| (t.trace_id(), Some(t.span_id()), t.sampled()));
        let (trace_id, parent_id, sampled) = match (w3c, xray) {
            (Some(w3c), _) => w3c,
            (None, Some((root, parent, sampled))) => (root.0, parent, sampled),
            (None, None) => (new_trace_id(), None, true),
        };
        Self {
            trace_id,
            span_id: new_span_id(),
            parent_id,
            sampled,
            xray_trace_id: xray.map(|(root, ..)| root),
        }
    }

    /// The trace id, 32 lowercase hex digits.
    #[must_use]
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// This request's span id, 16 lowercase hex digits.
    #[must_use]
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The `traceparent` naming this request's span.
    #[must_use]
    pub fn traceparent(&self) -> String {
        self.as_traceparent()
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    /// This request's span as a [`TraceParent`] (`None` only for a
    /// context built by hand with an all-zero id).
    #[must_use]
    pub fn as_traceparent(&self) -> Option<TraceParent> {
        TraceParent::new(self.trace_id, self.span_id, self.sampled)
    }

    /// What the events this request commits keep: its trace and span.
    #[must_use]
    pub fn event_metadata(&self) -> EventMetadata {
        self.as_traceparent()
            .map(EventMetadata::traced)
            .unwrap_or_default()
    }
}

/// `Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled={0|1}`, fields in any
/// order, others ignored.
fn parse_xray(value: &str) -> Option<(XrayRoot, Option<[u8; 8]>, bool)> {
    let mut root = None;
    let mut parent = None;
    let mut sampled = false;
    for field in value.split(';') {
        let Some((key, val)) = field.trim().split_once('=') else {
            continue;
        };
        match key {
            "Root" => {
                let mut parts = val.split('-');
                let (Some("1"), Some(time), Some(rest), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return None;
                };
                if time.len() != 8 || rest.len() != 24 {
                    return None;
                }
                root = Some(XrayRoot(unhex(&format!("{time}{rest}"))?));
            }
            "Parent" => parent = unhex::<8>(val),
            // `?` (not decided yet) and absent are not sampled.
            "Sampled" => sampled = val == "1",
            _ => {}
        }
    }
    let root = root?;
    if root.0 == [0; 16] {
        return None;
    }
    Some((root, parent.filter(|p| *p != [0; 8]), sampled))
}

/// The `traceparent` of an X-Ray trace header that names a parent (the
/// Lambda runtime's `Lambda-Runtime-Trace-Id`, API Gateway's
/// `X-Amzn-Trace-Id`): the same trace, the same parent, its sampling
/// decision. `None` when the header has no valid root or parent.
#[must_use]
pub fn traceparent_from_xray(header: &str) -> Option<String> {
    let (root, parent, sampled) = parse_xray(header)?;
    let parent = parent?;
    TraceParent::new(root.0, parent, sampled).map(|t| t.to_string())
}

/// The X-Ray trace header API Gateway hands on with a request (in the
/// event's headers, and to Lambda as `Lambda-Runtime-Trace-Id`): the
/// caller's root and sampling when its `X-Amzn-Trace-Id` is valid, else a
/// new root (the time part from `now_secs`), and a new parent, the
/// gateway's own segment. For the local API Gateway stand-in.
#[must_use]
pub fn xray_header_for(incoming: Option<&str>, now_secs: u64) -> String {
    let (root, sampled) = match incoming.and_then(parse_xray) {
        Some((root, _, sampled)) => (root, sampled),
        None => {
            let mut id = new_trace_id();
            let time = u32::try_from(now_secs & 0xffff_ffff).unwrap_or_default();
            if let Some(head) = id.get_mut(..4) {
                head.copy_from_slice(&time.to_be_bytes());
            }
            (XrayRoot(id), false)
        }
    };
    format!(
        "Root={root};Parent={};Sampled={}",
        hex(&new_span_id()),
        u8::from(sampled)
    )
}

/// 16 bytes that are unique in practice without asking the kernel for
/// randomness per request: a random value drawn once per process, mixed
/// with a counter by SplitMix64 (full-period, so no two counters give the
/// same output).
pub(crate) fn next_random() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let random = uuid::Uuid::now_v7().as_u128();
        u64::try_from(random & u128::from(u64::MAX)).unwrap_or_default()
    });
    let mut z = seed.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    let (high, low) = id.split_at_mut(8);
    high.copy_from_slice(&next_random().to_be_bytes());
    low.copy_from_slice(&next_random().to_be_bytes());
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

fn new_span_id() -> [u8; 8] {
    let id = next_random().to_be_bytes();
    if id == [0; 8] {
        [0, 0, 0, 0, 0, 0, 0, 1]
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::HeaderValue;

    use super::*;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn a_callers_traceparent_is_continued_under_a_span_of_its_own() {
        let ctx = TraceContext::of(&with(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]));
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_id, unhex::<8>("00f067aa0ba902b7"));
        assert_ne!(ctx.span_id_hex(), "00f067aa0ba902b7");
        assert!(ctx.sampled);
        let out = ctx.traceparent();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "{out}");
        assert_eq!(out.len(), 55);
    }

    #[test]
    fn an_xray_root_becomes_the_trace_id_when_there_is_no_traceparent() {
        let headers = with(&[(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
        )]);
        let ctx = TraceContext::of(&headers);
        assert_eq!(ctx.trace_id_hex(), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(ctx.parent_id, unhex::<8>("53995c3f42cd8ad8"));
        assert!(!ctx.sampled);
        assert_eq!(
            ctx.xray_trace_id.unwrap().to_string(),
            "1-5759e988-bd862e3fe1be46a994272793"
        );
        // A traceparent wins over X-Ray; the X-Ray id is still kept.
        let mut both = headers.clone();
        both.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let ctx = TraceContext::of(&both);
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(ctx.xray_trace_id.is_some());
    }

    #[test]
    fn an_invalid_header_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
            "",
        ] {
            let headers: HeaderMap = [(
                http::HeaderName::from_static("traceparent"),
                HeaderValue::from_str(bad).unwrap(),
            )]
            .into_iter()
            .collect();
            let ctx = TraceContext::of(&headers);
            assert_ne!(
                ctx.trace_id_hex(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
            assert_eq!(ctx.parent_id, None, "{bad}");
            assert_ne!(ctx.trace_id, [0; 16]);
        }
        // A later version is read by its first four fields.
        let ctx = TraceContext::of(&with(&[(
            "traceparent",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
        )]));
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // A bad X-Ray root likewise.
        let ctx = TraceContext::of(&with(&[("x-amzn-trace-id", "Root=1-zz-yy")]));
        assert_eq!(ctx.xray_trace_id, None);
        assert_eq!(ctx.parent_id, None);
    }

    #[test]
    fn the_gateway_continues_a_callers_xray_root_or_starts_one() {
        let header = xray_header_for(
            Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"),
            0,
        );
        assert!(
            header.starts_with("Root=1-5759e988-bd862e3fe1be46a994272793;Parent="),
            "{header}"
        );
        assert!(header.ends_with(";Sampled=1"), "{header}");
        let fresh = xray_header_for(Some("Root=nonsense"), 0x6750_0000);
        assert!(fresh.starts_with("Root=1-67500000-"), "{fresh}");
        // What it makes reads back, and becomes a traceparent.
        let traceparent = traceparent_from_xray(&fresh).unwrap();
        assert!(traceparent.starts_with("00-67500000"), "{traceparent}");
        assert_ne!(
            xray_header_for(None, 0x6750_0000),
            xray_header_for(None, 0x6750_0000)
        );
    }

    #[test]
    fn new_ids_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let ctx = TraceContext::of(&HeaderMap::new());
            assert!(seen.insert(ctx.trace_id));
            assert!(seen.insert([ctx.span_id, [0; 8]].concat().try_into().unwrap()));
        }
    }
}
