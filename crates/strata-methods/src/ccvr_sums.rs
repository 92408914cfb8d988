//! CCVR's statistics as sums that secure aggregation can add up, so that the server pools the
//! classes without seeing one client's moments or label counts.
//!
//! Per class c (every class of the classifier, present or not: absent classes send zeros, so
//! the vector does not say which a client holds), a client sends its share of the class's
//! first and second moments, `(n_c/n)·μ_c` and `(n_c/n)·E_c[x xᵀ]` (upper triangle), values of
//! the size of the features and their squares whatever the client's size; weighted by
//! `n/M` (its sample count over the round's largest, secure aggregation's weight), they add
//! up to `S1_c/M = Σ x / M` and `S2_c/M = Σ x xᵀ / M` over every client's class-c features.
//! The counts `n_c` travel as integers. The server then has exactly what [`crate::ccvr::pool`]
//! computes from the clients' means and covariances: `μ_c = S1_c/N_c` and
//! `Σ_c = (S2_c − N_c μ_c μ_cᵀ)/(N_c − 1)`, up to the fixed-point rounding.

use strata_core::tensor::TensorSpec;

use crate::ccvr::{CcvrError, ClassStats, PooledClass, upper_len};

/// The tensors a class contributes, in the order [`shares`] lays them out: sorted by name,
/// as secure aggregation's layout sorts them.
pub fn layout_specs(classes: usize, dim: usize) -> Vec<TensorSpec> {
    (0..classes)
        .flat_map(|c| {
            [
                TensorSpec { name: format!("class{c:05}.first"), shape: vec![dim] },
                TensorSpec { name: format!("class{c:05}.second"), shape: vec![upper_len(dim)] },
            ]
        })
        .collect()
}

/// One client's moment shares and class counts.
#[derive(Clone, Debug, PartialEq)]
pub struct MomentShares {
    /// Per class, `(n_c/n)·μ_c` then `(n_c/n)·E_c[x xᵀ]` (upper triangle), zeros for a class
    /// the client does not hold.
    pub values: Vec<f32>,
    /// `n_c` for each class.
    pub counts: Vec<u32>,
    /// n: the samples the statistics cover.
    pub samples: u64,
}

/// The shares of a client's statistics ([`crate::ccvr::client_stats`]'s output) for a
/// classifier of `classes` classes over `dim` features.
pub fn shares(stats: &[ClassStats], classes: usize, dim: usize) -> Result<MomentShares, CcvrError> {
    let per_class = dim + upper_len(dim);
    let mut values = vec![0.0f32; classes * per_class];
    let mut counts = vec![0u32; classes];
    let samples: u64 = stats.iter().map(|s| s.count).sum();
    for s in stats {
        crate::ccvr::validate(s, dim)?;
        let c = s.class as usize;
        if c >= classes {
            return Err(CcvrError::ClassOutOfRange { class: s.class, classes });
        }
        counts[c] = u32::try_from(s.count).map_err(|_| CcvrError::ZeroCount { class: s.class })?;
        let n_c = s.count as f64;
        let fraction = n_c / samples as f64;
        let out = &mut values[c * per_class..(c + 1) * per_class];
        let (first, second) = out.split_at_mut(dim);
        for (o, &m) in first.iter_mut().zip(&s.mean) {
            *o = (fraction * m) as f32;
        }
        // (n_c/n)·E[x xᵀ] = ((n_c − 1)·Σ + n_c·μ μᵀ) / n, with Σ the unbiased covariance.
        let mut k = 0;
        for i in 0..dim {
            for j in i..dim {
                let raw = (n_c - 1.0) * s.cov_upper[k] + n_c * s.mean[i] * s.mean[j];
                second[k] = (raw / samples as f64) as f32;
                k += 1;
            }
        }
    }
    Ok(MomentShares { values, counts, samples })
}

/// The pooled classes from the sums: `sums` is `Σ_k (n_k/M)·shares_k` in [`layout_specs`]'s
/// order, `scale` is M, `counts` the classes' total counts. Classes nobody holds are left out;
/// classes with one sample have a zero covariance (not sampled), as [`crate::ccvr::pool`].
pub fn pool_sums(
    sums: &[f64],
    scale: f64,
    counts: &[u64],
    classes: usize,
    dim: usize,
) -> Result<Vec<PooledClass>, CcvrError> {
    let per_class = dim + upper_len(dim);
    if sums.len() != classes * per_class || counts.len() != classes {
        return Err(CcvrError::SumLength { expected: classes * per_class, got: sums.len() });
    }
    let mut pooled = Vec::new();
    for (c, &count) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let block = &sums[c * per_class..(c + 1) * per_class];
        let class = c as u32;
        if let Some((index, &value)) = block.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CcvrError::NonFinite { class, what: "moment sum", index, value });
        }
        let n = count as f64;
        let mean: Vec<f64> = block[..dim].iter().map(|s| s * scale / n).collect();
        let mut cov = vec![0.0; dim * dim];
        if count > 1 {
            let mut k = 0;
            for i in 0..dim {
                for j in i..dim {
                    let v = (block[dim + k] * scale - n * mean[i] * mean[j]) / (n - 1.0);
                    cov[i * dim + j] = v;
                    cov[j * dim + i] = v;
                    k += 1;
                }
            }
        }
        pooled.push(PooledClass { class, count, mean, cov });
    }
    Ok(pooled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::ccvr::{client_stats, pool};

    #[test]
    fn the_sums_pool_to_what_the_clients_statistics_pool_to() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (dim, classes) = (3, 4);
        // Three clients of different sizes and label skews; class 3 is nobody's.
        let clients: Vec<(Vec<f32>, Vec<u32>)> = [(40, vec![0, 1]), (7, vec![1]), (90, vec![0, 1, 2])]
            .into_iter()
            .map(|(n, held): (usize, Vec<u32>)| {
                let labels: Vec<u32> = (0..n).map(|i| held[i % held.len()]).collect();
                let features =
                    labels.iter().flat_map(|&l| (0..dim).map(move |j| (l + j as u32) as f32)).collect::<Vec<_>>();
                let features = features.into_iter().map(|x| x + rng.random_range(-1.0f32..1.0)).collect();
                (features, labels)
            })
            .collect();
        let stats: Vec<Vec<ClassStats>> = clients.iter().map(|(x, y)| client_stats(x, y, dim)).collect();
        let expected = pool(&stats.iter().flatten().cloned().collect::<Vec<_>>(), dim).unwrap();

        // What secure aggregation sums: each client's shares weighted by n_k / M.
        let largest = 90.0;
        let mut sums = vec![0.0f64; classes * (dim + upper_len(dim))];
        let mut counts = vec![0u64; classes];
        for s in &stats {
            let shares = shares(s, classes, dim).unwrap();
            let w = shares.samples as f64 / largest;
            sums.iter_mut().zip(&shares.values).for_each(|(a, &v)| *a += w * f64::from(v));
            counts.iter_mut().zip(&shares.counts).for_each(|(a, &n)| *a += u64::from(n));
        }
        let got = pool_sums(&sums, largest, &counts, classes, dim).unwrap();
        assert_eq!(got.len(), 3, "class 3 is nobody's: left out");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!((g.class, g.count), (e.class, e.count));
            let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5 * (1.0 + y.abs()));
            assert!(close(&g.mean, &e.mean), "class {}: {:?} vs {:?}", g.class, g.mean, e.mean);
            assert!(close(&g.cov, &e.cov), "class {}: {:?} vs {:?}", g.class, g.cov, e.cov);
        }
    }

    #[test]
    fn absent_classes_send_zeros_and_bad_statistics_are_named() {
        let stats = client_stats(&[1.0, 2.0, 3.0, 4.0], &[2, 2], 2);
        let s = shares(&stats, 3, 2).unwrap();
        assert_eq!((s.counts.as_slice(), s.samples), (&[0, 0, 2][..], 2));
        assert!(s.values[..10].iter().all(|&v| v == 0.0) && s.values[10..].iter().any(|&v| v != 0.0));
        assert_eq!(shares(&stats, 2, 2).unwrap_err(), CcvrError::ClassOutOfRange { class: 2, classes: 2 });
        assert!(matches!(pool_sums(&[0.0; 3], 1.0, &[1], 1, 2), Err(CcvrError::SumLength { .. })));
    }
}
