//! Model parameters as plain data: named f32 tensors, with no libtorch attached.
//!
//! This is the currency between every crate: the trainer exports a `TensorSet`,
//! the wire protocol chunks it, strategies average it. Parameters are f32 on the
//! wire today; the protocol carries a dtype so that others can be added later.

use std::collections::HashMap;

/// Name and shape of one tensor: what a receiver checks an incoming tensor against.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One named tensor, row-major. Its values always fill its shape: the fields are private,
/// [`NamedTensor::new`] checks, and [`NamedTensor::values_mut`] changes values, never their number.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

impl NamedTensor {
    /// Builds a tensor, checking that `values` fills `shape` exactly.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Result<Self, TensorError> {
        let name = name.into();
        let expected: usize = shape.iter().product();
        if expected != values.len() {
            return Err(TensorError::ShapeMismatch { name, shape, len: values.len() });
        }
        Ok(Self { name, shape, values })
    }

    pub fn zeros(spec: &TensorSpec) -> Self {
        let values = crate::huge_pages::zeroed(spec.numel());
        Self { name: spec.name.clone(), shape: spec.shape.clone(), values }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The values, writable in place: their number (and so the shape) cannot change.
    pub fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }

    /// The same tensor under another name (a set checks its names when it is built).
    pub fn with_name(self, name: impl Into<String>) -> Self {
        Self { name: name.into(), ..self }
    }

    /// Name, shape and values, taken out without a copy.
    pub fn into_parts(self) -> (String, Vec<usize>, Vec<f32>) {
        (self.name, self.shape, self.values)
    }

    pub fn spec(&self) -> TensorSpec {
        TensorSpec { name: self.name.clone(), shape: self.shape.clone() }
    }

    pub fn numel(&self) -> usize {
        self.values.len()
    }

    /// Index of the first value that is NaN or infinite, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        self.values.iter().position(|v| !v.is_finite())
    }
}

/// An ordered set of named tensors: a model's parameters, or the part of them a method exchanges.
///
/// The order is the model's own order and is part of the contract: bit-packed masks
/// concatenate tensors in this order. Names are unique: the tensors can be read, and their
/// values changed in place ([`TensorSet::values_mut`]), but a tensor is never replaced,
/// renamed or reshaped inside a set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorSet {
    tensors: Vec<NamedTensor>,
}

impl TensorSet {
    /// Builds a set, refusing duplicate names.
    pub fn new(tensors: Vec<NamedTensor>) -> Result<Self, TensorError> {
        let mut seen = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            if seen.insert(t.name.as_str(), i).is_some() {
                return Err(TensorError::DuplicateName(t.name.clone()));
            }
        }
        Ok(Self { tensors })
    }

    /// A set of zero tensors with the given specs.
    pub fn zeros(specs: &[TensorSpec]) -> Self {
        Self { tensors: specs.iter().map(NamedTensor::zeros).collect() }
    }

    pub fn tensors(&self) -> &[NamedTensor] {
        &self.tensors
    }

    /// Every tensor's name and values, in order, the values writable in place.
    pub fn values_mut(&mut self) -> impl ExactSizeIterator<Item = (&str, &mut [f32])> {
        self.tensors.iter_mut().map(|t| (t.name.as_str(), t.values.as_mut_slice()))
    }

    /// The values of the tensor at `index` (in the set's order), writable in place.
    pub fn values_mut_at(&mut self, index: usize) -> Option<&mut [f32]> {
        self.tensors.get_mut(index).map(|t| t.values.as_mut_slice())
    }

    pub fn into_tensors(self) -> Vec<NamedTensor> {
        self.tensors
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    pub fn specs(&self) -> Vec<TensorSpec> {
        self.tensors.iter().map(NamedTensor::spec).collect()
    }

    /// Total number of scalar values.
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(NamedTensor::numel).sum()
    }

    /// Size of the values on the wire (f32, little-endian).
    pub fn byte_len(&self) -> usize {
        self.numel() * std::mem::size_of::<f32>()
    }

    /// The tensors whose names the predicate keeps, in order.
    pub fn select(&self, keep: impl Fn(&str) -> bool) -> TensorSet {
        Self { tensors: self.tensors.iter().filter(|t| keep(&t.name)).cloned().collect() }
    }

    /// Replaces the tensors of `other` in `self` by name; names not in `self` are an error.
    pub fn overwrite_from(&mut self, other: &TensorSet) -> Result<(), TensorError> {
        for incoming in other.tensors() {
            let target = self
                .tensors
                .iter_mut()
                .find(|t| t.name == incoming.name)
                .ok_or_else(|| TensorError::UnknownName(incoming.name.clone()))?;
            if target.shape != incoming.shape {
                return Err(TensorError::ShapeMismatch {
                    name: incoming.name.clone(),
                    shape: target.shape.clone(),
                    len: incoming.numel(),
                });
            }
            target.values.copy_from_slice(&incoming.values);
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("tensor `{name}` has {len} values, which does not fill shape {shape:?}")]
    ShapeMismatch { name: String, shape: Vec<usize>, len: usize },
    #[error("tensor name `{0}` appears twice")]
    DuplicateName(String),
    #[error("no tensor named `{0}`")]
    UnknownName(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, values: &[f32]) -> NamedTensor {
        NamedTensor::new(name, vec![values.len()], values.to_vec()).expect("valid tensor")
    }

    #[test]
    fn new_refuses_values_that_do_not_fill_the_shape() {
        let err = NamedTensor::new("w", vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(matches!(err, TensorError::ShapeMismatch { len: 5, .. }));
    }

    #[test]
    fn set_refuses_duplicate_names() {
        let err = TensorSet::new(vec![t("a", &[1.0]), t("a", &[2.0])]).unwrap_err();
        assert_eq!(err, TensorError::DuplicateName("a".into()));
    }

    #[test]
    fn overwrite_replaces_by_name_and_keeps_the_rest() {
        let mut base = TensorSet::new(vec![t("body", &[1.0, 2.0]), t("head", &[3.0])]).unwrap();
        let incoming = TensorSet::new(vec![t("head", &[9.0])]).unwrap();
        base.overwrite_from(&incoming).unwrap();
        assert_eq!(base.get("body").unwrap().values(), [1.0, 2.0]);
        assert_eq!(base.get("head").unwrap().values(), [9.0]);
        let wrong = TensorSet::new(vec![t("head", &[1.0, 2.0])]).unwrap();
        assert!(base.overwrite_from(&wrong).is_err());
    }

    #[test]
    fn values_change_in_place_and_names_stay() {
        let mut set = TensorSet::new(vec![t("body", &[1.0, 2.0]), t("head", &[3.0])]).unwrap();
        for (name, values) in set.values_mut().filter(|(name, _)| name.starts_with("body")) {
            assert_eq!(name, "body");
            values.iter_mut().for_each(|v| *v *= 10.0);
        }
        set.values_mut_at(1).unwrap()[0] = 4.0;
        assert_eq!(set.get("body").unwrap().values(), [10.0, 20.0]);
        assert_eq!(set.get("head").unwrap().values(), [4.0]);
        assert!(set.values_mut_at(2).is_none());
        let renamed = set.get("head").unwrap().clone().with_name("body");
        assert_eq!(
            TensorSet::new(vec![renamed, t("body", &[0.0])]).unwrap_err(),
            TensorError::DuplicateName("body".into())
        );
    }

    #[test]
    fn non_finite_values_are_found() {
        assert_eq!(t("w", &[0.0, f32::NAN]).first_non_finite(), Some(1));
        assert_eq!(t("w", &[0.0, 1.0]).first_non_finite(), None);
    }
}
