//! The gate between the network and global state: only this module builds a [`ValidUpdate`].
//!
//! A result is checked as it streams in: the gate (`gate.rs`) admits its run, round, task and
//! client; [`strata_proto::receive`] checks its header before any tensor byte is read (names,
//! shapes, order, sizes, sample count) and every part after it; and [`update`] checks the
//! assembled tensors (every value finite). Each refusal says what was wrong in words a person
//! can act on, and maps to a specific gRPC status.

use std::collections::HashMap;

use strata_core::mask::BitMask;
use strata_core::records::metric;
use strata_core::tensor::TensorSet;
use strata_methods::delta::delta_norm;
pub use strata_proto::receive::{Refusal, RefusalCode};

use crate::client_info::ClientInfo;

/// A training result that passed every check; strategies accept nothing else.
#[derive(Debug)]
pub struct ValidUpdate {
    client: ClientInfo,
    num_samples: u64,
    parameters: TensorSet,
    mask: Option<BitMask>,
    /// Under client-side clipping, the client's bit: its update was within the bound.
    unclipped: Option<bool>,
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

    /// Under client-side clipping, whether the client's update was within the bound (its
    /// `dp_unclipped` bit; the norm itself was checked against the bound).
    pub fn unclipped(&self) -> Option<bool> {
        self.unclipped
    }

    /// The same update with `parameters` in place of its own: for a defense that bounds the
    /// values it checked (same tensors, finite), never for anything a client sent.
    pub(crate) fn with_parameters(self, parameters: TensorSet) -> Self {
        Self { parameters, ..self }
    }

    #[cfg(test)]
    pub fn for_tests(client: ClientInfo, parameters: TensorSet, num_samples: u64) -> Self {
        Self { client, num_samples, parameters, mask: None, unclipped: None }
    }

    #[cfg(test)]
    pub fn with_unclipped(mut self, unclipped: bool) -> Self {
        self.unclipped = Some(unclipped);
        self
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
    Ok(ValidUpdate { client, num_samples, parameters, mask, unclipped: None })
}

/// Under client-side clipping (`[privacy] placement = "client"`): the update's change from
/// what the client was sent is within `bound`, up to f32 rounding of the values the client
/// rebuilt, and the client said whether it clipped (metric `dp_unclipped`). An honest client
/// never sends an unclipped update, so the server refuses one rather than clip it quietly.
pub fn clipped_by_client(
    mut update: ValidUpdate,
    sent: &TensorSet,
    bound: f64,
    metrics: &HashMap<String, f64>,
) -> Result<ValidUpdate, Refusal> {
    if sent.specs() != update.parameters.specs() {
        return Err(Refusal::invalid(
            "the upload does not hold the tensors it was sent, so its clipping cannot be checked",
        ));
    }
    let norm = delta_norm(sent, &update.parameters);
    // Each rebuilt value is off by at most half an f32 ulp: 2^-24 of its magnitude.
    let rounding = 6e-8 * (delta_norm(&TensorSet::zeros(&sent.specs()), sent) + norm);
    if norm > bound * (1.0 + 1e-6) + rounding {
        return Err(Refusal::invalid(format!(
            "the update's change from the model it was sent has L2 norm {norm:.6e}, beyond the clipping bound \
             {bound:.6e} the task gave (privacy placement `client`)"
        )));
    }
    let Some(&bit) = metrics.get(metric::DP_UNCLIPPED) else {
        return Err(Refusal::invalid(format!(
            "a client that clips its own update reports metric `{}` (1: within the bound, 0: scaled down)",
            metric::DP_UNCLIPPED
        )));
    };
    update.unclipped = Some(bit == 1.0);
    Ok(update)
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

    #[test]
    fn a_self_clipping_client_stays_within_its_bound_and_says_whether_it_clipped() {
        let client = ClientInfo { id: uuid::Uuid::nil(), index: 0 };
        let set = |v: &[f32]| TensorSet::new(vec![NamedTensor::new("w", vec![2], v.to_vec()).unwrap()]).unwrap();
        let sent = set(&[1.0, 1.0]);
        let bit = |b: f64| HashMap::from([(metric::DP_UNCLIPPED.to_string(), b)]);
        // Δ = (0.6, 0.8): exactly the bound 1, as a client's clipping leaves it.
        let at_bound = update(client, 5, set(&[1.6, 1.8]), None, 1e6).unwrap();
        assert_eq!(clipped_by_client(at_bound, &sent, 1.0, &bit(0.0)).unwrap().unclipped(), Some(false));
        let within = update(client, 5, set(&[1.1, 1.0]), None, 1e6).unwrap();
        assert_eq!(clipped_by_client(within, &sent, 1.0, &bit(1.0)).unwrap().unclipped(), Some(true));
        // Δ norm 1.01: refused, naming the norm and the bound.
        let beyond = update(client, 5, set(&[1.606, 1.808]), None, 1e6).unwrap();
        let err = clipped_by_client(beyond, &sent, 1.0, &bit(1.0)).unwrap_err();
        assert!(err.message.contains("clipping bound"), "{err}");
        let silent = update(client, 5, set(&[1.1, 1.0]), None, 1e6).unwrap();
        let err = clipped_by_client(silent, &sent, 1.0, &HashMap::new()).unwrap_err();
        assert!(err.message.contains("dp_unclipped"), "{err}");
    }
}
