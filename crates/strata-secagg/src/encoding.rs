//! Fixed point in the ring: a client's weighted, clipped values map to integers 0..=Q by
//! stochastic rounding (unbiased), its quantized weight goes first; the server decodes the
//! sum of such vectors into the weighted mean. Flower's encoding (§6 of the spec), with the
//! overflow it leaves unchecked refused when the round's parameters are resolved.

use rand::Rng;

use crate::error::SecAggError;
use crate::params::RoundParams;

/// The client's quantized weight: `samples / max_weight`, at most 1, times Q, rounded.
pub fn quantized_weight(params: &RoundParams, samples: u64) -> u32 {
    let w = (samples as f64 / params.max_weight).min(1.0);
    (w * f64::from(params.quantization_range)).round_ties_even() as u32
}

/// `[q] ++ z`: the weight, then each value times q/Q, clipped to [−c, c] and mapped to 0..=Q.
pub fn encode(params: &RoundParams, values: &[f32], weight: u32, rng: &mut impl Rng) -> Vec<u32> {
    let q = f64::from(params.quantization_range);
    let c = params.clipping_range;
    let w = f64::from(weight) / q;
    let mut out = Vec::with_capacity(values.len() + 1);
    out.push(weight);
    // The coins a block at a time: one u32 each, up when below frac · 2^32 (E[z] = u to
    // within 2^-32), so that the loop vectorizes.
    let mut coins = [0u32; 4096];
    for chunk in values.chunks(coins.len()) {
        let coins = &mut coins[..chunk.len()];
        rng.fill(coins);
        out.extend(chunk.iter().zip(coins.iter()).map(|(&v, &coin)| {
            let x = (w * f64::from(v)).clamp(-c, c);
            let u = (x + c) * q / (2.0 * c);
            let floor = u.floor();
            let up = f64::from(coin) < (u - floor) * 4_294_967_296.0;
            (floor + f64::from(u8::from(up))).clamp(0.0, q) as u32
        }));
    }
    out
}

/// What the server can check of an unmasked sum without seeing a vector: its weight element
/// is exactly the sum of the contributors' quantized weights (which the server computes from
/// the sample counts they reported), and no element exceeds what `contributors` honest
/// vectors can add up to (Q each). A hostile client that wrote its own weight, or values
/// outside 0..=Q that do not cancel out, is caught here; one that stays inside the ranges is
/// not (secure aggregation hides which vector moved the sum).
pub fn check_sum(
    params: &RoundParams,
    sum: &[u32],
    contributors: usize,
    expected_weight: u64,
) -> Result<(), SecAggError> {
    let refuse = |what: String| Err(SecAggError::Refused(format!("the unmasked sum: {what}")));
    let Some((&weight, values)) = sum.split_first() else { return refuse("it is empty".into()) };
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
    Ok(())
}

/// The weighted mean `Σ wᵢ xᵢ / Σ wᵢ` from the (unmasked) sum of `contributors` vectors,
/// and the total weight Σ wᵢ.
pub fn decode(params: &RoundParams, sum: &[u32], contributors: usize) -> Result<(Vec<f32>, f64), SecAggError> {
    let q = f64::from(params.quantization_range);
    let c = params.clipping_range;
    let (&total, values) = sum.split_first().ok_or_else(|| SecAggError::Config("an empty sum".into()))?;
    if total == 0 {
        return Err(SecAggError::Config("the clients' weights sum to zero: nothing to average".into()));
    }
    let total_weight = f64::from(total) / q;
    let shift = contributors as f64 * c;
    let mean = values.iter().map(|&z| ((f64::from(z) * 2.0 * c / q - shift) / total_weight) as f32).collect();
    Ok((mean, total_weight))
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
        let (a, b) = (encode(&p, &[0.5, -1.0], 16, &mut rng), encode(&p, &[2.0, 8.0], 8, &mut rng));
        let sum: Vec<u32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert!(check_sum(&p, &sum, 2, 24).is_ok());
        assert!(check_sum(&p, &sum, 2, 25).unwrap_err().to_string().contains("weight of its own"));
        let forged: Vec<u32> = sum.iter().enumerate().map(|(i, &v)| if i == 2 { 33 } else { v }).collect();
        assert!(check_sum(&p, &forged, 2, 24).unwrap_err().to_string().contains("value 1 is 33"));
    }

    #[test]
    fn stochastic_rounding_is_unbiased_and_clipping_holds() {
        let p = coarse();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let weight = 16; // w = 1
        // 0.3 sits between two of the 16 levels of [−8, 8]; the mean of many roundings finds it.
        let draws: Vec<f32> =
            (0..20_000).map(|_| decode(&p, &encode(&p, &[0.3], weight, &mut rng), 1).unwrap().0[0]).collect();
        let mean = draws.iter().map(|&v| f64::from(v)).sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.3).abs() < 0.02, "{mean}");
        assert!(draws.iter().all(|&v| v == 0.0 || v == 1.0), "one of the two nearest levels");
        // Beyond ±c: clipped.
        let big = encode(&p, &[100.0, -100.0], weight, &mut rng);
        assert_eq!(&big[1..], &[16, 0]);
    }
}
