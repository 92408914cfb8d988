//! Arithmetic shared by strategies.

use strata_core::parallel;
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

/// No thread folds fewer values than this (a 1 MiB f32 tensor's worth): below it, starting
/// threads costs more than it saves.
const MIN_SHARE: usize = 1 << 18;

impl RunningMean {
    pub fn new(first: &TensorSet, weight: f64) -> Self {
        Self::reusing(first, weight, Vec::new())
    }

    /// [`RunningMean::new`], writing the sums over `spare` (the buffers a finished mean gave
    /// back, [`RunningMean::finish_over`]) where their lengths fit: a round then reuses the
    /// last round's memory instead of asking the kernel for fresh pages, which on a virtual
    /// machine costs more than the arithmetic.
    pub fn reusing(first: &TensorSet, weight: f64, spare: Vec<Vec<f64>>) -> Self {
        let mut spare = spare.into_iter();
        let sums = first
            .tensors()
            .iter()
            .map(|t| {
                let values = t.values();
                let mut sum =
                    spare.next().filter(|s| s.len() == values.len()).unwrap_or_else(|| vec![0f64; values.len()]);
                parallel::for_chunks(&mut sum, MIN_SHARE, |offset, sum| {
                    for (s, &v) in sum.iter_mut().zip(&values[offset..]) {
                        *s = f64::from(v) * weight;
                    }
                });
                sum
            })
            .collect();
        Self { specs: first.specs(), sums, total: weight }
    }

    /// Folds in one more set: one pass over the sums, on the machine's threads. The sums and
    /// their order per value are those of a plain loop, so the result is too, to the bit.
    pub fn add(&mut self, set: &TensorSet, weight: f64) {
        for (sum, t) in self.sums.iter_mut().zip(set.tensors()) {
            let values = t.values();
            parallel::for_chunks(sum, MIN_SHARE, |offset, sum| {
                for (s, &v) in sum.iter_mut().zip(&values[offset..]) {
                    *s += f64::from(v) * weight;
                }
            });
        }
        self.total += weight;
    }

    /// Writes the mean over `out`, which must have the sums' tensors (names and sizes, in
    /// order), and gives back the sums' buffers for [`RunningMean::reusing`]; gives itself back
    /// untouched, and leaves `out` alone, when `out` does not fit or the weights sum to zero.
    pub fn finish_over(self, out: &mut TensorSet) -> Result<Vec<Vec<f64>>, Self> {
        let fits = out.len() == self.specs.len()
            && out.tensors().iter().zip(&self.specs).all(|(t, s)| t.name() == s.name && t.numel() == s.numel());
        if !fits || self.total <= 0.0 {
            return Err(self);
        }
        let total = self.total;
        for ((_, mean), sum) in out.values_mut().zip(&self.sums) {
            write_mean(sum, total, mean);
        }
        Ok(self.sums)
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
                let mut mean = vec![0f32; sum.len()];
                write_mean(&sum, total, &mut mean);
                NamedTensor::new(spec.name, spec.shape, mean)
            })
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        TensorSet::new(tensors).ok()
    }
}

/// `mean = sum / total`, rounded to f32, on the machine's threads.
fn write_mean(sum: &[f64], total: f64, mean: &mut [f32]) {
    parallel::for_chunks(mean, MIN_SHARE, |offset, mean| {
        for (m, &s) in mean.iter_mut().zip(&sum[offset..]) {
            *m = (s / total) as f32;
        }
    });
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

    /// Large tensors are folded by several threads, each over its own range: every value's
    /// sum is formed in the same order as by one plain loop.
    #[test]
    fn a_fold_over_threads_is_the_plain_loop_to_the_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 3 * MIN_SHARE + 17;
        let sets: Vec<(TensorSet, f64)> = (0..4)
            .map(|_| {
                let values =
                    (0..n).map(|_| rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-8..8))).collect();
                (
                    TensorSet::new(vec![NamedTensor::new("w", vec![n], values).unwrap()]).unwrap(),
                    rng.random_range(1..600) as f64,
                )
            })
            .collect();
        let mean = weighted_average(sets.iter().map(|(s, w)| (s, *w))).unwrap();
        let total: f64 = sets.iter().map(|(_, w)| w).sum();
        let mean = mean.get("w").unwrap().values();
        for (i, m) in mean.iter().enumerate() {
            let mut s = f64::from(sets[0].0.tensors()[0].values()[i]) * sets[0].1;
            for (set, w) in &sets[1..] {
                s += f64::from(set.tensors()[0].values()[i]) * w;
            }
            assert_eq!(m.to_bits(), ((s / total) as f32).to_bits(), "value {i}");
        }
    }

    /// The exact sum of f64 values (Shewchuk's partials, as Python's `math.fsum`), rounded once.
    fn exact_sum(values: &[f64]) -> f64 {
        let mut partials: Vec<f64> = Vec::new();
        for &x in values {
            let mut x = x;
            let mut kept = 0;
            for i in 0..partials.len() {
                let mut y = partials[i];
                if x.abs() < y.abs() {
                    std::mem::swap(&mut x, &mut y);
                }
                let high = x + y;
                let low = y - (high - x);
                if low != 0.0 {
                    partials[kept] = low;
                    kept += 1;
                }
                x = high;
            }
            partials.truncate(kept);
            partials.push(x);
        }
        partials.iter().rev().fold(0.0, |acc, &p| acc + p)
    }

    /// Against the exact weighted mean, on values whose magnitudes span 10^±30 and cancel: each
    /// mean is within f64 summation's bound ((K − 1)·2⁻⁵³ of the sum of |terms|, relative to the
    /// total weight) plus the final rounding to f32 — a bound f32 sums would break by nine
    /// orders of magnitude.
    #[test]
    fn the_mean_keeps_f64s_accuracy_on_adversarial_magnitudes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let (k, n) = (50, 2000);
        let sets: Vec<(TensorSet, f64)> = (0..k)
            .map(|_| {
                let values = (0..n)
                    .map(|i| {
                        let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                        // Every fourth value is huge, so that the small ones must survive next to it.
                        let exponent = if i % 4 == 0 { rng.random_range(20..30) } else { rng.random_range(-30..5) };
                        sign * rng.random_range(1.0f32..10.0) * 10f32.powi(exponent)
                    })
                    .collect();
                // Products of a 24-bit mantissa and a weight below 2^20 are exact in f64.
                (
                    TensorSet::new(vec![NamedTensor::new("w", vec![n], values).unwrap()]).unwrap(),
                    rng.random_range(1..1_000_000) as f64,
                )
            })
            .collect();
        let mean = weighted_average(sets.iter().map(|(s, w)| (s, *w))).unwrap();
        let total: f64 = sets.iter().map(|(_, w)| w).sum();
        for (i, &got) in mean.get("w").unwrap().values().iter().enumerate() {
            let terms: Vec<f64> = sets.iter().map(|(s, w)| f64::from(s.tensors()[0].values()[i]) * w).collect();
            let exact = exact_sum(&terms) / total;
            let magnitude: f64 = terms.iter().map(|t| t.abs()).sum::<f64>() / total;
            let bound = (k - 1) as f64 * f64::EPSILON / 2.0 * magnitude * 1.01
                + (exact as f32).abs() as f64 * f64::from(f32::EPSILON);
            assert!((f64::from(got) - exact).abs() <= bound, "value {i}: {got} against exact {exact}, bound {bound}");
        }
    }

    #[test]
    fn a_mean_finished_over_a_set_is_the_mean_and_its_buffers_start_the_next() {
        let (a, b) = (set(&[1.0, -3.0]), set(&[4.0, 8.0]));
        let mut m = RunningMean::new(&a, 3.0);
        m.add(&b, 1.0);
        let mut out = set(&[9.0, 9.0]);
        let spare = m.finish_over(&mut out).ok().unwrap();
        assert_eq!(out, weighted_average([(&a, 3.0), (&b, 1.0)]).unwrap());
        let reused = spare[0].as_ptr();
        let next = RunningMean::reusing(&b, 2.0, spare);
        assert_eq!(next.sums[0].as_ptr(), reused, "the sums' memory is taken again");
        assert_eq!(next.finish().unwrap(), b);

        // A set that does not fit, or no weight: nothing written, the mean given back.
        let mut other = TensorSet::new(vec![NamedTensor::new("v", vec![2], vec![0.0, 0.0]).unwrap()]).unwrap();
        let back = RunningMean::new(&a, 1.0).finish_over(&mut other).err().unwrap();
        assert_eq!(other.get("v").unwrap().values(), [0.0, 0.0]);
        assert_eq!(back.finish().unwrap(), a);
        assert!(RunningMean::new(&a, 0.0).finish_over(&mut out.clone()).is_err());
    }

    #[test]
    fn nothing_or_zero_weight_gives_none() {
        assert!(weighted_average(std::iter::empty()).is_none());
        let a = set(&[1.0]);
        assert!(weighted_average([(&a, 0.0)]).is_none());
    }
}
