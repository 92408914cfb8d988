//! FedProx's Synthetic(α, β) data (Li et al., 2020, `generate_synthetic.py`).
//!
//! Group k draws u_k ~ N(0, α²) and B_k ~ N(0, β²); its labelling function is
//! W_k ~ N(u_k, 1) (`[classes, dim]`), b_k ~ N(u_k, 1); its inputs have mean v_k ~ N(B_k, 1)
//! per dimension and diagonal covariance Σ_jj = (j+1)^-1.2. A sample is x ~ N(v_k, Σ) with label
//! argmax(W_k x + b_k). α makes the groups' labelling functions differ, β their inputs.
//! As in FedProx, α and β are standard deviations (numpy's `normal(0, alpha)`).
//!
//! Sample i belongs to group i mod groups, so a partition decides how groups meet clients.
//! There is no official test set: every sample counts as official train data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::StandardNormal;

use super::{DataError, DataShape, Dataset, Features};
use strata_core::config::SyntheticConfig;

/// ChaCha stream for the generator, so that it never shares random numbers with a partition
/// or any other user of the same run seed.
const STREAM: u64 = 0x5359_4e54_4845_5449; // "SYNTHETI"

/// One group's generating distribution.
#[derive(Clone, Debug)]
struct Group {
    /// `[classes, dim]`, row-major.
    weights: Vec<f64>,
    bias: Vec<f64>,
    mean: Vec<f64>,
}

impl Group {
    fn draw(config: &SyntheticConfig, rng: &mut ChaCha12Rng) -> Self {
        let mut normal = |mean: f64, std: f64| mean + std * rng.sample::<f64, _>(StandardNormal);
        let u = normal(0.0, config.alpha);
        let b = normal(0.0, config.beta);
        let mean = (0..config.dim).map(|_| normal(b, 1.0)).collect();
        let weights = (0..config.classes * config.dim).map(|_| normal(u, 1.0)).collect();
        let bias = (0..config.classes).map(|_| normal(u, 1.0)).collect();
        Self { weights, bias, mean }
    }

    /// argmax(W x + b); the first maximum wins, like numpy's argmax.
    fn label(&self, x: &[f32]) -> u32 {
        let dim = x.len();
        let mut best = (0, f64::NEG_INFINITY);
        for (class, &bias) in self.bias.iter().enumerate() {
            let row = &self.weights[class * dim..(class + 1) * dim];
            let logit = bias + row.iter().zip(x).map(|(w, &v)| w * f64::from(v)).sum::<f64>();
            if logit > best.1 {
                best = (class, logit);
            }
        }
        best.0 as u32
    }
}

/// Generates the dataset from the run seed.
pub fn generate(config: &SyntheticConfig, seed: u64) -> Result<Dataset, DataError> {
    generate_with_groups(config, seed).map(|(data, _)| data)
}

pub fn shape(config: &SyntheticConfig) -> DataShape {
    DataShape { sample_shape: vec![config.dim], num_classes: config.classes }
}

fn generate_with_groups(config: &SyntheticConfig, seed: u64) -> Result<(Dataset, Vec<Group>), DataError> {
    check(config)?;
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    rng.set_stream(STREAM);
    let groups: Vec<Group> = (0..config.groups).map(|_| Group::draw(config, &mut rng)).collect();
    let std: Vec<f64> = (0..config.dim).map(|j| ((j + 1) as f64).powf(-1.2).sqrt()).collect();

    let mut features = Vec::with_capacity(config.samples * config.dim);
    let mut labels = Vec::with_capacity(config.samples);
    for i in 0..config.samples {
        let group = &groups[i % config.groups];
        let start = features.len();
        features
            .extend(group.mean.iter().zip(&std).map(|(m, s)| (m + s * rng.sample::<f64, _>(StandardNormal)) as f32));
        // Label the stored f32 values, so that the label is a function of what the model sees.
        labels.push(group.label(&features[start..]));
    }
    let data = Dataset {
        name: "synthetic".into(),
        features: Features::Floats(features),
        labels,
        shape: shape(config),
        official_train_len: config.samples,
        owners: None,
    };
    Ok((data, groups))
}

fn check(config: &SyntheticConfig) -> Result<(), DataError> {
    let SyntheticConfig { alpha, beta, samples, dim, classes, groups } = *config;
    if samples == 0 || dim == 0 || classes < 2 || groups == 0 {
        return Err(DataError::Invalid(format!(
            "data.synthetic needs samples >= 1, dim >= 1, classes >= 2 and groups >= 1, \
             got samples {samples}, dim {dim}, classes {classes}, groups {groups}"
        )));
    }
    if !(alpha.is_finite() && alpha >= 0.0 && beta.is_finite() && beta >= 0.0) {
        return Err(DataError::Invalid(format!(
            "data.synthetic.alpha and beta must be finite and >= 0, got alpha {alpha}, beta {beta}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(groups: usize) -> SyntheticConfig {
        SyntheticConfig { alpha: 1.0, beta: 1.0, samples: 300, dim: 12, classes: 5, groups }
    }

    fn floats(data: &Dataset) -> &[f32] {
        match &data.features {
            Features::Floats(values) => values,
            Features::Pixels(_) => panic!("synthetic data must be floats"),
        }
    }

    #[test]
    fn the_seed_decides_the_data() {
        let a = generate(&config(4), 7).expect("generate");
        let b = generate(&config(4), 7).expect("generate");
        let c = generate(&config(4), 8).expect("generate");
        assert_eq!(floats(&a), floats(&b));
        assert_eq!(a.labels, b.labels);
        assert_ne!(floats(&a), floats(&c));
        assert_eq!(a.len(), 300);
        assert_eq!(a.official_train_len, 300);
        assert_eq!(floats(&a).len(), 300 * 12);
        assert_eq!(a.shape, DataShape { sample_shape: vec![12], num_classes: 5 });
    }

    #[test]
    fn with_one_group_labels_are_a_function_of_x() {
        let (data, groups) = generate_with_groups(&config(1), 3).expect("generate");
        assert_eq!(groups.len(), 1);
        for (x, &y) in floats(&data).chunks_exact(12).zip(&data.labels) {
            assert_eq!(groups[0].label(x), y);
        }
        let mut seen: Vec<u32> = data.labels.clone();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() >= 2, "only classes {seen:?} occur");
        assert!(seen.iter().all(|&c| c < 5));
    }

    #[test]
    fn samples_cycle_through_groups() {
        let (data, groups) = generate_with_groups(&config(3), 5).expect("generate");
        for (i, (x, &y)) in floats(&data).chunks_exact(12).zip(&data.labels).enumerate() {
            assert_eq!(groups[i % 3].label(x), y);
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut bad = config(1);
        bad.classes = 1;
        assert!(generate(&bad, 1).expect_err("one class").to_string().contains("classes >= 2"));
        let mut bad = config(1);
        bad.alpha = -1.0;
        assert!(generate(&bad, 1).expect_err("negative alpha").to_string().contains("alpha"));
    }
}
