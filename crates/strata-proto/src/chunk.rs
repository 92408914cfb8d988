//! Cutting named tensors into wire slices.
//!
//! A model of any size must pass under gRPC's default 4 MiB message limit, so tensors travel
//! as slices of at most [`MAX_CHUNK_BYTES`]. The iterator encodes one slice at a time from the
//! shared tensor set (as its [`Encoded`] plan says), so a sender holds one copy of the
//! parameters plus one slice.

use std::sync::Arc;

use strata_core::tensor::TensorSet;

use crate::encode::{Dither, Encoded};
use crate::encoding::{ValueCoding, spec_to_wire};
use crate::pb;

/// Largest slice payload: leaves room under gRPC's 4 MiB default for the message framing.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Slice payload used unless a caller asks for another (1 MiB).
pub const DEFAULT_CHUNK_BYTES: usize = 1024 * 1024;

/// HTTP/2 flow-control windows both sides announce: room for a few slices in flight per
/// stream, so a transfer is not a long exchange of window updates (the default is 64 KiB).
pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// Wire specs of a tensor set sent as f32, in order.
pub fn tensor_specs(set: &TensorSet) -> Vec<pb::TensorSpec> {
    set.tensors().iter().map(|t| spec_to_wire(&t.spec())).collect()
}

/// Iterator over the slices of an [`Encoded`] tensor set, in tensor order, then byte order.
pub struct TensorSlices {
    encoded: Encoded,
    chunk_bytes: usize,
    tensor: usize,
    /// The next value (dense) or entry (sparse) of the current tensor.
    unit: usize,
    dither: Dither,
}

impl TensorSlices {
    /// The set as f32. `chunk_bytes` is clamped to [one value, MAX_CHUNK_BYTES] and rounded
    /// down to whole values (whole entries, for a sparse tensor).
    pub fn new(set: Arc<TensorSet>, chunk_bytes: usize) -> Self {
        Self::encoded(Encoded::plain(set), chunk_bytes)
    }

    /// The set as `encoded` says.
    pub fn encoded(encoded: Encoded, chunk_bytes: usize) -> Self {
        let dither = Dither::new(encoded.seed, 0);
        Self { encoded, chunk_bytes, tensor: 0, unit: 0, dither }
    }
}

impl Iterator for TensorSlices {
    type Item = pb::TensorSlice;

    fn next(&mut self) -> Option<pb::TensorSlice> {
        loop {
            let planned = self.encoded.tensors.get(self.tensor)?;
            let values = self.encoded.set.tensors()[self.tensor].values();
            let units = planned.encoding.units(values.len()) as usize;
            if self.unit >= units {
                // Empty tensors send no slice; the header alone describes them.
                self.tensor += 1;
                self.unit = 0;
                self.dither = Dither::new(self.encoded.seed, self.tensor);
                continue;
            }
            let unit_bytes = planned.encoding.unit_bytes();
            let per_slice = self.chunk_bytes.clamp(unit_bytes, MAX_CHUNK_BYTES) / unit_bytes;
            let end = (self.unit + per_slice).min(units);
            let data = match &planned.bytes {
                Some(bytes) => bytes[self.unit * unit_bytes..end * unit_bytes].to_vec(),
                None => {
                    let base = self.encoded.reference_values(self.tensor).map(|r| &r[self.unit..end]);
                    encode_dense(&values[self.unit..end], base, planned.encoding.values, &mut self.dither)
                }
            };
            let slice = pb::TensorSlice {
                tensor_index: self.tensor as u32,
                byte_offset: (self.unit * unit_bytes) as u64,
                data,
            };
            self.unit = end;
            return Some(slice);
        }
    }
}

/// `values` (less `base`) in `coding`.
fn encode_dense(values: &[f32], base: Option<&[f32]>, coding: ValueCoding, dither: &mut Dither) -> Vec<u8> {
    let width = coding.bytes();
    // Sized first and filled in fixed steps: the compiler turns the f32 case into a copy, where
    // pushing value by value checks the capacity every time.
    let mut data = vec![0u8; values.len() * width];
    let out = data.chunks_exact_mut(width);
    match (coding, base) {
        (ValueCoding::F32, None) => out.zip(values).for_each(|(b, v)| b.copy_from_slice(&v.to_le_bytes())),
        (ValueCoding::I8 { .. }, base) => {
            let base = base.map(|b| b.iter()).into_iter().flatten().chain(std::iter::repeat(&0.0));
            out.zip(values).zip(base).for_each(|((b, v), r)| coding.encode(v - r, dither.next(), b));
        }
        (_, Some(base)) => out.zip(values).zip(base).for_each(|((b, v), r)| coding.encode(v - r, 0.0, b)),
        (_, None) => out.zip(values).for_each(|(b, &v)| coding.encode(v, 0.0, b)),
    }
    data
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_core::tensor::NamedTensor;

    #[test]
    fn slices_respect_the_chunk_size_and_cover_every_byte() {
        let set = TensorSet::new(vec![
            NamedTensor::new("a", vec![10], (0..10).map(|x| x as f32).collect()).unwrap(),
            NamedTensor::new("empty", vec![0], vec![]).unwrap(),
            NamedTensor::new("b", vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
        ])
        .unwrap();
        let slices: Vec<_> = TensorSlices::new(Arc::new(set), 16).collect();
        assert!(slices.iter().all(|s| s.data.len() <= 16));
        let bytes_a: usize = slices.iter().filter(|s| s.tensor_index == 0).map(|s| s.data.len()).sum();
        assert_eq!(bytes_a, 40);
        assert_eq!(slices.iter().filter(|s| s.tensor_index == 1).count(), 0);
        assert_eq!(slices.last().unwrap().tensor_index, 2);
        assert_eq!(slices[1].byte_offset, 16);
    }
}
