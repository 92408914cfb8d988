//! Strata's libtorch side: models by name, a client's data as tensors, local training and
//! evaluation. It knows nothing of the network: parameters leave and enter as
//! [`strata_core::tensor::TensorSet`].
//!
//! # Layout
//! At the root (each from a private module of its own):
//! - [`parse_device`] (`auto|cpu|cuda|cuda:N`) and [`set_threads`] (libtorch's thread count).
//! - [`LocalModel`], a model with its variables, exported and imported by name.
//! - [`ClientTensors`], a client's train/test split on its device.
//! - [`train_local`] and [`train_local_with`] ([`ExtraLoss`], [`TrainStats`]), SGD over seeded
//!   mini-batches; [`Anchor`], FedProx's and Ditto's proximal term; [`with_frozen`], training
//!   a part of the model.
//! - [`train_private`] ([`DpSgd`], [`PrivateSteps`]): the same training with DP-SGD's
//!   Poisson batches, per-sample clipping and noise.
//! - [`evaluate`] ([`EvalStats`]), accuracy and loss.
//! - [`TorchError`], the one error type.
//!
//! By path:
//! - [`model`]: the registry ([`model::build`], [`model::names`]) and the [`model::Net`] trait.
//! - [`seed`]: serialised use of torch's global generator (model initialisation).
//! - [`classifier`]: the classifier's input features, and its retraining (CCVR).
//! - [`backend`]: [`backend::TorchBackend`], the server's initial model and classifier
//!   retraining (`strata_core::backend::ModelBackend`).

pub mod backend;
pub mod classifier;
mod client_data;
mod device;
mod dp_sgd;
mod error;
mod eval;
mod freeze;
mod local_model;
pub mod model;
mod per_sample;
mod proximal;
mod script_module;
pub mod seed;
#[cfg(test)]
mod test_data;
mod train;

pub use client_data::ClientTensors;
pub use device::{parse_device, set_threads};
pub use dp_sgd::{DpSgd, train_private};
pub use error::TorchError;
pub use eval::{EvalStats, evaluate};
pub use freeze::with_frozen;
pub use local_model::LocalModel;
pub use proximal::Anchor;
pub use train::{ExtraLoss, PrivateSteps, TrainStats, train_local, train_local_with};
