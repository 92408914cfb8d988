//! CCVR's statistics on plain data: per-client class moments, their exact pooling on the
//! server, and sampling virtual features from the pooled Gaussians.
//!
//! Luo et al., "No Fear of Heterogeneity: Classifier Calibration for Federated Learning with
//! Non-IID Data", NeurIPS 2021, as pinned in `shared/methods/ccvr.md`. The client half calls
//! [`client_stats`] on the features of its training data (the output of the frozen feature
//! extractor); the server half calls [`pool`] on every client's statistics and [`sample`] per
//! class, then retrains the classifier on the virtual features (not here: that needs libtorch).
//!
//! Everything is computed in f64. Client covariances are the *unbiased* ones (zero for a class
//! a client holds once), and [`pool`] weights them so that the pooled mean and covariance are
//! exactly those of all the class's features gathered centrally (unit-tested against that).
//!
//! # Privacy
//! The statistics reveal each client's label counts exactly and the first two moments of its
//! features per class. They are not differentially private.

use std::collections::BTreeMap;

use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// One client's statistics for one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    pub class: u32,
    /// N_{c,k}: how many of the client's samples have this class (≥ 1).
    pub count: u64,
    /// μ_{c,k}, `dim` values.
    pub mean: Vec<f64>,
    /// The unbiased covariance Σ_{c,k} (zero when `count` = 1), upper triangle row-major:
    /// (0,0), (0,1), …, (0,d−1), (1,1), …, (d−1,d−1); [`upper_len`]`(dim)` values.
    pub cov_upper: Vec<f64>,
}

/// One class pooled over all clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PooledClass {
    pub class: u32,
    /// N_c = Σ_k N_{c,k}.
    pub count: u64,
    /// μ_c, `dim` values.
    pub mean: Vec<f64>,
    /// Σ_c, full d×d row-major (symmetric); all zeros when `count` ≤ 1.
    pub cov: Vec<f64>,
}

impl PooledClass {
    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Whether [`sample`] draws from this class: only when N_c ≥ 2 (with N_c ≤ 1 there is no
    /// covariance estimate, and the spec skips the class).
    pub fn is_sampleable(&self) -> bool {
        self.count >= 2
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CcvrError {
    #[error("class {class}: the mean has {got} values, expected {expected} (dim)")]
    MeanLength { class: u32, expected: usize, got: usize },
    #[error("class {class}: the covariance upper triangle has {got} values, expected {expected} (dim·(dim+1)/2)")]
    CovLength { class: u32, expected: usize, got: usize },
    #[error("class {class}: the sample count is 0, expected at least 1")]
    ZeroCount { class: u32 },
    #[error("class {class}: {what} value {index} is not finite ({value})")]
    NonFinite { class: u32, what: &'static str, index: usize, value: f64 },
    #[error("class {class} is beyond the classifier's {classes} classes")]
    ClassOutOfRange { class: u32, classes: usize },
    #[error("the classes' moment sums hold {got} values, expected {expected}")]
    SumLength { expected: usize, got: usize },
    /// Pooled statistics no Gaussian fits: sums that overflowed, or a covariance no jitter
    /// makes positive definite (possible only for sums nobody validated, as secure
    /// aggregation's, or for values near f64's range).
    #[error(
        "class {class}: the pooled mean or covariance is not finite, or no jitter makes the covariance positive definite"
    )]
    NotSampleable { class: u32 },
}

/// Length of the upper triangle (diagonal included) of a d×d matrix: d(d+1)/2.
pub fn upper_len(dim: usize) -> usize {
    dim * (dim + 1) / 2
}

/// Per class present in `labels`, ascending: the count, the mean and the unbiased covariance
/// (upper triangle) of that class's rows of `features` (row-major `[labels.len(), dim]`).
///
/// Two passes (mean, then centred products) in f64.
///
/// # Panics
/// If `features.len() != labels.len() * dim`.
pub fn client_stats(features: &[f32], labels: &[u32], dim: usize) -> Vec<ClassStats> {
    assert_eq!(
        features.len(),
        labels.len() * dim,
        "client_stats: {} feature values for {} labels of dim {}",
        features.len(),
        labels.len(),
        dim
    );
    let row = |s: usize| &features[s * dim..(s + 1) * dim];

    // Pass 1: counts and sums.
    let mut acc: BTreeMap<u32, (u64, Vec<f64>)> = BTreeMap::new();
    for (s, &c) in labels.iter().enumerate() {
        let (n, sum) = acc.entry(c).or_insert_with(|| (0, vec![0.0; dim]));
        *n += 1;
        for (a, &x) in sum.iter_mut().zip(row(s)) {
            *a += f64::from(x);
        }
    }
    let means: BTreeMap<u32, Vec<f64>> =
        acc.iter().map(|(&c, (n, sum))| (c, sum.iter().map(|v| v / *n as f64).collect())).collect();

    // Pass 2: centred outer products, upper triangle.
    let mut scatter: BTreeMap<u32, Vec<f64>> = acc.keys().map(|&c| (c, vec![0.0; upper_len(dim)])).collect();
    let mut centred = vec![0.0f64; dim];
    for (s, &c) in labels.iter().enumerate() {
        for ((z, &x), m) in centred.iter_mut().zip(row(s)).zip(&means[&c]) {
            *z = f64::from(x) - m;
        }
        let out = scatter.get_mut(&c).expect("every label has a scatter entry");
        let mut k = 0;
        for i in 0..dim {
            let zi = centred[i];
            for &zj in &centred[i..] {
                out[k] += zi * zj;
                k += 1;
            }
        }
    }

    acc.into_iter()
        .map(|(class, (count, _))| {
            let mut cov_upper = scatter.remove(&class).expect("every class has a scatter entry");
            if count > 1 {
                let denom = (count - 1) as f64;
                cov_upper.iter_mut().for_each(|v| *v /= denom);
            } else {
                cov_upper.iter_mut().for_each(|v| *v = 0.0);
            }
            let mean = means[&class].clone();
            ClassStats { class, count, mean, cov_upper }
        })
        .collect()
}

pub(crate) fn validate(s: &ClassStats, dim: usize) -> Result<(), CcvrError> {
    let class = s.class;
    if s.mean.len() != dim {
        return Err(CcvrError::MeanLength { class, expected: dim, got: s.mean.len() });
    }
    if s.cov_upper.len() != upper_len(dim) {
        return Err(CcvrError::CovLength { class, expected: upper_len(dim), got: s.cov_upper.len() });
    }
    if s.count == 0 {
        return Err(CcvrError::ZeroCount { class });
    }
    for (what, values) in [("mean", &s.mean), ("covariance", &s.cov_upper)] {
        if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CcvrError::NonFinite { class, what, index, value });
        }
    }
    Ok(())
}

/// Pools every client's statistics per class (classes ascending), exactly as the spec:
///
/// - N_c = Σ_k N_{c,k}, μ_c = Σ_k (N_{c,k}/N_c) μ_{c,k}
/// - Σ_c = Σ_k ((N_{c,k}−1)/(N_c−1)) Σ_{c,k} + Σ_k (N_{c,k}/(N_c−1)) μ_{c,k} μ_{c,k}ᵀ
///   − (N_c/(N_c−1)) μ_c μ_cᵀ
///
/// The last two terms are evaluated in the algebraically identical centred form
/// Σ_k (N_{c,k}/(N_c−1)) (μ_{c,k}−μ_c)(μ_{c,k}−μ_c)ᵀ (since Σ_k N_{c,k} μ_{c,k} = N_c μ_c),
/// which avoids the cancellation of two large terms when the means are far from 0.
/// The result is the unbiased covariance of all class-c features pooled centrally.
///
/// Classes with N_c ≤ 1 are kept, with a zero covariance; [`PooledClass::is_sampleable`] is
/// false for them and [`sample`] skips them.
///
/// # Errors
/// The first statistics (in input order) whose mean or covariance has the wrong length for
/// `dim`, whose count is 0, or that holds a non-finite value; the error names the class.
pub fn pool(stats: &[ClassStats], dim: usize) -> Result<Vec<PooledClass>, CcvrError> {
    let mut by_class: BTreeMap<u32, Vec<&ClassStats>> = BTreeMap::new();
    for s in stats {
        validate(s, dim)?;
        by_class.entry(s.class).or_default().push(s);
    }

    Ok(by_class
        .into_iter()
        .map(|(class, parts)| {
            let count: u64 = parts.iter().map(|s| s.count).sum();
            let n = count as f64;
            let mut mean = vec![0.0; dim];
            for s in &parts {
                let w = s.count as f64 / n;
                for (m, &v) in mean.iter_mut().zip(&s.mean) {
                    *m += w * v;
                }
            }
            let mut cov = vec![0.0; dim * dim];
            if count > 1 {
                let denom = n - 1.0;
                let mut diff = vec![0.0; dim];
                for s in &parts {
                    let w_cov = (s.count - 1) as f64 / denom;
                    let w_mean = s.count as f64 / denom;
                    for ((d, &v), &m) in diff.iter_mut().zip(&s.mean).zip(&mean) {
                        *d = v - m;
                    }
                    let mut k = 0;
                    for i in 0..dim {
                        for j in i..dim {
                            cov[i * dim + j] += w_cov * s.cov_upper[k] + w_mean * diff[i] * diff[j];
                            k += 1;
                        }
                    }
                }
                for i in 0..dim {
                    for j in 0..i {
                        cov[i * dim + j] = cov[j * dim + i];
                    }
                }
            }
            PooledClass { class, count, mean, cov }
        })
        .collect())
}

/// The lower Cholesky factor L (row-major d×d) of `cov + εI`, and the ε used.
///
/// ε starts at 1e-6 × the mean diagonal (at least 1e-12, an absolute floor for an all-zero
/// covariance) and grows tenfold whenever a pivot is ≤ 0 or not finite, which handles the
/// rank-deficient (positive semi-definite, up to rounding) covariances CCVR produces.
///
/// `None` if `cov` holds a non-finite value, or no ε up to 1e30× the start makes it
/// factorizable: a large enough ε makes a finite symmetric matrix diagonally dominant, but
/// not within f64's range when its values are near the range's end.
///
/// # Panics
/// If `cov` is not d×d for `dim`.
pub fn cholesky_jittered(cov: &[f64], dim: usize) -> Option<(Vec<f64>, f64)> {
    assert_eq!(cov.len(), dim * dim, "cholesky_jittered: {} values for a {dim}×{dim} matrix", cov.len());
    if !cov.iter().all(|v| v.is_finite()) {
        return None;
    }
    let mean_diag = if dim == 0 { 0.0 } else { (0..dim).map(|i| cov[i * dim + i]).sum::<f64>() / dim as f64 };
    let mut eps = (1e-6 * mean_diag.abs()).max(1e-12);
    for _ in 0..=30 {
        if let Some(l) = cholesky(cov, dim, eps) {
            return Some((l, eps));
        }
        eps *= 10.0;
    }
    None
}

/// Plain Cholesky of `a + eps·I`; `None` when a pivot is ≤ 0 or not finite.
fn cholesky(a: &[f64], dim: usize, eps: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; dim * dim];
    for i in 0..dim {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * dim + k] * l[j * dim + k]).sum();
            if i == j {
                let pivot = a[i * dim + i] + eps - dot;
                if !(pivot > 0.0 && pivot.is_finite()) {
                    return None;
                }
                l[i * dim + i] = pivot.sqrt();
            } else {
                l[i * dim + j] = (a[i * dim + j] - dot) / l[j * dim + j];
            }
        }
    }
    Some(l)
}

/// Draws `m` virtual features from N(μ_c, Σ_c): x = μ + L z with z ~ N(0, I) and L the
/// Cholesky factor of Σ_c + εI ([`cholesky_jittered`]). Returns nothing for a class with
/// N_c ≤ 1 (see [`PooledClass::is_sampleable`]).
///
/// # Errors
/// [`CcvrError::NotSampleable`] for a non-finite mean, or a covariance
/// [`cholesky_jittered`] cannot factor.
///
/// # Panics
/// If `class.cov` is not d×d for d = `class.mean.len()` (never the case for the output of
/// [`pool`]).
pub fn sample(class: &PooledClass, m: usize, rng: &mut impl rand::Rng) -> Result<Vec<Vec<f32>>, CcvrError> {
    if !class.is_sampleable() {
        return Ok(Vec::new());
    }
    let dim = class.dim();
    let not_sampleable = CcvrError::NotSampleable { class: class.class };
    if !class.mean.iter().all(|v| v.is_finite()) {
        return Err(not_sampleable);
    }
    let (l, _) = cholesky_jittered(&class.cov, dim).ok_or(not_sampleable)?;
    let mut z = vec![0.0f64; dim];
    Ok((0..m)
        .map(|_| {
            z.iter_mut().for_each(|v| *v = rng.sample(StandardNormal));
            (0..dim)
                .map(|i| {
                    let row = &l[i * dim..i * dim + i + 1];
                    (class.mean[i] + row.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>()) as f32
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Unbiased mean and full covariance of rows (f64), computed directly.
    fn centralized(rows: &[Vec<f32>], dim: usize) -> (Vec<f64>, Vec<f64>) {
        let n = rows.len() as f64;
        let mut mean = vec![0.0; dim];
        for r in rows {
            for (m, &x) in mean.iter_mut().zip(r) {
                *m += f64::from(x) / n;
            }
        }
        let mut cov = vec![0.0; dim * dim];
        if rows.len() > 1 {
            for r in rows {
                for i in 0..dim {
                    for j in 0..dim {
                        cov[i * dim + j] += (f64::from(r[i]) - mean[i]) * (f64::from(r[j]) - mean[j]) / (n - 1.0);
                    }
                }
            }
        }
        (mean, cov)
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn client_stats_by_hand() {
        // dim 2; class 3: (1,2), (3,6); class 1: (5,5) alone.
        let features = [1.0, 2.0, 5.0, 5.0, 3.0, 6.0];
        let labels = [3, 1, 3];
        let stats = client_stats(&features, &labels, 2);
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0], ClassStats { class: 1, count: 1, mean: vec![5.0, 5.0], cov_upper: vec![0.0; 3] });
        // mean (2,4); deviations (∓1, ∓2); unbiased (n−1 = 1): var 2, cov 4, var 8.
        assert_eq!(stats[1], ClassStats { class: 3, count: 2, mean: vec![2.0, 4.0], cov_upper: vec![2.0, 4.0, 8.0] });
        assert!(client_stats(&[], &[], 3).is_empty());
    }

    #[test]
    fn pooling_equals_the_centralized_computation() {
        let dim = 5;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // Per client, (class, count). Client 1 holds class 0 exactly once; client 2 holds
        // classes 1 and 2 once; class 4 exists only once overall; class 3 on one client only.
        let clients: [&[(u32, usize)]; 3] =
            [&[(0, 40), (1, 17), (2, 3)], &[(0, 1), (2, 25), (3, 9)], &[(1, 1), (2, 1), (0, 12), (4, 1)]];
        let mut all_stats = Vec::new();
        let mut by_class: BTreeMap<u32, Vec<Vec<f32>>> = BTreeMap::new();
        for client in clients {
            let (mut features, mut labels) = (Vec::new(), Vec::new());
            for &(class, count) in client {
                for _ in 0..count {
                    // Offset means far from 0 (and per-class) to exercise cancellation.
                    let row: Vec<f32> = (0..dim)
                        .map(|i| {
                            let z: f64 = rng.sample(StandardNormal);
                            (10.0 * f64::from(class) + i as f64 + (1.0 + i as f64) * z) as f32
                        })
                        .collect();
                    features.extend_from_slice(&row);
                    labels.push(class);
                    by_class.entry(class).or_default().push(row);
                }
            }
            // Shuffle the client's rows so classes interleave.
            let n = labels.len();
            let mut order: Vec<usize> = (0..n).collect();
            rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
            let features: Vec<f32> = order.iter().flat_map(|&s| features[s * dim..(s + 1) * dim].to_vec()).collect();
            let labels: Vec<u32> = order.iter().map(|&s| labels[s]).collect();
            all_stats.extend(client_stats(&features, &labels, dim));
        }
        let pooled = pool(&all_stats, dim).unwrap();
        assert_eq!(pooled.iter().map(|p| p.class).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        for p in &pooled {
            let rows = &by_class[&p.class];
            assert_eq!(p.count, rows.len() as u64);
            let (mean, cov) = centralized(rows, dim);
            let (em, ec) = (max_abs_diff(&p.mean, &mean), max_abs_diff(&p.cov, &cov));
            assert!(em <= 1e-5 && ec <= 1e-5, "class {}: mean error {em}, covariance error {ec}", p.class);
        }
        let single = &pooled[4];
        assert_eq!(single.count, 1);
        assert!(!single.is_sampleable());
        assert!(single.cov.iter().all(|&v| v == 0.0));
        assert!(sample(single, 10, &mut rng).unwrap().is_empty());
        assert!(pooled[..4].iter().all(PooledClass::is_sampleable));
    }

    #[test]
    fn pooling_a_class_held_once_by_each_of_two_clients() {
        // Both client covariances are zero; the pooled one comes from the means alone.
        let a = ClassStats { class: 0, count: 1, mean: vec![1.0, 0.0], cov_upper: vec![0.0; 3] };
        let b = ClassStats { class: 0, count: 1, mean: vec![3.0, 2.0], cov_upper: vec![0.0; 3] };
        let p = pool(&[a, b], 2).unwrap();
        assert_eq!(p[0].mean, vec![2.0, 1.0]);
        assert_eq!(p[0].cov, vec![2.0, 2.0, 2.0, 2.0]);
    }

    #[test]
    fn sampling_a_rank_deficient_covariance() {
        // Σ = B Bᵀ, B 4×2 of rank 2; v spans part of the null space of Bᵀ.
        let b = [[1.0, 0.5], [2.0, -1.0], [0.0, 1.5], [-1.0, 1.0]];
        let dim = 4;
        let mut cov = vec![0.0; dim * dim];
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] = b[i][0] * b[j][0] + b[i][1] * b[j][1];
            }
        }
        let mean = vec![5.0, -3.0, 0.5, 2.0];
        let class = PooledClass { class: 2, count: 3, mean: mean.clone(), cov: cov.clone() };
        let (_, eps) = cholesky_jittered(&cov, dim).unwrap();
        let m = 20_000;
        let draws = sample(&class, m, &mut ChaCha8Rng::seed_from_u64(11)).unwrap();
        assert_eq!(draws.len(), m);
        assert!(draws.iter().all(|x| x.len() == dim && x.iter().all(|v| v.is_finite())));

        let rows: Vec<Vec<f32>> = draws;
        let (smean, scov) = centralized(&rows, dim);
        let n = m as f64;
        // Tolerances: 5 standard errors of a Gaussian estimate (seeded, so deterministic):
        // se(mean_i) = sqrt(Σ_ii/n), se(cov_ij) = sqrt((Σ_ii Σ_jj + Σ_ij²)/(n−1)); plus the
        // jitter ε on the diagonal and f32 rounding of the draws.
        for i in 0..dim {
            let tol = 5.0 * (cov[i * dim + i] / n).sqrt() + 1e-5;
            assert!((smean[i] - mean[i]).abs() <= tol, "mean {i}: {} vs {} (tol {tol})", smean[i], mean[i]);
            for j in 0..dim {
                let (sii, sjj, sij) = (cov[i * dim + i], cov[j * dim + j], cov[i * dim + j]);
                let tol = 5.0 * ((sii * sjj + sij * sij) / (n - 1.0)).sqrt() + eps + 1e-5;
                let got = scov[i * dim + j];
                assert!((got - sij).abs() <= tol, "cov ({i},{j}): {got} vs {sij} (tol {tol})");
            }
        }
        // The draws stay in μ + range(B): along a unit null direction v of Bᵀ only the jitter
        // (std sqrt(ε)) and f32 rounding remain.
        let v = null_direction(&b);
        let worst = rows
            .iter()
            .map(|x| x.iter().zip(&mean).zip(&v).map(|((&xi, mi), vi)| (f64::from(xi) - mi) * vi).sum::<f64>().abs())
            .fold(0.0, f64::max);
        let tol = 6.0 * eps.sqrt() + 1e-4;
        assert!(worst <= tol, "off the range of B by {worst} (tol {tol})");
    }

    /// A unit vector orthogonal to both columns of a 4×2 matrix (Gram–Schmidt on e_k).
    fn null_direction(b: &[[f64; 2]; 4]) -> Vec<f64> {
        let cols: Vec<Vec<f64>> = (0..2).map(|c| b.iter().map(|r| r[c]).collect()).collect();
        let mut basis: Vec<Vec<f64>> = Vec::new();
        for c in cols {
            let mut u = c;
            for q in &basis {
                let d: f64 = u.iter().zip(q).map(|(a, b)| a * b).sum();
                u.iter_mut().zip(q).for_each(|(a, b)| *a -= d * b);
            }
            let n = u.iter().map(|x| x * x).sum::<f64>().sqrt();
            basis.push(u.iter().map(|x| x / n).collect());
        }
        for k in 0..4 {
            let mut u: Vec<f64> = (0..4).map(|i| if i == k { 1.0 } else { 0.0 }).collect();
            for q in &basis {
                let d: f64 = u.iter().zip(q).map(|(a, b)| a * b).sum();
                u.iter_mut().zip(q).for_each(|(a, b)| *a -= d * b);
            }
            let n = u.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n > 1e-3 {
                return u.iter().map(|x| x / n).collect();
            }
        }
        unreachable!("a 4×2 matrix has a null direction")
    }

    #[test]
    fn sampling_a_zero_covariance_returns_the_mean() {
        let stats = client_stats(&[1.5, -2.0, 1.5, -2.0, 1.5, -2.0], &[0, 0, 0], 2);
        let pooled = pool(&stats, 2).unwrap();
        assert!(pooled[0].cov.iter().all(|&v| v == 0.0));
        let draws = sample(&pooled[0], 100, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(draws.len(), 100);
        for x in draws {
            assert!((x[0] - 1.5).abs() < 1e-4 && (x[1] + 2.0).abs() < 1e-4, "{x:?}");
        }
    }

    #[test]
    fn cholesky_factors_a_positive_definite_matrix() {
        let a = [4.0, 2.0, 2.0, 3.0];
        let (l, eps) = cholesky_jittered(&a, 2).unwrap();
        let expect = [2.0, 0.0, 1.0, 2.0f64.sqrt()];
        assert!(max_abs_diff(&l, &expect) < 1e-5, "{l:?}");
        assert!(eps < 1e-5);
    }

    /// Pooled statistics nobody validated (secure aggregation's sums) or near f64's range
    /// end: an error naming the class, not a panic in the calibration phase.
    #[test]
    fn statistics_no_gaussian_fits_are_an_error_not_a_panic() {
        assert_eq!(cholesky_jittered(&[f64::INFINITY], 1), None);
        // The jitter that would fix it is beyond f64: ε grows from 1.5e302 to 1.5e308 (a pivot of
        // 0), then to infinity.
        assert_eq!(cholesky_jittered(&[-1.5e308], 1), None);
        let rng = &mut ChaCha8Rng::seed_from_u64(1);
        let class = |mean: f64, var: f64| PooledClass { class: 4, count: 3, mean: vec![mean], cov: vec![var] };
        for bad in [class(0.0, -1.5e308), class(0.0, f64::NAN), class(f64::INFINITY, 1.0)] {
            let err = sample(&bad, 10, rng).unwrap_err();
            assert!(matches!(err, CcvrError::NotSampleable { class: 4 }), "{err}");
        }
        assert_eq!(sample(&class(1.0, 0.5), 10, rng).unwrap().len(), 10);
    }

    #[test]
    fn validation_names_the_class_and_the_problem() {
        let ok = ClassStats { class: 6, count: 2, mean: vec![0.0; 3], cov_upper: vec![0.0; 6] };
        assert!(pool(std::slice::from_ref(&ok), 3).is_ok());

        let short_mean = ClassStats { mean: vec![0.0; 2], ..ok.clone() };
        let err = pool(&[ok.clone(), short_mean], 3).unwrap_err();
        assert_eq!(err, CcvrError::MeanLength { class: 6, expected: 3, got: 2 });
        assert_eq!(err.to_string(), "class 6: the mean has 2 values, expected 3 (dim)");

        let full_cov = ClassStats { cov_upper: vec![0.0; 9], ..ok.clone() };
        let err = pool(&[full_cov], 3).unwrap_err();
        assert_eq!(err, CcvrError::CovLength { class: 6, expected: 6, got: 9 });
        assert!(err.to_string().contains("covariance upper triangle has 9 values, expected 6"), "{err}");

        let zero = ClassStats { count: 0, ..ok.clone() };
        assert_eq!(pool(&[zero], 3).unwrap_err().to_string(), "class 6: the sample count is 0, expected at least 1");

        let mut nan = ok.clone();
        nan.mean[1] = f64::NAN;
        let err = pool(&[nan], 3).unwrap_err();
        assert!(matches!(err, CcvrError::NonFinite { class: 6, what: "mean", index: 1, .. }), "{err:?}");
        assert_eq!(err.to_string(), "class 6: mean value 1 is not finite (NaN)");

        let mut inf = ok;
        inf.cov_upper[4] = f64::INFINITY;
        let err = pool(&[inf], 3).unwrap_err();
        assert_eq!(err.to_string(), "class 6: covariance value 4 is not finite (inf)");
    }
}
