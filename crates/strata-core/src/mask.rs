//! Bit-packed masks: one bit per parameter entry, tensors concatenated in their set's order.
//!
//! FedCAC's critical masks travel and are compared in this form: overlaps between clients are
//! popcounts over 64-bit words, so K clients with P parameters cost K²·P/64 word operations.
//! On the wire the bits are little-endian bytes, least significant bit first in each byte.

/// A fixed-length bit vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitMask {
    len: usize,
    words: Vec<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MaskError {
    #[error("mask of {bits} bits needs {expected} bytes, got {got}")]
    WrongByteCount { bits: usize, expected: usize, got: usize },
    #[error("mask has bits set past its length of {0} bits")]
    TrailingBits(usize),
    #[error("masks have different lengths ({0} and {1} bits)")]
    LengthMismatch(usize, usize),
}

impl BitMask {
    pub fn zeros(len: usize) -> Self {
        Self { len, words: vec![0; len.div_ceil(64)] }
    }

    pub fn from_bools(bits: impl IntoIterator<Item = bool>) -> Self {
        let mut mask = Self::zeros(0);
        for bit in bits {
            if mask.len.is_multiple_of(64) {
                mask.words.push(0);
            }
            if bit {
                mask.words[mask.len / 64] |= 1 << (mask.len % 64);
            }
            mask.len += 1;
        }
        mask
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] >> (i % 64) & 1 == 1
    }

    pub fn set(&mut self, i: usize, value: bool) {
        assert!(i < self.len, "bit {i} out of a mask of {} bits", self.len);
        if value {
            self.words[i / 64] |= 1 << (i % 64);
        } else {
            self.words[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Positions of the set bits in `range` (clipped to the mask), ascending: a word at a
    /// time, so that sparse and dense masks cost what their words and set bits cost.
    pub fn ones_in(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = usize> + '_ {
        let (start, end) = (range.start, range.end.min(self.len));
        let first = start / 64;
        let last = if start < end { end.div_ceil(64) } else { first };
        (first..last).flat_map(move |w| {
            let low = w * 64;
            let mut word = self.words[w];
            if start > low {
                word &= !0u64 << (start - low);
            }
            if end < low + 64 {
                word &= (1u64 << (end - low)) - 1;
            }
            std::iter::from_fn(move || {
                (word != 0).then(|| {
                    let bit = word.trailing_zeros() as usize;
                    word &= word - 1;
                    low + bit
                })
            })
        })
    }

    /// The 64 bits from position `start` on (bit 0 is `start`), zeros past the end: a window
    /// at any offset, for loops that blend 64 entries at a time.
    pub fn word_at(&self, start: usize) -> u64 {
        let (w, shift) = (start / 64, start % 64);
        let low = self.words.get(w).map_or(0, |&x| x >> shift);
        let high = match shift {
            0 => 0,
            _ => self.words.get(w + 1).map_or(0, |&x| x << (64 - shift)),
        };
        low | high
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Number of positions where the masks differ, |a − b|₁ for 0/1 vectors.
    pub fn hamming(&self, other: &BitMask) -> Result<u64, MaskError> {
        self.same_len(other)?;
        Ok(self.words.iter().zip(&other.words).map(|(a, b)| u64::from((a ^ b).count_ones())).sum())
    }

    /// Number of positions set in both masks.
    pub fn and_count(&self, other: &BitMask) -> Result<u64, MaskError> {
        self.same_len(other)?;
        Ok(self.words.iter().zip(&other.words).map(|(a, b)| u64::from((a & b).count_ones())).sum())
    }

    /// The wire form: ceil(len/8) bytes, least significant bit first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.truncate(self.len.div_ceil(8));
        bytes
    }

    /// Parses the wire form, refusing a wrong size or bits set past `len`.
    pub fn from_bytes(len: usize, bytes: &[u8]) -> Result<Self, MaskError> {
        let expected = len.div_ceil(8);
        if bytes.len() != expected {
            return Err(MaskError::WrongByteCount { bits: len, expected, got: bytes.len() });
        }
        let mut words = vec![0u64; len.div_ceil(64)];
        for (i, &b) in bytes.iter().enumerate() {
            words[i / 8] |= u64::from(b) << (8 * (i % 8));
        }
        let mask = Self { len, words };
        if !len.is_multiple_of(64) && mask.words.last().is_some_and(|w| w >> (len % 64) != 0) {
            return Err(MaskError::TrailingBits(len));
        }
        Ok(mask)
    }

    fn same_len(&self, other: &BitMask) -> Result<(), MaskError> {
        if self.len != other.len {
            return Err(MaskError::LengthMismatch(self.len, other.len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_through_bytes() {
        let bits: Vec<bool> = (0..77).map(|i| i % 3 == 0 || i == 76).collect();
        let mask = BitMask::from_bools(bits.iter().copied());
        assert_eq!(mask.len(), 77);
        assert!((0..77).all(|i| mask.get(i) == bits[i]));
        let bytes = mask.to_bytes();
        assert_eq!(bytes.len(), 10);
        assert_eq!(bytes[0], 0b0100_1001, "least significant bit first");
        assert_eq!(BitMask::from_bytes(77, &bytes).unwrap(), mask);
    }

    #[test]
    fn ones_in_lists_the_set_bits_of_a_range() {
        let bits: Vec<bool> = (0..200).map(|i| i % 7 == 0 || i == 63 || i == 64 || i == 199).collect();
        let mask = BitMask::from_bools(bits.iter().copied());
        for (start, end) in [(0, 200), (0, 0), (5, 5), (1, 64), (63, 65), (64, 128), (70, 71), (130, 500), (150, 100)] {
            let expected: Vec<usize> = (start..end.min(200)).filter(|&i| bits[i]).collect();
            assert_eq!(mask.ones_in(start..end).collect::<Vec<_>>(), expected, "{start}..{end}");
        }
    }

    #[test]
    fn wire_form_is_checked() {
        assert!(matches!(BitMask::from_bytes(10, &[0; 3]), Err(MaskError::WrongByteCount { .. })));
        assert_eq!(BitMask::from_bytes(10, &[0, 0b100]), Err(MaskError::TrailingBits(10)));
        assert!(BitMask::from_bytes(10, &[0xff, 0b11]).is_ok());
    }

    #[test]
    fn popcounts_compare_masks() {
        let a = BitMask::from_bools([true, true, false, false, true]);
        let b = BitMask::from_bools([true, false, true, false, true]);
        assert_eq!(a.count_ones(), 3);
        assert_eq!(a.hamming(&b).unwrap(), 2);
        assert_eq!(a.and_count(&b).unwrap(), 2);
        assert!(a.hamming(&BitMask::zeros(4)).is_err());
    }
    #[test]
    fn a_word_at_any_offset_reads_the_bits_from_there() {
        let bits: Vec<bool> = (0..150).map(|i| i % 3 == 0 || i % 7 == 0).collect();
        let mask = BitMask::from_bools(bits.iter().copied());
        for start in [0, 1, 5, 63, 64, 65, 100, 127, 140, 149, 150, 200] {
            let expected = (0..64).filter(|&b| bits.get(start + b) == Some(&true)).fold(0u64, |w, b| w | 1 << b);
            assert_eq!(mask.word_at(start), expected, "start {start}");
        }
    }
}
