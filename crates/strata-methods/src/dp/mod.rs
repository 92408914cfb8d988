//! User-level differential privacy's arithmetic (DP-FedAvg): each update's change clipped to
//! an L2 bound, the unweighted sum noised with Gaussian noise and divided by a fixed expected
//! cohort, and the bound adapted to a quantile of the norms from a noised count.
//!
//! The accounting of what this spends is [`crate::accountant`]'s job; which tensors are
//! private (the shared ones) is the caller's.

mod adaptive;
mod clip;
mod noise;
mod noised_mean;

pub use adaptive::{AdaptiveClip, ClipStep};
pub use clip::{ClipOutcome, clip_update};
pub use noise::{add_gaussian, secure_rng};
pub use noised_mean::NoisedMean;
