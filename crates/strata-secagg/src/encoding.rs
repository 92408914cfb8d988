//! Fixed point in the ring: a client's weighted, clipped values map to integers 0..=Q by
//! stochastic rounding (unbiased), its quantized weight goes first, and a tail of integers
//! summed as they are (DP's unclipped bit, CCVR's class counts) last; the server decodes the
//! sum of such vectors into the weighted sum and mean and the tail's totals. Flower's encoding (§6 of the spec), with the overflow it leaves
//! unchecked refused when the round's parameters are resolved.

use rand::Rng;

use crate::error::SecAggError;
use crate::params::RoundParams;

/// The client's quantized weight: `samples / max_weight`, at most 1, times Q, rounded; Q for
/// everyone when weights are uniform.
pub fn quantized_weight(params: &RoundParams, samples: u64) -> u32 {
    if params.uniform_weights {
        return params.quantization_range;
    }
    let w = (samples as f64 / params.max_weight).min(1.0);
    (w * f64::from(params.quantization_range)).round_ties_even() as u32
}

/// How far rounding can move a weight-1 vector of `values` values, in L2 norm: each decoded
/// value lies within one step, 2c/Q, of the clipped one. A client that clips its update to
/// `C − slack` therefore adds at most `C` to the decoded sum, the bound DP's noise covers.
pub fn rounding_slack(params: &RoundParams, values: usize) -> f64 {
    (values as f64).sqrt() * 2.0 * params.clipping_range / f64::from(params.quantization_range)
}

/// `[q] ++ z ++ tail`: the weight, then each value times q/Q, clipped to [−c, c] and mapped
/// to 0..=Q, then the [`RoundParams::tail`] integers as they are. Also returns how many
/// values the clipping changed.
pub fn encode(
    params: &RoundParams,
    values: &[f32],
    weight: u32,
    tail: &[u32],
    rng: &mut impl Rng,
) -> Result<Encoded, SecAggError> {
    if tail.len() != params.tail {
        return Err(SecAggError::Config(format!(
            "{} integers after the values, where the round carries {}",
            tail.len(),
            params.tail
        )));
    }
    let q = f64::from(params.quantization_range);
    let c = params.clipping_range;
    let w = f64::from(weight) / q;
    let mut out = Vec::with_capacity(params.vector_len(values.len()));
    out.push(weight);
    let mut clipped = 0;
    // The coins a block at a time: one u32 each, up when below frac · 2^32 (E[z] = u to
    // within 2^-32), so that the loop vectorizes.
    let mut coins = [0u32; 4096];
    for chunk in values.chunks(coins.len()) {
        let coins = &mut coins[..chunk.len()];
        rng.fill(coins);
        clipped += chunk.iter().filter(|&&v| (w * f64::from(v)).abs() > c).count();
        out.extend(chunk.iter().zip(coins.iter()).map(|(&v, &coin)| {
            let x = (w * f64::from(v)).clamp(-c, c);
            let u = (x + c) * q / (2.0 * c);
            let floor = u.floor();
            let up = f64::from(coin) < (u - floor) * 4_294_967_296.0;
            (floor + f64::from(u8::from(up))).clamp(0.0, q) as u32
        }));
    }
    out.extend_from_slice(tail);
    Ok(Encoded { vector: out, clipped })
}

/// A client's vector before masking, and how many of its values hit ±c.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub vector: Vec<u32>,
    pub clipped: usize,
}

/// An unmasked sum split into its weight, values and tail.
fn split<'a>(params: &RoundParams, sum: &'a [u32]) -> Option<(u32, &'a [u32], &'a [u32])> {
    let (&weight, rest) = sum.split_first()?;
    let at = rest.len().checked_sub(params.tail)?;
    let (values, tail) = rest.split_at(at);
    Some((weight, values, tail))
}

/// What the server can check of an unmasked sum without seeing a vector: its weight element
/// is exactly the sum of the contributors' quantized weights (which the server computes from
/// the sample counts they reported), no element exceeds what `contributors` honest vectors
/// can add up to (Q each), and no tail total exceeds `tail_limit`. A hostile client that
/// wrote its own weight, or values outside 0..=Q that do not cancel out, is caught here; one
/// that stays inside the ranges is not (secure aggregation hides which vector moved the sum).
pub fn check_sum(
    params: &RoundParams,
    sum: &[u32],
    contributors: usize,
    expected_weight: u64,
    tail_limit: u64,
) -> Result<(), SecAggError> {
    let refuse = |what: String| Err(SecAggError::Refused(format!("the unmasked sum: {what}")));
    let Some((weight, values, tail)) = split(params, sum) else { return refuse("it is too short".into()) };
    if u64::from(weight) != expected_weight {
        return refuse(format!(
            "its weight is {weight}, where the contributors' sample counts give {expected_weight}: \
             a client sent a weight of its own"
        ));
    }
    let most = contributors as u64 * u64::from(params.quantization_range);
    if let Some(i) = values.iter().position(|&v| u64::from(v) > most) {
        return refuse(format!(
            "value {i} is {}, beyond the {most} that {contributors} clients can add up to: a client sent values \
             outside the quantization range",
            values[i]
        ));
    }
    if let Some(i) = tail.iter().position(|&t| u64::from(t) > tail_limit) {
        return refuse(format!(
            "integer {i} after the values totals {}, beyond the {tail_limit} that {contributors} clients can send",
            tail[i]
        ));
    }
    Ok(())
}

/// A decoded sum: `Σ wᵢ xᵢ` per value, `Σ wᵢ`, and the tail's totals.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub sum: Vec<f64>,
    pub total_weight: f64,
    pub tail: Vec<u32>,
}

impl Decoded {
    /// The weighted mean `Σ wᵢ xᵢ / Σ wᵢ`.
    pub fn mean(&self) -> Vec<f32> {
        self.sum.iter().map(|s| (s / self.total_weight) as f32).collect()
    }
}

/// The weighted sum, total weight and tail from the (unmasked) sum of `contributors` vectors.
pub fn decode(params: &RoundParams, sum: &[u32], contributors: usize) -> Result<Decoded, SecAggError> {
    let q = f64::from(params.quantization_range);
    let c = params.clipping_range;
    let (total, values, tail) = split(params, sum).ok_or_else(|| SecAggError::Config("a sum too short".into()))?;
    if total == 0 {
        return Err(SecAggError::Config("the clients' weights sum to zero: nothing to average".into()));
    }
    let shift = contributors as f64 * c;
    let sum = values.iter().map(|&z| f64::from(z) * 2.0 * c / q - shift).collect();
    Ok(Decoded { sum, total_weight: f64::from(total) / q, tail: tail.to_vec() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::params::{CountOrFraction, Resolve, SecAggConfig};

    /// 16 levels over [−8, 8] for 4 clients: rounding errors large enough to see.
    fn coarse() -> RoundParams {
        SecAggConfig {
            quantization_range: 16,
            modulus_range: 1 << 12,
            reconstruction_threshold: CountOrFraction::Fraction(0.5),
            ..SecAggConfig::default()
        }
        .resolve(4)
        .unwrap()
    }

    #[test]
    fn a_sum_with_a_forged_weight_or_out_of_range_values_is_refused() {
        let p = coarse();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let (a, b) = (
            encode(&p, &[0.5, -1.0], 16, &[], &mut rng).unwrap().vector,
            encode(&p, &[2.0, 8.0], 8, &[], &mut rng).unwrap().vector,
        );
        let sum: Vec<u32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert!(check_sum(&p, &sum, 2, 24, 0).is_ok());
        assert!(check_sum(&p, &sum, 2, 25, 0).unwrap_err().to_string().contains("weight of its own"));
        let forged: Vec<u32> = sum.iter().enumerate().map(|(i, &v)| if i == 2 { 33 } else { v }).collect();
        assert!(check_sum(&p, &forged, 2, 24, 0).unwrap_err().to_string().contains("value 1 is 33"));
    }

    #[test]
    fn stochastic_rounding_is_unbiased_and_clipping_holds() {
        let p = coarse();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let weight = 16; // w = 1
        // 0.3 sits between two of the 16 levels of [−8, 8]; the mean of many roundings finds it.
        let draws: Vec<f32> = (0..20_000)
            .map(|_| decode(&p, &encode(&p, &[0.3], weight, &[], &mut rng).unwrap().vector, 1).unwrap().mean()[0])
            .collect();
        let mean = draws.iter().map(|&v| f64::from(v)).sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.3).abs() < 0.02, "{mean}");
        assert!(draws.iter().all(|&v| v == 0.0 || v == 1.0), "one of the two nearest levels");
        // Beyond ±c: clipped.
        let big = encode(&p, &[100.0, -100.0, 1.0], weight, &[], &mut rng).unwrap();
        assert_eq!((&big.vector[1..3], big.clipped), (&[16, 0][..], 2));
    }

    #[test]
    fn a_private_sum_is_unweighted_and_counts_the_bits() {
        let p = coarse().private(true);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Sample counts no longer weigh: both clients carry Q.
        let (wa, wb) = (quantized_weight(&p, 1), quantized_weight(&p, 10_000));
        assert_eq!((wa, wb), (16, 16));
        let a = encode(&p, &[1.0, -2.0], wa, &[1], &mut rng).unwrap().vector;
        let b = encode(&p, &[3.0, 1.0], wb, &[0], &mut rng).unwrap().vector;
        assert_eq!((a.len(), p.vector_len(2), a[3], b[3]), (4, 4, 1, 0));
        assert!(encode(&p, &[3.0, 1.0], wb, &[], &mut rng).unwrap_err().to_string().contains("carries 1"));
        let sum: Vec<u32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        check_sum(&p, &sum, 2, 32, 2).unwrap();
        let decoded = decode(&p, &sum, 2).unwrap();
        // 1.0, −2.0, 3.0 and 1.0 are levels of the 16 over [−8, 8]: no rounding.
        assert_eq!(
            (decoded.sum.as_slice(), decoded.total_weight, decoded.tail.as_slice()),
            (&[4.0, -1.0][..], 2.0, &[1][..])
        );
        let forged: Vec<u32> = sum.iter().enumerate().map(|(i, &v)| if i == 3 { 3 } else { v }).collect();
        assert!(check_sum(&p, &forged, 2, 32, 2).unwrap_err().to_string().contains("totals 3, beyond the 2"));
    }

    #[test]
    fn a_vector_clipped_to_the_bound_less_the_slack_decodes_within_the_bound() {
        // The DP sensitivity after rounding: the worst case puts every value halfway between
        // two levels, so each rounds by almost a whole step one way or the other.
        let p = RoundParams { clipping_range: 1.0, quantization_range: 64, ..coarse() }.private(false);
        let (d, bound) = (400, 2.0);
        let slack = rounding_slack(&p, d);
        assert!((slack - 20.0 * 2.0 / 64.0).abs() < 1e-12);
        let half_step = 1.0 / 64.0;
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut worst = 0.0f64;
        for seed in 0..200 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let raw: Vec<f64> = (0..d).map(|i| if i % 2 == 0 { half_step } else { -half_step }).collect();
            let scale = (bound - slack) / norm(&raw);
            let x: Vec<f32> = raw.iter().map(|v| (v * scale) as f32).collect();
            let decoded = decode(&p, &encode(&p, &x, p.quantization_range, &[], &mut rng).unwrap().vector, 1).unwrap();
            worst = worst.max(norm(&decoded.sum));
        }
        assert!(worst <= bound, "{worst}");
        assert!(worst > bound - slack, "rounding moved the norm, so the slack is what is tested: {worst}");
    }
}
