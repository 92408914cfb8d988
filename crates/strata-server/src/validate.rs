//! The gate between the network and global state: only this module builds a [`ValidUpdate`].
//!
//! A result is checked twice: its header before any tensor byte is read (round, task, client,
//! names, shapes, sizes), and its tensors once assembled (every value finite). Each refusal
//! says what was wrong in words a person can act on, and maps to a specific gRPC status.

use strata_core::mask::BitMask;
use strata_core::tensor::{TensorSet, TensorSpec};

use crate::strategy::ClientInfo;

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

/// Why a result was refused; `code` picks the gRPC status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: RefusalCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// The result does not match what the server expects (shapes, values, sizes).
    InvalidArgument,
    /// Right shape, wrong moment: another round, a task not given, a closed round.
    FailedPrecondition,
    /// The client already sent this result.
    AlreadyExists,
    /// The client is unknown or was not picked.
    PermissionDenied,
}

impl Refusal {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { code: RefusalCode::InvalidArgument, message: message.into() }
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self { code: RefusalCode::FailedPrecondition, message: message.into() }
    }
}

/// Checks the declared tensors against what the server expects from this client, in order.
pub fn header_specs(expected: &[TensorSpec], declared: &[TensorSpec]) -> Result<(), Refusal> {
    for (i, spec) in declared.iter().enumerate() {
        match expected.get(i) {
            Some(e) if e.name != spec.name => {
                return Err(match expected.iter().position(|x| x.name == spec.name) {
                    Some(_) => Refusal::invalid(format!(
                        "tensor `{}` is at position {i}, but the server expects `{}` there (tensors must follow the model's order)",
                        spec.name, e.name
                    )),
                    None => Refusal::invalid(format!(
                        "tensor `{}` is not part of this task's upload (expected `{}`)",
                        spec.name, e.name
                    )),
                });
            }
            Some(e) if e.shape != spec.shape => {
                return Err(Refusal::invalid(format!(
                    "tensor `{}` has shape {:?}, but the model expects {:?}",
                    spec.name, spec.shape, e.shape
                )));
            }
            Some(_) => {}
            None => {
                return Err(Refusal::invalid(format!(
                    "tensor `{}` is one more than the {} tensors this task uploads",
                    spec.name,
                    expected.len()
                )));
            }
        }
    }
    if declared.len() < expected.len() {
        return Err(Refusal::invalid(format!(
            "the result has {} tensors but this task uploads {}: `{}` is missing",
            declared.len(),
            expected.len(),
            expected[declared.len()].name
        )));
    }
    Ok(())
}

/// Checks the sample count a training result declares.
pub fn num_samples(declared: u64, known_train_samples: Option<u64>) -> Result<(), Refusal> {
    if declared == 0 {
        return Err(Refusal::invalid("num_samples is 0: a training result must say how many samples it trained on"));
    }
    if let Some(known) = known_train_samples.filter(|&k| k > 0)
        && declared != known
    {
        return Err(Refusal::invalid(format!(
            "num_samples is {declared}, but this client reported {known} training samples when it joined"
        )));
    }
    Ok(())
}

/// Final check on assembled tensors: every value finite. Builds the [`ValidUpdate`].
pub fn update(
    client: ClientInfo,
    num_samples: u64,
    parameters: TensorSet,
    mask: Option<BitMask>,
) -> Result<ValidUpdate, Refusal> {
    for t in parameters.tensors() {
        if let Some(i) = t.first_non_finite() {
            return Err(Refusal::invalid(format!(
                "tensor `{}` holds a non-finite value ({}) at flat index {i}",
                t.name, t.values[i]
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

    fn spec(name: &str, shape: &[usize]) -> TensorSpec {
        TensorSpec { name: name.into(), shape: shape.to_vec() }
    }

    #[test]
    fn header_must_match_names_shapes_and_order() {
        let expected = [spec("body.w", &[2, 3]), spec("head.w", &[3])];
        assert!(header_specs(&expected, &expected).is_ok());
        let err = header_specs(&expected, &[spec("body.w", &[3, 2]), spec("head.w", &[3])]).unwrap_err();
        assert!(err.message.contains("shape [3, 2]") && err.message.contains("[2, 3]"), "{err}");
        let err = header_specs(&expected, &[spec("body.w", &[2, 3])]).unwrap_err();
        assert!(err.message.contains("`head.w` is missing"), "{err}");
        let err = header_specs(&expected, &[spec("head.w", &[3]), spec("body.w", &[2, 3])]).unwrap_err();
        assert!(err.message.contains("order"), "{err}");
        let err = header_specs(&expected, &[spec("body.w", &[2, 3]), spec("evil", &[3])]).unwrap_err();
        assert!(err.message.contains("`evil`"), "{err}");
        let mut more = expected.to_vec();
        more.push(spec("extra", &[1]));
        assert!(header_specs(&expected, &more).is_err());
    }

    #[test]
    fn non_finite_values_are_refused() {
        let client = ClientInfo { id: uuid::Uuid::nil(), index: 0 };
        let bad = TensorSet::new(vec![NamedTensor::new("w", vec![2], vec![1.0, f32::INFINITY]).unwrap()]).unwrap();
        let err = update(client.clone(), 5, bad, None).unwrap_err();
        assert_eq!(err.code, RefusalCode::InvalidArgument);
        assert!(err.message.contains("`w`") && err.message.contains("index 1"), "{err}");
        let good = TensorSet::new(vec![NamedTensor::new("w", vec![1], vec![1.0]).unwrap()]).unwrap();
        assert_eq!(update(client, 5, good, None).unwrap().num_samples(), 5);
    }

    #[test]
    fn sample_counts_must_be_positive_and_match_what_the_client_declared() {
        assert!(num_samples(0, None).is_err());
        assert!(num_samples(10, Some(10)).is_ok());
        assert!(num_samples(10, None).is_ok());
        assert!(num_samples(1_000_000, Some(10)).unwrap_err().message.contains("10 training samples"));
    }
}
