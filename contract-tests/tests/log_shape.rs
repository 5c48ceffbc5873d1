//! One log shape in both cells: the same requests through the Azure
//! `handler` and the Lambda `api`, both real processes, give log lines with
//! the same fields and, but for those of the cell and its platform, the
//! same values; and no line holds a request's body. Both write the same
//! metrics for the same requests, as CloudWatch Embedded Metric Format
//! documents that keep the specification's rules.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use twincell_contract::case::HttpRequest;
use twincell_contract::lambda_events::Shape;
use twincell_contract::target::{AzureProcess, LambdaProcess, Target};

/// Fields whose values are the cell's or its platform's own (Lambda hands
/// the function an X-Ray trace of its own making when the invocation did
/// not come with one, as under the Runtime API emulator here).
const PER_CELL: [&str; 7] = [
    "timestamp",
    "xray_trace_id",
    "cell",
    "function_name",
    "function_request_id",
    "span_id",
    "latency_ms",
];

/// The Powertools Logger keys and twincell's own that every line of a
/// request that matched a route carries.
const REQUIRED: [&str; 16] = [
    "level",
    "message",
    "timestamp",
    "service",
    "cold_start",
    "function_name",
    "function_request_id",
    "xray_trace_id",
    "cell",
    "trace_id",
    "span_id",
    "request_id",
    "route",
    "method",
    "status",
    "latency_ms",
];

fn request(n: usize, method: &str, path: &str, body: &str, key: Option<&str>) -> HttpRequest {
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-request-id".to_owned(), format!("log-shape-{n}")),
        (
            "traceparent".to_owned(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e47{n:02}-00f067aa0ba902b7-01"),
        ),
        (
            "x-amzn-trace-id".to_owned(),
            format!("Root=1-5759e988-bd862e3fe1be46a9942727{n:02};Sampled=1"),
        ),
        // What the Functions host adds to every request it forwards; the
        // AWS cell takes the Lambda request id instead.
        (
            "x-azure-functions-invocationid".to_owned(),
            format!("0d6f5a5e-0000-4000-8000-0000000000{n:02}"),
        ),
    ];
    if let Some(key) = key {
        headers.push(("idempotency-key".to_owned(), key.to_owned()));
    }
    HttpRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// The units CloudWatch accepts (`MetricDatum.Unit`).
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// One metric directive: its namespace, its dimension sets with their
/// values, its metrics with their values.
pub(crate) type Directive = (
    String,
    Vec<Vec<(String, String)>>,
    Vec<(String, Vec<Value>)>,
);

/// Checks `doc` against the Embedded Metric Format specification's rules
/// and gives its directives.
fn emf(doc: &Value) -> Vec<Directive> {
    let aws = doc["_aws"].as_object().expect("_aws is an object");
    let timestamp = aws["Timestamp"]
        .as_u64()
        .expect("Timestamp: milliseconds since the epoch");
    assert!(timestamp > 1_600_000_000_000, "{doc}");
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .expect("CloudWatchMetrics is an array");
    assert!(!directives.is_empty(), "{doc}");
    let mut out = Vec::new();
    for directive in directives {
        let namespace = directive["Namespace"].as_str().expect("a Namespace string");
        assert!((1..=255).contains(&namespace.len()), "{doc}");
        let mut sets = Vec::new();
        for set in directive["Dimensions"]
            .as_array()
            .expect("Dimensions is an array")
        {
            let set = set.as_array().expect("a DimensionSet is an array");
            assert!(set.len() <= 30, "at most 30 dimensions: {doc}");
            let mut values = Vec::new();
            for name in set {
                let name = name.as_str().expect("a dimension is named by a string");
                let value = doc[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("dimension {name} is not a string member: {doc}"));
                assert!((1..=1024).contains(&value.len()), "{doc}");
                values.push((name.to_owned(), value.to_owned()));
            }
            sets.push(values);
        }
        let metrics = directive["Metrics"]
            .as_array()
            .expect("Metrics is an array");
        assert!(
            !metrics.is_empty() && metrics.len() <= 100,
            "1 to 100 metrics: {doc}"
        );
        let mut named = Vec::new();
        for metric in metrics {
            let name = metric["Name"].as_str().expect("a metric Name");
            assert!((1..=255).contains(&name.len()), "{doc}");
            if let Some(unit) = metric.get("Unit") {
                assert!(
                    UNITS.contains(&unit.as_str().unwrap_or("")),
                    "unit {unit}: {doc}"
                );
            }
            if let Some(resolution) = metric.get("StorageResolution") {
                assert!(resolution == 1 || resolution == 60, "{doc}");
            }
            let values = match &doc[name] {
                number @ Value::Number(_) => vec![number.clone()],
                Value::Array(items) => {
                    assert!(
                        !items.is_empty() && items.len() <= 100,
                        "1 to 100 values: {doc}"
                    );
                    assert!(items.iter().all(Value::is_number), "{doc}");
                    items.clone()
                }
                Value::Object(histogram) => {
                    aggregated(histogram, doc);
                    vec![doc[name].clone()]
                }
                other => panic!("metric {name} has no numeric member ({other}): {doc}"),
            };
            named.push((name.to_owned(), values));
        }
        out.push((namespace.to_owned(), sets, named));
    }
    out
}

/// Checks an aggregated value, `{"Values", "Counts", "Max", "Min",
/// "Count", "Sum"}` (the form of CloudWatch's `PutMetricData` and of the
/// OpenTelemetry EMF exporter's histograms): 1 to 100 values with a count
/// each, the counts adding up to `Count`, every value and the sum within
/// what `Min` and `Max` allow.
// Metric values are JSON numbers (times and counts, never money).
#[allow(
    clippy::disallowed_types,
    clippy::float_arithmetic,
    clippy::as_conversions,
    clippy::cast_precision_loss
)]
fn aggregated(histogram: &serde_json::Map<String, Value>, doc: &Value) {
    let mut keys: Vec<&str> = histogram.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["Count", "Counts", "Max", "Min", "Sum", "Values"],
        "{doc}"
    );
    let numbers = |name: &str| -> Vec<f64> {
        histogram[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an array: {doc}"))
            .iter()
            .map(|v| {
                v.as_f64()
                    .unwrap_or_else(|| panic!("{name}: numbers: {doc}"))
            })
            .collect()
    };
    let (values, counts) = (numbers("Values"), numbers("Counts"));
    assert!(
        (1..=100).contains(&values.len()) && values.len() == counts.len(),
        "1 to 100 values, a count each: {doc}"
    );
    let number = |name: &str| {
        histogram[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} is a number: {doc}"))
    };
    let (min, max, sum) = (number("Min"), number("Max"), number("Sum"));
    let count = histogram["Count"].as_u64().expect("Count: a whole number");
    assert!(counts.iter().all(|c| *c >= 1.0), "{doc}");
    assert_eq!(counts.iter().sum::<f64>(), count as f64, "{doc}");
    assert!(min <= max, "{doc}");
    assert!(values.iter().all(|v| (min..=max).contains(v)), "{doc}");
    let n = count as f64;
    assert!(
        min * n <= sum + 1e-9 && sum <= max * n + 1e-9,
        "a possible sum: {doc}"
    );
}

/// The EMF documents of `path`, in order.
fn metric_documents(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

/// The lines of `path` of the requests this test sent, by request id.
fn lines(path: &Path) -> BTreeMap<String, Vec<Value>> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        !text.contains("acct-log-shape") && !text.contains("\"quantity\""),
        "a body reached the log: {text}"
    );
    let mut by_request: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in text.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        if value.get("_aws").is_some() {
            continue;
        }
        for (key, field) in value.as_object().unwrap() {
            assert!(
                !field.is_object() && !field.is_array(),
                "{key} is nested: {line}"
            );
        }
        if let Some(id) = value["request_id"]
            .as_str()
            .filter(|id| id.starts_with("log-shape-"))
        {
            by_request.entry(id.to_owned()).or_default().push(value);
        }
    }
    by_request
}

async fn run(target: &dyn Target, requests: &[HttpRequest]) -> Vec<u16> {
    let mut session = target.session().await.unwrap();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(session.send(r).await.unwrap().status);
    }
    // The handler writes its metrics once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    drop(session);
    // The processes are gone (killed on drop); their last lines are written.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_cells_log_the_same_fields_and_values_for_the_same_requests() {
    let dir = std::env::temp_dir().join(format!(
        "twincell-log-shape-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (azure_log, aws_log) = (dir.join("azure.log"), dir.join("aws.log"));
    let payment = r#"{"account_id": "acct-log-shape", "amount": "19.90", "currency": "USD"}"#;
    let requests = [
        request(1, "POST", "/transactions", payment, Some("log-shape-key")),
        request(2, "POST", "/transactions", payment, Some("log-shape-key")),
        request(
            3,
            "POST",
            "/inventory/sku-log/receipts",
            r#"{"quantity": 5}"#,
            Some("log-shape-receipt"),
        ),
        request(4, "GET", "/inventory/sku-log", "", None),
        request(
            5,
            "POST",
            "/inventory/sku-log/reservations",
            r#"{"quantity": 0}"#,
            None,
        ),
        request(6, "GET", "/no/such/route", "", None),
    ];
    let azure = AzureProcess::new("azure", "aws").with_log_file(&azure_log);
    let aws = LambdaProcess::new(Shape::HttpV2, "aws", "azure").with_log_file(&aws_log);
    let azure_statuses = run(&azure, &requests).await;
    let aws_statuses = run(&aws, &requests).await;
    assert_eq!(azure_statuses, [201, 201, 200, 200, 422, 404]);
    assert_eq!(aws_statuses, azure_statuses);

    let (azure, aws) = (lines(&azure_log), lines(&aws_log));
    assert_eq!(
        azure.keys().collect::<Vec<_>>(),
        aws.keys().collect::<Vec<_>>(),
        "the same requests logged"
    );
    assert_eq!(azure.len(), requests.len());
    for (id, azure_lines) in &azure {
        let aws_lines = &aws[id];
        assert_eq!(
            azure_lines.len(),
            aws_lines.len(),
            "{id}: {azure_lines:?}\n{aws_lines:?}"
        );
        for (a, b) in azure_lines.iter().zip(aws_lines) {
            let keys = |v: &Value| {
                v.as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect::<BTreeSet<_>>()
            };
            assert_eq!(keys(a), keys(b), "{id}: the same fields\n{a}\n{b}");
            for (key, value) in a.as_object().unwrap() {
                if !PER_CELL.contains(&key.as_str()) {
                    assert_eq!(value, &b[key], "{id}: {key}\n{a}\n{b}");
                }
            }
            assert_eq!(a["cell"], "azure");
            assert_eq!(b["cell"], "aws");
            assert_ne!(a["span_id"], b["span_id"], "each cell's own span");
        }
        let served = azure_lines
            .iter()
            .find(|l| l["message"] == "request served")
            .unwrap_or_else(|| panic!("{id}: no request served line"));
        let required: &[&str] = if id == "log-shape-6" {
            &REQUIRED[..12]
        } else {
            &REQUIRED
        };
        for field in required {
            assert!(!served[*field].is_null(), "{id}: no {field}: {served}");
        }
    }
    // The values a query would select on.
    let first = &azure["log-shape-1"][0];
    assert_eq!(first["cold_start"], true);
    assert_eq!(first["route"], "/transactions");
    assert_eq!(first["status"], 201);
    assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4701");
    assert_eq!(
        first["xray_trace_id"],
        "1-5759e988-bd862e3fe1be46a994272701"
    );
    assert_eq!(azure["log-shape-2"][0]["cold_start"], false);
    assert_eq!(azure["log-shape-4"][0]["route"], "/inventory/{sku}");
    assert_eq!(
        azure["log-shape-1"][0]["function_request_id"],
        "0d6f5a5e-0000-4000-8000-000000000001"
    );
    assert_ne!(
        aws["log-shape-1"][0]["function_request_id"], "0d6f5a5e-0000-4000-8000-000000000001",
        "the Lambda request id, not a header"
    );

    // The metrics: every document keeps EMF's rules and carries the
    // dimensions its metrics are declared with (what the dashboards query
    // by), and both cells recorded the same for the same requests: the
    // same counts, the same number of times (the Lambda writes after each
    // invocation, the handler once a second, so the documents differ in
    // how they group, not in what they add up to).
    let totals = |path: &Path| -> BTreeMap<(String, Vec<(String, String)>), u64> {
        let mut totals = BTreeMap::new();
        for doc in metric_documents(path) {
            for (namespace, sets, metrics) in emf(&doc) {
                assert_eq!(namespace, "twincell", "{doc}");
                for (name, values) in metrics {
                    let (_, extra) = twincell_http::emf::DOCUMENTS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .unwrap_or_else(|| panic!("{name} is not declared in emf::DOCUMENTS"));
                    let declared: Vec<&str> = ["service", "cell"]
                        .into_iter()
                        .chain(extra.iter().copied())
                        .collect();
                    let written: Vec<&str> = sets[0].iter().map(|(k, _)| k.as_str()).collect();
                    assert_eq!(written, declared, "{doc}");
                    let dimensions: Vec<(String, String)> = sets[0]
                        .iter()
                        .filter(|(k, _)| k != "cell")
                        .cloned()
                        .collect();
                    assert_eq!(
                        values.iter().all(Value::is_object),
                        twincell_http::emf::HISTOGRAMS.contains(&name.as_str()),
                        "a histogram is written aggregated, a count as a number: {doc}"
                    );
                    // A histogram adds its count, a counter its count.
                    let added: u64 = values
                        .iter()
                        .map(|v| v.get("Count").unwrap_or(v).as_u64().unwrap())
                        .sum();
                    *totals.entry((name, dimensions)).or_insert(0) += added;
                }
            }
        }
        totals
    };
    let azure_totals = totals(&azure_log);
    assert_eq!(azure_totals, totals(&aws_log));
    let count = |metric: &str, dimensions: &[(&str, &str)]| {
        let mut key: Vec<(String, String)> = vec![("service".into(), "twincell".into())];
        key.extend(
            dimensions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        azure_totals
            .get(&(metric.to_owned(), key))
            .copied()
            .unwrap_or(0)
    };
    for (route, class, n) in [
        ("/transactions", "2xx", 2),
        ("/inventory/{sku}/receipts", "2xx", 1),
        ("/inventory/{sku}", "2xx", 1),
        ("/inventory/{sku}/reservations", "4xx", 1),
        ("unmatched", "4xx", 1),
    ] {
        let at = [("route", route), ("status_class", class)];
        assert_eq!(
            count("requests", &at),
            n,
            "{route} {class}: {azure_totals:?}"
        );
        assert_eq!(count("latency", &at), n, "{route} {class}");
    }
    assert_eq!(count("cold_starts", &[]), 1, "one cold start");
    assert_eq!(
        count("store_calls", &[("op", "append")]),
        2,
        "the payment and the receipt, each one append"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
