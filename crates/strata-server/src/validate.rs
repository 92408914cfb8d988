//! The gate between the network and global state: only this module builds a [`ValidUpdate`].
//!
//! A result is checked as it streams in: the gate (`gate.rs`) admits its run, round, task and
//! client; [`strata_proto::receive`] checks its header before any tensor byte is read (names,
//! shapes, order, sizes, sample count) and every part after it; and [`update`] checks the
//! assembled tensors (every value finite). Each refusal says what was wrong in words a person
//! can act on, and maps to a specific gRPC status.

use strata_core::mask::BitMask;
use strata_core::tensor::TensorSet;
pub use strata_proto::receive::{Refusal, RefusalCode};

use crate::client_info::ClientInfo;

/// A training result that passed every check; strategies accept nothing else.
#[derive(Debug)]
pub struct ValidUpdate {
    client: ClientInfo,
    num_samples: u64,
    parameters: TensorSet,
    mask: Option<BitMask>,
}

impl ValidUpdate {
    pub fn client(&self) -> &ClientInfo {
        &self.client
    }

    /// Training samples behind the update: its aggregation weight.
    pub fn num_samples(&self) -> u64 {
        self.num_samples
    }

    pub fn parameters(&self) -> &TensorSet {
        &self.parameters
    }

    /// The bit-packed mask the client sent, when its task asked for one.
    pub fn mask(&self) -> Option<&BitMask> {
        self.mask.as_ref()
    }

    /// The same update with `parameters` in place of its own: for a defense that bounds the
    /// values it checked (same tensors, finite), never for anything a client sent.
    pub(crate) fn with_parameters(self, parameters: TensorSet) -> Self {
        Self { parameters, ..self }
    }

    #[cfg(test)]
    pub fn for_tests(client: ClientInfo, parameters: TensorSet, num_samples: u64) -> Self {
        Self { client, num_samples, parameters, mask: None }
    }

    #[cfg(test)]
    pub fn with_mask(mut self, mask: BitMask) -> Self {
        self.mask = Some(mask);
        self
    }
}

/// Final check on assembled tensors: every value finite and at most `max_abs` in magnitude
/// (`defense.max_abs_value`). Builds the [`ValidUpdate`].
pub fn update(
    client: ClientInfo,
    num_samples: u64,
    parameters: TensorSet,
    mask: Option<BitMask>,
    max_abs: f64,
) -> Result<ValidUpdate, Refusal> {
    strata_proto::receive::finite(&parameters)?;
    for t in parameters.tensors() {
        if let Some((i, v)) = t.values().iter().enumerate().find(|(_, v)| f64::from(v.abs()) > max_abs) {
            return Err(Refusal::invalid(format!(
                "tensor `{}` holds {v:e} at flat index {i}, beyond the server's bound of {max_abs:e} \
                 (defense.max_abs_value)",
                t.name()
            )));
        }
    }
    Ok(ValidUpdate { client, num_samples, parameters, mask })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_core::tensor::NamedTensor;

    #[test]
    fn non_finite_values_are_refused() {
        let client = ClientInfo { id: uuid::Uuid::nil(), index: 0 };
        let bad = TensorSet::new(vec![NamedTensor::new("w", vec![2], vec![1.0, f32::INFINITY]).unwrap()]).unwrap();
        let err = update(client, 5, bad, None, 1e6).unwrap_err();
        assert_eq!(err.code, RefusalCode::InvalidArgument);
        assert!(err.message.contains("`w`") && err.message.contains("index 1"), "{err}");
        let good = TensorSet::new(vec![NamedTensor::new("w", vec![1], vec![1.0]).unwrap()]).unwrap();
        assert_eq!(update(client, 5, good, None, 1e6).unwrap().num_samples(), 5);
    }

    #[test]
    fn values_beyond_the_bound_are_refused_with_where_they_are() {
        let client = ClientInfo { id: uuid::Uuid::nil(), index: 0 };
        let set = |v: f32| TensorSet::new(vec![NamedTensor::new("w", vec![2], vec![0.5, v]).unwrap()]).unwrap();
        let err = update(client, 5, set(-1e30), None, 1e6).unwrap_err();
        assert_eq!(err.code, RefusalCode::InvalidArgument);
        assert!(
            err.message.contains("`w`") && err.message.contains("index 1") && err.message.contains("max_abs_value")
        );
        assert!(update(client, 5, set(-1e6), None, 1e6).is_ok(), "the bound itself is allowed");
        assert!(update(client, 5, set(2.0), None, 1.0).is_err());
    }
}
