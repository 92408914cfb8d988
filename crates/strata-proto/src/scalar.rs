//! Named scalars on the wire: method settings in tasks, metrics in results.

use std::collections::HashMap;

use strata_core::setting::{Setting, Settings};

use crate::pb;

impl From<Setting> for pb::Scalar {
    fn from(s: Setting) -> Self {
        use pb::scalar::Value;
        let value = match s {
            Setting::Number(x) => Value::Number(x),
            Setting::Integer(x) => Value::Integer(x),
            Setting::Text(x) => Value::Text(x),
            Setting::Flag(x) => Value::Flag(x),
        };
        pb::Scalar { value: Some(value) }
    }
}

impl TryFrom<pb::Scalar> for Setting {
    type Error = &'static str;

    fn try_from(s: pb::Scalar) -> Result<Self, Self::Error> {
        use pb::scalar::Value;
        match s.value {
            Some(Value::Number(x)) => Ok(Setting::Number(x)),
            Some(Value::Integer(x)) => Ok(Setting::Integer(x)),
            Some(Value::Text(x)) => Ok(Setting::Text(x)),
            Some(Value::Flag(x)) => Ok(Setting::Flag(x)),
            None => Err("scalar without a value"),
        }
    }
}

/// Metrics as a name → value map; the last value wins for a repeated name.
pub fn metrics_map(metrics: &[pb::Metric]) -> HashMap<String, f64> {
    metrics.iter().map(|m| (m.name.clone(), m.value)).collect()
}

pub fn metric(name: &str, value: f64) -> pb::Metric {
    pb::Metric { name: name.to_string(), value }
}

/// A task's settings on the wire.
pub fn settings_to_wire(settings: &Settings) -> HashMap<String, pb::Scalar> {
    settings.iter().map(|(k, v)| (k.clone(), pb::Scalar::from(v.clone()))).collect()
}

/// A task's settings from the wire; a scalar without a value is an error naming its key.
pub fn settings_from_wire(map: HashMap<String, pb::Scalar>) -> Result<Settings, String> {
    map.into_iter()
        .map(|(k, v)| Setting::try_from(v).map(|s| (k.clone(), s)).map_err(|e| format!("setting `{k}`: {e}")))
        .collect()
}

/// A selector on the wire.
pub fn selection_to_wire(selector: &strata_core::selection::Selector) -> pb::Selection {
    pb::Selection { include: selector.patterns().to_vec(), exclude: selector.exceptions().to_vec() }
}

pub fn selection_from_wire(selection: pb::Selection) -> strata_core::selection::Selector {
    strata_core::selection::Selector::new(selection.include).except(selection.exclude)
}
