//! CCVR's server half (`shared/methods/ccvr.md`): pool the clients' class statistics exactly,
//! draw virtual features from the pooled Gaussians, and retrain the global model's classifier
//! (the model's linear head, [`ModelParts`]) on them, starting from its current values (the retraining
//! itself is the backend's). No IO: the round loop gathers the statistics and sends the
//! calibrated model out.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use strata_core::backend::{BackendError, HeadTraining, LinearHead, ModelBackend};
use strata_core::calibration::CalibrationConfig;
use strata_core::parts::ModelParts;
use strata_core::tensor::{NamedTensor, TensorError, TensorSet, TensorSpec};
use strata_methods::ccvr::{self, CcvrError, PooledClass};

/// The classifier's shape, `(classes, dim)`, from the model's specs.
pub fn head_shape(model: &[TensorSpec], parts: &ModelParts) -> Option<(usize, usize)> {
    let weight = model.iter().find(|s| s.name == parts.head_weight)?;
    match weight.shape.as_slice() {
        &[classes, dim] => Some((classes, dim)),
        _ => None,
    }
}

/// A calibrated global model and what went into it.
#[derive(Debug)]
pub struct Calibrated {
    pub parameters: TensorSet,
    /// Classes the virtual set covers (those with at least two samples over all clients).
    pub classes: usize,
    pub virtual_features: usize,
}

/// Why a calibration did not happen; the run goes on with the uncalibrated model.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("the global model has no `{weight}` and `{bias}` to calibrate")]
    NoHead { weight: String, bias: String },
    #[error("the classifier's weight is not a matrix")]
    HeadNotMatrix,
    #[error("pooling the clients' statistics: {0}")]
    Pool(#[from] CcvrError),
    #[error("no class has two or more samples over all clients: nothing to sample")]
    NothingToSample,
    #[error("the model backend could not retrain the classifier: {0}")]
    Backend(BackendError),
    #[error("the retrained classifier has non-finite values: lower calibration.lr (now {lr})")]
    NotFinite { lr: f64 },
    /// The backend returned a classifier of another shape than the one it was given.
    #[error("the retrained classifier does not fit the model: {0}")]
    Shape(#[from] TensorError),
}

/// Calibrates the classifier of `global` with the clients' classes, pooled (by
/// [`ccvr::pool`], or from secure aggregation's sums); `backend` retrains it. `seed` makes the
/// draws and the shuffling reproducible. Blocks for as long as the retraining takes.
pub fn calibrate(
    global: &TensorSet,
    parts: &ModelParts,
    pooled: &[PooledClass],
    config: &CalibrationConfig,
    seed: u64,
    backend: &dyn ModelBackend,
) -> Result<Calibrated, CalibrationError> {
    let (weight, bias) = match (global.get(&parts.head_weight), global.get(&parts.head_bias)) {
        (Some(w), Some(b)) => (w, b),
        _ => {
            return Err(CalibrationError::NoHead { weight: parts.head_weight.clone(), bias: parts.head_bias.clone() });
        }
    };
    let (classes, dim) = head_shape(&[weight.spec()], parts).ok_or(CalibrationError::HeadNotMatrix)?;
    if let Some(class) = pooled.iter().find(|c| c.dim() != dim) {
        return Err(CalibrationError::Pool(CcvrError::MeanLength {
            class: class.class,
            expected: dim,
            got: class.dim(),
        }));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    let mut covered = 0;
    for class in pooled.iter().filter(|c| c.is_sampleable() && (c.class as usize) < classes) {
        let drawn = ccvr::sample(class, config.samples_per_class, &mut rng)?;
        covered += 1;
        labels.extend(std::iter::repeat_n(i64::from(class.class), drawn.len()));
        features.extend(drawn.into_iter().flatten());
    }
    if labels.is_empty() {
        return Err(CalibrationError::NothingToSample);
    }
    let head = LinearHead { classes, dim, weight: weight.values().to_vec(), bias: bias.values().to_vec() };
    let training =
        HeadTraining { epochs: config.epochs, lr: config.lr, batch_size: config.batch_size, seed: seed ^ 0x5eed };
    let trained = backend.retrain_head(&head, &features, &labels, training).map_err(CalibrationError::Backend)?;
    if trained.weight.iter().chain(&trained.bias).any(|v| !v.is_finite()) {
        return Err(CalibrationError::NotFinite { lr: config.lr });
    }
    let mut parameters = global.clone();
    let replacement = TensorSet::new(vec![
        NamedTensor::new(&parts.head_weight, weight.shape().to_vec(), trained.weight)?,
        NamedTensor::new(&parts.head_bias, bias.shape().to_vec(), trained.bias)?,
    ])?;
    parameters.overwrite_from(&replacement)?;
    Ok(Calibrated { parameters, classes: covered, virtual_features: labels.len() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use strata_core::calibration::CalibrationMethod;
    use strata_methods::ccvr::client_stats;

    use strata_core::backend::BackendError;

    use strata_methods::ccvr::ClassStats;

    use super::*;
    use crate::test_backend::PlainBackend;

    const HEAD_WEIGHT: &str = "head.weight";
    const HEAD_BIAS: &str = "head.bias";

    /// [`calibrate`] from every client's statistics (one list per client), pooled as the
    /// calibration phase pools them in the clear.
    fn calibrate_stats(
        global: &TensorSet,
        stats: &[Vec<ClassStats>],
        config: &CalibrationConfig,
        seed: u64,
        backend: &dyn ModelBackend,
    ) -> Result<Calibrated, CalibrationError> {
        let all: Vec<ClassStats> = stats.iter().flatten().cloned().collect();
        let pooled = match global.get(HEAD_WEIGHT).and_then(|w| head_shape(&[w.spec()], &ModelParts::registered())) {
            Some((_, dim)) => ccvr::pool(&all, dim)?,
            None => Vec::new(),
        };
        calibrate(global, &ModelParts::registered(), &pooled, config, seed, backend)
    }

    fn global(weight: Vec<f32>) -> TensorSet {
        TensorSet::new(vec![
            NamedTensor::new("body.w", vec![2], vec![7.0, 8.0]).unwrap(),
            NamedTensor::new(HEAD_BIAS, vec![2], vec![0.0, 0.0]).unwrap(),
            NamedTensor::new(HEAD_WEIGHT, vec![2, 2], weight).unwrap(),
        ])
        .unwrap()
    }

    /// Two clients, one class each (the label skew CCVR is for), features clustered at ±1 on
    /// the first axis; the classifier starts out backwards. Calibration fixes it and leaves
    /// the body alone.
    #[test]
    fn calibration_retrains_the_head_from_pooled_statistics_only() {
        let client = |class: u32, centre: f32| {
            let features: Vec<f32> =
                (0..20).flat_map(|i| [centre + (i % 5) as f32 * 0.05, (i % 3) as f32 * 0.1]).collect();
            client_stats(&features, &[class; 20], 2)
        };
        let stats = vec![client(0, 1.0), client(1, -1.0)];
        let config = CalibrationConfig { method: CalibrationMethod::Ccvr, lr: 0.5, ..Default::default() };
        let before = global(vec![-1.0, 0.0, 1.0, 0.0]);
        let out = calibrate_stats(&before, &stats, &config, 1, &PlainBackend).unwrap();
        assert_eq!((out.classes, out.virtual_features), (2, 2 * config.samples_per_class));
        assert_eq!(out.parameters.get("body.w"), before.get("body.w"));
        let w = out.parameters.get(HEAD_WEIGHT).unwrap().values();
        // Class 0 (at +1) now scores higher on +x than class 1 does.
        assert!(w[0] > w[2], "{w:?}");
        let again = calibrate_stats(&before, &stats, &config, 1, &PlainBackend).unwrap();
        assert_eq!(again.parameters, out.parameters, "seeded: reproducible");
    }

    #[test]
    fn statistics_that_cannot_be_sampled_or_a_missing_head_are_errors() {
        let config = CalibrationConfig { method: CalibrationMethod::Ccvr, ..Default::default() };
        let single = vec![client_stats(&[1.0, 2.0], &[0], 2)];
        assert!(
            calibrate_stats(&global(vec![0.0; 4]), &single, &config, 1, &PlainBackend)
                .unwrap_err()
                .to_string()
                .contains("two or more")
        );
        let no_head = TensorSet::new(vec![NamedTensor::new("body.w", vec![2], vec![0.0; 2]).unwrap()]).unwrap();
        assert!(
            calibrate_stats(&no_head, &single, &config, 1, &PlainBackend)
                .unwrap_err()
                .to_string()
                .contains("head.weight")
        );
        let wrong_dim = vec![client_stats(&[1.0, 2.0, 3.0, 1.0, 2.0, 4.0], &[0, 0], 3)];
        assert!(calibrate_stats(&global(vec![0.0; 4]), &wrong_dim, &config, 1, &PlainBackend).is_err());
        // Sums no Gaussian fits (secure aggregation's are not validated client by client).
        let unfit = [PooledClass { class: 1, count: 3, mean: vec![0.0, 0.0], cov: vec![f64::INFINITY, 0.0, 0.0, 1.0] }];
        let parts = ModelParts::registered();
        let err = calibrate(&global(vec![0.0; 4]), &parts, &unfit, &config, 1, &PlainBackend).unwrap_err();
        assert!(matches!(err, CalibrationError::Pool(CcvrError::NotSampleable { class: 1 })), "{err}");
    }

    /// What the backend gives back goes into the model only with the classifier's shape and
    /// finite values.
    #[test]
    fn a_retrained_head_of_another_shape_or_with_non_finite_values_is_refused() {
        struct Returns(LinearHead);
        impl ModelBackend for Returns {
            fn initial_model(&self, _: &strata_core::config::RunConfig) -> Result<TensorSet, BackendError> {
                Err("unused".into())
            }
            fn retrain_head(
                &self,
                _: &LinearHead,
                _: &[f32],
                _: &[i64],
                _: HeadTraining,
            ) -> Result<LinearHead, BackendError> {
                Ok(self.0.clone())
            }
        }
        let config = CalibrationConfig { method: CalibrationMethod::Ccvr, ..Default::default() };
        let stats = vec![client_stats(&[1.0, 2.0, 1.5, 2.5], &[0, 0], 2)];
        let head = |weight: Vec<f32>| LinearHead { classes: 2, dim: 2, weight, bias: vec![0.0; 2] };
        let short = Returns(head(vec![0.0; 3]));
        assert!(calibrate_stats(&global(vec![0.0; 4]), &stats, &config, 1, &short).is_err());
        let nan = Returns(head(vec![0.0, f32::NAN, 0.0, 0.0]));
        assert!(
            calibrate_stats(&global(vec![0.0; 4]), &stats, &config, 1, &nan)
                .unwrap_err()
                .to_string()
                .contains("non-finite")
        );
        let fine = Returns(head(vec![1.0, 2.0, 3.0, 4.0]));
        let out = calibrate_stats(&global(vec![0.0; 4]), &stats, &config, 1, &fine).unwrap();
        assert_eq!(out.parameters.get(HEAD_WEIGHT).unwrap().values(), vec![1.0, 2.0, 3.0, 4.0]);
    }
}
