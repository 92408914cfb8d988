//! What `[privacy]` has spent: the noise multiplier a run uses, and the ε its released rounds
//! add up to.
//!
//! Each training round is one release of the Poisson-subsampled Gaussian mechanism (clients
//! drawn independently with probability `fraction`, noise multiplier z over a sum whose
//! sensitivity is the clipping bound), composed with the RDP accountant of
//! [`strata_methods::accountant`] and converted to ε at the configured δ. Every training
//! round counts, including one nobody answered: it released a noised model too.

use strata_core::config::RunConfig;
use strata_methods::accountant::{Neighbouring, RdpAccountant};

use crate::strategy::PrivateSettings;

/// The privacy settings of a run, with z chosen from `target_epsilon` when not given: the
/// smallest z whose ε after `rounds` training rounds is the target. `None` when DP is off.
pub fn settings(config: &RunConfig) -> Result<Option<PrivateSettings>, String> {
    let privacy = &config.privacy;
    if !privacy.is_on() {
        return Ok(None);
    }
    let z = match (privacy.noise_multiplier, privacy.target_epsilon) {
        (Some(z), _) => z,
        (None, Some(target)) => {
            strata_methods::accountant::noise_multiplier_for(target, privacy.delta, config.fraction, config.rounds)
                .map_err(|e| format!("privacy: no noise multiplier meets target_epsilon {target}: {e}"))?
        }
        (None, None) => return Ok(None),
    };
    PrivateSettings::new(privacy.clone(), z, config.expected_cohort()).map(Some)
}

/// ε spent by a run's released rounds.
#[derive(Clone, Debug)]
pub struct PrivacyLedger {
    rate: f64,
    noise_multiplier: f64,
    delta: f64,
    target: Option<f64>,
    releases: u64,
}

impl PrivacyLedger {
    /// A ledger for `settings`, sampling at `rate`, after `releases` rounds already released
    /// (a resumed run's).
    pub fn new(settings: &PrivateSettings, rate: f64, releases: u64) -> Self {
        let config = &settings.config;
        Self {
            rate,
            noise_multiplier: settings.noise_multiplier,
            delta: config.delta,
            target: config.target_epsilon.filter(|_| config.noise_multiplier.is_some()),
            releases,
        }
    }

    /// ε after `releases` rounds (∞ when z = 0).
    pub fn epsilon_after(&self, releases: u64) -> f64 {
        if releases == 0 {
            return 0.0;
        }
        epsilon_of(self.rate, self.noise_multiplier, releases, self.delta)
    }

    /// Counts one more released round; returns ε spent so far.
    pub fn record_release(&mut self) -> f64 {
        self.releases += 1;
        self.epsilon_after(self.releases)
    }

    /// With a budget (`target_epsilon` beside a fixed noise multiplier): ε after one more
    /// round, when that would exceed it.
    pub fn next_round_exceeds(&self) -> Option<f64> {
        let target = self.target?;
        let next = self.epsilon_after(self.releases + 1);
        (next > target).then_some(next)
    }

    pub fn target(&self) -> Option<f64> {
        self.target
    }
}

/// ε at `delta` after `releases` Poisson-sampled releases at `rate` with multiplier `z`
/// (add-or-remove-one client); ∞ when nothing bounds it.
pub fn epsilon_of(rate: f64, z: f64, releases: u64, delta: f64) -> f64 {
    let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
    match accountant.compose_poisson(rate, z, releases) {
        Ok(()) => accountant.epsilon(delta).map_or(f64::INFINITY, |g| g.epsilon),
        Err(_) => f64::INFINITY,
    }
}
