//! Small values on the wire: metrics in results, selections of parameters in tasks.

use std::collections::HashMap;

use crate::pb;

/// Metrics as a name → value map; the last value wins for a repeated name.
pub fn metrics_map(metrics: &[pb::Metric]) -> HashMap<String, f64> {
    metrics.iter().map(|m| (m.name.clone(), m.value)).collect()
}

pub fn metric(name: &str, value: f64) -> pb::Metric {
    pb::Metric { name: name.to_string(), value }
}

/// A selector on the wire.
pub fn selection_to_wire(selector: &strata_core::selection::Selector) -> pb::Selection {
    pb::Selection { include: selector.patterns().to_vec(), exclude: selector.exceptions().to_vec() }
}

pub fn selection_from_wire(selection: pb::Selection) -> strata_core::selection::Selector {
    strata_core::selection::Selector::new(selection.include).except(selection.exclude)
}
