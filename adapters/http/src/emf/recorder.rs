//! The recorder behind [`super`]: a `metrics` facade recorder that
//! aggregates in memory and writes EMF documents when asked.
//!
//! Written here rather than kept from `metrics_cloudwatch_embedded`, which
//! this module first used: that recorder locks its state on every macro
//! call and keeps at most 100 raw values per histogram between flushes
//! (logging an error per value beyond), so a long-lived handler had to
//! flush after every request, which cost +62 % CPU per request. Here a
//! handle is found under a read lock, counters are atomics, a histogram's
//! values are kept whole between flushes and written 100 to a document (the
//! format's limit), so the Azure handler flushes once a second and Lambda
//! after each invocation.
//!
//! Metric values are `f64` because the `metrics` facade's `HistogramFn`
//! and `GaugeFn` take them; they are times and counts, never money.
#![allow(clippy::disallowed_types, clippy::float_arithmetic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde_json::{Map, Value};

/// The most values one metric holds in one document (EMF's limit).
const VALUES_PER_DOCUMENT: usize = 100;

/// Metric name → its values, for one label set.
type Metrics = BTreeMap<String, Vec<Value>>;

/// A histogram's values since the last flush.
#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value);
    }
}

/// A gauge: the bits of its `f64` value.
#[derive(Default)]
struct GaugeCell(AtomicU64);

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
    fn decrement(&self, value: f64) {
        self.increment(-value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// Handles by key, found under a read lock once made.
struct Handles<T>(RwLock<HashMap<Key, Arc<T>>>);

impl<T: Default> Handles<T> {
    fn new() -> Self {
        Self(RwLock::new(HashMap::new()))
    }

    fn get(&self, key: &Key) -> Arc<T> {
        if let Some(found) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Arc::clone(found);
        }
        let mut all = self.0.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(all.entry(key.clone()).or_default())
    }

    fn each(&self, mut f: impl FnMut(&Key, &T)) {
        for (key, handle) in self.0.read().unwrap_or_else(PoisonError::into_inner).iter() {
            f(key, handle);
        }
    }
}

/// The recorder: every metric of the process, and the document's fixed
/// parts.
pub(super) struct Emf {
    namespace: &'static str,
    fixed: Vec<(&'static str, String)>,
    counters: Handles<AtomicU64>,
    gauges: Handles<GaugeCell>,
    histograms: Handles<Values>,
    units: RwLock<HashMap<String, Unit>>,
}

impl Emf {
    pub(super) fn new(namespace: &'static str, fixed: Vec<(&'static str, String)>) -> Self {
        Self {
            namespace,
            fixed,
            counters: Handles::new(),
            gauges: Handles::new(),
            histograms: Handles::new(),
            units: RwLock::new(HashMap::new()),
        }
    }

    fn describe(&self, key: &KeyName, unit: Option<Unit>) {
        if let Some(unit) = unit {
            self.units
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.as_str().to_owned(), unit);
        }
    }

    /// The documents of what was recorded since the last call, one JSON
    /// line each: one per label set, more when a histogram holds more than
    /// 100 values. Counters that did not move and empty histograms are
    /// left out; gauges are always written.
    pub(super) fn drain(&self, timestamp_ms: u64) -> Vec<u8> {
        // Label set → metric name → values.
        let mut sets: BTreeMap<Vec<(String, String)>, Metrics> = BTreeMap::new();
        let labels = |key: &Key| -> Vec<(String, String)> {
            key.labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect()
        };
        self.counters.each(|key, counter| {
            let n = counter.swap(0, Ordering::Relaxed);
            if n > 0 {
                sets.entry(labels(key))
                    .or_default()
                    .insert(key.name().to_owned(), vec![Value::from(n)]);
            }
        });
        self.gauges.each(|key, gauge| {
            let value = f64::from_bits(gauge.0.load(Ordering::Relaxed));
            sets.entry(labels(key))
                .or_default()
                .insert(key.name().to_owned(), vec![Value::from(value)]);
        });
        self.histograms.each(|key, values| {
            let taken =
                std::mem::take(&mut *values.0.lock().unwrap_or_else(PoisonError::into_inner));
            if !taken.is_empty() {
                sets.entry(labels(key)).or_default().insert(
                    key.name().to_owned(),
                    taken.into_iter().map(Value::from).collect(),
                );
            }
        });
        let units = self.units.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (set, mut metrics) in sets {
            // Each pass writes up to 100 values of every metric.
            while !metrics.is_empty() {
                let mut doc = Map::new();
                let mut dimensions: Vec<Value> = Vec::new();
                for (name, value) in &self.fixed {
                    dimensions.push(Value::from(*name));
                    doc.insert((*name).to_owned(), Value::from(value.as_str()));
                }
                for (name, value) in &set {
                    dimensions.push(Value::from(name.as_str()));
                    doc.insert(name.clone(), Value::from(value.as_str()));
                }
                let mut definitions = Vec::new();
                metrics.retain(|name, values| {
                    let rest = values.split_off(values.len().min(VALUES_PER_DOCUMENT));
                    let these = std::mem::replace(values, rest);
                    let mut definition = Map::new();
                    definition.insert("Name".to_owned(), Value::from(name.as_str()));
                    definition.insert(
                        "Unit".to_owned(),
                        Value::from(units.get(name).map_or("None", |u| unit_name(*u))),
                    );
                    definitions.push(Value::Object(definition));
                    let value = match these.len() {
                        1 => these.into_iter().next().unwrap_or(Value::Null),
                        _ => Value::Array(these),
                    };
                    doc.insert(name.clone(), value);
                    !values.is_empty()
                });
                let directive = serde_json::json!({
                    "Namespace": self.namespace,
                    "Dimensions": [dimensions],
                    "Metrics": definitions,
                });
                doc.insert(
                    "_aws".to_owned(),
                    serde_json::json!({
                        "Timestamp": timestamp_ms,
                        "CloudWatchMetrics": [directive],
                    }),
                );
                if serde_json::to_writer(&mut out, &Value::Object(doc)).is_ok() {
                    out.push(b'\n');
                }
            }
        }
        out
    }
}

/// CloudWatch's name of a unit (`MetricDatum.Unit`).
fn unit_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Count => "Count",
        Unit::Percent => "Percent",
        Unit::Seconds => "Seconds",
        Unit::Milliseconds => "Milliseconds",
        Unit::Microseconds => "Microseconds",
        Unit::Bytes => "Bytes",
        Unit::CountPerSecond => "Count/Second",
        Unit::BitsPerSecond => "Bits/Second",
        _ => "None",
    }
}

/// The facade's view of the shared recorder.
pub(super) struct Shared(pub(super) Arc<Emf>);

impl Recorder for Shared {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.0.describe(&key, unit);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.0.describe(&key, unit);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.0.describe(&key, unit);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.counters.get(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.gauges.get(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.0.histograms.get(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_gauges_become_documents_of_at_most_100_values() {
        let emf = Arc::new(Emf::new("ns", vec![("service", "s".to_owned())]));
        let recorder = Shared(Arc::clone(&emf));
        recorder.describe_histogram(
            KeyName::from("latency"),
            Some(Unit::Microseconds),
            "".into(),
        );
        let meta = Metadata::new("t", metrics::Level::INFO, None);
        let key = Key::from_parts("requests", vec![metrics::Label::new("route", "/a")]);
        recorder.register_counter(&key, &meta).increment(3);
        let latency = Key::from_parts("latency", vec![metrics::Label::new("route", "/a")]);
        for v in 0..150u32 {
            recorder.register_histogram(&latency, &meta).record(v);
        }
        recorder
            .register_gauge(&Key::from_name("backlog"), &meta)
            .set(7u32);
        let text = String::from_utf8(emf.drain(1_700_000_000_000)).unwrap();
        let docs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 3, "{text}");
        let backlog = &docs[0];
        assert_eq!(backlog["backlog"], 7.0);
        assert_eq!(
            backlog["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["service"])
        );
        let first = &docs[1];
        assert_eq!(first["requests"], 3);
        assert_eq!(first["route"], "/a");
        assert_eq!(first["latency"].as_array().unwrap().len(), 100);
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Microseconds"
        );
        assert_eq!(docs[2]["latency"].as_array().unwrap().len(), 50);
        assert!(docs[2].get("requests").is_none());
        // Drained: counters and histograms start again; the gauge stays.
        let again = String::from_utf8(emf.drain(1_700_000_000_001)).unwrap();
        assert_eq!(again.lines().count(), 1, "{again}");
    }
}
