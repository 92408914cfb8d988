//! Putting streamed slices back into a tensor set, trusting nothing.
//!
//! The header declares every tensor's name, shape and encoding ([`crate::encoding`]); the
//! assembler allocates each tensor once and decodes slices straight into it, so a receiver
//! holds one copy of the set whatever travelled (f32, fp16, bf16, int8, sparse entries, changes
//! from what the task sent).
//! Slices must arrive in order (tensor by tensor, byte by byte): anything else — an unknown
//! tensor index, a gap, an overlap, an overflow, a missing tail — is refused with a message
//! that names the tensor and the offsets; so is an encoding the run does not use, a change
//! from a tensor the task did not send, and a sparse index out of range or out of order.

use std::collections::HashMap;
use std::sync::Arc;

use strata_core::compression::Compression;
use strata_core::tensor::{NamedTensor, TensorSet, TensorSpec};

use crate::chunk::MAX_CHUNK_BYTES;
use crate::encoding::{Encoding, INDEX_BYTES};
use crate::pb;

const F32_BYTES: usize = std::mem::size_of::<f32>();

pub use crate::wire_error::WireError;

/// Limits a receiver sets on what it will allocate for one tensor set.
#[derive(Clone, Copy, Debug)]
pub struct AssemblyLimits {
    /// Bytes of the assembled f32 tensors (what the receiver allocates, whatever travels).
    pub max_total_bytes: u64,
}

impl Default for AssemblyLimits {
    fn default() -> Self {
        // 8 GiB: far above any model we train, but bounded, so a header cannot ask for 2^64.
        Self { max_total_bytes: 8 << 30 }
    }
}

/// What a receiver takes besides plain f32: the run's compression for this direction, and
/// the tensors a change may be taken from (what the task sent; none for downloads).
#[derive(Clone, Debug, Default)]
pub struct Decoding {
    pub compression: Compression,
    pub reference: Option<Arc<TensorSet>>,
}

/// Converts a wire spec to a domain spec, refusing dtypes and scales Strata never sends.
pub fn spec_from_wire(spec: &pb::TensorSpec) -> Result<TensorSpec, WireError> {
    Encoding::from_wire(spec)?;
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

/// How one tensor arrives.
#[derive(Debug)]
struct Incoming {
    encoding: Encoding,
    /// Its bytes on the wire.
    wire_bytes: usize,
    /// The reference tensor a change adds to.
    reference: Option<usize>,
}

/// Reassembles one tensor set from its header and in-order slices, decoding as it goes.
#[derive(Debug)]
pub struct Assembler {
    tensors: Vec<NamedTensor>,
    incoming: Vec<Incoming>,
    reference: Option<Arc<TensorSet>>,
    /// Index of the tensor being filled, and its bytes received so far.
    current: usize,
    written: usize,
    /// The last sparse index written into the current tensor.
    last_index: Option<u32>,
    received_bytes: u64,
}

impl Assembler {
    /// Checks the header's specs (plain f32 only) and allocates the tensors (zeroed).
    pub fn new(specs: &[pb::TensorSpec], declared_total_bytes: u64, limits: AssemblyLimits) -> Result<Self, WireError> {
        Self::reusing(specs, declared_total_bytes, limits, None, Decoding::default())
    }

    /// [`Assembler::new`], taking the encodings `decoding` allows, and writing into `spare` (a
    /// set assembled before and done with) when it has exactly the header's tensors: a client
    /// that downloads a model every round then reuses the memory of the last one instead of
    /// asking the kernel for fresh pages, which on a virtual machine costs more than the copy.
    /// Its old values never show: [`Assembler::finish`] hands a set over only once every byte
    /// has arrived, and sparse tensors start from their reference (or zero).
    pub fn reusing(
        specs: &[pb::TensorSpec],
        declared_total_bytes: u64,
        limits: AssemblyLimits,
        spare: Option<TensorSet>,
        decoding: Decoding,
    ) -> Result<Self, WireError> {
        let references: HashMap<&str, (usize, &[usize])> = decoding
            .reference
            .as_deref()
            .map(|r| r.tensors().iter().enumerate().map(|(i, t)| (t.name(), (i, t.shape()))).collect())
            .unwrap_or_default();
        let mut domain = Vec::with_capacity(specs.len());
        let mut incoming = Vec::with_capacity(specs.len());
        let (mut wire_total, mut total): (u64, u64) = (0, 0);
        let mut seen = std::collections::HashSet::with_capacity(specs.len());
        for wire in specs {
            let spec = spec_from_wire(wire)?;
            let encoding = Encoding::from_wire(wire)?;
            if !seen.insert(spec.name.clone()) {
                return Err(WireError::DuplicateName(spec.name));
            }
            let name = || crate::text::shown(&spec.name);
            if !encoding.accepted_under(decoding.compression) {
                let compression = decoding.compression.to_string();
                return Err(WireError::NotAccepted { name: name(), encoding: encoding.describe(), compression });
            }
            let reference = match encoding.delta {
                false => None,
                true => match references.get(spec.name.as_str()) {
                    Some(&(at, shape)) if shape == spec.shape.as_slice() => Some(at),
                    _ => return Err(WireError::NoReference { name: name() }),
                },
            };
            let numel = spec.numel();
            if let Some(entries) = encoding.sparse.filter(|&e| e > numel as u64) {
                return Err(WireError::TooManyEntries { name: name(), entries, numel });
            }
            // Entries are at most the values, so this is at most twice f32's size: no overflow.
            let wire_bytes = encoding.units(numel) as usize * encoding.unit_bytes();
            wire_total = wire_total.saturating_add(wire_bytes as u64);
            total = total.saturating_add((numel * F32_BYTES) as u64);
            incoming.push(Incoming { encoding, wire_bytes, reference });
            domain.push(spec);
        }
        if wire_total != declared_total_bytes {
            return Err(WireError::DeclaredSizeMismatch { declared: declared_total_bytes, actual: wire_total });
        }
        if total > limits.max_total_bytes {
            return Err(WireError::TooLarge { bytes: total, limit: limits.max_total_bytes });
        }
        let tensors = match spare.filter(|s| s.specs() == domain) {
            Some(spare) => spare.into_tensors(),
            None => domain.iter().map(NamedTensor::zeros).collect(),
        };
        let mut assembler = Self {
            tensors,
            incoming,
            reference: decoding.reference,
            current: 0,
            written: 0,
            last_index: None,
            received_bytes: 0,
        };
        assembler.start_sparse_tensors();
        assembler.skip_full();
        Ok(assembler)
    }

    /// Bytes of tensor data received so far.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes
    }

    /// Bytes of the assembled tensors (f32, whatever their encoding on the wire).
    pub fn assembled_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| (t.numel() * F32_BYTES) as u64).sum()
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
        let incoming = &self.incoming[index];
        let size = incoming.wire_bytes;
        if self.written + slice.data.len() > size {
            return Err(WireError::Overflow {
                name: tensor.name().to_string(),
                offset: slice.byte_offset,
                len: slice.data.len(),
                size,
            });
        }
        let unit = incoming.encoding.unit_bytes();
        if !slice.data.len().is_multiple_of(unit) {
            return Err(WireError::Misaligned { name: tensor.name().to_string(), len: slice.data.len(), unit });
        }
        let coding = incoming.encoding.values;
        let base = incoming.reference.and_then(|at| Some(self.reference.as_deref()?.tensors()[at].values()));
        let values = self.tensors[index].values_mut();
        match incoming.encoding.sparse {
            None => {
                let start = self.written / unit;
                let target = &mut values[start..start + slice.data.len() / unit];
                let base = base.map(|base| &base[start..start + target.len()]);
                coding.decode_into(&slice.data, base, target);
            }
            Some(_) => {
                // Each entry lands on its reference value (or zero), written before the first.
                let numel = values.len();
                for entry in slice.data.chunks_exact(unit) {
                    let at = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
                    if at as usize >= numel || self.last_index.is_some_and(|last| at <= last) {
                        let after = self.last_index.map(|l| format!(" (after {l})")).unwrap_or_default();
                        let name = self.tensors[index].name().to_string();
                        return Err(WireError::SparseIndex { name, index: at, numel, after });
                    }
                    values[at as usize] += coding.decode(&entry[INDEX_BYTES..]);
                    self.last_index = Some(at);
                }
            }
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
                size: self.incoming[self.current].wire_bytes,
            });
        }
        // Names were checked unique in `new`.
        TensorSet::new(self.tensors).map_err(|e| WireError::DuplicateName(e.to_string()))
    }

    /// Sets every sparse tensor to what its entries change: its reference, or zero.
    fn start_sparse_tensors(&mut self) {
        for (tensor, incoming) in self.tensors.iter_mut().zip(&self.incoming) {
            if incoming.encoding.sparse.is_none() {
                continue;
            }
            let values = tensor.values_mut();
            match incoming.reference.and_then(|at| Some(self.reference.as_deref()?.tensors()[at].values())) {
                Some(base) => values.copy_from_slice(base),
                None => values.fill(0.0),
            }
        }
    }

    /// Moves past tensors that are complete (including empty ones).
    fn skip_full(&mut self) {
        while let Some(incoming) = self.incoming.get(self.current) {
            if self.written < incoming.wire_bytes {
                break;
            }
            self.current += 1;
            self.written = 0;
            self.last_index = None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chunk::{TensorSlices, tensor_specs};
    use crate::encode::Encoded;

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
        let mut asm = Assembler::reusing(
            &specs,
            set.byte_len() as u64,
            AssemblyLimits::default(),
            Some(first),
            Decoding::default(),
        )
        .unwrap();
        for slice in TensorSlices::new(Arc::new(set.clone()), 8) {
            asm.push(&slice).unwrap();
        }
        let back = asm.finish().unwrap();
        assert_eq!(back.tensors()[0].values().as_ptr(), reused, "the spare's memory");
        assert_eq!(back, set);

        // Half a download into a spare is refused whole, as into fresh memory.
        let mut asm = Assembler::reusing(
            &specs,
            set.byte_len() as u64,
            AssemblyLimits::default(),
            Some(spare),
            Decoding::default(),
        )
        .unwrap();
        asm.push(&TensorSlices::new(Arc::new(set.clone()), 8).next().unwrap()).unwrap();
        assert!(matches!(asm.finish(), Err(WireError::Incomplete { .. })));

        // A spare of other tensors is not used.
        let other = TensorSet::new(vec![NamedTensor::new("body.w", vec![12], vec![9.0; 12]).unwrap()]).unwrap();
        let mut asm = Assembler::reusing(
            &specs,
            set.byte_len() as u64,
            AssemblyLimits::default(),
            Some(other),
            Decoding::default(),
        )
        .unwrap();
        for slice in TensorSlices::new(Arc::new(set.clone()), 1 << 20) {
            asm.push(&slice).unwrap();
        }
        assert_eq!(asm.finish().unwrap(), set);
    }

    fn decode(encoded: crate::encode::Encoded, decoding: Decoding, chunk: usize) -> Result<TensorSet, WireError> {
        let (specs, total) = (encoded.specs(), encoded.total_bytes());
        let mut asm = Assembler::reusing(&specs, total, AssemblyLimits::default(), None, decoding)?;
        for slice in TensorSlices::encoded(encoded, chunk) {
            asm.push(&slice)?;
        }
        asm.finish()
    }

    fn largest_error(a: &TensorSet, b: &TensorSet) -> f32 {
        let pairs = a.tensors().iter().zip(b.tensors());
        pairs.flat_map(|(x, y)| x.values().iter().zip(y.values()).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
    }

    #[test]
    fn every_compression_decodes_to_the_sent_values_within_its_rounding() {
        let reference = Arc::new(sample_set());
        // A trained set: the reference moved a little, as after a round of training.
        let trained = Arc::new(
            TensorSet::new(
                reference
                    .tensors()
                    .iter()
                    .map(|t| {
                        let moved = t.values().iter().enumerate().map(|(i, v)| v + 0.01 * (i as f32 - 2.0)).collect();
                        NamedTensor::new(t.name(), t.shape().to_vec(), moved).unwrap()
                    })
                    .collect(),
            )
            .unwrap(),
        );
        for (compression, bound) in [
            (Compression::None, 0.0),
            (Compression::F16, 1e-4),
            (Compression::Bf16, 1e-3),
            (Compression::Int8, 0.1 / 127.0),
            (Compression::TopK { ratio: 1.0 }, 0.0),
        ] {
            for chunk in [1, 7, 1 << 20] {
                let decoding = Decoding { compression, reference: Some(Arc::clone(&reference)) };
                let encoded =
                    Encoded::new(Arc::clone(&trained), Some(Arc::clone(&reference)), compression, &mut None, 3);
                let back = decode(encoded, decoding, chunk).unwrap();
                // 1e30 plus a change of 0.03 is 1e30 again in f32: the change decodes exactly.
                assert!(
                    largest_error(&back, &trained) <= bound,
                    "{compression} at chunk {chunk}: {}",
                    largest_error(&back, &trained)
                );
            }
        }
        // Without a reference (a download): the values themselves.
        let plain = Encoded::new(Arc::clone(&trained), None, Compression::Bf16, &mut None, 3);
        assert!(plain.specs().iter().all(|s| !s.delta));
        let back = decode(plain, Decoding { compression: Compression::Bf16, reference: None }, 64).unwrap();
        assert_eq!(back.tensors()[2].values()[2], half::bf16::from_f32(1e30).to_f32());
    }

    #[test]
    fn int8_rounding_is_unbiased() {
        let reference = Arc::new(TensorSet::new(vec![NamedTensor::new("w", vec![4], vec![0.0; 4]).unwrap()]).unwrap());
        let trained = Arc::new(
            TensorSet::new(vec![NamedTensor::new("w", vec![4], vec![1.0, 0.3, -0.77, 0.001]).unwrap()]).unwrap(),
        );
        let mut mean = [0.0f64; 4];
        let draws = 4000;
        for seed in 0..draws {
            let decoding = Decoding { compression: Compression::Int8, reference: Some(Arc::clone(&reference)) };
            let encoded =
                Encoded::new(Arc::clone(&trained), Some(Arc::clone(&reference)), Compression::Int8, &mut None, seed);
            let back = decode(encoded, decoding, 1 << 20).unwrap();
            mean.iter_mut().zip(back.tensors()[0].values()).for_each(|(m, v)| *m += f64::from(*v) / draws as f64);
        }
        // One step is 1/127; the mean of 4,000 draws is within a few hundredths of a step.
        for (m, t) in mean.iter().zip(trained.tensors()[0].values()) {
            assert!((m - f64::from(*t)).abs() < 3e-4, "{mean:?}");
        }
    }

    #[test]
    fn sparse_entries_land_on_the_reference_even_in_a_spare() {
        let reference = Arc::new(sample_set());
        let mut trained = sample_set();
        trained.values_mut_at(0).unwrap()[5] += 2.0;
        let topk = Compression::TopK { ratio: 0.1 };
        let encoded = Encoded::new(Arc::new(trained.clone()), Some(Arc::clone(&reference)), topk, &mut None, 0);
        let (specs, total) = (encoded.specs(), encoded.total_bytes());
        assert_eq!(specs[0].sparse_entries, Some(2), "⌈0.1 × 12⌉");
        let stale = TensorSet::zeros(&reference.specs());
        let stale = TensorSet::new(
            stale
                .into_tensors()
                .into_iter()
                .map(|t| {
                    let n = t.numel();
                    NamedTensor::new(t.name(), t.shape().to_vec(), vec![7.0; n]).unwrap()
                })
                .collect(),
        )
        .unwrap();
        let decoding = Decoding { compression: topk, reference: Some(Arc::clone(&reference)) };
        let mut asm = Assembler::reusing(&specs, total, AssemblyLimits::default(), Some(stale), decoding).unwrap();
        for slice in TensorSlices::encoded(encoded, 8) {
            asm.push(&slice).unwrap();
        }
        assert_eq!(asm.finish().unwrap(), trained);
    }

    #[test]
    fn encodings_the_receiver_did_not_ask_for_are_refused_by_name() {
        let reference = Arc::new(sample_set());
        let trained = Arc::new(sample_set());
        let int8 = || Encoded::new(Arc::clone(&trained), Some(Arc::clone(&reference)), Compression::Int8, &mut None, 0);
        let err =
            decode(int8(), Decoding { compression: Compression::F16, reference: Some(Arc::clone(&reference)) }, 64)
                .unwrap_err();
        assert!(err.to_string().contains("travels as int8 change, but this run's compression here is fp16"), "{err}");
        let err = decode(int8(), Decoding { compression: Compression::Int8, reference: None }, 64).unwrap_err();
        assert!(matches!(err, WireError::NoReference { .. }), "{err}");

        let topk = Compression::TopK { ratio: 0.5 };
        let decoding = || Decoding { compression: topk, reference: Some(Arc::clone(&reference)) };
        let sparse = Encoded::new(Arc::clone(&trained), Some(Arc::clone(&reference)), topk, &mut None, 0);
        let mut specs = sparse.specs();
        let total = sparse.total_bytes();
        let mut slices: Vec<_> = TensorSlices::encoded(sparse, 1 << 20).collect();
        specs[0].sparse_entries = Some(13);
        let err = Assembler::reusing(&specs, total, AssemblyLimits::default(), None, decoding()).unwrap_err();
        assert!(matches!(err, WireError::TooManyEntries { entries: 13, numel: 12, .. }), "{err}");
        specs[0].sparse_entries = Some(6);
        // Entries out of order: the second's index made equal to the first's.
        let first_index = slices[0].data[..4].to_vec();
        slices[0].data[8..12].copy_from_slice(&first_index);
        let mut asm = Assembler::reusing(&specs, total, AssemblyLimits::default(), None, decoding()).unwrap();
        let err = asm.push(&slices[0]).unwrap_err();
        assert!(err.to_string().contains("strictly increasing"), "{err}");
        slices[0].data[8..12].copy_from_slice(&12u32.to_le_bytes());
        let mut asm = Assembler::reusing(&specs, total, AssemblyLimits::default(), None, decoding()).unwrap();
        assert!(matches!(asm.push(&slices[0]), Err(WireError::SparseIndex { index: 12, .. })));
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
        assert!(err.to_string().contains("DTYPE_F64") && err.to_string().contains("never sends"), "{err}");
        let huge = vec![pb::TensorSpec {
            name: "x".into(),
            dtype: pb::Dtype::F32 as i32,
            shape: vec![u64::MAX, 2],
            ..Default::default()
        }];
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
