//! A model's shared tensors as the one vector secure aggregation masks: their change from the
//! model the client received, tensor after tensor in name order, and back. Every party lays
//! the vector out the same way, and the layout's digest goes into the round's context, so a
//! client with another model's shapes cannot be summed with the rest.

use sha2::{Digest, Sha256};
use strata_core::tensor::{NamedTensor, TensorError, TensorSet, TensorSpec};

use crate::error::SecAggError;

/// The shared tensors' names and shapes, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    specs: Vec<TensorSpec>,
}

impl Layout {
    pub fn of(specs: &[TensorSpec]) -> Self {
        let mut specs = specs.to_vec();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        Self { specs }
    }

    /// Values in the vector (the weight element not counted).
    pub fn len(&self) -> usize {
        self.specs.iter().map(TensorSpec::numel).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What binds a round to this layout.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for spec in &self.specs {
            h.update((spec.name.len() as u64).to_be_bytes());
            h.update(spec.name.as_bytes());
            h.update((spec.shape.len() as u64).to_be_bytes());
            for d in &spec.shape {
                h.update((*d as u64).to_be_bytes());
            }
        }
        h.finalize().into()
    }

    /// `trained − received` for each tensor of the layout, concatenated in its order.
    pub fn changes(&self, received: &TensorSet, trained: &TensorSet) -> Result<Vec<f32>, SecAggError> {
        let mut out = Vec::with_capacity(self.len());
        for spec in &self.specs {
            let (r, t) = (self.tensor(received, spec, "received")?, self.tensor(trained, spec, "trained")?);
            out.extend(t.values().iter().zip(r.values()).map(|(t, r)| t - r));
        }
        Ok(out)
    }

    /// `reference` with the mean change `mean` (in the layout's order) added to each tensor
    /// of the layout; tensors outside it are kept as they are.
    pub fn apply(&self, reference: &TensorSet, mean: &[f32]) -> Result<TensorSet, SecAggError> {
        let tensors = reference
            .tensors()
            .iter()
            .zip(self.slices(reference, mean)?)
            .map(|(t, change)| {
                let Some(change) = change else { return Ok(t.clone()) };
                let values = t.values().iter().zip(change).map(|(v, d)| v + d).collect();
                NamedTensor::new(t.name(), t.shape().to_vec(), values)
            })
            .collect::<Result<Vec<_>, TensorError>>()
            .map_err(|e| SecAggError::Config(e.to_string()))?;
        TensorSet::new(tensors).map_err(|e| SecAggError::Config(e.to_string()))
    }

    /// `flat` (in the layout's order) cut into one slice for each tensor of `reference`, in
    /// `reference`'s order: `None` for a tensor outside the layout.
    pub fn slices<'a, T>(&self, reference: &TensorSet, flat: &'a [T]) -> Result<Vec<Option<&'a [T]>>, SecAggError> {
        if flat.len() != self.len() {
            return Err(SecAggError::Config(format!("{} values for a layout of {}", flat.len(), self.len())));
        }
        let mut offsets = std::collections::HashMap::new();
        let mut at = 0;
        for spec in &self.specs {
            self.tensor(reference, spec, "reference")?;
            offsets.insert(spec.name.as_str(), at);
            at += spec.numel();
        }
        Ok(reference
            .tensors()
            .iter()
            .map(|t| offsets.get(t.name()).map(|&start| &flat[start..start + t.numel()]))
            .collect())
    }

    fn tensor<'a>(&self, set: &'a TensorSet, spec: &TensorSpec, which: &str) -> Result<&'a NamedTensor, SecAggError> {
        set.get(&spec.name).filter(|t| t.shape() == spec.shape.as_slice()).ok_or_else(|| {
            SecAggError::Config(format!(
                "the {which} model has no tensor `{}` of shape {:?}, which the layout holds",
                spec.name, spec.shape
            ))
        })
    }
}

/// The round's context: the run, the round, the task and the layout, so that nothing sealed
/// or masked in one can be used in another.
pub fn context(run_id: &str, round: u64, task_id: &str, layout: &Layout) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in [run_id.as_bytes(), task_id.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(round.to_be_bytes());
    h.update(layout.digest());
    h.finalize().to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn model(b: f32) -> TensorSet {
        TensorSet::new(vec![
            NamedTensor::new("head.weight", vec![2], vec![b, b + 1.0]).unwrap(),
            NamedTensor::new("body.weight", vec![3], vec![b, 2.0 * b, 3.0 * b]).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn changes_go_out_in_name_order_and_come_back_where_they_were() {
        let body = Layout::of(&[TensorSpec { name: "body.weight".into(), shape: vec![3] }]);
        let (received, trained) = (model(1.0), model(2.0));
        assert_eq!(body.changes(&received, &trained).unwrap(), [1.0, 2.0, 3.0]);
        let moved = body.apply(&received, &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(moved.get("body.weight").unwrap().values(), trained.get("body.weight").unwrap().values());
        assert_eq!(moved.get("head.weight").unwrap().values(), received.get("head.weight").unwrap().values());

        let all = Layout::of(&received.specs());
        assert_eq!(all.len(), 5);
        // body.* sorts before head.*, whatever the model's own order.
        assert_eq!(all.changes(&received, &trained).unwrap(), [1.0, 2.0, 3.0, 1.0, 1.0]);
    }

    #[test]
    fn another_shape_is_refused_and_changes_the_context() {
        let a = Layout::of(&[TensorSpec { name: "body.weight".into(), shape: vec![3] }]);
        let b = Layout::of(&[TensorSpec { name: "body.weight".into(), shape: vec![3, 1] }]);
        assert_ne!(context("run", 1, "t", &a), context("run", 1, "t", &b));
        assert_ne!(context("run", 1, "t", &a), context("run", 2, "t", &a));
        let err = b.changes(&model(1.0), &model(2.0)).unwrap_err().to_string();
        assert!(err.contains("`body.weight` of shape [3, 1]"), "{err}");
        assert!(a.apply(&model(1.0), &[0.0; 2]).is_err(), "too few values");
    }
}
