//! Cutting named tensors into wire slices.
//!
//! A model of any size must pass under gRPC's default 4 MiB message limit, so tensors travel
//! as slices of at most [`MAX_CHUNK_BYTES`]. The iterator encodes one slice at a time from the
//! shared tensor set, so a sender holds one copy of the parameters plus one slice.

use std::sync::Arc;

use strata_core::tensor::{TensorSet, TensorSpec};

use crate::pb;

/// Largest slice payload: leaves room under gRPC's 4 MiB default for the message framing.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Slice payload used unless a caller asks for another (1 MiB).
pub const DEFAULT_CHUNK_BYTES: usize = 1024 * 1024;

const F32_BYTES: usize = std::mem::size_of::<f32>();

/// HTTP/2 flow-control windows both sides announce: room for a few slices in flight per
/// stream, so a transfer is not a long exchange of window updates (the default is 64 KiB).
pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;

/// Wire specs of a tensor set, in order (all f32 today).
pub fn tensor_specs(set: &TensorSet) -> Vec<pb::TensorSpec> {
    set.tensors().iter().map(|t| spec_to_wire(&t.spec())).collect()
}

pub fn spec_to_wire(spec: &TensorSpec) -> pb::TensorSpec {
    pb::TensorSpec {
        name: spec.name.clone(),
        dtype: pb::Dtype::F32 as i32,
        shape: spec.shape.iter().map(|&d| d as u64).collect(),
    }
}

/// Iterator over the slices of a shared tensor set, in tensor order, then byte order.
pub struct TensorSlices {
    set: Arc<TensorSet>,
    /// Slice payload in f32 values (a multiple of 4 bytes, so no value is ever split).
    values_per_slice: usize,
    tensor: usize,
    value: usize,
}

impl TensorSlices {
    /// `chunk_bytes` is clamped to [4, MAX_CHUNK_BYTES] and rounded down to whole f32 values.
    pub fn new(set: Arc<TensorSet>, chunk_bytes: usize) -> Self {
        let values_per_slice = (chunk_bytes.clamp(F32_BYTES, MAX_CHUNK_BYTES)) / F32_BYTES;
        Self { set, values_per_slice, tensor: 0, value: 0 }
    }
}

impl Iterator for TensorSlices {
    type Item = pb::TensorSlice;

    fn next(&mut self) -> Option<pb::TensorSlice> {
        loop {
            let tensor = self.set.tensors().get(self.tensor)?;
            if self.value >= tensor.values().len() {
                // Empty tensors send no slice; the header alone describes them.
                self.tensor += 1;
                self.value = 0;
                continue;
            }
            let end = (self.value + self.values_per_slice).min(tensor.values().len());
            // Sized first and filled in fixed 4-byte steps: the compiler turns this into a copy,
            // where pushing value by value checks the capacity every time.
            let mut data = vec![0u8; (end - self.value) * F32_BYTES];
            for (bytes, v) in data.chunks_exact_mut(F32_BYTES).zip(&tensor.values()[self.value..end]) {
                bytes.copy_from_slice(&v.to_le_bytes());
            }
            let slice = pb::TensorSlice {
                tensor_index: self.tensor as u32,
                byte_offset: (self.value * F32_BYTES) as u64,
                data,
            };
            self.value = end;
            return Some(slice);
        }
    }
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
