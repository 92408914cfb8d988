//! The client half of each method: how the parameters a task brings merge into the personal
//! model, how the client trains, and what it sends back. [`build`] maps each [`Method`] to its
//! client half, exhaustively, as `strata_server::strategy::build` does to its server half.
//!
//! Hyper-parameters come from the run's config that the client received when it joined (its
//! typed `[methods]` table), and from nowhere else.

mod ditto;
mod fedcac;
mod fedrep;
mod shared;

use strata_core::config::{MethodParams, TrainConfig};
use strata_core::mask::BitMask;
use strata_core::method::Method;
use strata_core::selection::Selector;
use strata_core::tensor::TensorSet;
use strata_torch::{ClientTensors, DpSgd, ExtraLoss, LocalModel, TorchError, TrainStats};

pub use ditto::Ditto;
pub use fedcac::FedCacClient;
pub use fedrep::FedRep;
pub use shared::Shared;

/// Which model, if any, measures the method's global model on this client.
pub enum GlobalView<'a> {
    /// The personal model is the received global model (FedAvg, FedProx).
    Personal,
    /// A separate copy the method keeps (Ditto).
    Separate(&'a LocalModel),
    /// The method has no global model the client can evaluate.
    None,
}

/// What one round's task gives the method besides the model and data.
pub struct RoundContext<'a> {
    pub round: u64,
    pub train: &'a TrainConfig,
    pub seed: u64,
    /// Example-level privacy (`[dp_sgd]`) of every training pass whose result reaches what
    /// the client shares.
    pub dp_sgd: Option<DpSgd>,
}

impl RoundContext<'_> {
    /// A training pass whose result reaches what the client shares: DP-SGD when the run asks
    /// for it, plain local SGD otherwise.
    pub fn train_shared(
        &self,
        model: &mut LocalModel,
        data: &ClientTensors,
        cfg: &TrainConfig,
        seed: u64,
        extra_loss: Option<ExtraLoss<'_>>,
    ) -> Result<TrainStats, TorchError> {
        match self.dp_sgd {
            Some(dp) => strata_torch::train_private(model, data, cfg, dp, extra_loss),
            None => strata_torch::train_local_with(model, data, cfg, seed, extra_loss),
        }
    }
}

pub trait ClientMethod: Send {
    /// Merges the received parameters into the personal model (and the method's own state).
    fn merge(&mut self, model: &mut LocalModel, received: &TensorSet, round: u64) -> Result<(), TorchError>;

    /// Trains for one round; plain local SGD unless the method says otherwise.
    fn train(
        &mut self,
        model: &mut LocalModel,
        data: &ClientTensors,
        ctx: &RoundContext,
    ) -> Result<TrainStats, TorchError> {
        ctx.train_shared(model, data, ctx.train, ctx.seed, None)
    }

    /// The tensors to upload: those of the personal model that `upload` selects, unless the
    /// method uploads another model (Ditto uploads its global copy), written into `reuse`'s
    /// memory where it fits (see [`LocalModel::export_where_into`]).
    fn upload(&self, model: &LocalModel, upload: &Selector, reuse: Option<TensorSet>) -> TensorSet {
        model.export_where_into(|name| upload.matches(name), reuse)
    }

    /// A mask over the uploaded tensors that `covered` selects (FedCAC); none by default.
    fn mask(&self, _uploaded: &TensorSet, _covered: &Selector) -> Result<Option<BitMask>, TorchError> {
        Ok(None)
    }

    /// Where the client can evaluate the method's global model.
    fn global_view(&self) -> GlobalView<'_>;

    /// Whether the personal model holds anything the next task's download does not replace:
    /// a virtual client's state is kept between its tasks only when it does.
    fn keeps_personal_state(&self) -> bool {
        true
    }
}

/// The client half of `method`.
pub fn build(
    method: Method,
    params: &MethodParams,
    reference: &LocalModel,
) -> Result<Box<dyn ClientMethod>, TorchError> {
    Ok(match method {
        Method::Local | Method::FedPer | Method::FedBn => Box::new(Shared::part()),
        Method::FedAvg => Box::new(Shared::whole_model(None)),
        Method::FedProx => Box::new(Shared::whole_model(Some(params.proximal_mu))),
        Method::FedRep => Box::new(FedRep::new(params.fedrep_head_epochs)),
        Method::Ditto => Box::new(Ditto::new(params, reference)?),
        Method::FedCac => Box::new(FedCacClient::new(params.fedcac_tau)),
    })
}

#[cfg(test)]
mod tests {
    use strata_core::selection::{NORM_LAYERS, RUNNING_STATS};
    use strata_data::DataShape;
    use tch::Device;

    use super::*;

    fn model(name: &str, sample_shape: Vec<usize>, seed: u64) -> LocalModel {
        LocalModel::new(name, &DataShape { sample_shape, num_classes: 3 }, Device::Cpu, seed).expect("model")
    }

    /// The tensors of `other` that `keep` selects: what a server would send.
    fn part(other: &LocalModel, keep: &Selector) -> TensorSet {
        other.export().select(|n| keep.matches(n))
    }

    #[test]
    fn a_fedper_client_takes_the_body_and_keeps_its_head() {
        let mut mine = model("mlp", vec![4], 1);
        let server = model("mlp", vec![4], 2);
        let head_before = mine.export().select(|n| n.starts_with("head."));
        let mut method = build(Method::FedPer, &MethodParams::default(), &mine).expect("fedper");
        method.merge(&mut mine, &part(&server, &Selector::new(["body.*"])), 1).expect("merge");
        let after = mine.export();
        assert_eq!(after.select(|n| n.starts_with("body.")), part(&server, &Selector::new(["body.*"])));
        assert_eq!(after.select(|n| n.starts_with("head.")), head_before);
    }

    #[test]
    fn a_fedbn_client_keeps_its_normalization_layers() {
        let mut mine = model("cnn-bn", vec![1, 28, 28], 1);
        let server = model("cnn-bn", vec![1, 28, 28], 2);
        let norm = Selector::new(NORM_LAYERS);
        let norm_before = mine.export().select(|n| norm.matches(n));
        assert!(!norm_before.is_empty());
        let shared = Selector::all().except(NORM_LAYERS);
        let mut method = build(Method::FedBn, &MethodParams::default(), &mine).expect("fedbn");
        method.merge(&mut mine, &part(&server, &shared), 1).expect("merge");
        assert_eq!(mine.export().select(|n| norm.matches(n)), norm_before);
        assert_eq!(mine.export().select(|n| shared.matches(n)), part(&server, &shared));
    }

    #[test]
    fn a_ditto_client_keeps_two_models_and_uploads_the_global_one() {
        let mut personal = model("mlp", vec![4], 1);
        let server = model("mlp", vec![4], 2);
        let personal_before = personal.export();
        let mut method = build(Method::Ditto, &MethodParams::default(), &personal).expect("ditto");
        method.merge(&mut personal, &server.export(), 0).expect("merge");
        assert_eq!(personal.export(), personal_before, "the personal model is not overwritten");
        assert_eq!(method.upload(&personal, &Selector::all(), None), server.export(), "the global copy goes back");
        assert!(matches!(method.global_view(), GlobalView::Separate(_)));
    }

    #[test]
    fn a_fedcac_client_keeps_its_running_statistics_after_round_zero() {
        let mut mine = model("cnn-bn", vec![1, 28, 28], 1);
        let server = model("cnn-bn", vec![1, 28, 28], 2);
        let stats = Selector::new(RUNNING_STATS);
        let mut moved = mine.export();
        for (_, values) in moved.values_mut().filter(|(name, _)| stats.matches(name)) {
            values.iter_mut().for_each(|v| *v += 1.0);
        }
        mine.import(&moved).expect("import");
        let mut method = build(Method::FedCac, &MethodParams::default(), &mine).expect("fedcac");
        method.merge(&mut mine, &server.export(), 1).expect("merge");
        let after = mine.export();
        assert_eq!(after.select(|n| stats.matches(n)), moved.select(|n| stats.matches(n)));
        assert_eq!(after.select(|n| !stats.matches(n)), server.export().select(|n| !stats.matches(n)));
    }
}
