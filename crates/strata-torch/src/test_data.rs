//! A separable toy problem the training tests share.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use strata_data::{DataShape, Dataset, Features};

pub const DIM: usize = 10;

/// Two Gaussian blobs at ±1 in every coordinate (σ = 1), labels 0 and 1, alternating.
pub fn blobs(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Normal::new(0.0f32, 1.0).expect("normal");
    let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
    let features = labels
        .iter()
        .flat_map(|&y| {
            let centre = if y == 0 { -1.0 } else { 1.0 };
            (0..DIM).map(|_| centre + noise.sample(&mut rng)).collect::<Vec<_>>()
        })
        .collect();
    Dataset {
        name: "blobs".into(),
        features: Features::Floats(features),
        labels,
        shape: DataShape { sample_shape: vec![DIM], num_classes: 2 },
        official_train_len: n,
        owners: None,
    }
}
