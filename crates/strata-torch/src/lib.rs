//! Strata's libtorch side: models by name, a client's data as tensors, local training and
//! evaluation. It knows nothing of the network: parameters leave and enter as
//! [`strata_core::tensor::TensorSet`].
//!
//! # Layout
//! - [`device`]: `auto|cpu|cuda|cuda:N`, and libtorch's thread count.
//! - [`model`]: the registry ([`model::build`], [`model::names`]) and the [`model::Net`] trait.
//! - [`local_model`]: [`LocalModel`], a model with its variables, exported and imported by name.
//! - [`client_data`]: [`ClientTensors`], a client's train/test split on its device.
//! - [`seed`]: serialised use of torch's global generator (model initialisation).
//! - [`train`]: [`train_local`], SGD over seeded mini-batches.
//! - [`eval`]: [`evaluate`], accuracy and loss.
//! - [`calibrate`]: the classifier's input features, and its retraining (CCVR).
//! - [`backend`]: [`backend::TorchBackend`], the server's initial model and classifier
//!   retraining (`strata_core::backend::ModelBackend`).
//! - [`error`]: the one error type, [`TorchError`].

pub mod backend;
pub mod calibrate;
pub mod client_data;
pub mod device;
pub mod error;
pub mod eval;
pub mod freeze;
pub mod local_model;
pub mod model;
pub mod proximal;
pub mod seed;
pub mod train;

pub use client_data::ClientTensors;
pub use device::{parse_device, set_threads};
pub use error::TorchError;
pub use eval::{EvalStats, evaluate};
pub use freeze::with_frozen;
pub use local_model::LocalModel;
pub use proximal::Anchor;
pub use train::{ExtraLoss, TrainStats, train_local, train_local_with};
