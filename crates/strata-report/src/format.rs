//! Number formatting shared by the text reports: percentages, megabytes, and the dash for
//! a value that does not exist.

/// Shown for a missing value.
pub(crate) const NONE: &str = "-";

/// A fraction in [0, 1] as a percentage with two decimals, without the sign.
pub(crate) fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| NONE.to_string(), |v| format!("{:.2}", 100.0 * v))
}

/// Bytes as megabytes (10^6), three decimals.
pub(crate) fn mb(bytes: u64) -> String {
    format!("{:.3}", bytes as f64 / 1e6)
}

/// An optional number with `decimals` decimals.
pub(crate) fn num(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| NONE.to_string(), |v| format!("{v:.decimals$}"))
}
