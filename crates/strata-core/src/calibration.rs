//! Post-hoc classifier calibration settings (`[calibration]` in the config, `--calibrate`).
//!
//! CCVR (`shared/methods/ccvr.md`) retrains the global model's classifier on virtual features
//! drawn from the clients' pooled class statistics. The retraining knobs differ between public
//! implementations (100, 200 or 2000 virtual features per class; 1 or 10 epochs): they are
//! keys here, and the defaults come from a sweep (`bench/results/2026-11-26-ccvr-sweep.md`).

use crate::config_error::{ConfigError, InvalidValue};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationMethod {
    #[default]
    Off,
    Ccvr,
}

impl std::str::FromStr for CalibrationMethod {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(CalibrationMethod::Off),
            "ccvr" => Ok(CalibrationMethod::Ccvr),
            other => Err(InvalidValue(format!("unknown calibration `{other}`: expected off or ccvr"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalibrationConfig {
    pub method: CalibrationMethod,
    /// Also calibrate after every `every`-th round, for evaluation only (the uncalibrated
    /// classifier stays the global one); 0: only after the last round.
    pub every: u64,
    /// M_c: virtual features drawn per class.
    pub samples_per_class: usize,
    /// Epochs over the shuffled virtual features.
    pub epochs: usize,
    /// SGD learning rate of the classifier's retraining.
    pub lr: f64,
    pub batch_size: usize,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        // Picked with examples/ccvr_sweep.rs on FedAvg's model after 20 rounds on PFLlib's
        // Dirichlet(0.1) Fashion-MNIST split (bench/results/2026-11-26-ccvr-sweep.md): 2000
        // features per class, 10 epochs at lr 0.01 gave 77.7 % (66.7 % uncalibrated).
        Self { method: CalibrationMethod::Off, every: 0, samples_per_class: 2000, epochs: 10, lr: 0.01, batch_size: 32 }
    }
}

impl CalibrationConfig {
    pub fn is_off(&self) -> bool {
        self.method == CalibrationMethod::Off
    }

    /// Whether to calibrate, for evaluation only, after training round `round` (0-based) of a
    /// run of `rounds` rounds; the calibration after the last round is always done when on.
    pub fn evaluates_after(&self, round: u64, rounds: u64) -> bool {
        !self.is_off() && self.every > 0 && (round + 1).is_multiple_of(self.every) && round + 1 < rounds
    }

    /// Checks the keys; the message names the one to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.is_off() {
            return Ok(());
        }
        if self.samples_per_class == 0 {
            return Err(ConfigError::Invalid("calibration.samples_per_class must be at least 1".into()));
        }
        if self.epochs == 0 {
            return Err(ConfigError::Invalid("calibration.epochs must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::Invalid("calibration.batch_size must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ConfigError::Invalid(format!("calibration.lr must be a positive number, got {}", self.lr)));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn periodic_calibration_skips_the_last_round_which_is_always_calibrated() {
        let c = CalibrationConfig { method: CalibrationMethod::Ccvr, every: 5, ..Default::default() };
        let rounds: Vec<u64> = (0..20).filter(|&r| c.evaluates_after(r, 20)).collect();
        assert_eq!(rounds, vec![4, 9, 14]);
        let off = CalibrationConfig { every: 5, ..Default::default() };
        assert!(!(0..20).any(|r| off.evaluates_after(r, 20)));
    }

    #[test]
    fn bad_keys_are_named() {
        let c = CalibrationConfig { method: CalibrationMethod::Ccvr, lr: 0.0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("calibration.lr"));
        let c = CalibrationConfig { method: CalibrationMethod::Ccvr, samples_per_class: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().contains("samples_per_class"));
        assert_eq!("ccvr".parse::<CalibrationMethod>(), Ok(CalibrationMethod::Ccvr));
        assert!("cvr".parse::<CalibrationMethod>().unwrap_err().to_string().contains("expected off or ccvr"));
    }
}
