//! Metric values and the Prometheus text exposition format (version 0.0.4).
//!
//! Values are atomics updated on hot paths without locks; a [`Collect`] writes them out when
//! the endpoint is scraped, so derived values (clients online) are computed only then.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A value that only goes up (bytes, rounds, seconds).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `by` (negative or non-finite amounts are ignored: a counter never goes down).
    pub fn add(&self, by: f64) {
        if !(by.is_finite() && by > 0.0) {
            return;
        }
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + by).to_bits()));
    }

    pub fn inc(&self) {
        self.add(1.0);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A value that is set (the last round's duration, an accuracy); NaN until first set.
#[derive(Debug)]
pub struct Gauge(AtomicU64);

impl Default for Gauge {
    fn default() -> Self {
        Self(AtomicU64::new(f64::NAN.to_bits()))
    }
}

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Something that writes its metrics when the endpoint is scraped.
pub trait Collect: Send + Sync + 'static {
    fn collect(&self, out: &mut Exposition);
}

/// One scrape's text, family by family.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// A metric family's kind, as the `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Exposition {
    /// Starts a family: its help and type lines. Samples follow with [`sample`](Self::sample).
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family; a NaN gauge (never set) is left out.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        if value.is_nan() {
            return self;
        }
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.text, "{key}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
        self
    }

    /// A family of one unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, help, Kind::Counter).sample(name, &[], value)
    }

    /// A family of one unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, help, Kind::Gauge).sample(name, &[], value)
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// Prometheus spells infinities `+Inf`/`-Inf`; integers print without a fraction.
fn format_value(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Reads one sample's value out of exposition text (tests and probes): `name` with exactly
/// these labels, in any order.
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
    }

    #[test]
    fn families_are_written_in_the_text_format() {
        let mut out = Exposition::default();
        out.counter("strata_rounds_completed_total", "Rounds completed.", 3.0);
        out.family("strata_client_device_info", "Where a client trains.", Kind::Gauge).sample(
            "strata_client_device_info",
            &[("client", "0"), ("device", "a\"b")],
            1.0,
        );
        out.gauge("strata_global_accuracy", "never set", Gauge::default().get());
        out.gauge("strata_round_duration_seconds", "Last round.", 1.25);
        let text = out.into_text();
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
             strata_round_duration_seconds 1.25\n"
        );
        assert_eq!(find_sample(&text, "strata_rounds_completed_total", &[]), Some(3.0));
        assert_eq!(find_sample(&text, "strata_round_duration_seconds", &[]), Some(1.25));
        assert_eq!(find_sample(&text, "strata_client_device_info", &[("client", "0")]), None);
        assert_eq!(find_sample(&text, "strata_global_accuracy", &[]), None);
    }
}
