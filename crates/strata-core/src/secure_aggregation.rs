//! Secure aggregation as configured (`[secure_aggregation]`): SecAgg+'s settings, named as
//! Flower names them. `strata-secagg` resolves them for a round's clients and runs the protocol.

use serde::{Deserialize, Serialize};

/// At most this many shares of one secret: GF(256) has 255 non-zero points.
pub const MAX_SHARES: u32 = 255;

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
    /// A client's weight is its sample count over this, at most 1. Unset: the largest sample
    /// count among the round's clients, so that every weight keeps its proportion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<f64>,
    /// CCVR's statistics under secure aggregation: each client's per-class shares of the
    /// features' first and second moments are clipped to [−r, r] (the squares of the
    /// classifier's inputs must average below it; a calibration whose statistics hit it says so).
    pub statistics_range: f64,
}

/// `7` is a count, `0.5` a fraction (what a command line gives).
impl std::str::FromStr for CountOrFraction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(n) = s.parse::<u32>() {
            return Ok(CountOrFraction::Count(n));
        }
        match s.parse::<f64>() {
            Ok(f) => Ok(CountOrFraction::Fraction(f)),
            Err(_) => Err(format!("`{s}` is neither a count nor a fraction")),
        }
    }
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
            max_weight: None,
            statistics_range: Self::DEFAULT_STATISTICS_RANGE,
        }
    }
}

impl SecAggConfig {
    pub const DEFAULT_STATISTICS_RANGE: f64 = 64.0;

    /// Checks what does not depend on the round's size.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: String| Err(format!("secure_aggregation.{what}"));
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
        if !(self.statistics_range.is_finite() && self.statistics_range > 0.0) {
            return bad(format!("statistics_range = {}: must be positive", self.statistics_range));
        }
        if let Some(w) = self.max_weight.filter(|w| !(w.is_finite() && *w > 0.0)) {
            return bad(format!("max_weight = {w}: must be positive"));
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
}

/// What secure aggregation did in one training round, as `rounds.jsonl` records it: who
/// dropped out at which stage, whether the sum was recovered, and what the protocol cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecAggRecord {
    /// n, k and t as resolved for the round.
    pub clients: u32,
    pub neighbours: u32,
    pub threshold: u32,
    /// Client indices that dropped out at each stage (did not answer, or were refused).
    pub dropped_setup: Vec<u32>,
    pub dropped_share_keys: Vec<u32>,
    pub dropped_masking: Vec<u32>,
    pub dropped_unmask: Vec<u32>,
    /// Clients whose vectors are in the sum.
    pub summed: u32,
    /// Whether the sum was unmasked (false: the previous model is kept).
    pub recovered: bool,
    /// Why it was not, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Seconds in the stages besides training (setup, share-keys, unmask, decoding).
    pub protocol_seconds: f64,
    /// Bytes of those stages, both ways, all clients together.
    pub protocol_bytes: u64,
    /// CCVR's statistics: how many clients' shares hit ±`statistics_range` (learned as a sum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics_clipped: Option<u32>,
}
