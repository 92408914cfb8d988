//! Strata's vocabulary: the types every other crate speaks (tensors, masks, selections, the
//! run's configuration, records) and the small utilities they share (atomic files, threads).
//!
//! # Layout
//! - [`tensor`]: parameters as plain named f32 tensors, the currency between crates.
//! - [`config`]: the run's configuration (TOML), validated with messages that name the key.
//! - [`config_error`]: what is wrong with a configuration or one of its values.
//! - [`method`]: the federated methods as one type, and what server and client agree on.
//! - [`partition_spec`]: the partition rule as configured (applied by `strata-data`).
//! - [`defense`]: the robust-aggregation rule as configured (applied by `strata-methods`).
//! - [`privacy`]: user-level differential privacy as configured (`[privacy]`), and its report.
//! - [`compression`]: how tensors travel each way (`[compression]`), as configured.
//! - [`secure_aggregation`]: secure aggregation (SecAgg+) as configured (`[secure_aggregation]`).
//! - [`selection`]: choosing parameters by name pattern (body, head, norm layers).
//! - [`liveness`]: heartbeats, when a client is offline, when a round closes.
//! - [`evaluation`]: which clients evaluate, how often, at which moment.
//! - [`records`]: per-client, per-round metrics and their summaries.
//! - [`mask`]: bit-packed masks (FedCAC's critical parameters).
//! - [`calibration`]: settings of post-hoc classifier calibration (CCVR).
//! - [`backend`]: [`backend::ModelBackend`], the model computations the server leaves to a
//!   tensor library (the initial model, classifier retraining), and their plain inputs.
//! - [`parallel`]: spreading independent CPU work over the machine's threads.
//! - [`atomic_file`]: replacing a file whole or not at all.
//! - [`safetensors`]: tensor sets on disk, written atomically.

pub mod atomic_file;
pub mod backend;
pub mod calibration;
pub mod compression;
pub mod config;
pub mod config_error;
pub mod defense;
pub mod evaluation;
pub mod huge_pages;
pub mod liveness;
pub mod mask;
pub mod method;
pub mod parallel;
pub mod partition_spec;
pub mod parts;
pub mod privacy;
pub mod records;
pub mod safetensors;
pub mod secure_aggregation;
pub mod selection;
pub mod tensor;
