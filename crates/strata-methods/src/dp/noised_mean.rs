//! The noised mean of clipped changes, DP-FedAvg's server step, folded one update at a time.

use rand::Rng;
use strata_core::tensor::{NamedTensor, TensorError, TensorSet, TensorSpec};

use super::clip::ClipOutcome;
use super::noise::add_gaussian;
use crate::delta::delta_norm;

/// Σ_i min(1, C/‖Δ_i‖)·Δ_i over a round's updates, each Δ_i taken from the one reference every
/// client was sent, in f64; then reference + (Σ + N(0, (z·C)²)) / m. The sum is unweighted and
/// m is fixed before anyone answers, so one client moves it by at most C/m whatever it
/// reports: the Gaussian mechanism's sensitivity. Updates must hold the reference's tensors
/// (validation made sure of it).
pub struct NoisedMean {
    specs: Vec<TensorSpec>,
    sums: Vec<Vec<f64>>,
    bound: f64,
    updates: usize,
    unclipped: usize,
}

impl NoisedMean {
    /// An empty sum of changes from `reference`, clipped to `bound`.
    pub fn new(reference: &TensorSet, bound: f64) -> Self {
        let sums = reference.tensors().iter().map(|t| vec![0.0; t.numel()]).collect();
        Self { specs: reference.specs(), sums, bound, updates: 0, unclipped: 0 }
    }

    /// A sum of `updates` changes from `reference` made elsewhere (secure aggregation's, of
    /// changes the clients clipped to `bound` themselves), one vector per tensor of `reference`.
    pub fn from_sum(
        reference: &TensorSet,
        bound: f64,
        sums: Vec<Vec<f64>>,
        updates: usize,
        unclipped: usize,
    ) -> Result<Self, TensorError> {
        let specs = reference.specs();
        if sums.len() != specs.len() {
            return Err(TensorError::ShapeMismatch {
                name: "(the sum)".into(),
                shape: vec![specs.len()],
                len: sums.len(),
            });
        }
        if let Some((spec, sum)) = specs.iter().zip(&sums).find(|(spec, sum)| spec.numel() != sum.len()) {
            return Err(TensorError::ShapeMismatch {
                name: spec.name.clone(),
                shape: spec.shape.clone(),
                len: sum.len(),
            });
        }
        Ok(Self { specs, sums, bound, updates, unclipped })
    }

    /// Clips `update`'s change from `reference` and adds it; the clipped copy is never made.
    pub fn add(&mut self, reference: &TensorSet, update: &TensorSet) -> ClipOutcome {
        let outcome = ClipOutcome::measure(delta_norm(reference, update), self.bound);
        for ((sum, x), r) in self.sums.iter_mut().zip(update.tensors()).zip(reference.tensors()) {
            for ((s, &x), &r) in sum.iter_mut().zip(x.values()).zip(r.values()) {
                *s += outcome.factor * (x as f64 - r as f64);
            }
        }
        self.updates += 1;
        self.unclipped += usize::from(outcome.unclipped());
        outcome
    }

    pub fn bound(&self) -> f64 {
        self.bound
    }

    /// Updates added so far.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// Updates that were within the bound (Andrew et al.'s bits, summed).
    pub fn unclipped(&self) -> usize {
        self.unclipped
    }

    /// reference + (Σ clipped Δ + N(0, (noise_multiplier · bound)²)) / denominator, per value.
    /// With no update at all it is the reference plus noise: a round releases a noised model
    /// whether or not anyone answered, since skipping would tell who did.
    pub fn finish(
        self,
        reference: &TensorSet,
        noise_multiplier: f64,
        denominator: f64,
        rng: &mut impl Rng,
    ) -> Result<TensorSet, TensorError> {
        let std = noise_multiplier * self.bound;
        let tensors = self
            .specs
            .into_iter()
            .zip(self.sums)
            .zip(reference.tensors())
            .map(|((spec, mut sum), r)| {
                add_gaussian(&mut sum, std, rng);
                let values = sum.iter().zip(r.values()).map(|(s, &r)| (r as f64 + s / denominator) as f32).collect();
                NamedTensor::new(spec.name, spec.shape, values)
            })
            .collect::<Result<Vec<_>, _>>()?;
        TensorSet::new(tensors)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::set;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn without_noise_it_is_the_unweighted_mean_of_clipped_changes_over_the_expected_cohort() {
        let reference = set(&[1.0, 1.0]);
        let mut mean = NoisedMean::new(&reference, 1.0);
        // Δ = (3, 4): norm 5, clipped to (0.6, 0.8); Δ = (0, 0.5): kept.
        let a = mean.add(&reference, &set(&[4.0, 5.0]));
        let b = mean.add(&reference, &set(&[1.0, 1.5]));
        assert_eq!((a.norm, a.factor, b.factor), (5.0, 0.2, 1.0));
        assert_eq!((mean.updates(), mean.unclipped()), (2, 1));
        let out = mean.finish(&reference, 0.0, 4.0, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        // (0.6 + 0, 0.8 + 0.5) / 4 over the expected 4, not the 2 that answered.
        let values = out.get("w").unwrap().values();
        assert!((values[0] - 1.15).abs() < 1e-6 && (values[1] - 1.325).abs() < 1e-6, "{values:?}");
    }

    #[test]
    fn one_client_moves_the_release_by_at_most_the_bound_over_the_cohort() {
        // Neighbouring rounds, with and without a client sending an enormous change: the
        // noiseless releases differ by at most C / m in L2 norm.
        let reference = set(&[0.0; 4]);
        let honest = [set(&[0.1, 0.0, 0.2, 0.0]), set(&[0.0, -0.3, 0.0, 0.1])];
        let release = |extra: Option<&TensorSet>| {
            let mut mean = NoisedMean::new(&reference, 0.5);
            for u in honest.iter().chain(extra) {
                mean.add(&reference, u);
            }
            mean.finish(&reference, 0.0, 10.0, &mut ChaCha8Rng::seed_from_u64(1)).unwrap()
        };
        let attacker = set(&[1e6, -1e6, 3e5, 7.0]);
        let moved = delta_norm(&release(None), &release(Some(&attacker)));
        assert!(moved <= 0.5 / 10.0 + 1e-7, "{moved}");
        assert!(moved > 0.5 / 10.0 - 1e-6, "the attacker's clipped change counts in full: {moved}");
    }

    #[test]
    fn the_noise_is_the_multiplier_times_the_bound_over_the_cohort() {
        // 100,000 values, no update: every value is N(0, (z C / m)²) around the reference.
        let n = 100_000;
        let reference = set(&vec![2.0; n]);
        let (z, bound, m) = (1.5, 0.4, 3.0);
        let out =
            NoisedMean::new(&reference, bound).finish(&reference, z, m, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        let values: Vec<f64> = out.get("w").unwrap().values().iter().map(|&v| v as f64 - 2.0).collect();
        let var = values.iter().map(|v| v * v).sum::<f64>() / n as f64;
        let expected = (z * bound / m).powi(2);
        assert!((var - expected).abs() < 5.0 * expected * (2.0 / n as f64).sqrt(), "{var} vs {expected}");
    }

    #[test]
    fn a_sum_made_elsewhere_is_noised_and_divided_alike() {
        let reference = set(&[1.0, 1.0]);
        let mut folded = NoisedMean::new(&reference, 1.0);
        folded.add(&reference, &set(&[1.5, 1.0]));
        folded.add(&reference, &set(&[1.0, 0.5]));
        let given = NoisedMean::from_sum(&reference, 1.0, vec![vec![0.5, -0.5]], 2, 2).unwrap();
        assert_eq!((given.updates(), given.unclipped(), given.bound()), (2, 2, 1.0));
        let finish = |m: NoisedMean| m.finish(&reference, 0.7, 4.0, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
        assert_eq!(finish(folded), finish(given), "same sum, same noise: the same release");
        assert!(NoisedMean::from_sum(&reference, 1.0, vec![vec![0.5]], 1, 1).is_err());
        assert!(NoisedMean::from_sum(&reference, 1.0, vec![], 1, 1).is_err());
    }
}
