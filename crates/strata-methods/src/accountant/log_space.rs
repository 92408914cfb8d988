//! Arithmetic on numbers held as their natural logarithm: the RDP series add terms that
//! overflow f64 (e^((i²−i)/2σ²) at order 1024) next to terms that underflow it (erfc far in
//! its tail), so every sum is a log-sum.
//!
//! The operations are dp_accounting's (`_log_add`, `_log_sub_sign`, `_log_comb`,
//! `_log_erfc`), so that both accountants round alike; `log_erfc` is our own, with the same
//! value as `ln 2 + scipy.special.log_ndtr(−x√2)`.

use std::f64::consts::{LN_2, PI};

/// ln(e^a + e^b). −∞ stands for 0.
pub(super) fn log_add(a: f64, b: f64) -> f64 {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    if low == f64::NEG_INFINITY {
        return high;
    }
    (low - high).exp().ln_1p() + high
}

/// (e^a ≥ e^b, ln |e^a − e^b|): the sign and the log-magnitude of a difference. Equal
/// arguments give (true, −∞), that is +0.
pub(super) fn log_sub_sign(a: f64, b: f64) -> (bool, f64) {
    if a > b {
        (true, a + (-(b - a).exp()).ln_1p())
    } else if a < b {
        (false, b + (-(a - b).exp()).ln_1p())
    } else {
        (true, f64::NEG_INFINITY)
    }
}

/// ln |C(n, k)| = lnΓ(n+1) − lnΓ(k+1) − lnΓ(n−k+1), for real n and k.
///
/// For a fractional n some C(n, k) are negative; this is the log of the magnitude, as
/// scipy's `gammaln` gives ln |Γ| (dp_accounting relies on that: its series then bounds A_α
/// from above, see [`super::poisson`]).
pub(super) fn log_binomial(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// Where `log_erfc` leaves musl's erfc for the asymptotic series: erfc(20) ≈ 5e-176 is still
/// a normal f64 with full precision (it underflows near x = 26.5), and at x = 20 the series
/// below is exact to about 1e-24.
const ASYMPTOTIC_FROM: f64 = 20.0;

/// ln erfc(x) for every x, accurate to a few ulp in the deep tail where erfc itself
/// underflows (the RDP series evaluates it at (z0 − j)/(√2σ), up to thousands).
pub(super) fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < -4.0 {
        // erfc(x) = 2 − erfc(−x), and erfc(−x) < 2e-8 here: ln 2 + ln(1 − erfc(−x)/2).
        return LN_2 + (-0.5 * libm::erfc(-x)).ln_1p();
    }
    if x < ASYMPTOTIC_FROM {
        return libm::erfc(x).ln();
    }
    // erfc(x) = e^(−x²) / (x√π) · Σ_n (−1)^n (2n−1)!! / (2x²)^n (Abramowitz & Stegun 7.1.23);
    // the terms shrink by (2n−1)/(2x²) ≤ 23/800 for n ≤ 12.
    let x2 = x * x;
    let step = 1.0 / (2.0 * x2);
    let (mut term, mut series) = (1.0, 1.0);
    for n in 1..=12 {
        term *= -f64::from(2 * n - 1) * step;
        series += term;
    }
    -x2 - x.ln() - 0.5 * PI.ln() + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, relative: f64) -> bool {
        (got - want).abs() <= relative * want.abs()
    }

    #[test]
    fn log_add_and_sub_invert_each_other() {
        let (a, b) = (3.0_f64.ln(), 5.0_f64.ln());
        assert!(close(log_add(a, b), 8.0_f64.ln(), 1e-15));
        assert_eq!(log_add(f64::NEG_INFINITY, a), a);
        assert_eq!(log_add(a, f64::NEG_INFINITY), a);
        assert!(close(log_add(1000.0, 1000.0), 1000.0 + LN_2, 1e-15));
        let (positive, magnitude) = log_sub_sign(b, a);
        assert!(positive && close(magnitude, 2.0_f64.ln(), 1e-14));
        let (positive, magnitude) = log_sub_sign(a, b);
        assert!(!positive && close(magnitude, 2.0_f64.ln(), 1e-14));
        assert_eq!(log_sub_sign(a, a), (true, f64::NEG_INFINITY));
    }

    #[test]
    fn log_binomial_counts_and_takes_magnitudes() {
        assert!(close(log_binomial(10.0, 3.0), 120.0_f64.ln(), 1e-14));
        assert!(close(log_binomial(1024.0, 512.0), 706.0909414973539, 1e-13));
        // C(2.5, 4) = 2.5·1.5·0.5·(−0.5)/24 = −0.0390625.
        assert!(close(log_binomial(2.5, 4.0), 0.0390625_f64.ln(), 1e-13));
    }

    #[test]
    fn log_erfc_matches_known_values_and_is_smooth_across_its_branches() {
        // erfc(1) = 0.157299207050285130658..., erfc(−5) = 2 − 1.5374597944280348e-12.
        assert!(close(log_erfc(1.0), 0.15729920705028513_f64.ln(), 1e-15));
        assert!(close(log_erfc(-5.0), (2.0 - 1.5374597944280348e-12_f64).ln(), 1e-15));
        assert_eq!(log_erfc(0.0), 0.0);
        // ln erfc(30) = −903.97411711064...; erfc(30) itself underflows.
        assert!(close(log_erfc(30.0), -903.9741171106442, 1e-15));
        assert!(close(log_erfc(1000.0), -1000000.0 - 1000.0_f64.ln() - 0.5 * PI.ln() - 5e-7, 1e-15));
        for x in [-4.0, ASYMPTOTIC_FROM] {
            let (below, above) = (log_erfc(x - 1e-9), log_erfc(x + 1e-9));
            assert!(below > above && close(below, above, 1e-8), "{x}: {below} {above}");
        }
        assert_eq!(log_erfc(f64::INFINITY), f64::NEG_INFINITY);
        assert_eq!(log_erfc(f64::NEG_INFINITY), LN_2);
    }
}
