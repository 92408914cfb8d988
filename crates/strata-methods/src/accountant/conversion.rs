//! From an RDP curve (ε_RDP(α) at a list of orders) to an (ε, δ)-DP guarantee, and back from
//! ε to δ.
//!
//! The improved conversion of Balle et al., "Hypothesis Testing Interpretations and Rényi
//! Differential Privacy", AISTATS 2020, Thm 21 (also Canonne, Kamath and Steinke 2020,
//! Prop. 12): ε = min_α [ε_RDP(α) + ln((α−1)/α) − (ln δ + ln α)/(α−1)]. Both Opacus
//! (`get_privacy_spent`) and dp_accounting (`compute_epsilon`) use it; these follow
//! dp_accounting 0.6.0 to the detail:
//! - only orders α > 1.01 take part (the bound is unstable as α → 1 and useless there);
//! - an order whose ε_RDP is so small that δ² + expm1(−ε_RDP) > 0 gives ε = 0 (the KL bound
//!   δ ≤ √(1 − e^(−KL))); a negative ε_RDP (rounding) gives 0 too;
//! - the first order reaching the minimum is reported, and ε is clamped at ≥ 0;
//! - an order whose ε_RDP is +∞ (a series that did not converge) never wins.

/// (ε, the order that gives it) for `delta` ∈ (0, 1). `orders` is not empty and as long as
/// `rdp`; +∞ when every order is +∞.
pub(super) fn epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let per_order = orders.iter().zip(rdp).map(|(&order, &r)| {
        if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if order > 1.01 {
            r + (-1.0 / order).ln_1p() - (delta * order).ln() / (order - 1.0)
        } else {
            f64::INFINITY
        }
    });
    let (epsilon, order) = first_minimum(orders, per_order);
    (epsilon.max(0.0), order)
}

/// (δ, the order that gives it) for `epsilon` ≥ 0: the same bound solved for δ,
/// ln δ = (α−1)(ε_RDP(α) − ε + ln(1 − 1/α)) − ln α, and the KL bound ½ ln(1 − e^(−ε_RDP)),
/// the smaller of the two at each order; δ is capped at 1.
pub(super) fn delta(orders: &[f64], rdp: &[f64], epsilon: f64) -> (f64, f64) {
    let per_order = orders.iter().zip(rdp).map(|(&order, &r)| {
        let kl = if r <= 0.0 { f64::NEG_INFINITY } else { 0.5 * (-(-r).exp()).ln_1p() };
        if order > 1.01 {
            let bound = (order - 1.0) * (r - epsilon + (-1.0 / order).ln_1p()) - order.ln();
            kl.min(bound)
        } else {
            kl
        }
    });
    let (log_delta, order) = first_minimum(orders, per_order);
    (log_delta.exp().min(1.0), order)
}

/// The smallest value and its order, the first one on ties (numpy's argmin). A NaN, which the
/// callers never produce, would count as +∞.
fn first_minimum(orders: &[f64], values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(f64::NAN));
    for (&order, value) in orders.iter().zip(values) {
        if value < best.0 {
            best = (value, order);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gaussian_curve_gives_the_textbook_numbers() {
        // One Gaussian release with σ = 5 at T = 100 steps: ε_RDP(α) = 2α (config F's curve).
        let orders = [1.1, 2.0, 3.3, 3.4, 10.0];
        let rdp: Vec<f64> = orders.iter().map(|a| 2.0 * a).collect();
        let (eps, order) = epsilon(&orders, &rdp, 1e-5);
        let at_3_3 = 6.6 + (-1.0 / 3.3_f64).ln_1p() - (1e-5_f64 * 3.3).ln() / (3.3 - 1.0);
        assert_eq!((eps, order), (at_3_3, 3.3));
        // δ(ε) at that ε returns δ at the same order (up to rounding).
        let (back, order) = delta(&orders, &rdp, eps);
        assert_eq!(order, 3.3);
        assert!((back - 1e-5).abs() < 1e-18, "{back}");
    }

    #[test]
    fn tiny_curves_give_zero_and_infinite_ones_never_win() {
        let orders = [1.005, 1.5, 2.0];
        // Below the KL threshold δ²: ε = 0 at the first order, even one ≤ 1.01.
        assert_eq!(epsilon(&orders, &[1e-12, 1e-11, 1e-10], 1e-5), (0.0, 1.005));
        assert_eq!(epsilon(&orders, &[-1e-17, 1.0, 1.0], 1e-5), (0.0, 1.005));
        let (eps, order) = epsilon(&orders, &[f64::INFINITY, f64::INFINITY, 1.0], 1e-5);
        assert!(eps.is_finite() && order == 2.0);
        assert_eq!(epsilon(&orders, &[f64::INFINITY; 3], 1e-5), (f64::INFINITY, 1.005));
        assert_eq!(delta(&orders, &[f64::INFINITY; 3], 1.0), (1.0, 1.005));
        assert_eq!(delta(&orders, &[0.0; 3], 1.0), (0.0, 1.005));
    }
}
