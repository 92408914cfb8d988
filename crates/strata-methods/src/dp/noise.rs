//! Gaussian noise from a cryptographically secure generator.
//!
//! The generator is ChaCha20 seeded by the operating system, so that nobody can predict or
//! replay the noise from the run's seed (a seeded generator would make the noise removable
//! by anyone who knows the seed). The normal samples come from `rand_distr`'s ziggurat on
//! f64: like Flower's numpy noise and Opacus without `secure_mode`, it is not hardened
//! against floating-point attacks on the Gaussian's low-order bits (Mironov, CCS 2012).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::StandardNormal;

/// A fresh ChaCha20 generator seeded by the operating system.
pub fn secure_rng() -> ChaCha20Rng {
    ChaCha20Rng::from_os_rng()
}

/// Adds independent N(0, std²) to every value.
pub fn add_gaussian(values: &mut [f64], std: f64, rng: &mut impl Rng) {
    if std == 0.0 {
        return;
    }
    for v in values {
        let z: f64 = rng.sample(StandardNormal);
        *v += std * z;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Mean and variance of 200,000 draws: the mean within 5 standard errors of 0, and the
    /// variance within 5 of its standard errors (σ²·sqrt(2/n)) of σ². Fails for a wrong scale
    /// (σ instead of σ², a factor of 2, a missing multiplier) or a biased draw.
    #[test]
    fn noise_has_the_asked_standard_deviation() {
        let (n, std) = (200_000usize, 0.37);
        let mut values = vec![0.0; n];
        add_gaussian(&mut values, std, &mut secure_rng());
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let se_mean = std / (n as f64).sqrt();
        let se_var = std * std * (2.0 / n as f64).sqrt();
        assert!(mean.abs() < 5.0 * se_mean, "mean {mean}");
        assert!((var - std * std).abs() < 5.0 * se_var, "variance {var}, expected {}", std * std);
        // Tails: about 4.55 % beyond 2σ; 5 standard errors of a binomial share around it.
        let beyond = values.iter().filter(|v| v.abs() > 2.0 * std).count() as f64 / n as f64;
        let p = 0.0455;
        assert!((beyond - p).abs() < 5.0 * (p * (1.0 - p) / n as f64).sqrt(), "share beyond 2σ: {beyond}");
    }

    #[test]
    fn two_generators_draw_different_noise() {
        let (mut a, mut b) = (vec![0.0; 8], vec![0.0; 8]);
        add_gaussian(&mut a, 1.0, &mut secure_rng());
        add_gaussian(&mut b, 1.0, &mut secure_rng());
        assert_ne!(a, b);
        let mut zero = vec![1.5; 3];
        add_gaussian(&mut zero, 0.0, &mut secure_rng());
        assert_eq!(zero, [1.5; 3]);
    }
}
