//! A client's masked vector (secure aggregation) on the wire: its length in the result
//! header's `SecAggAnswer`, then `MaskedSlice`s of u32 little-endian values, in order. The
//! receiver checks offsets, sizes and that every value lies in the round's ring.

use crate::chunk::MAX_CHUNK_BYTES;
use crate::pb;

const U32_BYTES: usize = 4;

/// Cuts a masked vector into slices of at most `chunk_bytes` (whole values each).
pub fn masked_slices(values: &[u32], chunk_bytes: usize) -> impl Iterator<Item = pb::MaskedSlice> + '_ {
    let per_slice = (chunk_bytes.clamp(U32_BYTES, MAX_CHUNK_BYTES) / U32_BYTES).max(1);
    values.chunks(per_slice).enumerate().map(move |(i, chunk)| pb::MaskedSlice {
        byte_offset: (i * per_slice * U32_BYTES) as u64,
        data: chunk.iter().flat_map(|v| v.to_le_bytes()).collect(),
    })
}

/// Why a masked vector was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MaskedError {
    #[error("masked vector: a slice at byte {got}, where the next one starts at {expected}")]
    Offset { got: u64, expected: u64 },
    #[error("masked vector: a slice of {len} bytes (whole u32 values, at most {MAX_CHUNK_BYTES})")]
    SliceSize { len: usize },
    #[error("masked vector: more bytes than the {declared} values declared")]
    TooLong { declared: usize },
    #[error("masked vector: {got} of {declared} values arrived")]
    Incomplete { got: usize, declared: usize },
    #[error("masked vector: value {value} at position {position} is outside the ring (mod {modulus})")]
    OutOfRing { value: u32, position: usize, modulus: u64 },
}

/// A masked vector being received: `declared` values, each below `modulus`.
#[derive(Debug)]
pub struct MaskedAssembler {
    declared: usize,
    modulus: u64,
    values: Vec<u32>,
}

impl MaskedAssembler {
    pub fn new(declared: usize, modulus: u64) -> Self {
        Self { declared, modulus, values: Vec::with_capacity(declared) }
    }

    pub fn push(&mut self, slice: &pb::MaskedSlice) -> Result<(), MaskedError> {
        let expected = (self.values.len() * U32_BYTES) as u64;
        if slice.byte_offset != expected {
            return Err(MaskedError::Offset { got: slice.byte_offset, expected });
        }
        let len = slice.data.len();
        if len == 0 || !len.is_multiple_of(U32_BYTES) || len > MAX_CHUNK_BYTES {
            return Err(MaskedError::SliceSize { len });
        }
        if self.values.len() + len / U32_BYTES > self.declared {
            return Err(MaskedError::TooLong { declared: self.declared });
        }
        for (i, bytes) in slice.data.chunks_exact(U32_BYTES).enumerate() {
            let value = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if u64::from(value) >= self.modulus {
                let position = self.values.len() + i;
                return Err(MaskedError::OutOfRing { value, position, modulus: self.modulus });
            }
            self.values.push(value);
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Vec<u32>, MaskedError> {
        if self.values.len() != self.declared {
            return Err(MaskedError::Incomplete { got: self.values.len(), declared: self.declared });
        }
        Ok(self.values)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_round_trips_and_a_bad_one_is_refused() {
        let values: Vec<u32> = (0..1000).map(|i| i * 7 % 256).collect();
        let slices: Vec<_> = masked_slices(&values, 400).collect();
        assert_eq!(slices.len(), 10);
        let mut a = MaskedAssembler::new(values.len(), 256);
        slices.iter().for_each(|s| a.push(s).unwrap());
        assert_eq!(a.finish().unwrap(), values);

        let mut a = MaskedAssembler::new(values.len(), 256);
        assert!(matches!(a.push(&slices[1]), Err(MaskedError::Offset { got: 400, expected: 0 })));
        let mut a = MaskedAssembler::new(values.len(), 128);
        assert!(matches!(a.push(&slices[0]), Err(MaskedError::OutOfRing { modulus: 128, .. })));
        let mut a = MaskedAssembler::new(50, 256);
        assert!(matches!(a.push(&slices[0]), Err(MaskedError::TooLong { declared: 50 })));
        let mut a = MaskedAssembler::new(values.len(), 256);
        a.push(&slices[0]).unwrap();
        assert!(matches!(a.finish(), Err(MaskedError::Incomplete { got: 100, declared: 1000 })));
        let odd = pb::MaskedSlice { byte_offset: 0, data: vec![1, 2, 3] };
        assert!(matches!(MaskedAssembler::new(10, 256).push(&odd), Err(MaskedError::SliceSize { len: 3 })));
    }
}
