//! The noise multiplier that reaches a target ε, so a run can be configured by its privacy
//! budget instead of by z.
//!
//! The search is Opacus' `get_noise_multiplier` (opacus 1.6.0, `accountants/utils.py`):
//! double an upper bound from 10 until it is private enough, failing past 10⁶, then bisect,
//! keeping the upper end, whose ε never exceeds the target. Opacus stops when ε is within an
//! absolute 0.01 of the target; here the stop is relative, [`CALIBRATION_RELATIVE_TOLERANCE`],
//! and the RDP is dp_accounting's (see [`super::poisson`]), so the z can differ from Opacus'
//! in the third decimal.

use super::{AccountantError, Event, Neighbouring, RdpAccountant};

/// The search stops once ε(z) ≥ target · (1 − this); ε(z) ≤ target always holds.
pub const CALIBRATION_RELATIVE_TOLERANCE: f64 = 1e-3;

/// Beyond this noise multiplier the target is declared out of reach (Opacus' `MAX_SIGMA`).
pub const MAX_NOISE_MULTIPLIER: f64 = 1e6;

/// Once the bisection interval is this small relative to z it stops even short of the
/// tolerance: ε(z) can jump where an order's series stops converging.
const SMALLEST_RELATIVE_STEP: f64 = 1e-12;

/// The noise multiplier z for `steps` Poisson-sampled steps at rate `sampling_rate` that
/// gives (ε, `delta`)-DP with target · (1 − [`CALIBRATION_RELATIVE_TOLERANCE`]) ≤ ε ≤ target,
/// under add-or-remove-one neighbours over the default orders. q = 0 releases nothing about
/// anyone and gives z = 0.
pub fn noise_multiplier_for(
    target_epsilon: f64,
    delta: f64,
    sampling_rate: f64,
    steps: u64,
) -> Result<f64, AccountantError> {
    if !(target_epsilon.is_finite() && target_epsilon > 0.0) {
        return Err(AccountantError::TargetEpsilon(target_epsilon));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(AccountantError::Delta(delta));
    }
    Event::Poisson { sampling_rate, noise_multiplier: 0.0, steps }.validate()?;
    if steps == 0 {
        return Err(AccountantError::NoSteps);
    }
    if sampling_rate == 0.0 {
        return Ok(0.0);
    }
    let epsilon_at = |noise_multiplier: f64| -> Result<f64, AccountantError> {
        let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        accountant.compose_poisson(sampling_rate, noise_multiplier, steps)?;
        Ok(accountant.epsilon(delta)?.epsilon)
    };

    let (mut low, mut high) = (0.0, 10.0);
    let mut epsilon_high = epsilon_at(high)?;
    while epsilon_high > target_epsilon {
        if high >= MAX_NOISE_MULTIPLIER {
            return Err(AccountantError::Unreachable { target_epsilon, noise_multiplier: high, epsilon: epsilon_high });
        }
        // ε does not grow with z: everything below a z that is not enough is not enough either.
        low = high;
        high = (2.0 * high).min(MAX_NOISE_MULTIPLIER);
        epsilon_high = epsilon_at(high)?;
    }
    let enough = target_epsilon * (1.0 - CALIBRATION_RELATIVE_TOLERANCE);
    while epsilon_high < enough && high - low > SMALLEST_RELATIVE_STEP * high {
        let middle = 0.5 * (low + high);
        let epsilon = epsilon_at(middle)?;
        if epsilon <= target_epsilon {
            (high, epsilon_high) = (middle, epsilon);
        } else {
            low = middle;
        }
    }
    Ok(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epsilon(q: f64, z: f64, steps: u64, delta: f64) -> f64 {
        let mut accountant = RdpAccountant::new(Neighbouring::AddOrRemoveOne);
        accountant.compose_poisson(q, z, steps).unwrap();
        accountant.epsilon(delta).unwrap().epsilon
    }

    #[test]
    fn the_noise_found_spends_just_under_the_target() {
        for (target, delta, q, steps) in
            [(8.0, 1e-5, 0.01, 1000), (1.0, 1e-6, 0.05, 500), (0.3, 1e-5, 1.0, 1), (50.0, 1e-5, 0.1, 20)]
        {
            let z = noise_multiplier_for(target, delta, q, steps).unwrap();
            let spent = epsilon(q, z, steps, delta);
            assert!(spent <= target, "{target}: z {z} gives {spent}");
            assert!(spent >= target * (1.0 - CALIBRATION_RELATIVE_TOLERANCE), "{target}: z {z} gives {spent}");
        }
    }

    #[test]
    fn opacus_documented_value_is_met() {
        // Opacus' get_noise_multiplier(target_epsilon=8, target_delta=1e-5, sample_rate=0.01,
        // steps=1000, accountant="rdp") = 0.61584, to its own tolerance of 0.01 in ε.
        let z = noise_multiplier_for(8.0, 1e-5, 0.01, 1000).unwrap();
        assert!((z - 0.61584).abs() < 0.005, "{z}");
    }

    #[test]
    fn nothing_sampled_needs_no_noise_and_tiny_budgets_are_out_of_reach() {
        assert_eq!(noise_multiplier_for(1.0, 1e-5, 0.0, 100), Ok(0.0));
        let refused = noise_multiplier_for(1e-4, 1e-5, 1.0, 10000).unwrap_err();
        assert!(
            matches!(refused, AccountantError::Unreachable { noise_multiplier, epsilon, .. }
                if noise_multiplier == MAX_NOISE_MULTIPLIER && epsilon > 1e-4),
            "{refused}"
        );
        assert!(
            refused.to_string().starts_with("target epsilon = 0.0001 is out of reach: even noise multiplier 1000000")
        );
    }

    #[test]
    fn bad_input_is_refused() {
        for target in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(matches!(noise_multiplier_for(target, 1e-5, 0.01, 10), Err(AccountantError::TargetEpsilon(_))));
        }
        assert_eq!(noise_multiplier_for(1.0, 0.0, 0.01, 10), Err(AccountantError::Delta(0.0)));
        assert_eq!(noise_multiplier_for(1.0, 1e-5, 1.01, 10), Err(AccountantError::SamplingRate(1.01)));
        assert_eq!(noise_multiplier_for(1.0, 1e-5, 0.01, 0), Err(AccountantError::NoSteps));
    }
}
