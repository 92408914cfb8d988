//! Named scalars on the wire: method settings in tasks, metrics in results.

use std::collections::HashMap;

use crate::pb;

/// A setting value as the domain sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    Number(f64),
    Integer(i64),
    Text(String),
    Flag(bool),
}

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

impl Setting {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Setting::Number(x) => Some(*x),
            Setting::Integer(x) => Some(*x as f64),
            _ => None,
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
