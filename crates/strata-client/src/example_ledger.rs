//! A client's own account of DP-SGD on its data (`[dp_sgd]`): the private steps its training
//! has taken, and the ε they add up to. The client reports it with each result; it holds
//! whatever the server does with the updates.

use strata_methods::accountant::{Neighbouring, RdpAccountant};
use strata_torch::PrivateSteps;

/// Private steps taken so far, all at one Poisson rate (the client's batch size over its
/// training samples does not change within a run).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExampleLedger {
    pub sampling_rate: f64,
    pub steps: u64,
}

impl ExampleLedger {
    pub fn record(&mut self, spent: PrivateSteps) {
        self.sampling_rate = spent.sampling_rate;
        self.steps += spent.steps;
    }

    /// ε at `delta` (add-or-remove-one sample) after the steps so far with multiplier `z`;
    /// `None` while nothing was spent or when nothing bounds it (z = 0).
    pub fn epsilon(&self, z: f64, delta: f64) -> Option<f64> {
        if self.steps == 0 {
            return None;
        }
        let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        accountant.compose_poisson(self.sampling_rate, z, self.steps).ok()?;
        accountant.epsilon(delta).ok().map(|g| g.epsilon).filter(|e| e.is_finite())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rounds_add_their_steps_and_epsilon_grows() {
        let mut ledger = ExampleLedger::default();
        assert_eq!(ledger.epsilon(1.0, 1e-5), None);
        ledger.record(PrivateSteps { sampling_rate: 0.01, steps: 500 });
        let first = ledger.epsilon(1.0, 1e-5).unwrap();
        ledger.record(PrivateSteps { sampling_rate: 0.01, steps: 500 });
        // Spec config B: q = 0.01, σ = 1, 1000 steps, δ = 1e-5 gives 2.1014 (dp_accounting).
        let second = ledger.epsilon(1.0, 1e-5).unwrap();
        assert!(first < second && (second - 2.1014).abs() < 1e-3, "{first} {second}");
        assert_eq!(ledger.epsilon(0.0, 1e-5), None, "no noise bounds nothing");
    }
}
