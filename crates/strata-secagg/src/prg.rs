//! The masks: AES-256 in counter mode keyed with a full 32-byte seed (the PRG of Bell et
//! al.'s paper), one u32 per element, reduced mod M (a power of two, so exactly uniform).
//! Flower's PRG folds the seed into 32 bits and draws from MT19937 (flwr issue #7522); this
//! one is a CSPRNG, and with AES-NI the cheapest one here: a client expands k streams of its
//! vector's length every round, which is most of what secure aggregation costs it.

use aes::Aes256;
use ctr::cipher::{KeyIvInit, StreamCipher};

type Aes256Ctr = ctr::Ctr128BE<Aes256>;

/// Adds (`sign` > 0) or subtracts the mask of `seed` to `vector`, element by element, in
/// wrapping u32 arithmetic (the caller reduces mod M, which divides 2^32, at the end).
pub(crate) fn apply(vector: &mut [u32], seed: &[u8; 32], add: bool) {
    // Counter from 0 under the seed as key; a block of keystream at a time so that the
    // additions vectorize and the cipher pipelines.
    let mut cipher = Aes256Ctr::new(seed.into(), &[0u8; 16].into());
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
    fn the_mask_is_aes_of_the_counter_one_u32_at_a_time() {
        use aes::cipher::{BlockEncrypt, KeyInit};
        // Longer than a keystream block, and not a multiple of one.
        let mut v = vec![0u32; 10_000];
        apply(&mut v, &[3; 32], true);
        let aes = Aes256::new(&[3u8; 32].into());
        for (i, words) in v.chunks(4).enumerate() {
            let mut block = (i as u128).to_be_bytes().into();
            aes.encrypt_block(&mut block);
            let expected: Vec<u32> =
                block.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            assert_eq!(words, &expected[..words.len()], "block {i}");
        }
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
