//! RDP of one step of the Poisson-subsampled Gaussian mechanism (add-or-remove-one neighbours):
//! every record joins the step independently with probability q, and the sum of the clipped
//! contributions gets Gaussian noise of σ times the L2 sensitivity.
//!
//! Mironov, Talwar and Zhang, "Rényi Differential Privacy of the Sampled Gaussian Mechanism",
//! 2019 (arXiv 1908.10530), §3.3, computed as dp_accounting 0.6.0 computes it
//! (`_compute_rdp_poisson_subsampled_gaussian`), details included, because its numbers are
//! our reference (`shared/methods/differential-privacy.md` (c)):
//! - ε(α) = ln(A_α)/(α−1), with A_α summed in log space;
//! - at a fractional α the binomial coefficients C(α, i) are taken by magnitude, which bounds
//!   A_α from above (Opacus subtracts the negative ones instead and is a little tighter);
//! - the fractional series stops when both new terms fall and are 30 nats below the total;
//!   after [`MAX_FRACTIONAL_TERMS`] terms without that, the order counts as ε(α) = ∞ (it drops
//!   out of the (ε, δ) minimum instead of giving a wrong, too small value).

use super::log_space::{log_add, log_binomial, log_erfc};

/// Terms of the fractional-order series before the order is given up (dp_accounting's
/// `_MAX_STEPS_LOG_A_FRAC`). Small orders with large q and large σ (q = 0.5, σ = 5, α < 2)
/// need more and are dropped: the optimum is then at another order.
pub const MAX_FRACTIONAL_TERMS: u32 = 1000;

/// ε(α) of one step with sampling rate `q` ∈ [0, 1] and noise multiplier `sigma` ≥ 0, at an
/// order α > 1. Can be +∞ (σ = 0, or a series that did not converge).
pub(super) fn rdp(q: f64, sigma: f64, order: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return order / (2.0 * sigma * sigma);
    }
    let log_a = if order.fract() == 0.0 { log_a_integer(q, sigma, order) } else { log_a_fractional(q, sigma, order) };
    log_a / (order - 1.0)
}

/// ln A_α for an integer α: ln Σ_{i=0..α} C(α,i) q^i (1−q)^(α−i) e^((i²−i)/2σ²).
fn log_a_integer(q: f64, sigma: f64, order: f64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let two_variance = 2.0 * sigma * sigma;
    let mut log_a = f64::NEG_INFINITY;
    let mut i = 0.0;
    while i <= order {
        let log_coefficient = log_binomial(order, i) + i * log_q + (order - i) * log_1mq;
        log_a = log_add(log_a, log_coefficient + (i * i - i) / two_variance);
        i += 1.0;
    }
    log_a
}

/// ln A_α for a fractional α: A_α = A0 + A1, the integrals over (−∞, z0] and [z0, ∞) with
/// z0 = σ² ln(1/q − 1) + ½, each a series in i ≥ 0 (j = α − i):
/// - A0 terms: |C(α,i)| q^i (1−q)^j e^((i²−i)/2σ²) · ½ erfc((i − z0)/(√2σ));
/// - A1 terms: |C(α,i)| q^j (1−q)^i e^((j²−j)/2σ²) · ½ erfc((z0 − j)/(√2σ)).
///
/// +∞ when the series has not converged after [`MAX_FRACTIONAL_TERMS`] terms.
fn log_a_fractional(q: f64, sigma: f64, order: f64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let two_variance = 2.0 * sigma * sigma;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let erfc_scale = std::f64::consts::SQRT_2 * sigma;
    let log_half = 0.5_f64.ln();
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for term in 0..MAX_FRACTIONAL_TERMS {
        let i = f64::from(term);
        let j = order - i;
        let log_coefficient = log_binomial(order, i);
        let log_t0 = log_coefficient + i * log_q + j * log_1mq;
        let log_t1 = log_coefficient + j * log_q + i * log_1mq;
        let log_e0 = log_half + log_erfc((i - z0) / erfc_scale);
        let log_e1 = log_half + log_erfc((z0 - j) / erfc_scale);
        let log_s0 = log_t0 + (i * i - i) / two_variance + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_variance + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        (last_s0, last_s1) = (log_s0, log_s1);
    }
    f64::INFINITY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, relative: f64) -> bool {
        (got - want).abs() <= relative * want.abs()
    }

    #[test]
    fn the_edges_are_closed_forms() {
        assert_eq!(rdp(0.0, 0.0, 2.0), 0.0);
        assert_eq!(rdp(0.3, 0.0, 2.5), f64::INFINITY);
        assert_eq!(rdp(1.0, 5.0, 3.3), 3.3 / 50.0);
        assert_eq!(rdp(1.0, 2.0, 1024.0), 1024.0 / 8.0);
    }

    #[test]
    fn order_two_is_the_chi_square_closed_form() {
        // A_2 = (1−q)² + 2q(1−q) + q² e^(1/σ²) = 1 + q²(e^(1/σ²) − 1).
        for (q, sigma) in [(0.01_f64, 1.0_f64), (0.3, 0.7), (0.9, 3.0)] {
            let want = (q * q * (1.0 / (sigma * sigma)).exp_m1()).ln_1p();
            assert!(close(rdp(q, sigma, 2.0), want, 1e-12), "q {q} σ {sigma}");
        }
    }

    /// dp_accounting 0.6.0's `_compute_rdp_poisson_subsampled_gaussian`, printed with repr.
    #[test]
    fn single_orders_match_dp_accounting() {
        let cases = [
            (0.01, 1.0, 1.5, 0.00013236850293993048),
            (0.01, 1.0, 7.8, 0.0008475673923345401),
            (0.01, 1.0, 32.0, 11.246275937048072),
            (0.1, 1.0, 3.2, 0.03574100647944848),
            (0.05, 0.8, 1024.0, 797.0013393469018),
            (0.5, 5.0, 2.5, 0.01968533446134731),
        ];
        for (q, sigma, order, want) in cases {
            let got = rdp(q, sigma, order);
            assert!(close(got, want, 1e-9), "q {q} σ {sigma} α {order}: {got} vs {want}");
        }
    }

    #[test]
    fn a_series_that_does_not_converge_drops_its_order() {
        // dp_accounting warns "failed to converge" for exactly these (q = 0.5, σ = 5, α < 2).
        assert_eq!(rdp(0.5, 5.0, 1.5), f64::INFINITY);
        assert!(rdp(0.5, 5.0, 2.5).is_finite());
    }
}
