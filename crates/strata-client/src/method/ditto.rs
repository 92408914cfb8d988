//! Ditto: Li et al., "Ditto: Fair and Robust Federated Learning Through Personalization",
//! ICML 2021 (arXiv:2012.04221).
//!
//! Two models per client: the global one, trained as in FedAvg and uploaded, and a personal
//! one, trained with a proximal pull (λ/2)·‖v − w_global‖² towards the global model the round
//! started from. The personal model is what the client uses and what `accuracy` measures;
//! the global copy gives `global_accuracy`. As in PFLlib, the personal model trains first.

use strata_core::config::MethodParams;
use strata_core::selection::Selector;
use strata_core::tensor::TensorSet;
use strata_torch::{Anchor, ClientTensors, LocalModel, TorchError, TrainStats, train_local, train_local_with};

use super::{ClientMethod, GlobalView, RoundContext};

pub struct Ditto {
    global: LocalModel,
    anchor: Option<Anchor>,
    lambda: f64,
    personal_epochs: usize,
}

impl Ditto {
    /// The global copy starts as a clone of the personal model's architecture and values.
    pub fn new(params: &MethodParams, reference: &LocalModel) -> Result<Self, TorchError> {
        let shape_source = reference.export();
        let mut global = LocalModel::build(reference.config(), &reference.shape(), reference.device(), 0)?;
        global.import(&shape_source)?;
        Ok(Self { global, anchor: None, lambda: params.ditto_lambda, personal_epochs: params.ditto_personal_epochs })
    }
}

impl ClientMethod for Ditto {
    /// The received global model replaces the global copy; the personal model is untouched.
    fn merge(&mut self, _model: &mut LocalModel, received: &TensorSet, _round: u64) -> Result<(), TorchError> {
        self.global.import(received)?;
        self.anchor = Some(Anchor::new(received, self.global.device()));
        Ok(())
    }

    fn train(
        &mut self,
        model: &mut LocalModel,
        data: &ClientTensors,
        ctx: &RoundContext,
    ) -> Result<TrainStats, TorchError> {
        let lambda = self.lambda;
        let personal_cfg = ctx.train.for_epochs(self.personal_epochs);
        let personal = match &self.anchor {
            Some(anchor) => {
                let term = |m: &LocalModel| anchor.term(m, lambda);
                train_local_with(model, data, &personal_cfg, ctx.seed ^ 0xD1770, Some(&term))?
            }
            None => train_local(model, data, &personal_cfg, ctx.seed ^ 0xD1770)?,
        };
        // Only the global copy is shared, and its training never reads the personal model:
        // the personal pass stays outside DP-SGD.
        let global = ctx.train_shared(&mut self.global, data, ctx.train, ctx.seed, None)?;
        // The reported loss is the global model's, the one that is aggregated.
        Ok(TrainStats { seconds: personal.seconds + global.seconds, steps: personal.steps + global.steps, ..global })
    }

    fn upload(&self, _model: &LocalModel, upload: &Selector, reuse: Option<TensorSet>) -> TensorSet {
        self.global.export_where_into(|name| upload.matches(name), reuse)
    }

    fn global_view(&self) -> GlobalView<'_> {
        GlobalView::Separate(&self.global)
    }
}
