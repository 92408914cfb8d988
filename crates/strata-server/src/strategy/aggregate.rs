//! Arithmetic shared by strategies.

use strata_core::tensor::TensorSet;

/// Weighted average of tensor sets with identical specs, accumulated in f64 so that many
/// clients do not lose precision. Returns `None` when there is nothing to average or the
/// weights sum to zero.
pub fn weighted_average<'a>(sets: impl IntoIterator<Item = (&'a TensorSet, f64)>) -> Option<TensorSet> {
    let mut iter = sets.into_iter();
    let (first, w0) = iter.next()?;
    let mut acc: Vec<Vec<f64>> =
        first.tensors().iter().map(|t| t.values.iter().map(|&v| v as f64 * w0).collect()).collect();
    let mut total = w0;
    for (set, w) in iter {
        for (sum, t) in acc.iter_mut().zip(set.tensors()) {
            for (s, &v) in sum.iter_mut().zip(&t.values) {
                *s += v as f64 * w;
            }
        }
        total += w;
    }
    if total <= 0.0 {
        return None;
    }
    let mut out = first.clone();
    for (t, sum) in out.tensors_mut().iter_mut().zip(acc) {
        for (v, s) in t.values.iter_mut().zip(sum) {
            *v = (s / total) as f32;
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use strata_core::tensor::NamedTensor;

    fn set(values: &[f32]) -> TensorSet {
        TensorSet::new(vec![NamedTensor::new("w", vec![values.len()], values.to_vec()).unwrap()]).unwrap()
    }

    #[test]
    fn average_is_weighted() {
        let (a, b) = (set(&[1.0, 0.0]), set(&[4.0, 8.0]));
        let avg = weighted_average([(&a, 2.0), (&b, 1.0)]).unwrap();
        assert_eq!(avg.get("w").unwrap().values, vec![2.0, 8.0 / 3.0]);
    }

    #[test]
    fn nothing_or_zero_weight_gives_none() {
        assert!(weighted_average(std::iter::empty()).is_none());
        let a = set(&[1.0]);
        assert!(weighted_average([(&a, 0.0)]).is_none());
    }
}
