//! Serialised access to torch's process-wide random generator.
//!
//! Model initialisation draws from torch's global generator (as PyTorch does, so that a seed
//! gives PyTorch's initial values). `tch::manual_seed` resets that one generator for the whole
//! process, so a seeded draw is deterministic only if nothing else draws in between. Every
//! use of the global generator in Strata goes through [`with_seed`]; training and evaluation
//! use none (mini-batch order comes from ChaCha, and no registered model has dropout).

use std::sync::Mutex;

static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Seeds torch's global generator with `seed` and runs `f` while no other caller of this
/// function can draw from it.
pub fn with_seed<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    let _guard = TORCH_RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // Bit-for-bit reinterpretation: seeds ≥ 2^63 map to negative i64, still distinct.
    tch::manual_seed(seed as i64);
    f()
}
