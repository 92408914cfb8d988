//! The masks: a ChaCha20 keystream keyed with a full 32-byte seed, one u32 per element,
//! reduced mod M (a power of two, so exactly uniform). Flower's PRG folds the seed into 32
//! bits and draws from MT19937 (flwr issue #7522); this one is a CSPRNG.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Adds (`sign` > 0) or subtracts the mask of `seed` to `vector`, element by element, in
/// wrapping u32 arithmetic (the caller reduces mod M, which divides 2^32, at the end).
pub(crate) fn apply(vector: &mut [u32], seed: &[u8; 32], add: bool) {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    for v in vector.iter_mut() {
        let m = rng.next_u32();
        *v = if add { v.wrapping_add(m) } else { v.wrapping_sub(m) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_added_then_subtracted_cancels_and_differs_by_seed() {
        let plain: Vec<u32> = (0..1000).collect();
        let mut v = plain.clone();
        apply(&mut v, &[7; 32], true);
        assert_ne!(v, plain);
        let mut other = plain.clone();
        apply(&mut other, &[8; 32], true);
        assert_ne!(v, other);
        apply(&mut v, &[7; 32], false);
        assert_eq!(v, plain);
    }
}
