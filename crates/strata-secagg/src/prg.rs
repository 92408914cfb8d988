//! The masks: a ChaCha20 keystream keyed with a full 32-byte seed, one u32 per element,
//! reduced mod M (a power of two, so exactly uniform). Flower's PRG folds the seed into 32
//! bits and draws from MT19937 (flwr issue #7522); this one is a CSPRNG.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};

/// Adds (`sign` > 0) or subtracts the mask of `seed` to `vector`, element by element, in
/// wrapping u32 arithmetic (the caller reduces mod M, which divides 2^32, at the end).
pub(crate) fn apply(vector: &mut [u32], seed: &[u8; 32], add: bool) {
    // Nonce 0, counter from 0: the keystream of ChaCha20 keyed with the seed (the same
    // `rand_chacha`'s ChaCha20Rng gives), a block of it at a time so that the additions
    // vectorize and the cipher takes its widest backend.
    let mut cipher = ChaCha20::new(seed.into(), &[0u8; 12].into());
    let mut bytes = [0u8; 16384];
    for chunk in vector.chunks_mut(bytes.len() / 4) {
        let stream = &mut bytes[..chunk.len() * 4];
        stream.fill(0);
        cipher.apply_keystream(stream);
        let masks = stream.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if add {
            chunk.iter_mut().zip(masks).for_each(|(v, m)| *v = v.wrapping_add(m));
        } else {
            chunk.iter_mut().zip(masks).for_each(|(v, m)| *v = v.wrapping_sub(m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_is_the_keystream_one_u32_at_a_time() {
        use rand::{RngCore, SeedableRng};
        use rand_chacha::ChaCha20Rng;
        // Longer than a block, and not a multiple of one.
        let mut v = vec![0u32; 10_000];
        apply(&mut v, &[3; 32], true);
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        assert!(v.iter().all(|&m| m == rng.next_u32()));
    }

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
