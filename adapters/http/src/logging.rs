//! One log shape in both cells: a JSON object per line with every field at
//! the top level, named after Powertools for AWS Lambda's Logger keys where
//! one exists, so that one CloudWatch Logs Insights query and one Kusto
//! query read either cloud's lines.
//!
//! | field | holds |
//! |---|---|
//! | `timestamp`, `level`, `message` | RFC 3339 UTC; `INFO` …; the line's text |
//! | `service` | `TWINCELL_SERVICE_NAME`, else `POWERTOOLS_SERVICE_NAME`, else `twincell` |
//! | `cold_start` | `true` on the first request this process serves |
//! | `function_name` | `AWS_LAMBDA_FUNCTION_NAME`, else `WEBSITE_SITE_NAME` (the function app), else the binary's name |
//! | `function_request_id` | the Lambda request id; the Functions invocation id (`X-Azure-Functions-InvocationId`) |
//! | `xray_trace_id` | the X-Ray trace the request came with, where there is one |
//! | `cell`, `trace_id`, `span_id`, `request_id` | the cell; the request's trace ([`crate::trace`]) and `x-request-id` |
//! | `route`, `method`, `status`, `latency_ms` | the matched route template (never the raw path), the method, the answer's status and time |
//! | `caller.sub` | the token's subject, once one is checked |
//! | `origin_cell`, `event_id`, `event_type` | on a replicated event's apply line |
//!
//! The request's fields are those of its span, so every line logged while
//! it is served carries them, the store SDKs' lines included; a line's own
//! field wins over a span's of the same name (the apply line's `trace_id`
//! is the committing request's, not the delivery's). No token, key or body
//! is ever a field.
//!
//! The lines are written by `tracing-flat-json`, a kept `tracing` layer that
//! flattens event and span fields onto one object.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Where a binary's log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    /// Stdout: the Functions host's log stream (the Azure handler).
    Stdout,
    /// Stdout, as the Lambda platform's log settings say: the level of
    /// `AWS_LAMBDA_LOG_LEVEL` when `RUST_LOG` is not set, and plain text
    /// when `AWS_LAMBDA_LOG_FORMAT` is `Text` (JSON otherwise).
    Lambda,
    /// Stderr: a local tool, whose stdout carries its own answers.
    Stderr,
}

/// The id of the platform's invocation that carries a request (the Lambda
/// request id, the Functions invocation id), put in the request's
/// extensions by the binary that knows it; logged as
/// `function_request_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRequestId(pub String);

impl FunctionRequestId {
    /// `value` when it is 1–128 visible ASCII characters (a header a
    /// caller could have set is never logged unchecked).
    #[must_use]
    pub fn checked(value: &str) -> Option<Self> {
        ((1..=128).contains(&value.len()) && value.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .then(|| Self(value.to_owned()))
    }
}

/// The fields every request line of this process carries, read from the
/// environment once.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) service: String,
    pub(crate) function_name: String,
}

pub(crate) fn process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        Process {
            service: var("TWINCELL_SERVICE_NAME")
                .or_else(|| var("POWERTOOLS_SERVICE_NAME"))
                .unwrap_or_else(|| "twincell".to_owned()),
            function_name: var("AWS_LAMBDA_FUNCTION_NAME")
                .or_else(|| var("WEBSITE_SITE_NAME"))
                .or(binary)
                .unwrap_or_else(|| "twincell".to_owned()),
        }
    })
}

/// The span every request's span is a child of: the process's own fields
/// (`service`, `function_name`), recorded once rather than per request.
pub(crate) fn process_span() -> &'static tracing::Span {
    static SPAN: OnceLock<tracing::Span> = OnceLock::new();
    SPAN.get_or_init(|| {
        let process = process();
        tracing::info_span!(
            parent: None,
            "process",
            service = process.service.as_str(),
            function_name = process.function_name.as_str(),
        )
    })
}

/// `true` the first time it is called in this process.
pub(crate) fn cold_start() -> bool {
    static WARM: AtomicBool = AtomicBool::new(false);
    !WARM.swap(true, Ordering::Relaxed)
}

/// The default filter: `info`, and the Cosmos DB SDK (which logs its
/// routing at info) at `warn`.
const DEFAULT_FILTER: &str =
    "info,azure_core=warn,azure_data_cosmos=warn,azure_data_cosmos_driver=warn";

/// The one log set-up of every binary: flat JSON lines ([the module
/// docs](self)), at the level `RUST_LOG` names, else the platform's (Lambda),
/// else `info`. Call once, first thing in `main`.
pub fn init_logs(to: LogTo) {
    let lambda_level = (to == LogTo::Lambda)
        .then(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok())
        .flatten()
        .and_then(|level| lambda_filter(&level));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(lambda_level.as_deref().unwrap_or(DEFAULT_FILTER))
    });
    // The runtime's own span repeats the invocation's ids under other names
    // (`requestId`, `xrayTraceId`): `function_request_id` and
    // `xray_trace_id` carry them, so it stays out of the lines.
    let filter = match "lambda_runtime::layers::trace=warn".parse() {
        Ok(directive) if to == LogTo::Lambda => filter.add_directive(directive),
        _ => filter,
    };
    let text = to == LogTo::Lambda
        && std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match to {
        LogTo::Lambda if text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .without_time(),
            )
            .try_init(),
        LogTo::Stdout | LogTo::Lambda => registry
            .with(tracing_flat_json::FlatJsonLayer::new(std::io::stdout))
            .try_init(),
        LogTo::Stderr => registry
            .with(tracing_flat_json::FlatJsonLayer::new(std::io::stderr))
            .try_init(),
    };
    let _ = process();
}

/// The filter of a Lambda log level (`TRACE` … `FATAL`, as the platform's
/// advanced logging controls name them), the SDKs' chatter capped as by
/// default.
fn lambda_filter(level: &str) -> Option<String> {
    let level = match level.trim().to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" => "warn",
        "ERROR" | "FATAL" => "error",
        _ => return None,
    };
    Some(DEFAULT_FILTER.replacen("info", level, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_levels_map_to_filters_and_others_are_ignored() {
        assert_eq!(
            lambda_filter("debug").as_deref(),
            Some("debug,azure_core=warn,azure_data_cosmos=warn,azure_data_cosmos_driver=warn")
        );
        assert!(lambda_filter("FATAL").is_some_and(|f| f.starts_with("error,")));
        assert_eq!(lambda_filter("loud"), None);
    }

    #[test]
    fn an_invocation_id_is_kept_only_when_it_is_plain_text() {
        assert!(FunctionRequestId::checked("e5d8c1a0-0000-4000-8000-000000000001").is_some());
        assert!(FunctionRequestId::checked("").is_none());
        assert!(FunctionRequestId::checked("a b").is_none());
        assert!(FunctionRequestId::checked(&"x".repeat(129)).is_none());
    }
}
