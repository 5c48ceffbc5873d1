//! The recorder behind [`super`]: a `metrics` facade recorder that
//! aggregates in memory and writes EMF documents when asked.
//!
//! Written here rather than kept from `metrics_cloudwatch_embedded`, which
//! this module first used: that recorder locks its state on every macro
//! call and keeps at most 100 raw values per histogram between flushes
//! (logging an error per value beyond), so a long-lived handler had to
//! flush after every request, which cost +62 % CPU per request. Here a
//! handle is found under a read lock (the hot paths keep theirs), counters
//! and gauges are atomics, and a histogram is kept as counts per bin (16
//! per power of two) with its exact count, sum, least and greatest value,
//! so a second of a busy cell is one document per label set whatever the
//! number of requests, and the Azure handler flushes once a second, Lambda
//! after each invocation. A series' label members are written as JSON once,
//! when its handle is made, and a flush writes text straight from them (a
//! `serde_json::Value` tree per document cost a Lambda 17 µs per
//! invocation; this, under 3).
//!
//! A histogram is written as EMF's aggregated form, `{"Values": [...],
//! "Counts": [...], "Max", "Min", "Count", "Sum"}` with at most 100 values:
//! the form CloudWatch takes from the OpenTelemetry Collector's EMF exporter
//! (`exporter/awsemfexporter`, `cWMetricHistogram`, which also keeps to 100
//! values since open-telemetry/opentelemetry-collector-contrib#36336)
//! and from AWS's `aws-embedded-metrics-java` (`HistogramMetric`); it
//! mirrors `PutMetricData`'s `Values`/`Counts`/`StatisticValues`.
//!
//! Metric values are `f64` because the `metrics` facade's `HistogramFn`
//! and `GaugeFn` take them; they are times and counts, never money.
#![allow(clippy::disallowed_types, clippy::float_arithmetic)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// The most values one metric holds in one document (EMF's limit on a
/// target member; a histogram's bins count as its values).
const VALUES_PER_DOCUMENT: usize = 100;

/// Sub-bins per power of two at full resolution: a value is kept within
/// 1/16 (6.25 %) of itself.
const SUB_BITS: u32 = 4;
/// Powers of two kept: values from 1 to 2^64 (larger ones go to the last
/// bin; smaller ones, 0 among them, to bin 0).
const POWERS: u64 = 64;
/// Bin 0 (below 1), then 16 bins per power of two.
const BINS: usize = 1 + 64 * (1 << SUB_BITS);
/// How many times the bins may be halved to fit a document: at 4, one bin
/// per power of two, 65 at most, within the 100.
const MAX_COARSENING: u32 = SUB_BITS;

/// The bin of `value` (finite, not negative): its power of two and the top
/// four bits of its mantissa, read from its bits.
fn bin_of(value: f64) -> u64 {
    if value < 1.0 {
        return 0;
    }
    let bits = value.to_bits();
    let power = ((bits >> 52) & 0x7ff).saturating_sub(1023);
    if power >= POWERS {
        return POWERS << SUB_BITS;
    }
    let sub = (bits >> (52 - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    1 + (power << SUB_BITS) + sub
}

/// The midpoint of bin `bin` (`bin_of`'s numbering) merged with its
/// neighbours into bins of `1 << coarsening` sub-bins.
fn midpoint(bin: u64, coarsening: u32) -> f64 {
    if bin == 0 {
        return 0.5;
    }
    let power = (bin - 1) >> SUB_BITS;
    let sub = ((bin - 1) & ((1 << SUB_BITS) - 1)) >> coarsening << coarsening;
    let width = 1u64 << coarsening;
    let scale = f64::from_bits((power + 1023) << 52);
    let subs = f64::from(1u32 << SUB_BITS);
    // sub and width are at most 16: exact as u32.
    let low = f64::from(u32::try_from(sub).unwrap_or(0));
    let span = f64::from(u32::try_from(width).unwrap_or(1));
    scale * (1.0 + (low + span / 2.0) / subs)
}

/// What a histogram holds between flushes: counts per bin, and the exact
/// count, sum, least and greatest value.
#[derive(Default)]
struct Binned {
    bins: Vec<u64>,
    /// The lowest and highest bin recorded in since the last take: what a
    /// take reads (a second's values fill a few bins of the 1 025).
    touched: Option<(usize, usize)>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Binned {
    fn record(&mut self, value: f64) {
        if self.bins.is_empty() {
            self.bins = vec![0; BINS];
        }
        let bin = usize::try_from(bin_of(value)).unwrap_or(BINS - 1);
        if let Some(n) = self.bins.get_mut(bin) {
            *n += 1;
            self.touched = Some(match self.touched {
                None => (bin, bin),
                Some((low, high)) => (low.min(bin), high.max(bin)),
            });
        }
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
    }

    /// The EMF value (JSON text) of what was recorded, or `None` when
    /// nothing was:
    /// `{"Values", "Counts", "Max", "Min", "Count", "Sum"}` with at most
    /// 100 values (bins halved until they fit); each value is its bin's
    /// midpoint, within the least and greatest value seen; the count, sum,
    /// least and greatest are exact. Resets.
    fn take(&mut self) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let (low, high) = self.touched.take().unwrap_or((0, BINS - 1));
        let taken: Vec<(u64, u64)> = self
            .bins
            .get_mut(low..=high)
            .unwrap_or_default()
            .iter_mut()
            .zip(u64::try_from(low).unwrap_or(0)..)
            .filter(|(n, _)| **n > 0)
            .map(|(n, bin)| (bin, std::mem::take(n)))
            .collect();
        let mut coarsening = 0;
        let merged = loop {
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for &(bin, n) in &taken {
                // Bin 0 stays apart; the others merge within their power
                // of two.
                let key = if bin == 0 {
                    0
                } else {
                    1 + ((bin - 1) >> coarsening)
                };
                match merged.last_mut() {
                    Some((last, count)) if *last == key => *count += n,
                    _ => merged.push((key, n)),
                }
            }
            if merged.len() <= VALUES_PER_DOCUMENT || coarsening >= MAX_COARSENING {
                break merged;
            }
            coarsening += 1;
        };
        let (min, max) = (self.min, self.max);
        let mut out = String::with_capacity(48 + merged.len() * 16);
        out.push_str("{\"Values\":[");
        for (i, (key, _)) in merged.iter().enumerate() {
            let first = if *key == 0 {
                0
            } else {
                1 + ((key - 1) << coarsening)
            };
            if i > 0 {
                out.push(',');
            }
            push_number(&mut out, midpoint(first, coarsening).clamp(min, max));
        }
        out.push_str("],\"Counts\":[");
        for (i, (_, n)) in merged.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{n}");
        }
        out.push_str("],\"Max\":");
        push_number(&mut out, max);
        out.push_str(",\"Min\":");
        push_number(&mut out, min);
        let _ = write!(out, ",\"Count\":{},\"Sum\":", self.count);
        push_number(&mut out, self.sum);
        out.push('}');
        self.count = 0;
        self.sum = 0.0;
        Some(out)
    }
}

/// A JSON number of `value`, always with a fraction or an exponent (so it
/// reads back as the double it is); 0 for what JSON has no number for.
fn push_number(out: &mut String, value: f64) {
    if value.is_finite() {
        let _ = write!(out, "{value:?}");
    } else {
        out.push_str("0.0");
    }
}

/// A histogram: binned, behind a lock held for a few additions.
#[derive(Default)]
struct Values(Mutex<Binned>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        // What no histogram value can be: not a number, infinite, below 0.
        if !value.is_finite() || value < 0.0 {
            return;
        }
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(value);
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

/// What a document says of one series (a metric and its labels), made
/// once when its handle is: the JSON text of its label members and of
/// their names as dimensions, and its name.
struct Series {
    name: String,
    /// The name as a JSON string.
    name_json: String,
    /// `,"route":"/a","status_class":"2xx"`
    members: String,
    /// `,"route","status_class"`
    dimensions: String,
}

impl Series {
    fn of(key: &Key) -> Self {
        let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        let (mut members, mut dimensions) = (String::new(), String::new());
        for label in key.labels() {
            let name = text(label.key());
            let _ = write!(members, ",{name}:{}", text(label.value()));
            let _ = write!(dimensions, ",{name}");
        }
        Self {
            name: key.name().to_owned(),
            name_json: text(key.name()),
            members,
            dimensions,
        }
    }
}

/// A handle and the series it records.
type Entry<T> = (Arc<T>, Arc<Series>);

/// Handles by key, found under a read lock once made.
struct Handles<T>(RwLock<HashMap<Key, Entry<T>>>);

impl<T: Default> Handles<T> {
    fn new() -> Self {
        Self(RwLock::new(HashMap::new()))
    }

    fn get(&self, key: &Key) -> Arc<T> {
        if let Some((found, _)) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return Arc::clone(found);
        }
        let mut all = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let (handle, _) = all
            .entry(key.clone())
            .or_insert_with(|| (Arc::default(), Arc::new(Series::of(key))));
        Arc::clone(handle)
    }

    /// The series whose `value` has something to write, with that value's
    /// JSON text.
    fn each(
        &self,
        mut value: impl FnMut(&T) -> Option<String>,
        into: &mut Vec<(Arc<Series>, String)>,
    ) {
        for (handle, series) in self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            if let Some(text) = value(handle) {
                into.push((Arc::clone(series), text));
            }
        }
    }
}

/// The recorder: every metric of the process, and the document's fixed
/// parts.
pub(super) struct Emf {
    namespace: String,
    /// `"service":"twincell","cell":"aws"`
    fixed_members: String,
    /// `"service","cell"`
    fixed_dimensions: String,
    counters: Handles<AtomicU64>,
    gauges: Handles<GaugeCell>,
    histograms: Handles<Values>,
    units: RwLock<HashMap<String, Unit>>,
}

impl Emf {
    pub(super) fn new(namespace: &'static str, fixed: Vec<(&'static str, String)>) -> Self {
        let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        let members: Vec<String> = fixed
            .iter()
            .map(|(name, value)| format!("{}:{}", text(name), text(value)))
            .collect();
        let dimensions: Vec<String> = fixed.iter().map(|(name, _)| text(name)).collect();
        Self {
            namespace: text(namespace),
            fixed_members: members.join(","),
            fixed_dimensions: dimensions.join(","),
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
    /// line per label set, each metric in it once: a counter its count, a
    /// gauge its value, a histogram its bins ([`Binned::take`]). Counters
    /// that did not move and empty histograms are left out; gauges are
    /// always written. Written as text straight from what each series
    /// keeps (a Lambda does this after every invocation).
    pub(super) fn drain(&self, timestamp_ms: u64) -> Vec<u8> {
        let mut series: Vec<(Arc<Series>, String)> = Vec::new();
        self.counters.each(
            |counter| match counter.swap(0, Ordering::Relaxed) {
                0 => None,
                n => Some(n.to_string()),
            },
            &mut series,
        );
        self.gauges.each(
            |gauge| {
                let mut text = String::new();
                push_number(&mut text, f64::from_bits(gauge.0.load(Ordering::Relaxed)));
                Some(text)
            },
            &mut series,
        );
        self.histograms.each(
            |values| {
                values
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
            },
            &mut series,
        );
        // One document per label set, its metrics by name.
        series.sort_by(|(a, _), (b, _)| (&a.members, &a.name).cmp(&(&b.members, &b.name)));
        let units = self.units.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for set in series.chunk_by(|(a, _), (b, _)| a.members == b.members) {
            let Some((first, _)) = set.first() else {
                continue;
            };
            let _ = write!(
                out,
                "{{\"_aws\":{{\"Timestamp\":{timestamp_ms},\"CloudWatchMetrics\":[{{\"Namespace\":{},\"Dimensions\":[[{}{}]],\"Metrics\":[",
                self.namespace, self.fixed_dimensions, first.dimensions
            );
            for (i, (metric, _)) in set.iter().enumerate() {
                let unit = units.get(&metric.name).map_or("None", |u| unit_name(*u));
                let _ = write!(
                    out,
                    "{}{{\"Name\":{},\"Unit\":\"{unit}\"}}",
                    if i > 0 { "," } else { "" },
                    metric.name_json
                );
            }
            let _ = write!(out, "]}}]}},{}{}", self.fixed_members, first.members);
            for (metric, value) in set {
                let _ = write!(out, ",{}:{value}", metric.name_json);
            }
            out.push_str("}\n");
        }
        out.into_bytes()
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
    use serde_json::Value;

    #[test]
    fn counters_histograms_and_gauges_become_one_document_per_label_set() {
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
        let histogram = recorder.register_histogram(&latency, &meta);
        // 0, 1, 2, 3 and 1 000 twice: 1 000 and 1 000 share a bin.
        for v in [0u32, 1, 2, 3, 1_000, 1_000] {
            histogram.record(v);
        }
        histogram.record(f64::NAN);
        histogram.record(-1.0);
        recorder
            .register_gauge(&Key::from_name("backlog"), &meta)
            .set(7u32);
        let text = String::from_utf8(emf.drain(1_700_000_000_000)).unwrap();
        let docs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 2, "{text}");
        let backlog = &docs[0];
        assert_eq!(backlog["backlog"], 7.0);
        assert_eq!(
            backlog["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["service"])
        );
        let first = &docs[1];
        assert_eq!(first["requests"], 3);
        assert_eq!(first["route"], "/a");
        assert_eq!(
            first["latency"],
            serde_json::json!({
                "Values": [0.5, 1.03125, 2.0625, 3.0625, 1000.0],
                "Counts": [1, 1, 1, 1, 2],
                "Max": 1000.0, "Min": 0.0, "Count": 6, "Sum": 2006.0,
            }),
            "not a number and below zero are not recorded; 0 is in [0, 1), \
             written as its midpoint; 1 000 is in [992, 1 024), its midpoint \
             1 008 clamped to the greatest value"
        );
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Microseconds"
        );
        // Drained: counters and histograms start again; the gauge stays.
        let again = String::from_utf8(emf.drain(1_700_000_000_001)).unwrap();
        assert_eq!(again.lines().count(), 1, "{again}");
    }

    #[test]
    fn a_bin_holds_values_within_a_sixteenth_of_its_midpoint() {
        for v in [1u64, 2, 3, 17, 100, 999, 1_000, 65_535, 1 << 40, u64::MAX] {
            // Exact enough as a double for this check.
            let value = f64::from(u32::try_from(v.min(u64::from(u32::MAX))).unwrap());
            let mid = midpoint(bin_of(value), 0);
            assert!((mid - value).abs() <= value / 32.0, "{v}: {mid}");
        }
        assert_eq!(bin_of(0.0), 0);
        assert_eq!(bin_of(0.99), 0);
        assert_eq!(bin_of(f64::MAX), u64::try_from(BINS - 1).unwrap());
    }

    #[test]
    fn a_histogram_of_many_powers_of_two_is_halved_until_it_fits_100_values() {
        let mut binned = Binned::default();
        // 1 to 2^20 in steps of about 3 %: 21 powers of two × 16 bins.
        let mut v = 1.0f64;
        let mut n = 0u64;
        let mut sum = 0.0;
        while v < f64::from(1u32 << 20) {
            binned.record(v);
            sum += v;
            n += 1;
            v *= 1.03;
        }
        let value: Value = serde_json::from_str(&binned.take().unwrap()).unwrap();
        let values = value["Values"].as_array().unwrap();
        let counts = value["Counts"].as_array().unwrap();
        assert!(values.len() <= 100 && values.len() > 40, "{}", values.len());
        assert_eq!(values.len(), counts.len());
        assert_eq!(
            counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>(),
            n,
            "no value lost in the merge"
        );
        assert_eq!(value["Count"], n);
        assert_eq!(value["Sum"], sum);
        assert_eq!(value["Min"], 1.0);
        let ordered: Vec<f64> = values.iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(ordered.windows(2).all(|w| w[0] < w[1]), "{ordered:?}");
        assert!(binned.take().is_none(), "taken: empty again");
    }
}
