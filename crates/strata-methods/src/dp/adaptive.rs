//! Adaptive clipping (Andrew et al., "Differentially Private Learning with Adaptive Clipping",
//! NeurIPS 2021, arXiv:1905.03871): the bound follows the γ-quantile of the update norms,
//! learned from a noised count of the updates it left unclipped.
//!
//! As in the paper and TensorFlow Privacy's `QuantileEstimatorQuery`, the bit is 1 when an
//! update was *not* clipped and the bound moves by C·exp(−η(b̃ − γ)): too many clipped
//! updates raise it. (Flower counts clipped updates with the same sign, which drives the
//! bound away from the quantile; see the spec.) The noised share is clamped to [0, 1].

use rand::Rng;
use rand_distr::StandardNormal;

/// The bound and how it learns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveClip {
    /// The bound this round's updates are clipped to.
    pub bound: f64,
    /// γ: the share of updates the bound should leave unclipped.
    pub target_quantile: f64,
    /// η of the geometric update.
    pub learning_rate: f64,
    /// σ_b: the noise on the count of unclipped updates.
    pub count_stddev: f64,
}

/// One round's learning step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipStep {
    /// b̃ = (Σ b_i + N(0, σ_b²)) / m, clamped to [0, 1].
    pub unclipped_share: f64,
    pub next_bound: f64,
}

impl AdaptiveClip {
    /// Learns from `unclipped` of this round's updates having been within the bound, `m` the
    /// expected cohort (fixed, as the sensitivity needs); moves `bound` to the next round's.
    pub fn learn(&mut self, unclipped: usize, expected_cohort: f64, rng: &mut impl Rng) -> ClipStep {
        let noise: f64 =
            if self.count_stddev > 0.0 { self.count_stddev * rng.sample::<f64, _>(StandardNormal) } else { 0.0 };
        let unclipped_share = ((unclipped as f64 + noise) / expected_cohort).clamp(0.0, 1.0);
        self.bound *= (-self.learning_rate * (unclipped_share - self.target_quantile)).exp();
        ClipStep { unclipped_share, next_bound: self.bound }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, LogNormal};

    /// Rounds of 100 updates with log-normal norms (median 1.0): from a bound 100× too small
    /// and from one 100× too large, the bound ends near the norms' median (γ = 0.5) and their
    /// 0.9-quantile (γ = 0.9), with the count noised at the default σ_b = m/20.
    #[test]
    fn the_bound_converges_to_the_target_quantile() {
        let norms = LogNormal::new(0.0, 0.5).unwrap();
        for (gamma, quantile) in [(0.5, 1.0), (0.9, (0.5f64 * 1.2816).exp())] {
            for start in [0.01, 100.0] {
                let mut rng = ChaCha8Rng::seed_from_u64(3);
                let mut clip =
                    AdaptiveClip { bound: start, target_quantile: gamma, learning_rate: 0.2, count_stddev: 5.0 };
                let mut late = Vec::new();
                for round in 0..400 {
                    let unclipped = (0..100).filter(|_| norms.sample(&mut rng) <= clip.bound).count();
                    clip.learn(unclipped, 100.0, &mut rng);
                    if round >= 300 {
                        late.push(clip.bound);
                    }
                }
                let mean = late.iter().sum::<f64>() / late.len() as f64;
                assert!((mean / quantile - 1.0).abs() < 0.1, "γ {gamma} from {start}: {mean} vs {quantile}");
            }
        }
    }

    #[test]
    fn too_many_clipped_updates_raise_the_bound() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut clip = AdaptiveClip { bound: 1.0, target_quantile: 0.5, learning_rate: 0.2, count_stddev: 0.0 };
        let step = clip.learn(0, 10.0, &mut rng);
        assert_eq!(step.unclipped_share, 0.0);
        assert!((step.next_bound - 0.1f64.exp()).abs() < 1e-12, "{step:?}");
        let step = clip.learn(10, 10.0, &mut rng);
        assert!((step.next_bound - 1.0).abs() < 1e-12, "{step:?}");
        // A noised count past the cohort is clamped to a share of 1.
        let mut big = AdaptiveClip { count_stddev: 0.0, ..clip };
        assert_eq!(big.learn(30, 10.0, &mut rng).unclipped_share, 1.0);
    }
}
