//! Method settings as named scalars: what a strategy tells the client half of its method
//! (FedProx's `proximal_mu`, Ditto's `lambda`), carried in each task.

/// One setting's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    Number(f64),
    Integer(i64),
    Text(String),
    Flag(bool),
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

/// A task's settings, by name.
pub type Settings = std::collections::BTreeMap<String, Setting>;
