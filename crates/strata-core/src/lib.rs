//! Strata's foundation: everything that needs neither libtorch nor gRPC.
//!
//! # Layout
//! - [`tensor`]: parameters as plain named f32 tensors, the currency between crates.
//! - [`config`]: the run's configuration (TOML), validated with messages that name the key.
//! - [`data`]: dataset files on disk (IDX, CIFAR-10 binary) and the synthetic generator.
//! - [`partition`]: splitting samples over clients (iid, Dirichlet, pathological, file).
//! - [`selection`]: choosing parameters by name pattern (body, head, norm layers).
//! - [`liveness`]: heartbeats, when a client is offline, when a round closes.
//! - [`evaluation`]: which clients evaluate, how often, at which moment.
//! - [`records`]: per-client, per-round metrics and their summaries.
//! - [`mask`]: bit-packed masks (FedCAC's critical parameters).
//! - [`fedcac`]: FedCAC's arithmetic: sensitivities, critical masks, overlaps, threshold, combination.
//! - [`ccvr`]: CCVR's statistics: per-client class moments, exact pooling, sampling virtual features.
//! - [`calibration`]: settings of post-hoc classifier calibration (CCVR).
//! - [`backend`]: [`backend::ModelBackend`], the model computations the server leaves to a
//!   tensor library (the initial model, classifier retraining), and their plain inputs.
//! - [`parallel`]: spreading independent CPU work over the machine's threads.
//! - [`atomic_file`]: replacing a file whole or not at all.
//! - [`safetensors`]: tensor sets on disk, written atomically.
//! - [`setting`]: method settings carried in tasks.

pub mod atomic_file;
pub mod backend;
pub mod calibration;
pub mod ccvr;
pub mod config;
pub mod data;
pub mod evaluation;
pub mod fedcac;
pub mod liveness;
pub mod mask;
pub mod parallel;
pub mod partition;
pub mod records;
pub mod safetensors;
pub mod selection;
pub mod setting;
pub mod tensor;
