//! Bit-packed masks on the wire: a `MaskSpec` in the header, then `MaskSlice`s in order.

use strata_core::mask::{BitMask, MaskError};

use crate::chunk::MAX_CHUNK_BYTES;
use crate::pb;

/// Cuts a mask's bytes into slices of at most `chunk_bytes`.
pub fn mask_slices(mask: &BitMask, chunk_bytes: usize) -> Vec<pb::MaskSlice> {
    let bytes = mask.to_bytes();
    let step = chunk_bytes.clamp(1, MAX_CHUNK_BYTES);
    bytes
        .chunks(step)
        .enumerate()
        .map(|(i, c)| pb::MaskSlice { byte_offset: (i * step) as u64, data: c.to_vec() })
        .collect()
}

/// Why a mask's slices were refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MaskAssemblyError {
    #[error("mask slice at byte {offset} out of order: expected byte {expected}")]
    OutOfOrder { offset: u64, expected: usize },
    #[error("mask slice of {len} bytes runs past the mask's {bits} bits")]
    Overflow { len: usize, bits: usize },
    /// The bytes received do not make a mask of the declared length (too few, or bits set past it).
    #[error(transparent)]
    Mask(#[from] MaskError),
}

/// Collects in-order mask slices into a mask of a declared length.
#[derive(Debug)]
pub struct MaskAssembler {
    bits: usize,
    bytes: Vec<u8>,
}

impl MaskAssembler {
    pub fn new(bits: usize) -> Self {
        Self { bits, bytes: Vec::with_capacity(bits.div_ceil(8)) }
    }

    pub fn push(&mut self, slice: &pb::MaskSlice) -> Result<(), MaskAssemblyError> {
        if slice.byte_offset != self.bytes.len() as u64 {
            return Err(MaskAssemblyError::OutOfOrder { offset: slice.byte_offset, expected: self.bytes.len() });
        }
        if slice.data.len() > MAX_CHUNK_BYTES || self.bytes.len() + slice.data.len() > self.bits.div_ceil(8) {
            return Err(MaskAssemblyError::Overflow { len: slice.data.len(), bits: self.bits });
        }
        self.bytes.extend_from_slice(&slice.data);
        Ok(())
    }

    pub fn finish(self) -> Result<BitMask, MaskAssemblyError> {
        Ok(BitMask::from_bytes(self.bits, &self.bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_round_trip_in_slices_and_refuse_disorder() {
        let mask = BitMask::from_bools((0..1000).map(|i| i % 7 == 0));
        let slices = mask_slices(&mask, 16);
        assert_eq!(slices.len(), 8);
        let mut asm = MaskAssembler::new(1000);
        for s in &slices {
            asm.push(s).unwrap();
        }
        assert_eq!(asm.finish().unwrap(), mask);
        let mut asm = MaskAssembler::new(1000);
        let err = asm.push(&slices[1]).unwrap_err();
        assert_eq!(err, MaskAssemblyError::OutOfOrder { offset: 16, expected: 0 });
        assert!(err.to_string().contains("out of order"), "{err}");
        let mut short = MaskAssembler::new(1000);
        short.push(&slices[0]).unwrap();
        assert!(matches!(short.finish(), Err(MaskAssemblyError::Mask(MaskError::WrongByteCount { .. }))));
        let mut long = MaskAssembler::new(8);
        let err = long.push(&pb::MaskSlice { byte_offset: 0, data: vec![0; 2] }).unwrap_err();
        assert_eq!(err, MaskAssemblyError::Overflow { len: 2, bits: 8 });
        assert!(err.to_string().contains("runs past"), "{err}");
    }
}
