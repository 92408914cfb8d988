//! A tensor set as it will travel under a [`Compression`]: each tensor's encoding, fixed before
//! the first byte goes out (int8's scale, top-k's entries), so that its header can say it.
//! Dense values are encoded slice by slice as the transport pulls them ([`crate::TensorSlices`]);
//! top-k's entries, a small fraction of the tensor, are built here.

use std::collections::HashMap;
use std::sync::Arc;

use half::f16;
use strata_core::compression::Compression;
use strata_core::tensor::{NamedTensor, TensorSet};

use crate::encoding::{Encoding, INDEX_BYTES, ValueCoding, encoding_for, spec_to_wire};
use crate::pb;

/// What goes out for a tensor set. Cheap to clone (its tensors are shared), so that an
/// interrupted transfer can cut the same slices again.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub(crate) set: Arc<TensorSet>,
    pub(crate) reference: Option<Arc<TensorSet>>,
    pub(crate) tensors: Vec<Planned>,
    pub(crate) seed: u64,
}

/// How one tensor of an [`Encoded`] set goes out.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    pub encoding: Encoding,
    /// The index in the reference set of the tensor a change is taken from.
    pub reference: Option<usize>,
    /// The wire bytes, when built ahead (top-k's entries); dense values are encoded per slice.
    pub bytes: Option<Arc<[u8]>>,
}

impl Encoded {
    /// Every tensor as f32, bit for bit.
    pub fn plain(set: Arc<TensorSet>) -> Self {
        let tensors = set.tensors().iter().map(|_| Planned { encoding: Encoding::PLAIN, reference: None, bytes: None });
        Self { tensors: tensors.collect(), set, reference: None, seed: 0 }
    }

    /// `set` under `compression`: each tensor that `reference` holds (by name and shape) as its
    /// change from it, the others as themselves. With top-k, `residual` is the error feedback:
    /// what earlier uploads left out is added to this change, and what this one leaves out is
    /// kept there for the next (reset when the set's tensors change). `seed` drives int8's
    /// stochastic rounding.
    pub fn new(
        set: Arc<TensorSet>,
        reference: Option<Arc<TensorSet>>,
        compression: Compression,
        residual: &mut Option<TensorSet>,
        seed: u64,
    ) -> Self {
        let positions: HashMap<&str, (usize, &NamedTensor)> = reference
            .as_deref()
            .map(|r| r.tensors().iter().enumerate().map(|(i, t)| (t.name(), (i, t))).collect())
            .unwrap_or_default();
        if let Compression::TopK { .. } = compression
            && residual.as_ref().is_none_or(|r| r.specs() != set.specs())
        {
            *residual = Some(TensorSet::zeros(&set.specs()));
        }
        let mut tensors = Vec::with_capacity(set.len());
        for (i, tensor) in set.tensors().iter().enumerate() {
            let base = positions.get(tensor.name()).filter(|(_, r)| r.shape() == tensor.shape());
            let (reference, base_values) = match base {
                Some((at, r)) => (Some(*at), Some(r.values())),
                None => (None, None),
            };
            let encoding = encoding_for(compression, reference.is_some());
            // A tensor sent whole (top-k's without a reference) takes nothing from the reference.
            let (reference, base_values) = if encoding.delta { (reference, base_values) } else { (None, None) };
            let mut planned = Planned { encoding, reference, bytes: None };
            match (compression, planned.encoding.sparse) {
                (Compression::TopK { ratio }, Some(_)) => {
                    let kept = residual.as_mut().and_then(|r| r.values_mut_at(i));
                    let (entries, bytes) = top_k(tensor.values(), base_values.unwrap_or_default(), kept, ratio);
                    planned.encoding.sparse = Some(entries);
                    planned.bytes = Some(bytes.into());
                }
                (Compression::Int8 | Compression::F16, _) => {
                    let largest = largest_change(tensor.values(), base_values);
                    if !largest.is_finite() || (compression == Compression::F16 && largest > f16::MAX.to_f32()) {
                        // Out of the coding's range: sent as it is, which the receiver always takes.
                        planned = Planned { encoding: Encoding::PLAIN, reference: None, bytes: None };
                    } else if compression == Compression::Int8 {
                        planned.encoding.values = ValueCoding::I8 { scale: largest / 127.0 };
                    }
                }
                _ => {}
            }
            tensors.push(planned);
        }
        Self { set, reference, tensors, seed }
    }

    /// The header's tensor specs, encodings included.
    pub fn specs(&self) -> Vec<pb::TensorSpec> {
        self.set
            .tensors()
            .iter()
            .zip(&self.tensors)
            .map(|(t, p)| {
                let mut spec = spec_to_wire(&t.spec());
                p.encoding.to_wire(&mut spec);
                spec
            })
            .collect()
    }

    /// Bytes of tensor data that go out.
    pub fn total_bytes(&self) -> u64 {
        self.set
            .tensors()
            .iter()
            .zip(&self.tensors)
            .map(|(t, p)| p.encoding.units(t.numel()) * p.encoding.unit_bytes() as u64)
            .sum()
    }

    /// The values a tensor's change is taken from, if it travels as one.
    pub(crate) fn reference_values(&self, tensor: usize) -> Option<&[f32]> {
        let at = self.tensors.get(tensor)?.reference?;
        Some(self.reference.as_deref()?.tensors()[at].values())
    }
}

/// The largest |value − base| (|value| without a base); NaN or ∞ if any is.
fn largest_change(values: &[f32], base: Option<&[f32]>) -> f32 {
    let mut largest = 0.0f32;
    let mut finite = true;
    let mut see = |d: f32| {
        finite &= d.is_finite();
        largest = largest.max(d.abs());
    };
    match base {
        Some(base) => values.iter().zip(base).for_each(|(v, b)| see(v - b)),
        None => values.iter().for_each(|&v| see(v)),
    }
    if finite { largest } else { f32::INFINITY }
}

/// The ⌈ratio·n⌉ largest entries of `values − base + kept`, as (u32 index, f32 change) pairs in
/// index order; `kept` becomes what was left out. Returns the entry count and the bytes.
fn top_k(values: &[f32], base: &[f32], kept: Option<&mut [f32]>, ratio: f64) -> (u64, Vec<u8>) {
    let n = values.len();
    let mut change: Vec<f32> = values.iter().zip(base).map(|(v, b)| v - b).collect();
    if let Some(kept) = kept.as_deref() {
        change.iter_mut().zip(kept).for_each(|(c, k)| *c += k);
    }
    let k = ((ratio * n as f64).ceil() as usize).clamp(n.min(1), n);
    let mut chosen: Vec<u32> = (0..n as u32).collect();
    if k < n {
        // Largest magnitude first; NaN counts as largest, so the receiver sees and refuses it.
        chosen.select_nth_unstable_by(k - 1, |&a, &b| change[b as usize].abs().total_cmp(&change[a as usize].abs()));
        chosen.truncate(k);
    }
    chosen.sort_unstable();
    let mut bytes = Vec::with_capacity(k * (INDEX_BYTES + 4));
    for &i in &chosen {
        bytes.extend_from_slice(&i.to_le_bytes());
        bytes.extend_from_slice(&change[i as usize].to_le_bytes());
    }
    if let Some(kept) = kept {
        for &i in &chosen {
            change[i as usize] = 0.0;
        }
        kept.copy_from_slice(&change);
    }
    (k as u64, bytes)
}

/// Uniform numbers in [0, 1) for int8's stochastic rounding: SplitMix64, which is statistically
/// sound for dither and costs a few instructions a value (this runs once per value sent).
#[derive(Clone, Debug)]
pub(crate) struct Dither(u64);

impl Dither {
    pub fn new(seed: u64, tensor: usize) -> Self {
        Self(seed ^ (tensor as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    #[inline]
    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 24 bits: every value exact in f32, and below 1.
        (z >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set(values: Vec<f32>) -> Arc<TensorSet> {
        let n = values.len();
        Arc::new(TensorSet::new(vec![NamedTensor::new("w", vec![n], values).unwrap()]).unwrap())
    }

    #[test]
    fn top_k_sends_the_largest_changes_and_keeps_the_rest_for_next_time() {
        let reference = set(vec![1.0; 8]);
        let trained = set(vec![1.0, 1.5, 0.0, 1.1, 1.0, 4.0, 1.0, 0.8]);
        let mut residual = None;
        let topk = Compression::TopK { ratio: 0.25 };
        let e = Encoded::new(Arc::clone(&trained), Some(Arc::clone(&reference)), topk, &mut residual, 1);
        assert_eq!(e.tensors[0].encoding.sparse, Some(2));
        let bytes = e.tensors[0].bytes.as_ref().unwrap();
        let entry = |k: usize| {
            let b = &bytes[k * 8..k * 8 + 8];
            (u32::from_le_bytes(b[..4].try_into().unwrap()), f32::from_le_bytes(b[4..].try_into().unwrap()))
        };
        assert_eq!((entry(0), entry(1)), ((2, -1.0), (5, 3.0)), "in index order");
        assert_eq!(e.total_bytes(), 16);
        let kept = residual.as_ref().unwrap().tensors()[0].values().to_vec();
        let left: Vec<f32> = vec![0.0, 0.5, 0.0, 0.1, 0.0, 0.0, 0.0, -0.2];
        for (k, l) in kept.iter().zip(&left) {
            assert!((k - l).abs() < 1e-6, "{kept:?}");
        }
        // Unchanged training next time: what was left out comes out now, largest first.
        let again = Encoded::new(trained, Some(reference), topk, &mut residual, 2);
        let bytes = again.tensors[0].bytes.as_ref().unwrap();
        let first = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        assert_eq!(first, 1, "the 0.5 left out, added to this round's 0.5");
        assert_eq!(f32::from_le_bytes(bytes[4..8].try_into().unwrap()), 1.0);
    }

    #[test]
    fn int8_scales_to_the_largest_change_and_falls_back_outside_its_range() {
        let reference = set(vec![1.0, 1.0, 1.0]);
        let trained = set(vec![1.0, 1.254, 0.0]);
        let e = Encoded::new(trained, Some(Arc::clone(&reference)), Compression::Int8, &mut None, 1);
        assert_eq!(e.tensors[0].encoding.values, ValueCoding::I8 { scale: 1.0 / 127.0 });
        assert!(e.tensors[0].encoding.delta);
        assert_eq!(e.total_bytes(), 3);
        let broken = set(vec![1.0, f32::INFINITY, 0.0]);
        let e = Encoded::new(broken, Some(Arc::clone(&reference)), Compression::Int8, &mut None, 1);
        assert_eq!(e.tensors[0].encoding, Encoding::PLAIN, "sent whole, for the receiver to refuse");
        let huge = set(vec![1e6, 0.0, 0.0]);
        let e = Encoded::new(huge, None, Compression::F16, &mut None, 1);
        assert_eq!(e.tensors[0].encoding, Encoding::PLAIN, "past f16's range");
    }

    #[test]
    fn dither_is_uniform_enough_and_below_one() {
        let mut d = Dither::new(7, 0);
        let draws: Vec<f32> = (0..100_000).map(|_| d.next()).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = draws.iter().map(|&u| f64::from(u)).sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
    }
}
