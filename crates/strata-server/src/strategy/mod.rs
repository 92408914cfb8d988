//! The server half of a method: what each picked client receives, and how results fold
//! into the next global state.
//!
//! Strategies do no IO and own no clock: the round loop (`round.rs`) sends tasks, waits on
//! deadlines and hands over only validated updates, so a strategy is unit-tested with plain
//! data. [`build`] maps each [`Method`] to its strategy, exhaustively.

mod average_shared;
mod fedcac;
mod private_mean;

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_core::config::{DefenseConfig, MethodParams};
use strata_core::defense::Defense;
use strata_core::mask::BitMask;
use strata_core::method::Method;
use strata_core::parts::ModelParts;
use strata_core::privacy::PrivacyReport;
use strata_core::records::DefenseReport;
use strata_core::selection::Selector;
use strata_core::tensor::{TensorError, TensorSet, TensorSpec};
use strata_secagg::encoding::Decoded;
use strata_secagg::layout::Layout;

pub use average_shared::AverageShared;
pub use fedcac::FedCac;
pub use private_mean::{PrivateMean, PrivateSettings};

use crate::client_info::ClientInfo;
use crate::validate::ValidUpdate;

/// What one client is asked to do with which parameters.
#[derive(Clone, Debug)]
pub struct Instruction {
    pub client: ClientInfo,
    /// The parameters to send; shared, since most methods send everyone the same set.
    pub parameters: Arc<TensorSet>,
    /// Whether `parameters` are the method's global model (so evaluating them measures it).
    pub parameters_are_global: bool,
    /// Which trained tensors the client uploads.
    pub upload: Selector,
    /// The L2 bound the client clips its update's change to (`[privacy]` clipped on clients).
    pub clip_norm: Option<f64>,
    /// Which of the uploaded tensors a bit-packed mask must cover (FedCAC); `None`: no mask.
    pub mask_over: Option<Selector>,
}

impl Instruction {
    /// Sends `parameters` and asks for the tensors `upload` selects back, with no mask.
    pub fn new(client: ClientInfo, parameters: Arc<TensorSet>, parameters_are_global: bool, upload: Selector) -> Self {
        Self { client, parameters, parameters_are_global, upload, mask_over: None, clip_norm: None }
    }
}

/// Result of folding a round's updates.
#[derive(Debug)]
pub enum Aggregated {
    /// The next state is made; with a robust rule, what the rule did; with `[privacy]`, what
    /// the release did (the round loop adds the ε spent).
    Updated { defense: Option<DefenseReport>, privacy: Option<PrivacyReport> },
    /// The previous state is kept; the reason is logged and recorded.
    Skipped { reason: String },
}

pub trait Strategy: Send {
    /// Tasks for the clients picked to train this round.
    fn configure_train(&mut self, round: u64, picked: &[ClientInfo]) -> Vec<Instruction>;
    /// What the given clients evaluate (their model as the method would hand it to them).
    fn configure_evaluate(&mut self, round: u64, clients: &[ClientInfo]) -> Vec<Instruction>;
    /// Takes one validated update of `round` as it arrives. A strategy that needs only a
    /// running sum folds it in and returns `None`, so the server drops the client's copy at
    /// once; the default keeps it for [`Strategy::aggregate_train`].
    fn absorb(&mut self, _round: u64, update: ValidUpdate) -> Option<ValidUpdate> {
        Some(update)
    }
    /// Forgets what `absorb` took of `round` (too few results: the round keeps the old state).
    fn abandon(&mut self, _round: u64) {}
    /// Folds the round's updates (those `absorb` kept, and anything absorbed) into the next state.
    fn aggregate_train(&mut self, round: u64, updates: Vec<ValidUpdate>) -> Aggregated;
    /// Secure aggregation: moves the shared tensors by the round's decoded sum (laid out by
    /// `layout`), the only thing the server learned of the round's updates: their weighted
    /// mean change, or under `[privacy]` the sum of clipped changes the release noises.
    /// Methods that need the updates themselves cannot (the config refuses them at start).
    fn apply_secure_sum(&mut self, _round: u64, _layout: &Layout, _sum: &Decoded) -> Aggregated {
        Aggregated::Skipped { reason: "this method does not take a securely aggregated sum".into() }
    }
    /// The global model, if the method has one.
    fn global(&self) -> Option<Arc<TensorSet>>;
    /// Settings as key/value pairs, logged at start.
    fn summary(&self) -> Vec<(&'static str, String)>;
    /// Everything the strategy needs to go on after a restart (`--resume`).
    fn snapshot(&self) -> Snapshot;
    /// Takes back a [`Strategy::snapshot`] of the same method and model; on error the
    /// strategy is unchanged.
    fn restore(&mut self, snapshot: Snapshot) -> Result<(), RestoreError>;
}

/// A strategy's state as plain data: tensors by name, bit masks by name, and strings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Shared with the strategy where it can be (FedAvg's is its global model), so that taking
    /// a snapshot copies nothing that is not already a copy.
    pub tensors: Arc<TensorSet>,
    pub masks: BTreeMap<String, BitMask>,
    pub meta: BTreeMap<String, String>,
}

/// Why a saved state cannot be taken back by this run's strategy.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the saved state is not `{expected}`'s: {found:?}")]
    OtherMethod { expected: Method, found: Option<String> },
    #[error("the saved {what} does not match this run's model (names or shapes differ)")]
    ModelMismatch { what: &'static str },
    /// One client's saved state is unreadable (what is wrong with it, for a person).
    #[error("saved state of client `{client}`: {problem}")]
    Client { client: String, problem: String },
    #[error("saved privacy state: {0}")]
    Privacy(String),
    #[error("saved tensors: {0}")]
    Tensors(#[from] TensorError),
}

/// Checks that a snapshot was taken by `method`'s strategy.
pub(crate) fn same_method(snapshot: &Snapshot, method: Method) -> Result<(), RestoreError> {
    let found = snapshot.meta.get("method");
    if found.map(String::as_str) != Some(method.name()) {
        return Err(RestoreError::OtherMethod { expected: method, found: found.cloned() });
    }
    Ok(())
}

/// Checks that `incoming` has exactly the names and shapes of `current`.
pub(crate) fn same_specs(current: &TensorSet, incoming: &TensorSet, what: &'static str) -> Result<(), RestoreError> {
    if current.specs() != incoming.specs() {
        return Err(RestoreError::ModelMismatch { what });
    }
    Ok(())
}

/// The server half of `method`, starting from the initial parameters, combining updates with
/// `defense`'s rule or privately (the config's validation made sure the method takes them).
pub fn build(
    method: Method,
    parts: &ModelParts,
    initial: TensorSet,
    params: &MethodParams,
    defense: &DefenseConfig,
    privacy: Option<PrivateSettings>,
) -> Box<dyn Strategy> {
    match method {
        Method::Local
        | Method::FedAvg
        | Method::FedProx
        | Method::FedPer
        | Method::FedRep
        | Method::FedBn
        | Method::Ditto => {
            let strategy = AverageShared::sharing(method, method.shares(parts), initial).with_defense(defense.rule);
            Box::new(match privacy {
                Some(settings) => strategy.with_privacy(settings),
                None => strategy,
            })
        }
        Method::FedCac => {
            let bound = match defense.rule {
                Defense::NormBound(mode) => Some(mode),
                _ => None,
            };
            Box::new(FedCac::new(initial, params.fedcac_tau, params.fedcac_beta).with_norm_bound(bound))
        }
    }
}

/// The specs a client's upload must have: the model's tensors that the selector keeps, in order.
pub fn expected_upload(model: &[TensorSpec], upload: &Selector) -> Vec<TensorSpec> {
    model.iter().filter(|s| upload.matches(&s.name)).cloned().collect()
}
