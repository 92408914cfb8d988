//! RDP of one step of the Gaussian mechanism on a fixed-size sample drawn without replacement
//! (m of N, so q = m/N), for replace-one neighbours (N is public): what an FL server that picks
//! a fixed cohort each round, as Flower does, can honestly claim.
//!
//! Wang, Balle and Kasiviswanathan, "Subsampled Rényi Differential Privacy and Analytical
//! Moments Accountant", AISTATS 2019 (arXiv 1808.00087), Theorem 27, computed as dp_accounting
//! 0.6.0 computes it (`_compute_rdp_sample_wor_gaussian`), because its numbers are our
//! reference:
//! - integer α ≤ 256: the bound with the forward differences of e^(CGF) of the Gaussian
//!   (O(α²) terms, in log space with signs);
//! - integer α > 256: the looser bound 2e^(CGF) in every term (O(α));
//! - fractional α: the CGF interpolated linearly between ⌊α⌋ and ⌈α⌉ (their Corollary 10).
//!
//! Under replace-one the sensitivity of a sum of updates clipped to C is 2C: a caller who adds
//! noise of std zC passes σ = z/2. The bound is loose, so its ε is not comparable one to one
//! with an add-or-remove-one ε (`shared/methods/differential-privacy.md` (c)).

use std::f64::consts::LN_2;

use super::log_space::{log_add, log_binomial, log_sub_sign};

/// Up to this order the exact Theorem 27 sum; above it, the O(α) bound (dp_accounting's
/// `max_alpha`).
const EXACT_UP_TO: u32 = 256;

/// ε(α) of one step with sampling proportion `q` = m/N ∈ [0, 1] and noise multiplier `sigma`
/// ≥ 0, at an order α > 1. `log_a` evaluates [`log_a_integer`] (the caller may memoize it:
/// the fractional orders between two integers share both ends).
pub(super) fn rdp(q: f64, sigma: f64, order: f64, log_a: &mut impl FnMut(u32) -> f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    // dp_accounting divides by zero here; no noise is no privacy.
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return order / (2.0 * sigma * sigma);
    }
    if order.fract() == 0.0 {
        return log_a(order as u32) / (order - 1.0);
    }
    let (floor, ceil) = (order.floor(), order.ceil());
    let t = order - floor;
    ((1.0 - t) * log_a(floor as u32) + t * log_a(ceil as u32)) / (order - 1.0)
}

/// ln A_α of Theorem 27 at an integer α ≥ 1, for 0 < q < 1 and σ > 0:
/// A_α = 1 + q² C(α,2) min{4(e^(ε(2)) − 1), 2e^(ε(2))}
///         + Σ_{i=3..α} q^i C(α,i) min{4 √(Δ_lo Δ_hi), 2e^(CGF(i−1))},
/// with ε(x) = x/2σ² the Gaussian's RDP, CGF(x) = x(x+1)/2σ², and Δ_lo, Δ_hi the forward
/// differences of e^CGF at the even indices around i (as dp_accounting indexes them).
pub(super) fn log_a_integer(q: f64, sigma: f64, order: u32) -> f64 {
    if order == 1 {
        return 0.0;
    }
    let two_variance = 2.0 * sigma * sigma;
    let cgf = |x: f64| x * (x + 1.0) / two_variance;
    let gaussian_rdp_2 = 2.0 / two_variance;
    let log_q = q.ln();
    let alpha = f64::from(order);
    let log_f2_minus_1 = gaussian_rdp_2 + (-(-gaussian_rdp_2).exp()).ln_1p();
    // The sum starts from ln 1 = 0 and adds the terms in dp_accounting's order.
    let second = 2.0 * log_q + log_binomial(alpha, 2.0) + (4.0_f64.ln() + log_f2_minus_1).min(gaussian_rdp_2 + LN_2);
    let mut log_a = log_add(0.0, second);
    if order <= EXACT_UP_TO {
        let deltas = log_forward_differences(cgf, order as usize);
        for i in 3..=order as usize {
            let low = deltas[2 * (i / 2) - 1];
            let high = deltas[2 * i.div_ceil(2) - 1];
            let i = i as f64;
            let bound = (4.0_f64.ln() + 0.5 * (low + high)).min(LN_2 + cgf(i - 1.0));
            log_a = log_add(log_a, bound + i * log_q + log_binomial(alpha, i));
        }
    } else {
        for i in 3..=order {
            let i = f64::from(i);
            log_a = log_add(log_a, LN_2 + cgf(i - 1.0) + i * log_q + log_binomial(alpha, i));
        }
    }
    log_a
}

/// ln |Δ^k| for k = 1..=n+2 of the sequence (1, e^f(0), e^f(1), …, e^f(n+1)), at index k−1:
/// dp_accounting's `_get_forward_diffs`, leading 1 included. In-place differences of numbers
/// held as (sign, ln |x|).
fn log_forward_differences(f: impl Fn(f64) -> f64, n: usize) -> Vec<f64> {
    let mut magnitudes = vec![0.0; n + 3];
    let mut positive = vec![true; n + 3];
    for (k, magnitude) in magnitudes.iter_mut().enumerate().skip(1) {
        *magnitude = f((k - 1) as f64);
    }
    let mut deltas = Vec::with_capacity(n + 2);
    for round in 0..n + 2 {
        for j in 0..n + 2 - round {
            if positive[j] == positive[j + 1] {
                let (sign, magnitude) = log_sub_sign(magnitudes[j + 1], magnitudes[j]);
                magnitudes[j] = magnitude;
                positive[j] = if positive[j + 1] { sign } else { !sign };
            } else {
                magnitudes[j] = log_add(magnitudes[j], magnitudes[j + 1]);
                positive[j] = positive[j + 1];
            }
        }
        deltas.push(magnitudes[0]);
    }
    deltas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, relative: f64) -> bool {
        (got - want).abs() <= relative * want.abs()
    }

    fn rdp_at(q: f64, sigma: f64, order: f64) -> f64 {
        rdp(q, sigma, order, &mut |alpha| log_a_integer(q, sigma, alpha))
    }

    #[test]
    fn the_edges_are_closed_forms() {
        assert_eq!(rdp_at(0.0, 1.0, 2.0), 0.0);
        assert_eq!(rdp_at(0.5, 0.0, 2.0), f64::INFINITY);
        assert_eq!(rdp_at(1.0, 2.0, 2.5), 2.5 / 8.0);
        assert_eq!(log_a_integer(0.5, 1.0, 1), 0.0);
    }

    #[test]
    fn forward_differences_of_a_known_sequence() {
        // e^f(x) = 2^x: the sequence (1, 1, 2, 4, 8, 16), whose Δ¹..Δ⁵ at 0 are 0, 1, 0, 1, 0.
        let deltas = log_forward_differences(|x| x * LN_2, 3);
        let values: Vec<f64> = deltas.iter().map(|d| d.exp()).collect();
        for (got, want) in values.iter().zip([0.0, 1.0, 0.0, 1.0, 0.0]) {
            assert!((got - want).abs() < 1e-13, "{values:?}");
        }
    }

    /// dp_accounting 0.6.0's `_compute_rdp_sample_wor_gaussian`, printed with repr.
    #[test]
    fn single_orders_match_dp_accounting() {
        let cases = [
            (0.01, 1.0, 2.0, 0.0005435086381094331),
            (0.01, 1.0, 6.0, 0.0018141998399960689),
            (0.01, 0.5, 2.5, 0.10569038272579018),
            (0.01, 2.0, 13.0, 0.0007796762741688312),
            (0.1, 0.5, 63.0, 123.67145623099896),
            (0.05, 5.0, 128.0, 0.01950797516681605),
            (0.1, 1.0, 256.0, 125.6911033857807),
            (0.1, 1.0, 1024.0, 509.6958416539146),
        ];
        for (q, sigma, order, want) in cases {
            let got = rdp_at(q, sigma, order);
            assert!(close(got, want, 1e-9), "q {q} σ {sigma} α {order}: {got} vs {want}");
        }
    }
}
