//! FedCAC's client half: Wu et al., "Bold but Cautious: Unlocking the Potential of
//! Personalized Federated Learning through Cautiously Aggressive Collaboration", ICCV 2023,
//! as the author's Fling code does it.
//!
//! The client takes the model the server customized for it (trainable tensors only: its
//! normalization statistics stay local after round 0), trains, and marks as critical, tensor
//! by tensor, the τ share of entries with the largest sensitivity |(after − before)·after|.

use strata_core::mask::BitMask;
use strata_core::selection::{RUNNING_STATS, Selector};
use strata_core::tensor::TensorSet;
use strata_methods::fedcac::critical_mask;
use strata_torch::{LocalModel, TorchError};

use super::{ClientMethod, GlobalView};

pub struct FedCacClient {
    tau: f64,
    /// The trainable tensors as merged, before training.
    before: Option<TensorSet>,
}

impl FedCacClient {
    pub fn new(tau: f64) -> Self {
        Self { tau, before: None }
    }
}

impl ClientMethod for FedCacClient {
    fn merge(&mut self, model: &mut LocalModel, received: &TensorSet, round: u64) -> Result<(), TorchError> {
        // Round 0 brings the common initial model whole; afterwards running statistics are local.
        let local_stats = Selector::new(RUNNING_STATS);
        let incoming = if round == 0 { received.clone() } else { received.select(|n| !local_stats.matches(n)) };
        model.import(&incoming)?;
        self.before = Some(model.export_where(|n| !local_stats.matches(n)));
        Ok(())
    }

    fn mask(&self, uploaded: &TensorSet, covered: &Selector) -> Result<Option<BitMask>, TorchError> {
        let before =
            self.before.as_ref().ok_or_else(|| TorchError::Train("FedCAC: training before any merge".into()))?;
        critical_mask(before, uploaded, covered, self.tau)
            .map(Some)
            .map_err(|e| TorchError::Train(format!("FedCAC mask: {e}")))
    }

    fn global_view(&self) -> GlobalView<'_> {
        GlobalView::None
    }
}
