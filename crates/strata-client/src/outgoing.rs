//! A training result's tensors as they travel: plain f32, or under the run's upload
//! compression (`[compression] up`, which the server sent at join) as their change from what
//! the task sent, which the server holds too.

use std::sync::Arc;

use strata_core::compression::Compression;
use strata_core::config::RunConfig;
use strata_core::tensor::TensorSet;
use strata_proto::Encoded;

use crate::local::JobOutput;

/// An upload ready to stream, and the memory to have back once it is sent.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub encoded: Encoded,
    /// Shared with the encoding while it uploads: the task's parameters when compressing (a
    /// change is taken from them), the plain upload itself otherwise. [`Reclaim::take`] has
    /// it back for the next download to be assembled into.
    reclaim: Option<Arc<TensorSet>>,
}

impl Outgoing {
    /// Takes `output`'s upload (and, when compressing, what it received). `residual` is top-k's
    /// error feedback for this client. CPU work (int8's scan, top-k's selection): call it on a
    /// blocking thread.
    pub fn prepare(
        output: &mut JobOutput,
        compression: Compression,
        residual: &mut Option<TensorSet>,
        seed: u64,
    ) -> Self {
        // An evaluation uploads nothing, and leaves the error feedback as it is.
        let Some(upload) = output.upload.take().map(Arc::new) else {
            return Self { encoded: Encoded::plain(Arc::new(TensorSet::default())), reclaim: None };
        };
        if !compression.is_on() {
            return Self { encoded: Encoded::plain(Arc::clone(&upload)), reclaim: Some(upload) };
        }
        let received = output.received.take().map(Arc::new);
        Self { encoded: Encoded::new(upload, received.clone(), compression, residual, seed), reclaim: received }
    }

    /// Splits into the encoding to send and a handle on the memory to have back.
    pub fn into_parts(self) -> (Encoded, Reclaim) {
        (self.encoded, Reclaim(self.reclaim))
    }
}

/// The tensors an upload shared, to be had back once it is sent.
#[derive(Debug)]
pub(crate) struct Reclaim(Option<Arc<TensorSet>>);

impl Reclaim {
    /// The tensors, if the upload has let go of them (it has, once it is sent).
    pub fn take(self) -> Option<TensorSet> {
        self.0.and_then(|r| Arc::try_unwrap(r).ok())
    }
}

/// The seed of int8's rounding for one client's upload in one round.
pub(crate) fn upload_seed(config: &RunConfig, index: u32, round: u64) -> u64 {
    config.seed ^ 0x7570_6c6f_6164 ^ (u64::from(index) << 32) ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
