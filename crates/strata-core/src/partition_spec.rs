//! A partition rule as the configuration and the CLI write it (`iid`, `dirichlet:0.1`, ...).
//! The rule is configuration; applying it to a dataset is `strata-data`'s job.

use crate::config_error::InvalidValue;
use serde::{Deserialize, Serialize};

/// A partition rule, written as in the CLI: `iid`, `dirichlet:0.1`, `pathological:2`, `file:PATH`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PartitionSpec {
    Iid,
    /// PFLlib's rule: per class, Dir(α) over clients, capped at the average size, at least 40 samples each.
    Dirichlet {
        alpha: f64,
    },
    /// Each client holds `classes_per_client` classes.
    Pathological {
        classes_per_client: usize,
    },
    /// Sample indices from a JSON file `{"clients": [{"train": [...], "test": [...]}, ...]}`.
    File {
        path: std::path::PathBuf,
    },
    /// By the data's own owners (a table's group column): each owner's samples on one client.
    Natural,
}

impl std::str::FromStr for PartitionSpec {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("iid", None) => Ok(PartitionSpec::Iid),
            ("natural", None) => Ok(PartitionSpec::Natural),
            ("dirichlet", Some(a)) => match a.parse::<f64>() {
                Ok(alpha) if alpha.is_finite() && alpha > 0.0 => Ok(PartitionSpec::Dirichlet { alpha }),
                _ => Err(InvalidValue(format!("split `{s}`: dirichlet needs a positive alpha, e.g. dirichlet:0.1"))),
            },
            ("pathological", Some(a)) => match a.parse::<usize>() {
                Ok(k) if k >= 1 => Ok(PartitionSpec::Pathological { classes_per_client: k }),
                _ => Err(InvalidValue(format!(
                    "split `{s}`: pathological needs a class count >= 1, e.g. pathological:2"
                ))),
            },
            ("file", Some(p)) if !p.is_empty() => Ok(PartitionSpec::File { path: p.into() }),
            _ => Err(InvalidValue(format!(
                "unknown split `{s}`: expected iid, dirichlet:ALPHA, pathological:K, natural or file:PATH"
            ))),
        }
    }
}

impl std::fmt::Display for PartitionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartitionSpec::Iid => write!(f, "iid"),
            PartitionSpec::Natural => write!(f, "natural"),
            PartitionSpec::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
            PartitionSpec::Pathological { classes_per_client } => write!(f, "pathological:{classes_per_client}"),
            PartitionSpec::File { path } => write!(f, "file:{}", path.display()),
        }
    }
}

impl TryFrom<String> for PartitionSpec {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PartitionSpec> for String {
    fn from(spec: PartitionSpec) -> String {
        spec.to_string()
    }
}
