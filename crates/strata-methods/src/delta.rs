//! An update as its change from the model its client was sent: the L2 norm of that change, and
//! the update with its change scaled. Robust norm bounds and differential privacy's clipping
//! both measure and scale Δ = update − reference, in f64.

use strata_core::tensor::TensorSet;

/// ‖update − reference‖₂ over every value, in f64. The sets hold the same tensors in the same
/// order (callers check).
pub fn delta_norm(reference: &TensorSet, update: &TensorSet) -> f64 {
    let squares = update
        .tensors()
        .iter()
        .zip(reference.tensors())
        .flat_map(|(x, r)| x.values().iter().zip(r.values()).map(|(&x, &r)| (x as f64 - r as f64).powi(2)));
    squares.sum::<f64>().sqrt()
}

/// min(1, bound / norm): the factor that brings a change of L2 norm `norm` within `bound`; a
/// zero change keeps factor 1 (no division by zero).
pub fn clip_factor(norm: f64, bound: f64) -> f64 {
    if norm > bound { bound / norm } else { 1.0 }
}

/// reference + factor · (update − reference); the update itself when the factor is 1.
pub fn scaled_update(reference: &TensorSet, update: &TensorSet, factor: f64) -> TensorSet {
    if factor >= 1.0 {
        return update.clone();
    }
    let mut out = reference.clone();
    for ((_, out_values), update) in out.values_mut().zip(update.tensors()) {
        for (out_value, &x) in out_values.iter_mut().zip(update.values()) {
            let reference = *out_value as f64;
            *out_value = (reference + factor * (x as f64 - reference)) as f32;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::set;

    #[test]
    fn a_change_is_measured_and_scaled_from_its_reference() {
        let (reference, update) = (set(&[1.0, 1.0]), set(&[4.0, 5.0]));
        assert_eq!(delta_norm(&reference, &update), 5.0);
        let factor = clip_factor(5.0, 2.5);
        assert_eq!(factor, 0.5);
        assert_eq!(scaled_update(&reference, &update, factor).get("w").unwrap().values(), [2.5, 3.0]);
        assert_eq!(clip_factor(0.0, 1.0), 1.0);
        assert_eq!(scaled_update(&reference, &update, 1.0), update);
    }
}
