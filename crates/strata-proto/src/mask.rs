//! Bit-packed masks on the wire: a `MaskSpec` in the header, then `MaskSlice`s in order.

use strata_core::mask::BitMask;

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

    pub fn push(&mut self, slice: &pb::MaskSlice) -> Result<(), String> {
        if slice.byte_offset != self.bytes.len() as u64 {
            return Err(format!(
                "mask slice at byte {} out of order: expected byte {}",
                slice.byte_offset,
                self.bytes.len()
            ));
        }
        if slice.data.len() > MAX_CHUNK_BYTES || self.bytes.len() + slice.data.len() > self.bits.div_ceil(8) {
            return Err(format!("mask slice of {} bytes runs past the mask's {} bits", slice.data.len(), self.bits));
        }
        self.bytes.extend_from_slice(&slice.data);
        Ok(())
    }

    pub fn finish(self) -> Result<BitMask, String> {
        BitMask::from_bytes(self.bits, &self.bytes).map_err(|e| e.to_string())
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
        assert!(asm.push(&slices[1]).is_err());
        let mut short = MaskAssembler::new(1000);
        short.push(&slices[0]).unwrap();
        assert!(short.finish().is_err());
    }
}
