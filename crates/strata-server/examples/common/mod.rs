//! What the FedCAC examples share.

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use strata_core::mask::BitMask;

/// A mask of `bits` uniformly random bits (density about 0.5, as with τ = 0.5).
pub fn random_mask(rng: &mut ChaCha8Rng, bits: usize) -> BitMask {
    let mut bytes = vec![0u8; bits.div_ceil(8)];
    rng.fill_bytes(&mut bytes);
    if !bits.is_multiple_of(8)
        && let Some(last) = bytes.last_mut()
    {
        *last &= (1u8 << (bits % 8)) - 1;
    }
    BitMask::from_bytes(bits, &bytes).expect("enough bytes, no bits past the end")
}
