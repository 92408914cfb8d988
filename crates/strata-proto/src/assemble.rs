//! Putting streamed slices back into a tensor set, trusting nothing.
//!
//! The header declares every tensor's name, dtype and shape; the assembler allocates each
//! tensor once and writes slices straight into it, so a receiver holds one copy of the set.
//! Slices must arrive in order (tensor by tensor, byte by byte): anything else — an unknown
//! tensor index, a gap, an overlap, an overflow, a missing tail — is refused with a message
//! that names the tensor and the offsets.

use strata_core::tensor::{NamedTensor, TensorSet, TensorSpec};

use crate::chunk::MAX_CHUNK_BYTES;
use crate::pb;

const F32_BYTES: usize = std::mem::size_of::<f32>();

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("tensor `{name}` has dtype {dtype}, but only f32 is supported")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tensor `{name}` has shape {shape:?}, whose size overflows")]
    ShapeOverflow { name: String, shape: Vec<u64> },
    #[error("tensor name `{0}` appears twice in the header")]
    DuplicateName(String),
    #[error("the header declares {declared} bytes, but its tensors need {actual}")]
    DeclaredSizeMismatch { declared: u64, actual: u64 },
    #[error("the tensors need {bytes} bytes, over the limit of {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("slice for tensor index {index}, but the header declares {count} tensors")]
    UnknownTensor { index: u32, count: usize },
    #[error("slice of {len} bytes exceeds the chunk limit of {limit} bytes")]
    SliceTooLarge { len: usize, limit: usize },
    #[error("slice for tensor `{name}` out of order: expected {expected}")]
    OutOfOrder { name: String, expected: String },
    #[error("slice for tensor `{name}` at byte {offset} with {len} bytes runs past its {size} bytes")]
    Overflow { name: String, offset: u64, len: usize, size: usize },
    #[error("slice for tensor `{name}` is not a whole number of f32 values ({len} bytes)")]
    Misaligned { name: String, len: usize },
    #[error("the stream ended with tensor `{name}` incomplete: {received} of {size} bytes")]
    Incomplete { name: String, received: usize, size: usize },
}

/// Limits a receiver sets on what it will allocate for one tensor set.
#[derive(Clone, Copy, Debug)]
pub struct AssemblyLimits {
    pub max_total_bytes: u64,
}

impl Default for AssemblyLimits {
    fn default() -> Self {
        // 8 GiB: far above any model we train, but bounded, so a header cannot ask for 2^64.
        Self { max_total_bytes: 8 << 30 }
    }
}

/// Converts a wire spec to a domain spec, refusing dtypes other than f32.
pub fn spec_from_wire(spec: &pb::TensorSpec) -> Result<TensorSpec, WireError> {
    let dtype = pb::Dtype::try_from(spec.dtype);
    if dtype != Ok(pb::Dtype::F32) {
        // A number the protocol does not know is named as the number it is.
        let dtype = dtype.map_or_else(|_| format!("{} (not a dtype)", spec.dtype), |d| d.as_str_name().to_string());
        return Err(WireError::UnsupportedDtype { name: crate::text::shown(&spec.name), dtype });
    }
    let mut numel: u64 = 1;
    for &d in &spec.shape {
        numel = numel
            .checked_mul(d)
            .filter(|n| n.checked_mul(F32_BYTES as u64).is_some())
            .ok_or_else(|| WireError::ShapeOverflow { name: spec.name.clone(), shape: spec.shape.clone() })?;
    }
    let shape = spec.shape.iter().map(|&d| d as usize).collect();
    Ok(TensorSpec { name: spec.name.clone(), shape })
}

/// Reassembles one tensor set from its header and in-order slices.
#[derive(Debug)]
pub struct Assembler {
    tensors: Vec<NamedTensor>,
    /// Index of the tensor being filled, and bytes written into it so far.
    current: usize,
    written: usize,
    received_bytes: u64,
}

impl Assembler {
    /// Checks the header's specs and allocates the tensors (zeroed).
    pub fn new(specs: &[pb::TensorSpec], declared_total_bytes: u64, limits: AssemblyLimits) -> Result<Self, WireError> {
        Self::reusing(specs, declared_total_bytes, limits, None)
    }

    /// [`Assembler::new`], writing into `spare` (a set assembled before and done with) when it
    /// has exactly the header's tensors: a client that downloads a model every round then
    /// reuses the memory of the last one instead of asking the kernel for fresh pages, which on
    /// a virtual machine costs more than the copy. Its old values never show: [`Assembler::finish`]
    /// hands a set over only once every byte has arrived.
    pub fn reusing(
        specs: &[pb::TensorSpec],
        declared_total_bytes: u64,
        limits: AssemblyLimits,
        spare: Option<TensorSet>,
    ) -> Result<Self, WireError> {
        let mut domain = Vec::with_capacity(specs.len());
        let mut total: u64 = 0;
        let mut seen = std::collections::HashSet::with_capacity(specs.len());
        for spec in specs {
            let spec = spec_from_wire(spec)?;
            if !seen.insert(spec.name.clone()) {
                return Err(WireError::DuplicateName(spec.name));
            }
            total = total.saturating_add((spec.numel() * F32_BYTES) as u64);
            domain.push(spec);
        }
        if total != declared_total_bytes {
            return Err(WireError::DeclaredSizeMismatch { declared: declared_total_bytes, actual: total });
        }
        if total > limits.max_total_bytes {
            return Err(WireError::TooLarge { bytes: total, limit: limits.max_total_bytes });
        }
        let tensors = match spare.filter(|s| s.specs() == domain) {
            Some(spare) => spare.into_tensors(),
            None => domain.iter().map(NamedTensor::zeros).collect(),
        };
        let mut assembler = Self { tensors, current: 0, written: 0, received_bytes: 0 };
        assembler.skip_full();
        Ok(assembler)
    }

    /// Bytes of tensor data received so far.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Writes one slice; slices must continue exactly where the previous one ended.
    pub fn push(&mut self, slice: &pb::TensorSlice) -> Result<(), WireError> {
        let count = self.tensors.len();
        let index = slice.tensor_index as usize;
        let tensor = self.tensors.get(index).ok_or(WireError::UnknownTensor { index: slice.tensor_index, count })?;
        if slice.data.len() > MAX_CHUNK_BYTES {
            return Err(WireError::SliceTooLarge { len: slice.data.len(), limit: MAX_CHUNK_BYTES });
        }
        if index != self.current || slice.byte_offset != self.written as u64 {
            let expected = match self.tensors.get(self.current) {
                Some(t) => format!("tensor `{}` at byte {}", t.name(), self.written),
                None => "no more slices".to_string(),
            };
            return Err(WireError::OutOfOrder { name: tensor.name().to_string(), expected });
        }
        let size = tensor.values().len() * F32_BYTES;
        if self.written + slice.data.len() > size {
            return Err(WireError::Overflow {
                name: tensor.name().to_string(),
                offset: slice.byte_offset,
                len: slice.data.len(),
                size,
            });
        }
        if !slice.data.len().is_multiple_of(F32_BYTES) {
            return Err(WireError::Misaligned { name: tensor.name().to_string(), len: slice.data.len() });
        }
        let start = self.written / F32_BYTES;
        let target = &mut self.tensors[index].values_mut()[start..start + slice.data.len() / F32_BYTES];
        for (value, bytes) in target.iter_mut().zip(slice.data.chunks_exact(F32_BYTES)) {
            *value = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        self.written += slice.data.len();
        self.received_bytes += slice.data.len() as u64;
        self.skip_full();
        Ok(())
    }

    /// Returns the set once every tensor is complete.
    pub fn finish(self) -> Result<TensorSet, WireError> {
        if let Some(t) = self.tensors.get(self.current) {
            return Err(WireError::Incomplete {
                name: t.name().to_string(),
                received: self.written,
                size: t.values().len() * F32_BYTES,
            });
        }
        // Names were checked unique in `new`.
        TensorSet::new(self.tensors).map_err(|e| WireError::DuplicateName(e.to_string()))
    }

    /// Moves past tensors that are complete (including empty ones).
    fn skip_full(&mut self) {
        while let Some(t) = self.tensors.get(self.current) {
            if self.written < t.values().len() * F32_BYTES {
                break;
            }
            self.current += 1;
            self.written = 0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chunk::{TensorSlices, tensor_specs};

    fn sample_set() -> TensorSet {
        TensorSet::new(vec![
            NamedTensor::new("body.w", vec![3, 4], (0..12).map(|x| x as f32 * 0.5 - 1.0).collect()).unwrap(),
            NamedTensor::new("empty", vec![0, 5], vec![]).unwrap(),
            NamedTensor::new("head.b", vec![5], vec![f32::MIN_POSITIVE, -0.0, 1e30, 7.0, -3.25]).unwrap(),
        ])
        .unwrap()
    }

    fn assembler_for(set: &TensorSet) -> Assembler {
        Assembler::new(&tensor_specs(set), set.byte_len() as u64, AssemblyLimits::default()).unwrap()
    }

    #[test]
    fn a_spare_set_of_the_same_tensors_is_written_into_and_never_shows() {
        let set = sample_set();
        let specs = tensor_specs(&set);
        let spare = TensorSet::new(
            set.tensors()
                .iter()
                .map(|t| NamedTensor::new(t.name(), t.shape().to_vec(), vec![9.0; t.numel()]).unwrap())
                .collect(),
        )
        .unwrap();
        let first = spare.clone();
        let reused = first.tensors()[0].values().as_ptr();
        let mut asm =
            Assembler::reusing(&specs, set.byte_len() as u64, AssemblyLimits::default(), Some(first)).unwrap();
        for slice in TensorSlices::new(Arc::new(set.clone()), 8) {
            asm.push(&slice).unwrap();
        }
        let back = asm.finish().unwrap();
        assert_eq!(back.tensors()[0].values().as_ptr(), reused, "the spare's memory");
        assert_eq!(back, set);

        // Half a download into a spare is refused whole, as into fresh memory.
        let mut asm =
            Assembler::reusing(&specs, set.byte_len() as u64, AssemblyLimits::default(), Some(spare)).unwrap();
        asm.push(&TensorSlices::new(Arc::new(set.clone()), 8).next().unwrap()).unwrap();
        assert!(matches!(asm.finish(), Err(WireError::Incomplete { .. })));

        // A spare of other tensors is not used.
        let other = TensorSet::new(vec![NamedTensor::new("body.w", vec![12], vec![9.0; 12]).unwrap()]).unwrap();
        let mut asm =
            Assembler::reusing(&specs, set.byte_len() as u64, AssemblyLimits::default(), Some(other)).unwrap();
        for slice in TensorSlices::new(Arc::new(set.clone()), 1 << 20) {
            asm.push(&slice).unwrap();
        }
        assert_eq!(asm.finish().unwrap(), set);
    }

    #[test]
    fn round_trip_is_bit_exact_for_any_chunk_size() {
        let set = sample_set();
        for chunk in [4, 8, 12, 20, 1 << 20] {
            let mut asm = assembler_for(&set);
            for slice in TensorSlices::new(Arc::new(set.clone()), chunk) {
                asm.push(&slice).unwrap();
            }
            let back = asm.finish().unwrap();
            for (a, b) in back.tensors().iter().zip(set.tensors()) {
                assert_eq!(a.name(), b.name());
                let bits = |t: &NamedTensor| t.values().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(b));
            }
        }
    }

    #[test]
    fn header_must_declare_the_true_size_and_f32() {
        let set = sample_set();
        let err = Assembler::new(&tensor_specs(&set), 7, AssemblyLimits::default()).unwrap_err();
        assert!(matches!(err, WireError::DeclaredSizeMismatch { declared: 7, .. }));
        let mut specs = tensor_specs(&set);
        specs[0].dtype = pb::Dtype::F64 as i32;
        let err = Assembler::new(&specs, set.byte_len() as u64, AssemblyLimits::default()).unwrap_err();
        assert!(err.to_string().contains("only f32"), "{err}");
        let huge = vec![pb::TensorSpec { name: "x".into(), dtype: pb::Dtype::F32 as i32, shape: vec![u64::MAX, 2] }];
        assert!(matches!(Assembler::new(&huge, 0, AssemblyLimits::default()), Err(WireError::ShapeOverflow { .. })));
        let limited = AssemblyLimits { max_total_bytes: 8 };
        assert!(matches!(
            Assembler::new(&tensor_specs(&set), set.byte_len() as u64, limited),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn gaps_overlaps_overflows_and_missing_tails_are_refused() {
        let set = sample_set();
        let slices: Vec<_> = TensorSlices::new(Arc::new(set.clone()), 16).collect();

        let mut asm = assembler_for(&set);
        let err = asm.push(&slices[1]).unwrap_err();
        assert!(matches!(err, WireError::OutOfOrder { .. }), "{err}");

        let mut asm = assembler_for(&set);
        let mut long = slices[0].clone();
        long.data = vec![0; 64];
        assert!(matches!(asm.push(&long), Err(WireError::Overflow { .. })));

        let mut asm = assembler_for(&set);
        let mut odd = slices[0].clone();
        odd.data.truncate(6);
        assert!(matches!(asm.push(&odd), Err(WireError::Misaligned { .. })));

        let mut asm = assembler_for(&set);
        let mut unknown = slices[0].clone();
        unknown.tensor_index = 9;
        assert!(matches!(asm.push(&unknown), Err(WireError::UnknownTensor { index: 9, count: 3 })));

        let mut asm = assembler_for(&set);
        asm.push(&slices[0]).unwrap();
        let err = asm.finish().unwrap_err();
        assert!(err.to_string().contains("body.w"), "{err}");
    }
}
