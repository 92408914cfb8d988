//! What the unit tests of several modules build their inputs from.

use strata_core::tensor::{NamedTensor, TensorSet};

/// One flat tensor `w` holding `values`.
pub(crate) fn set(values: &[f32]) -> TensorSet {
    TensorSet::new(vec![NamedTensor::new("w", vec![values.len()], values.to_vec()).expect("shape matches")])
        .expect("one name")
}
