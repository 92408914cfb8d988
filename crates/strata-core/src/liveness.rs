//! When a client counts as gone, and when a round stops waiting (`[liveness]` in the config).
//!
//! Clients send a heartbeat every `heartbeat_secs` while they work (their long polls count
//! too); a client not heard from for `offline_after_secs` is offline: it is not picked, and
//! a round stops waiting for its result. A round then closes when every task is answered
//! (`all`, the default) or as soon as it has `min_clients` training results (`min-results`),
//! and in any case at its deadline (`round_timeout_secs`).

use crate::config_error::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoundCloses {
    /// When every task is answered (or its client went offline), or at the deadline.
    #[default]
    All,
    /// As soon as `min_clients` training results are in, or at the deadline.
    MinResults,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivenessConfig {
    pub heartbeat_secs: u64,
    pub offline_after_secs: u64,
    pub round_closes: RoundCloses,
    /// Seconds the run waits for `min_clients` to join before it ends with an error that says
    /// how many came; unset: it waits for as long as it takes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_deadline_secs: Option<u64>,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self { heartbeat_secs: 5, offline_after_secs: 30, round_closes: RoundCloses::All, start_deadline_secs: None }
    }
}

impl LivenessConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_secs == 0 {
            return Err(ConfigError::Invalid("liveness.heartbeat_secs must be at least 1".into()));
        }
        if self.offline_after_secs <= self.heartbeat_secs {
            return Err(ConfigError::Invalid(format!(
                "liveness.offline_after_secs ({}) must be longer than liveness.heartbeat_secs ({})",
                self.offline_after_secs, self.heartbeat_secs
            )));
        }
        if self.start_deadline_secs == Some(0) {
            return Err(ConfigError::Invalid("liveness.start_deadline_secs must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn patience_must_outlast_the_heartbeat() {
        assert!(LivenessConfig::default().validate().is_ok());
        let c = LivenessConfig { heartbeat_secs: 5, offline_after_secs: 5, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("offline_after_secs"));
        let c = LivenessConfig { heartbeat_secs: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("heartbeat_secs"));
    }
}
