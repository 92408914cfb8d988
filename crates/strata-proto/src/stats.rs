//! CCVR's per-class feature statistics on the wire: a `FeatureStatsSpec` in the result header
//! (dimension, classes ascending, counts), then `StatsSlice`s in order carrying, per class, the
//! mean (`dim` values) and the covariance's upper triangle (`dim·(dim+1)/2` values), as f32
//! little-endian. The server checks everything it can before using a single value.

use strata_methods::ccvr::{ClassStats, upper_len};

use crate::chunk::MAX_CHUNK_BYTES;
use crate::pb;

/// The header part and the payload of a client's statistics (classes in the given order,
/// which [`strata_methods::ccvr::client_stats`] makes ascending).
pub fn encode(stats: &[ClassStats], dim: usize) -> (pb::FeatureStatsSpec, Vec<u8>) {
    let spec = pb::FeatureStatsSpec {
        dim: dim as u32,
        classes: stats.iter().map(|s| s.class).collect(),
        counts: stats.iter().map(|s| s.count).collect(),
    };
    let mut bytes = Vec::with_capacity(stats.len() * (dim + upper_len(dim)) * 4);
    for s in stats {
        for v in s.mean.iter().chain(&s.cov_upper) {
            bytes.extend_from_slice(&(*v as f32).to_le_bytes());
        }
    }
    (spec, bytes)
}

/// Cuts the payload into slices of at most `chunk_bytes`.
pub fn stats_slices(bytes: &[u8], chunk_bytes: usize) -> Vec<pb::StatsSlice> {
    let step = chunk_bytes.clamp(4, MAX_CHUNK_BYTES);
    bytes
        .chunks(step)
        .enumerate()
        .map(|(i, c)| pb::StatsSlice { byte_offset: (i * step) as u64, data: c.to_vec() })
        .collect()
}

/// What the receiver knows the statistics must fit.
#[derive(Clone, Copy, Debug)]
pub struct StatsExpectation {
    /// The classifier's input dimension.
    pub dim: usize,
    /// Labels run from 0 to `num_classes - 1`.
    pub num_classes: u32,
    /// The client's training samples, when it reported them: counts cannot add up to more.
    pub max_samples: Option<u64>,
}

/// Why a client's statistics were refused: the header against the task, the slices against the
/// header, or a value no data could give.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("feature statistics of dimension {got}, but the classifier's input has {expected}")]
    Dimension { got: usize, expected: usize },
    #[error("{classes} classes but {counts} counts")]
    CountsMismatch { classes: usize, counts: usize },
    #[error("feature statistics for no class at all")]
    NoClass,
    #[error("classes must be ascending and distinct: {first} then {then}")]
    NotAscending { first: u32, then: u32 },
    #[error("class {class} does not exist: the dataset has {num_classes} classes")]
    UnknownClass { class: u32, num_classes: u32 },
    #[error("class {class}: a count of 0 (send only the classes you hold)")]
    ZeroCount { class: u32 },
    #[error("the class counts add up to {total}, more than the {max} training samples reported")]
    TooManySamples { total: u64, max: u64 },
    #[error("statistics slice at byte {offset} out of order: expected byte {expected}")]
    OutOfOrder { offset: u64, expected: usize },
    #[error("statistics slice of {len} bytes runs past the {expected} bytes the header declares")]
    Overflow { len: usize, expected: usize },
    #[error("statistics end after {received} of {expected} bytes")]
    Incomplete { received: usize, expected: usize },
    #[error("class {class}: a {part} value is not finite ({value})")]
    NotFinite { class: u32, part: StatsPart, value: f64 },
    #[error("class {class}: the variance of feature {feature} is negative ({value})")]
    NegativeVariance { class: u32, feature: usize, value: f64 },
    #[error(
        "class {class}: the covariance of features {i} and {j} ({value}) exceeds what their variances allow ({bound})"
    )]
    CovarianceBound { class: u32, i: usize, j: usize, value: f64, bound: f64 },
}

/// Which part of a class's statistics a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsPart {
    Mean,
    Covariance,
}

impl std::fmt::Display for StatsPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Covariance => "covariance",
        })
    }
}

/// Collects in-order slices of one client's statistics and decodes them.
#[derive(Debug)]
pub struct StatsAssembler {
    dim: usize,
    classes: Vec<u32>,
    counts: Vec<u64>,
    expected_bytes: usize,
    bytes: Vec<u8>,
}

impl StatsAssembler {
    /// Checks the header part against what the task expects.
    pub fn new(spec: &pb::FeatureStatsSpec, expect: StatsExpectation) -> Result<Self, StatsError> {
        let dim = spec.dim as usize;
        if dim != expect.dim {
            return Err(StatsError::Dimension { got: dim, expected: expect.dim });
        }
        if spec.classes.len() != spec.counts.len() {
            return Err(StatsError::CountsMismatch { classes: spec.classes.len(), counts: spec.counts.len() });
        }
        if spec.classes.is_empty() {
            return Err(StatsError::NoClass);
        }
        if let Some(w) = spec.classes.windows(2).find(|w| w[0] >= w[1]) {
            return Err(StatsError::NotAscending { first: w[0], then: w[1] });
        }
        if let Some(&class) = spec.classes.iter().find(|&&c| c >= expect.num_classes) {
            return Err(StatsError::UnknownClass { class, num_classes: expect.num_classes });
        }
        if let Some(i) = spec.counts.iter().position(|&n| n == 0) {
            return Err(StatsError::ZeroCount { class: spec.classes[i] });
        }
        let total = spec.counts.iter().try_fold(0u64, |a, &n| a.checked_add(n)).unwrap_or(u64::MAX);
        if let Some(max) = expect.max_samples
            && total > max
        {
            return Err(StatsError::TooManySamples { total, max });
        }
        let per_class = dim + upper_len(dim);
        let expected_bytes = spec.classes.len() * per_class * 4;
        Ok(Self { dim, classes: spec.classes.clone(), counts: spec.counts.clone(), expected_bytes, bytes: Vec::new() })
    }

    pub fn push(&mut self, slice: &pb::StatsSlice) -> Result<(), StatsError> {
        if slice.byte_offset != self.bytes.len() as u64 {
            return Err(StatsError::OutOfOrder { offset: slice.byte_offset, expected: self.bytes.len() });
        }
        if slice.data.len() > MAX_CHUNK_BYTES || self.bytes.len() + slice.data.len() > self.expected_bytes {
            return Err(StatsError::Overflow { len: slice.data.len(), expected: self.expected_bytes });
        }
        self.bytes.extend_from_slice(&slice.data);
        Ok(())
    }

    /// The decoded statistics, once every byte arrived and every value is finite.
    pub fn finish(self) -> Result<Vec<ClassStats>, StatsError> {
        if self.bytes.len() != self.expected_bytes {
            return Err(StatsError::Incomplete { received: self.bytes.len(), expected: self.expected_bytes });
        }
        let per_class = self.dim + upper_len(self.dim);
        let mut values = self.bytes.chunks_exact(4).map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        let mut out = Vec::with_capacity(self.classes.len());
        for (&class, &count) in self.classes.iter().zip(&self.counts) {
            let all: Vec<f64> = values.by_ref().take(per_class).collect();
            if let Some(i) = all.iter().position(|v| !v.is_finite()) {
                let part = if i < self.dim { StatsPart::Mean } else { StatsPart::Covariance };
                return Err(StatsError::NotFinite { class, part, value: all[i] });
            }
            let (mean, cov_upper) = all.split_at(self.dim);
            covariance(class, cov_upper, self.dim)?;
            out.push(ClassStats { class, count, mean: mean.to_vec(), cov_upper: cov_upper.to_vec() });
        }
        Ok(out)
    }
}

/// Checks that an upper triangle (row-major) can be a covariance: no negative variance, and no
/// covariance above what its two variances allow (Cauchy–Schwarz, with room for f32
/// rounding). A made-up one could keep the pooled covariance from being factorized at all.
fn covariance(class: u32, upper: &[f64], dim: usize) -> Result<(), StatsError> {
    let row = |i: usize| i * dim - i * i.saturating_sub(1) / 2;
    let var = |i: usize| upper[row(i)];
    for i in 0..dim {
        if var(i) < 0.0 {
            return Err(StatsError::NegativeVariance { class, feature: i, value: var(i) });
        }
        for j in i + 1..dim {
            let c = upper[row(i) + j - i];
            let bound = (var(i) * var(j)).sqrt();
            if c.abs() > bound * (1.0 + 1e-3) + 1e-12 {
                return Err(StatsError::CovarianceBound { class, i, j, value: c, bound });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stats() -> Vec<ClassStats> {
        let dim = 3;
        [(1u32, 4u64), (4, 1)]
            .iter()
            .map(|&(class, count)| ClassStats {
                class,
                count,
                mean: (0..dim).map(|i| f64::from(class) + i as f64 * 0.5).collect(),
                // A covariance some data could give: variances 1, 2, 3 and smaller covariances.
                cov_upper: vec![1.0, 0.25, 0.5, 2.0, 0.75, 3.0 + f64::from(class)],
            })
            .collect()
    }

    fn expect() -> StatsExpectation {
        StatsExpectation { dim: 3, num_classes: 10, max_samples: Some(5) }
    }

    fn assemble(spec: &pb::FeatureStatsSpec, bytes: &[u8], chunk: usize) -> Result<Vec<ClassStats>, StatsError> {
        let mut asm = StatsAssembler::new(spec, expect())?;
        for s in stats_slices(bytes, chunk) {
            asm.push(&s)?;
        }
        asm.finish()
    }

    #[test]
    fn statistics_round_trip_in_slices() {
        let (spec, bytes) = encode(&stats(), 3);
        assert_eq!(bytes.len(), 2 * (3 + 6) * 4);
        assert_eq!(assemble(&spec, &bytes, 8).unwrap(), stats());
    }

    #[test]
    fn bad_statistics_are_refused_with_the_reason() {
        let (spec, bytes) = encode(&stats(), 3);
        // Each refusal is its own variant, and its message says why.
        let refused = |spec: pb::FeatureStatsSpec, bytes: &[u8], says: &str| {
            let err = assemble(&spec, bytes, 8).unwrap_err();
            assert!(err.to_string().contains(says), "`{err}` does not say `{says}`");
            err
        };
        let dim = refused(pb::FeatureStatsSpec { dim: 4, ..spec.clone() }, &bytes, "dimension 4");
        assert_eq!(dim, StatsError::Dimension { got: 4, expected: 3 });
        let counts =
            refused(pb::FeatureStatsSpec { counts: vec![4], ..spec.clone() }, &bytes, "2 classes but 1 counts");
        assert_eq!(counts, StatsError::CountsMismatch { classes: 2, counts: 1 });
        let none = pb::FeatureStatsSpec { classes: vec![], counts: vec![], ..spec.clone() };
        assert_eq!(refused(none, &bytes, "no class"), StatsError::NoClass);
        let order = refused(pb::FeatureStatsSpec { classes: vec![4, 1], ..spec.clone() }, &bytes, "ascending");
        assert_eq!(order, StatsError::NotAscending { first: 4, then: 1 });
        let unknown = refused(pb::FeatureStatsSpec { classes: vec![1, 10], ..spec.clone() }, &bytes, "class 10");
        assert_eq!(unknown, StatsError::UnknownClass { class: 10, num_classes: 10 });
        let zero = refused(pb::FeatureStatsSpec { counts: vec![4, 0], ..spec.clone() }, &bytes, "count of 0");
        assert_eq!(zero, StatsError::ZeroCount { class: 4 });
        let many = refused(pb::FeatureStatsSpec { counts: vec![4, 2], ..spec.clone() }, &bytes, "more than");
        assert_eq!(many, StatsError::TooManySamples { total: 6, max: 5 });
        let short = refused(spec.clone(), &bytes[..bytes.len() - 4], "end after");
        assert_eq!(short, StatsError::Incomplete { received: 68, expected: 72 });
        let mut nan = bytes.clone();
        nan[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
        let not_finite = refused(spec.clone(), &nan, "class 4: a mean value is not finite");
        assert!(matches!(not_finite, StatsError::NotFinite { class: 4, part: StatsPart::Mean, .. }));
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(matches!(refused(spec.clone(), &long, "runs past"), StatsError::Overflow { .. }));
        let mut asm = StatsAssembler::new(&spec, expect()).unwrap();
        let late = pb::StatsSlice { byte_offset: 8, data: vec![0; 4] };
        assert_eq!(asm.push(&late).unwrap_err(), StatsError::OutOfOrder { offset: 8, expected: 0 });
    }

    #[test]
    fn a_covariance_that_no_data_could_give_is_refused() {
        // 2×2: (0,0), (0,1), (1,1).
        assert!(covariance(1, &[4.0, 2.0, 1.0], 2).is_ok());
        assert!(covariance(1, &[0.0, 0.0, 0.0], 2).is_ok(), "one sample: all zero");
        let negative = covariance(1, &[-1e18, 0.0, 1.0], 2).unwrap_err();
        assert!(matches!(negative, StatsError::NegativeVariance { class: 1, feature: 0, .. }));
        assert!(negative.to_string().contains("variance of feature 0 is negative"), "{negative}");
        let bound = covariance(1, &[4.0, 3.0, 1.0], 2).unwrap_err();
        assert!(matches!(bound, StatsError::CovarianceBound { class: 1, i: 0, j: 1, .. }));
        assert!(bound.to_string().contains("features 0 and 1"), "{bound}");
        // 3×3: (0,0), (0,1), (0,2), (1,1), (1,2), (2,2).
        assert!(covariance(2, &[1.0, 0.5, 0.2, 1.0, 0.3, 1.0], 3).is_ok());
        assert!(covariance(2, &[1.0, 0.5, 0.2, 1.0, 0.3, -0.5], 3).unwrap_err().to_string().contains("feature 2"));
        let bound = covariance(2, &[1.0, 0.5, 0.2, 1.0, 9.0, 1.0], 3).unwrap_err();
        assert!(bound.to_string().contains("features 1 and 2"), "{bound}");
    }
}
