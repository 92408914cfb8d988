//! The protocol's settings, named as Flower names them, and what they resolve to in a round
//! of `n` clients. Flower's traps are closed here: an even neighbourhood is made odd before
//! anyone is told its size, an integer threshold of 1 is not "everyone", and a sum that could
//! wrap around the modulus is refused instead of decoded to garbage.

use serde::{Deserialize, Serialize};

use crate::error::SecAggError;

/// A count, or a fraction of what it counts from (of the round's clients for `num_shares`,
/// of the neighbourhood for `reconstruction_threshold`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CountOrFraction {
    Count(u32),
    Fraction(f64),
}

/// `[secure_aggregation]`: SecAgg+ as configured by the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecAggConfig {
    /// Neighbourhood size k, the client included: a count (odd, ≥ 3) or a fraction of the
    /// round's clients. 1.0 is the complete graph (SecAgg without the plus).
    pub num_shares: CountOrFraction,
    /// Shares t needed to rebuild a secret: a count (≥ 2, < k) or a fraction of k. Up to
    /// k − t neighbours of a client may drop out after it uploads.
    pub reconstruction_threshold: CountOrFraction,
    /// Each weighted value is clipped to [−c, c] before quantization.
    pub clipping_range: f64,
    /// Values map to integers 0..=Q.
    pub quantization_range: u32,
    /// All arithmetic is mod M, a power of two no larger than 2^32.
    pub modulus_range: u64,
    /// A client's weight is its sample count over this, at most 1.
    pub max_weight: f64,
}

impl Default for SecAggConfig {
    fn default() -> Self {
        Self {
            // Odd, so the ring graph is symmetric; 2 dropouts per neighbourhood are tolerated,
            // and t > k/2 keeps two disjoint halves of a neighbourhood from both reaching t.
            num_shares: CountOrFraction::Count(7),
            reconstruction_threshold: CountOrFraction::Count(5),
            clipping_range: 8.0,
            quantization_range: 1 << 22,
            modulus_range: 1 << 32,
            max_weight: 1000.0,
        }
    }
}

impl SecAggConfig {
    /// Checks what does not depend on the round's size.
    pub fn validate(&self) -> Result<(), SecAggError> {
        let bad = |what: String| Err(SecAggError::Config(what));
        match self.num_shares {
            CountOrFraction::Count(k) if k < 3 => {
                return bad(format!("num_shares = {k}: a neighbourhood holds at least 3 clients (or give a fraction)"));
            }
            CountOrFraction::Count(k) if k.is_multiple_of(2) => {
                return bad(format!("num_shares = {k} is even: the ring graph needs an odd neighbourhood"));
            }
            CountOrFraction::Count(k) if k > MAX_SHARES => {
                return bad(format!("num_shares = {k}: at most {MAX_SHARES} (Shamir over GF(256))"));
            }
            CountOrFraction::Fraction(f) if !(f > 0.0 && f <= 1.0) => {
                return bad(format!("num_shares = {f}: a fraction must be in (0, 1]"));
            }
            _ => {}
        }
        match (self.reconstruction_threshold, self.num_shares) {
            (CountOrFraction::Count(t), _) if t < 2 => {
                return bad(format!("reconstruction_threshold = {t}: at least 2 (or give a fraction)"));
            }
            (CountOrFraction::Count(t), CountOrFraction::Count(k)) if t >= k => {
                return bad(format!(
                    "reconstruction_threshold = {t} with num_shares = {k}: the threshold must be below k, \
                     or no neighbour may ever drop out"
                ));
            }
            (CountOrFraction::Fraction(f), _) if !(f > 0.0 && f <= 1.0) => {
                return bad(format!("reconstruction_threshold = {f}: a fraction must be in (0, 1]"));
            }
            _ => {}
        }
        if !(self.clipping_range.is_finite() && self.clipping_range > 0.0) {
            return bad(format!("clipping_range = {}: must be positive", self.clipping_range));
        }
        if !(self.max_weight.is_finite() && self.max_weight > 0.0) {
            return bad(format!("max_weight = {}: must be positive", self.max_weight));
        }
        let m = self.modulus_range;
        if !m.is_power_of_two() || !(4..=1 << 32).contains(&m) {
            return bad(format!("modulus_range = {m}: must be a power of two from 4 to 2^32"));
        }
        if self.quantization_range == 0 || u64::from(self.quantization_range) >= m {
            return bad(format!(
                "quantization_range = {}: must be positive and below modulus_range ({m})",
                self.quantization_range
            ));
        }
        Ok(())
    }

    /// The round's k and t for `n` clients, and a check that the sum of `n` vectors cannot
    /// wrap around the modulus.
    pub fn resolve(&self, n: usize) -> Result<RoundParams, SecAggError> {
        self.validate()?;
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
            max_weight: self.max_weight,
        })
    }
}

/// At most this many shares of one secret: GF(256) has 255 non-zero points.
pub const MAX_SHARES: u32 = 255;

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
}

impl RoundParams {
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
