//! Methods whose client half only differs in which tensors it shares: the received tensors
//! replace the local ones, the rest stay personal.
//!
//! - `fedavg` (McMahan et al., AISTATS 2017) and `fedprox` (Li et al., MLSys 2020: a proximal
//!   term (μ/2)·‖w − w_global‖² in the local loss) share the whole model;
//! - `fedper` (Arivazhagan et al., arXiv:1912.00818) shares the body and keeps the head;
//! - `fedbn` (Li et al., ICLR 2021) shares everything but the normalization layers;
//! - `local` shares nothing: each client trains alone, the floor to beat.
//!
//! What is shared is decided by the server (it sends only those tensors and asks only for
//! them back); this half merges whatever arrives by name.

use strata_core::tensor::TensorSet;
use strata_torch::{Anchor, ClientTensors, LocalModel, TorchError, TrainStats};

use super::{ClientMethod, GlobalView, RoundContext};

pub struct Shared {
    /// Whether the received parameters are the whole global model.
    whole_model: bool,
    /// FedProx's μ (from the config; the task may override it); `None` for plain SGD.
    proximal_mu: Option<f64>,
    /// The received parameters, for the proximal term.
    anchor: Option<Anchor>,
}

impl Shared {
    pub fn whole_model(proximal_mu: Option<f64>) -> Self {
        Self { whole_model: true, proximal_mu, anchor: None }
    }

    /// Part of the model is shared (FedPer, FedBN) or none of it (Local): whatever arrives
    /// replaces the local tensors of the same names; the server decides what that is.
    pub fn part() -> Self {
        Self { whole_model: false, proximal_mu: None, anchor: None }
    }
}

impl ClientMethod for Shared {
    fn merge(&mut self, model: &mut LocalModel, received: &TensorSet, _round: u64) -> Result<(), TorchError> {
        model.import(received)?;
        if self.proximal_mu.is_some() {
            self.anchor = Some(Anchor::new(received, model.device()));
        }
        Ok(())
    }

    fn train(
        &mut self,
        model: &mut LocalModel,
        data: &ClientTensors,
        ctx: &RoundContext,
    ) -> Result<TrainStats, TorchError> {
        match (self.proximal_mu, &self.anchor) {
            (Some(mu), Some(anchor)) => {
                let term = |m: &LocalModel| anchor.term(m, mu);
                ctx.train_shared(model, data, ctx.train, ctx.seed, Some(&term))
            }
            _ => ctx.train_shared(model, data, ctx.train, ctx.seed, None),
        }
    }

    fn global_view(&self) -> GlobalView<'_> {
        if self.whole_model { GlobalView::Personal } else { GlobalView::None }
    }

    fn keeps_personal_state(&self) -> bool {
        // FedAvg and FedProx receive the whole model with every task.
        !self.whole_model
    }
}
