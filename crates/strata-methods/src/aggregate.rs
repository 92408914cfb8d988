//! Arithmetic shared by strategies.

use strata_core::tensor::{NamedTensor, TensorSet, TensorSpec};

/// Weighted average of tensor sets with identical specs, accumulated in f64 so that many
/// clients do not lose precision. Returns `None` when there is nothing to average or the
/// weights sum to zero.
pub fn weighted_average<'a>(sets: impl IntoIterator<Item = (&'a TensorSet, f64)>) -> Option<TensorSet> {
    let mut mean: Option<RunningMean> = None;
    for (set, w) in sets {
        match &mut mean {
            Some(m) => m.add(set, w),
            None => mean = Some(RunningMean::new(set, w)),
        }
    }
    mean?.finish()
}

/// A weighted mean taken one set at a time, so that a strategy can fold each update in as it
/// arrives and drop it: the server then holds the sums (two models' worth in f64), not every
/// client's copy. Sets must have the first one's specs (validation made sure of it).
pub struct RunningMean {
    specs: Vec<TensorSpec>,
    sums: Vec<Vec<f64>>,
    total: f64,
}

impl RunningMean {
    pub fn new(first: &TensorSet, weight: f64) -> Self {
        let sums = first.tensors().iter().map(|t| t.values().iter().map(|&v| v as f64 * weight).collect()).collect();
        Self { specs: first.specs(), sums, total: weight }
    }

    pub fn add(&mut self, set: &TensorSet, weight: f64) {
        for (sum, t) in self.sums.iter_mut().zip(set.tensors()) {
            for (s, &v) in sum.iter_mut().zip(t.values()) {
                *s += v as f64 * weight;
            }
        }
        self.total += weight;
    }

    /// The mean, or `None` when the weights sum to zero.
    pub fn finish(self) -> Option<TensorSet> {
        if self.total <= 0.0 {
            return None;
        }
        let total = self.total;
        // Each tensor's f64 sums are freed as its f32 mean is made.
        let tensors = self
            .specs
            .into_iter()
            .zip(self.sums)
            .map(|(spec, sum)| {
                NamedTensor::new(spec.name, spec.shape, sum.into_iter().map(|s| (s / total) as f32).collect())
            })
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        TensorSet::new(tensors).ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::set;

    #[test]
    fn average_is_weighted() {
        let (a, b) = (set(&[1.0, 0.0]), set(&[4.0, 8.0]));
        let avg = weighted_average([(&a, 2.0), (&b, 1.0)]).unwrap();
        assert_eq!(avg.get("w").unwrap().values(), vec![2.0, 8.0 / 3.0]);
    }

    #[test]
    fn a_running_mean_is_the_batch_mean() {
        let (a, b, c) = (set(&[1.0, -3.0]), set(&[4.0, 8.0]), set(&[0.5, 0.25]));
        let mut m = RunningMean::new(&a, 3.0);
        m.add(&b, 1.0);
        m.add(&c, 7.0);
        let batch = weighted_average([(&a, 3.0), (&b, 1.0), (&c, 7.0)]).unwrap();
        assert_eq!(m.finish().unwrap(), batch);
    }

    #[test]
    fn nothing_or_zero_weight_gives_none() {
        assert!(weighted_average(std::iter::empty()).is_none());
        let a = set(&[1.0]);
        assert!(weighted_average([(&a, 0.0)]).is_none());
    }
}
