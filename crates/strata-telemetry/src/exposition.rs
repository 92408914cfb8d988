//! Metric values and their exposition in the Prometheus text format (version 0.0.4), both
//! from `prometheus-client`, the Prometheus project's Rust client.
//!
//! Values are atomics updated on hot paths without locks. A [`Collect`] writes them out when
//! the endpoint is scraped (prometheus-client's collector API), so derived values (clients
//! online) are computed only then and a gauge never set is left out.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{self, ConstCounter};
use prometheus_client::metrics::gauge::{self, ConstGauge};
use prometheus_client::registry::Registry;

/// A value that only goes up (bytes, rounds, seconds).
#[derive(Debug, Default)]
pub struct Counter(counter::Counter<f64, AtomicU64>);

impl Counter {
    /// Adds `by` (negative or non-finite amounts are ignored: a counter never goes down).
    pub fn add(&self, by: f64) {
        if by.is_finite() && by > 0.0 {
            self.0.inc_by(by);
        }
    }

    pub fn inc(&self) {
        self.add(1.0);
    }

    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

/// A value that is set (the last round's duration, an accuracy); NaN until first set.
#[derive(Debug)]
pub struct Gauge(gauge::Gauge<f64, AtomicU64>);

impl Default for Gauge {
    fn default() -> Self {
        let gauge = gauge::Gauge::default();
        gauge.set(f64::NAN);
        Self(gauge)
    }
}

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.set(value);
    }

    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

/// Something that writes its metrics when the endpoint is scraped.
pub trait Collect: Send + Sync + 'static {
    fn collect(&self, out: &mut Exposition<'_>);
}

/// One scrape, family by family: a prometheus-client encoder that leaves NaN samples out.
#[derive(Debug)]
pub struct Exposition<'a> {
    encoder: DescriptorEncoder<'a>,
    result: fmt::Result,
}

/// A metric family's kind, as the `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Exposition<'_> {
    /// A family: its help and type lines, then one sample per label set; a NaN sample (a gauge
    /// never set) is left out. A counter's `name` is its samples' name, ending in `_total`.
    pub fn family<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> &mut Self {
        if self.result.is_ok() {
            self.result = write_family(&mut self.encoder, name, help, kind, samples);
        }
        self
    }

    /// A family of one unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, help, Kind::Counter, [(NO_LABELS, value)])
    }

    /// A family of one unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, help, Kind::Gauge, [(NO_LABELS, value)])
    }
}

const NO_LABELS: [(&str, &str); 0] = [];

fn write_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: Kind,
    samples: impl IntoIterator<Item = (L, f64)>,
) -> fmt::Result {
    // The encoder adds `_total` to a counter's name.
    let (name, metric_type) = match kind {
        Kind::Counter => (name.strip_suffix("_total").unwrap_or(name), MetricType::Counter),
        Kind::Gauge => (name, MetricType::Gauge),
    };
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        if !value.is_nan() {
            write_value(family.encode_family(&labels)?, kind, value)?;
        }
    }
    Ok(())
}

/// Whole numbers are written without a fraction (`3`, not `3.0`), as Prometheus's own
/// clients write them.
fn write_value(sample: MetricEncoder<'_>, kind: Kind, value: f64) -> fmt::Result {
    let whole = value.fract() == 0.0 && value.abs() < 1e15;
    match kind {
        Kind::Counter if whole && value >= 0.0 => ConstCounter::new(value as u64).encode(sample),
        Kind::Counter => ConstCounter::new(value).encode(sample),
        Kind::Gauge if whole => ConstGauge::new(value as i64).encode(sample),
        Kind::Gauge => ConstGauge::new(value).encode(sample),
    }
}

/// A [`Collect`] as a prometheus-client collector.
struct Source(Arc<dyn Collect>);

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Source")
    }
}

impl Collector for Source {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let mut out = Exposition { encoder, result: Ok(()) };
        self.0.collect(&mut out);
        out.result
    }
}

/// A registry whose metrics are `source`'s, collected at each scrape.
pub fn registry(source: Arc<dyn Collect>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Source(source)));
    registry
}

/// One scrape of `registry`, in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry).expect("a String takes any text");
    text
}

/// One scrape of `source` (tests and one-off dumps).
pub fn scrape(source: Arc<dyn Collect>) -> String {
    render(&registry(source))
}

/// Reads one sample's value out of exposition text (tests and probes): `name` with exactly
/// these labels, in any order. Hand-written: prometheus-client writes the format but does
/// not parse it.
pub fn find_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        if metric != name {
            return None;
        }
        let mut found: Vec<(&str, &str)> = label_text
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        let mut wanted = labels.to_vec();
        found.sort_unstable();
        wanted.sort_unstable();
        if found != wanted {
            return None;
        }
        match value {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            v => v.parse().ok(),
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counters_only_go_up() {
        let c = Counter::default();
        c.add(2.5);
        c.inc();
        c.add(-4.0);
        c.add(f64::NAN);
        assert_eq!(c.get(), 3.5);
        assert!(Gauge::default().get().is_nan(), "a gauge is NaN until set");
    }

    struct Sample;

    impl Collect for Sample {
        fn collect(&self, out: &mut Exposition<'_>) {
            out.counter("strata_rounds_completed_total", "Rounds completed.", 3.0);
            out.family(
                "strata_client_device_info",
                "Where a client trains.",
                Kind::Gauge,
                [([("client", "0"), ("device", "a\"b")], 1.0)],
            );
            out.gauge("strata_global_accuracy", "never set", Gauge::default().get())
                .gauge("strata_round_duration_seconds", "Last round.", 1.25)
                .counter("strata_bytes_sent_total", "Sent, with a\nnewline.", 2.5)
                .gauge("strata_round", "Negative and infinite.", -2.0)
                .gauge("strata_clients_online", "Infinite.", f64::INFINITY);
        }
    }

    #[test]
    fn families_are_written_in_the_text_format() {
        let text = scrape(Arc::new(Sample));
        assert_eq!(
            text,
            "# HELP strata_rounds_completed_total Rounds completed.\n\
             # TYPE strata_rounds_completed_total counter\n\
             strata_rounds_completed_total 3\n\
             # HELP strata_client_device_info Where a client trains.\n\
             # TYPE strata_client_device_info gauge\n\
             strata_client_device_info{client=\"0\",device=\"a\\\"b\"} 1\n\
             # HELP strata_global_accuracy never set\n\
             # TYPE strata_global_accuracy gauge\n\
             # HELP strata_round_duration_seconds Last round.\n\
             # TYPE strata_round_duration_seconds gauge\n\
             strata_round_duration_seconds 1.25\n\
             # HELP strata_bytes_sent_total Sent, with a\\nnewline.\n\
             # TYPE strata_bytes_sent_total counter\n\
             strata_bytes_sent_total 2.5\n\
             # HELP strata_round Negative and infinite.\n\
             # TYPE strata_round gauge\n\
             strata_round -2\n\
             # HELP strata_clients_online Infinite.\n\
             # TYPE strata_clients_online gauge\n\
             strata_clients_online +Inf\n"
        );
        assert_eq!(find_sample(&text, "strata_rounds_completed_total", &[]), Some(3.0));
        assert_eq!(find_sample(&text, "strata_round_duration_seconds", &[]), Some(1.25));
        assert_eq!(find_sample(&text, "strata_client_device_info", &[("client", "0")]), None);
        assert_eq!(find_sample(&text, "strata_global_accuracy", &[]), None);
        assert_eq!(find_sample(&text, "strata_clients_online", &[]), Some(f64::INFINITY));
    }
}
