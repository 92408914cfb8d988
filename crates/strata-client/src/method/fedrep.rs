//! FedRep: Collins et al., "Exploiting Shared Representations for Personalized Federated
//! Learning", ICML 2021 (arXiv:2102.07078).
//!
//! The body is shared, the head personal. Each round the client first trains its head with the
//! body frozen (`fedrep_head_epochs`), then the body with the head frozen (`local_epochs`), as
//! PFLlib's FedRep client does.

use strata_core::tensor::TensorSet;
use strata_torch::{ClientTensors, LocalModel, TorchError, TrainStats, with_frozen};

use super::{ClientMethod, GlobalView, RoundContext};

pub struct FedRep {
    head_epochs: usize,
}

impl FedRep {
    pub fn new(head_epochs: usize) -> Self {
        Self { head_epochs }
    }
}

impl ClientMethod for FedRep {
    fn merge(&mut self, model: &mut LocalModel, received: &TensorSet, _round: u64) -> Result<(), TorchError> {
        model.import(received)
    }

    fn train(
        &mut self,
        model: &mut LocalModel,
        data: &ClientTensors,
        ctx: &RoundContext,
    ) -> Result<TrainStats, TorchError> {
        let head_epochs = self.head_epochs;
        let head_cfg = ctx.train.for_epochs(head_epochs);
        // Both passes reach the shared body: the head's shapes the body's gradients.
        let parts = model.parts().head.clone();
        let is_head = |n: &str| parts.matches(n);
        let head = with_frozen(model, &|n| !is_head(n), |m| ctx.train_shared(m, data, &head_cfg, ctx.seed, None))?;
        let body = with_frozen(model, &is_head, |m| ctx.train_shared(m, data, ctx.train, ctx.seed ^ 0x5EED, None))?;
        let samples = head.samples + body.samples;
        let mean_loss = if samples == 0 {
            0.0
        } else {
            (head.mean_loss * head.samples as f64 + body.mean_loss * body.samples as f64) / samples as f64
        };
        Ok(TrainStats { mean_loss, ..head.then(body) })
    }

    fn global_view(&self) -> GlobalView<'_> {
        GlobalView::None
    }
}
