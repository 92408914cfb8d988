//! Clipping one update: what a client does before uploading when it clips itself.

use strata_core::tensor::TensorSet;

use crate::delta::{clip_factor, delta_norm, scaled_update};

/// What clipping did to one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipOutcome {
    /// ‖Δ‖₂ before clipping.
    pub norm: f64,
    /// The factor Δ was scaled by, min(1, bound / ‖Δ‖).
    pub factor: f64,
}

impl ClipOutcome {
    pub fn measure(norm: f64, bound: f64) -> Self {
        Self { norm, factor: clip_factor(norm, bound) }
    }

    /// Andrew et al.'s bit: 1 when the update was within the bound (not clipped).
    pub fn unclipped(&self) -> bool {
        self.factor >= 1.0
    }
}

/// `reference` + Δ·min(1, bound/‖Δ‖) with Δ = update − reference, over the tensors both hold
/// (the same tensors in the same order, the shared ones).
pub fn clip_update(reference: &TensorSet, update: &TensorSet, bound: f64) -> (TensorSet, ClipOutcome) {
    let outcome = ClipOutcome::measure(delta_norm(reference, update), bound);
    (scaled_update(reference, update, outcome.factor), outcome)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_core::tensor::NamedTensor;

    fn set(a: &[f32], b: &[f32]) -> TensorSet {
        TensorSet::new(vec![
            NamedTensor::new("a", vec![a.len()], a.to_vec()).unwrap(),
            NamedTensor::new("b", vec![b.len()], b.to_vec()).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn the_norm_is_flat_over_every_shared_tensor() {
        // Δ = (3, 0 | 0, 4): ‖Δ‖ = 5 over both tensors, not 3 and 4 per tensor.
        let reference = set(&[1.0, 2.0], &[0.0, -1.0]);
        let update = set(&[4.0, 2.0], &[0.0, 3.0]);
        let (clipped, outcome) = clip_update(&reference, &update, 1.0);
        assert_eq!(outcome.norm, 5.0);
        assert_eq!(outcome.factor, 0.2);
        assert!(!outcome.unclipped());
        assert_eq!(clipped.get("a").unwrap().values(), [1.6, 2.0]);
        assert_eq!(clipped.get("b").unwrap().values(), [0.0, -0.2]);
        let norm = crate::delta::delta_norm(&reference, &clipped);
        assert!((norm - 1.0).abs() < 1e-6, "{norm}");
    }

    #[test]
    fn an_update_within_the_bound_is_kept_as_sent() {
        let reference = set(&[1.0, 2.0], &[0.0, -1.0]);
        let update = set(&[1.3, 2.0], &[0.0, -1.4]);
        let (clipped, outcome) = clip_update(&reference, &update, 1.0);
        assert!((outcome.norm - 0.5).abs() < 1e-6);
        assert!(outcome.unclipped());
        assert_eq!(clipped, update);
        // An update equal to its reference: norm 0, factor 1, no division by zero.
        let (same, outcome) = clip_update(&reference, &reference, 1.0);
        assert_eq!((same, outcome.factor), (reference, 1.0));
    }
}
