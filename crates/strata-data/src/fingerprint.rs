//! A dataset's cheap, stable identity, so that a server can check that its clients loaded
//! the same data before their updates are averaged.
//!
//! It covers the name, the sizes, the sample shape and a hash of every label in order, not the
//! features: hashing labels costs microseconds, and a different file or a different order of
//! the same files almost always changes them. FNV-1a is used because it is fixed by
//! specification, unlike `std`'s hasher, so every build and platform agrees.

use super::Dataset;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`, continuing from `hash`.
fn fnv1a64(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

impl Dataset {
    /// E.g. `fmnist/70000/train60000/1x28x28/10c/fnv1a64:0123456789abcdef`.
    pub fn fingerprint(&self) -> String {
        let hash = self.labels.iter().fold(FNV_OFFSET, |h, label| fnv1a64(h, &label.to_le_bytes()));
        // Owners decide the natural split: data with other owners is other data.
        let hash = self.owners.iter().flatten().fold(hash, |h, owner| fnv1a64(h, &owner.to_le_bytes()));
        let shape: Vec<String> = self.shape.sample_shape.iter().map(usize::to_string).collect();
        format!(
            "{}/{}/train{}/{}/{}c/fnv1a64:{hash:016x}",
            self.name,
            self.len(),
            self.official_train_len,
            shape.join("x"),
            self.shape.num_classes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DataShape, Features};
    use super::*;

    fn dataset(labels: Vec<u32>) -> Dataset {
        Dataset {
            name: "toy".into(),
            features: Features::Floats(vec![0.0; labels.len()]),
            shape: DataShape { sample_shape: vec![1], num_classes: 3 },
            official_train_len: labels.len(),
            owners: None,
            labels,
        }
    }

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_fingerprint_follows_the_labels() {
        let a = dataset(vec![0, 1, 2, 1]);
        assert_eq!(a.fingerprint(), dataset(vec![0, 1, 2, 1]).fingerprint());
        assert_ne!(a.fingerprint(), dataset(vec![0, 2, 1, 1]).fingerprint());
        assert!(a.fingerprint().starts_with("toy/4/train4/1/3c/fnv1a64:"), "{}", a.fingerprint());
    }
}
