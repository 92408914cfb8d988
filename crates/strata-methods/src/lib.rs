//! The methods' mathematics on plain tensors, unit-tested without libtorch or gRPC: what a
//! server computes from clients' updates and a client computes before it uploads.
//!
//! # Layout
//! - [`accountant`]: the RDP privacy accountant of the sampled Gaussian mechanism (Poisson or
//!   fixed-size samples): composition over steps, (ε, δ), and the noise for a target ε.
//! - [`aggregate`]: weighted means of tensor sets, folded one update at a time in f64.
//! - [`fedcac`]: FedCAC's arithmetic: sensitivities, critical masks, overlaps, threshold, combination.
//! - [`ccvr`]: CCVR's statistics: per-client class moments, exact pooling, sampling virtual features.
//! - [`ccvr_sums`]: the same statistics as shares secure aggregation can sum, pooled from the totals.
//! - [`delta`]: an update as its change from the model its client was sent: norm, scaling.
//! - [`dp`]: user-level differential privacy: clipping, noised means, adaptive clipping.
//! - [`robust`]: robust aggregation of updates relative to what each client was sent: norm
//!   bounding, coordinate-wise median and trimmed mean, Krum and Multi-Krum.

pub mod accountant;
pub mod aggregate;
pub mod ccvr;
pub mod ccvr_sums;
pub mod delta;
pub mod dp;
pub mod fedcac;
pub mod robust;
#[cfg(test)]
mod test_support;
