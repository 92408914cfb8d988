//! The protocol's settings, named as Flower names them, and what they resolve to in a round
//! of `n` clients. Flower's traps are closed here: an even neighbourhood is made odd before
//! anyone is told its size, an integer threshold of 1 is not "everyone", and a sum that could
//! wrap around the modulus is refused instead of decoded to garbage.

use serde::{Deserialize, Serialize};

use crate::error::SecAggError;

pub use strata_core::secure_aggregation::{CountOrFraction, MAX_SHARES, SecAggConfig};

/// The round's parameters for a config: k, t and the checks that need the round's size.
pub trait Resolve {
    /// The round's k and t for `n` clients, and a check that the sum of `n` vectors cannot
    /// wrap around the modulus. Without a configured `max_weight`, the weight is relative to
    /// [`DEFAULT_MAX_WEIGHT`] until [`RoundParams::relative_to`] sets it from the round.
    fn resolve(&self, n: usize) -> Result<RoundParams, SecAggError>;
}

/// The weight's denominator when neither the config nor the round sets one.
pub const DEFAULT_MAX_WEIGHT: f64 = 1000.0;

impl Resolve for SecAggConfig {
    fn resolve(&self, n: usize) -> Result<RoundParams, SecAggError> {
        self.validate().map_err(SecAggError::Config)?;
        if n < 2 {
            return Err(SecAggError::TooFewClients { n });
        }
        let mut k = match self.num_shares {
            CountOrFraction::Count(k) => k as usize,
            // Python's round (ties to even), as Flower computes it.
            CountOrFraction::Fraction(f) => (f * n as f64).round_ties_even() as usize,
        };
        if k < n && k.is_multiple_of(2) {
            k += 1;
        }
        if k <= 2 || k >= n {
            k = n;
        }
        if k > MAX_SHARES as usize {
            return Err(SecAggError::Config(format!(
                "a neighbourhood of {k} clients: at most {MAX_SHARES} (lower num_shares)"
            )));
        }
        let t = match self.reconstruction_threshold {
            CountOrFraction::Count(t) => t as usize,
            CountOrFraction::Fraction(f) => ((f * k as f64).round_ties_even() as usize).max(2),
        };
        if t > k {
            return Err(SecAggError::Config(format!(
                "reconstruction_threshold resolves to {t}, above the neighbourhood of {k} in a round of {n} clients"
            )));
        }
        // Every element of a client's vector is at most Q (the weight element too).
        let q = u64::from(self.quantization_range);
        if (n as u64).saturating_mul(q) >= self.modulus_range {
            return Err(SecAggError::Config(format!(
                "{n} clients × quantization_range {q} reaches modulus_range {}: the sum would wrap; \
                 lower quantization_range or raise modulus_range",
                self.modulus_range
            )));
        }
        Ok(RoundParams {
            clients: n,
            neighbours: k,
            threshold: t,
            clipping_range: self.clipping_range,
            quantization_range: self.quantization_range,
            modulus: self.modulus_range,
            max_weight: self.max_weight.unwrap_or(DEFAULT_MAX_WEIGHT),
            uniform_weights: false,
            tail: 0,
        })
    }
}

/// What every party of one round works with (the server sends it with the setup).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundParams {
    /// n: clients asked to take part.
    pub clients: usize,
    /// k: a neighbourhood's size, the client included.
    pub neighbours: usize,
    /// t: shares needed to rebuild a secret.
    pub threshold: usize,
    pub clipping_range: f64,
    pub quantization_range: u32,
    pub modulus: u64,
    pub max_weight: f64,
    /// Every client weighs 1 whatever its sample count: user-level DP's unweighted sum.
    pub uniform_weights: bool,
    /// Integers summed as they are after the values, so that the server learns only their
    /// totals: user-level DP's adaptive-clipping bit (1: the update was within the bound),
    /// CCVR's class counts.
    pub tail: usize,
}

impl RoundParams {
    /// The longest tail a client accepts: CCVR's counts for this many classes, and one more.
    pub const MAX_TAIL: usize = 1 << 16;

    /// Weights relative to `largest_samples`, the round's largest sample count: every client
    /// keeps its exact relative weight, where a fixed denominator (`max_weight` in the config)
    /// caps every client above it at weight 1.
    pub fn relative_to(mut self, largest_samples: u64) -> Self {
        self.max_weight = largest_samples.max(1) as f64;
        self
    }

    /// User-level DP's sum: every client weighs 1, and with adaptive clipping the vector
    /// ends with the client's unclipped bit.
    pub fn private(mut self, adaptive: bool) -> Self {
        self.uniform_weights = true;
        self.tail = usize::from(adaptive);
        self
    }

    /// A client's vector for `values` values: the weight, the values, the tail.
    pub fn vector_len(&self, values: usize) -> usize {
        1 + values + self.tail
    }

    /// Reduces a wrapping u32 value mod M (M divides 2^32).
    pub fn reduce(&self, v: u32) -> u32 {
        (u64::from(v) & (self.modulus - 1)) as u32
    }

    /// The checks a client makes on what the server sent (it cannot trust the server's
    /// arithmetic either).
    pub fn check(&self) -> Result<(), SecAggError> {
        let fail = |what: &str| Err(SecAggError::Refused(format!("round parameters: {what}")));
        if self.threshold < 2 || self.threshold > self.neighbours || self.neighbours > self.clients {
            return fail("the threshold must be in 2..=k and k at most n");
        }
        if self.neighbours > MAX_SHARES as usize {
            return fail("more neighbours than GF(256) has share points");
        }
        if !self.modulus.is_power_of_two()
            || self.modulus > 1 << 32
            || u64::from(self.quantization_range) >= self.modulus
        {
            return fail("the modulus must be a power of two up to 2^32, above the quantization range");
        }
        if !(self.clipping_range.is_finite() && self.clipping_range > 0.0 && self.max_weight > 0.0) {
            return fail("clipping range and max weight must be positive");
        }
        if self.tail > Self::MAX_TAIL {
            return fail("a tail of more integers than any method sends");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn with(k: CountOrFraction, t: CountOrFraction) -> SecAggConfig {
        SecAggConfig { num_shares: k, reconstruction_threshold: t, ..SecAggConfig::default() }
    }

    #[test]
    fn fractions_resolve_as_flower_rounds_them_and_even_k_becomes_odd() {
        use CountOrFraction::*;
        // 0.25 × 10 = 2.5 → 2 (ties to even) → 3 (odd); t = round(0.5 × 3) = 2.
        let p = with(Fraction(0.25), Fraction(0.5)).resolve(10).unwrap();
        assert_eq!((p.neighbours, p.threshold), (3, 2));
        // 0.4 × 10 = 4 → 5; t = round(0.6 × 5) = 3.
        let p = with(Fraction(0.4), Fraction(0.6)).resolve(10).unwrap();
        assert_eq!((p.neighbours, p.threshold), (5, 3));
        // k ≥ n: the complete graph.
        let p = with(Count(7), Count(5)).resolve(6).unwrap();
        assert_eq!((p.neighbours, p.threshold), (6, 5));
        assert_eq!(with(Fraction(1.0), Fraction(0.5)).resolve(20).unwrap().neighbours, 20);
    }

    #[test]
    fn nonsense_is_refused_with_its_name() {
        use CountOrFraction::*;
        let err = |c: SecAggConfig| c.validate().unwrap_err().to_string();
        assert!(err(with(Count(4), Count(2))).contains("even"));
        assert!(err(with(Count(2), Count(2))).contains("at least 3"));
        assert!(err(with(Count(5), Count(1))).contains("at least 2"));
        assert!(err(with(Count(5), Count(5))).contains("below k"));
        assert!(err(with(Fraction(0.0), Count(2))).contains("(0, 1]"));
        assert!(err(SecAggConfig { modulus_range: 1 << 33, ..SecAggConfig::default() }).contains("2^32"));
        assert!(err(SecAggConfig { modulus_range: 1000, ..SecAggConfig::default() }).contains("power of two"));
        assert!(
            err(SecAggConfig { quantization_range: 1 << 16, modulus_range: 1 << 16, ..SecAggConfig::default() })
                .contains("below modulus_range")
        );
        assert!(matches!(SecAggConfig::default().resolve(1), Err(SecAggError::TooFewClients { n: 1 })));
    }

    #[test]
    fn a_sum_that_could_wrap_is_refused() {
        // 2^22 × 1024 = 2^32: the 1,024th client could wrap the sum.
        let c = SecAggConfig::default();
        assert!(c.resolve(1023).is_ok());
        assert!(c.resolve(1024).unwrap_err().to_string().contains("would wrap"));
    }
}
