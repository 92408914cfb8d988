//! The run's configuration: what the server resolves from flags or TOML and hands to every client.
//!
//! The server sends the whole resolved config as TOML in its join reply, so that every
//! client trains with the same data split, model and hyper-parameters.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::calibration::CalibrationConfig;
use crate::compression::CompressionConfig;
use crate::config_error::{ConfigError, InvalidValue};
use crate::defense::Defense;
use crate::evaluation::EvaluationConfig;
use crate::liveness::LivenessConfig;
use crate::method::Method;
use crate::partition_spec::PartitionSpec;
use crate::privacy::{ClipPlacement, DpSgdConfig, PrivacyConfig};
use crate::secure_aggregation::SecAggConfig;

/// Everything that defines a federated run. Serialized as `config.toml` in the run's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Number of training rounds.
    pub rounds: u64,
    /// Number of clients in the federation (size of the partition).
    pub clients: u32,
    /// Clients that must have joined before round 0 starts; also the training results a round
    /// needs to count (at most the cohort) unless `min_results` says otherwise.
    pub min_clients: u32,
    /// Fraction of the joined clients picked to train each round (the cohort), drawn among
    /// the available ones.
    pub fraction: f64,
    /// Training results a round needs to aggregate (and, with `liveness.round_closes =
    /// "min-results"`, to close early); default: `min_clients`, at most the cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_results: Option<u32>,
    /// The most training (and test) samples a client may report about itself, so that no
    /// client can weigh more than this in an average (or in a round's accuracy). A server
    /// that holds the data checks each client against its own partition instead; unset (and
    /// without the data): no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_samples_per_client: Option<u64>,
    /// Seconds a round waits for results before going on without the missing clients.
    pub round_timeout_secs: u64,
    /// Seed of every random choice: partition, client sampling, model init, shuffling.
    pub seed: u64,
    /// The method (strategy plus client behaviour), e.g. `fedavg`.
    pub method: Method,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    /// Hyper-parameters of the methods; each method reads its own.
    #[serde(default)]
    pub methods: MethodParams,
    /// Post-hoc classifier calibration (CCVR); off unless set.
    #[serde(default, skip_serializing_if = "CalibrationConfig::is_off")]
    pub calibration: CalibrationConfig,
    /// Heartbeats, when a client counts as offline, and when a round closes.
    #[serde(default, skip_serializing_if = "LivenessConfig::is_default")]
    pub liveness: LivenessConfig,
    /// Which clients evaluate, how often, and at which moment.
    #[serde(default, skip_serializing_if = "EvaluationConfig::is_default")]
    pub evaluation: EvaluationConfig,
    /// What bounds a single client's influence on the shared model.
    #[serde(default, skip_serializing_if = "DefenseConfig::is_default")]
    pub defense: DefenseConfig,
    /// User-level differential privacy (DP-FedAvg); off unless set.
    #[serde(default, skip_serializing_if = "PrivacyConfig::is_default")]
    pub privacy: PrivacyConfig,
    /// Example-level differential privacy in each client's training (DP-SGD); off unless set.
    #[serde(default, skip_serializing_if = "DpSgdConfig::is_default")]
    pub dp_sgd: DpSgdConfig,
    /// Secure aggregation (SecAgg+): the server learns the round's sum, never one update; off
    /// unless the table is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_aggregation: Option<SecAggConfig>,
    /// How tensors travel each way (`[compression]`); plain f32 unless set.
    #[serde(default, skip_serializing_if = "CompressionConfig::is_default")]
    pub compression: CompressionConfig,
}

/// What bounds a single client's influence on the shared model (`[defense]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefenseConfig {
    /// How the server combines the round's updates of the shared tensors: `none` (the method's
    /// sample-weighted mean), `norm-bound:M`, `norm-bound:median[*K]`, `median`,
    /// `trimmed-mean[:BETA]`, `krum:F`, `multi-krum:F[:M][:uniform]`.
    pub rule: Defense,
    /// The largest magnitude a value of an update may have: an update holding a larger one is
    /// refused, so that no one result can push the shared model out of f32's range.
    pub max_abs_value: f64,
}

impl DefenseConfig {
    /// Far above any trained weight or normalization statistic of the built-in models, and
    /// far below where sums of squares leave f32.
    pub const DEFAULT_MAX_ABS_VALUE: f64 = 1e6;

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for DefenseConfig {
    fn default() -> Self {
        Self { rule: Defense::None, max_abs_value: Self::DEFAULT_MAX_ABS_VALUE }
    }
}

/// Every method's hyper-parameters, with the defaults of the papers' reference code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodParams {
    /// FedProx's μ: weight of the proximal term (μ/2)·||w − w_global||².
    pub proximal_mu: f64,
    /// Ditto's λ: pull of the personal model towards the global one.
    pub ditto_lambda: f64,
    /// Epochs Ditto trains the personal model each round (PFLlib's `plocal_epochs`).
    pub ditto_personal_epochs: usize,
    /// Epochs FedRep trains the head (body frozen) before training the body.
    pub fedrep_head_epochs: usize,
    /// FedCAC's τ: share of each tensor's entries marked critical.
    pub fedcac_tau: f64,
    /// FedCAC's β: rounds over which the collaboration threshold rises to the maximum overlap.
    pub fedcac_beta: f64,
}

impl Default for MethodParams {
    fn default() -> Self {
        Self {
            proximal_mu: 0.01,
            ditto_lambda: 0.1,
            ditto_personal_epochs: 1,
            fedrep_head_epochs: 1,
            fedcac_tau: 0.5,
            fedcac_beta: 100.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetKind,
    /// Directory (IDX, CIFAR-10, NumPy) or file (`.npz`) holding the data; `None` takes the
    /// dataset's default location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// How samples are split over clients, e.g. `dirichlet:0.1` or `file:splits.json`.
    pub split: PartitionSpec,
    /// Share of each client's samples used for training; the rest is its test split.
    #[serde(default = "default_train_fraction")]
    pub train_fraction: f64,
    #[serde(default)]
    pub synthetic: SyntheticConfig,
    /// A table's label column (`csv`; default `label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// A table's owner column (`csv`): not a feature; the `natural` split keeps each owner's
    /// samples on one client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_column: Option<String>,
    /// Image folders' `[height, width]` (`images`; default: the first image's); a LEAF
    /// sample's, when its values are an image (`leaf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[u32; 2]>,
    /// Image folders' channels, 1 or 3 (`images`; default: 3 when the first image has colour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
}

/// Datasets by name. IDX covers any MNIST-format dataset a user brings (EMNIST, KMNIST, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    Fmnist,
    Mnist,
    Idx,
    Cifar10,
    /// NumPy arrays: an `.npz` archive or a directory of `.npy` files.
    Numpy,
    /// A CSV table with a label column.
    Csv,
    /// Image folders, one per class (torchvision's ImageFolder layout).
    Images,
    /// LEAF's JSON files, users → samples (the users own them: `split = "natural"`).
    Leaf,
    Synthetic,
}

impl DatasetKind {
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Fmnist => "fmnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Idx => "idx",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Numpy => "numpy",
            DatasetKind::Csv => "csv",
            DatasetKind::Images => "images",
            DatasetKind::Leaf => "leaf",
            DatasetKind::Synthetic => "synthetic",
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fmnist" | "fashion-mnist" | "fashion_mnist" => Ok(DatasetKind::Fmnist),
            "mnist" => Ok(DatasetKind::Mnist),
            "idx" => Ok(DatasetKind::Idx),
            "cifar10" | "cifar-10" => Ok(DatasetKind::Cifar10),
            "synthetic" => Ok(DatasetKind::Synthetic),
            "numpy" | "npz" | "npy" => Ok(DatasetKind::Numpy),
            "csv" => Ok(DatasetKind::Csv),
            "images" | "image-folder" => Ok(DatasetKind::Images),
            "leaf" => Ok(DatasetKind::Leaf),
            other => Err(ConfigError::Invalid(format!(
                "unknown dataset `{other}`: expected fmnist, mnist, idx, cifar10, numpy, csv, images, leaf or \
                 synthetic"
            ))),
        }
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// FedProx's Synthetic(α, β): α spreads the labelling functions, β the inputs, across groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    pub alpha: f64,
    pub beta: f64,
    /// Total samples over all groups.
    pub samples: usize,
    /// Input dimension (60 in FedProx).
    pub dim: usize,
    pub classes: usize,
    /// Number of distinct generating distributions; sample i comes from group i mod groups.
    pub groups: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self { alpha: 0.0, beta: 0.0, samples: 6000, dim: 60, classes: 10, groups: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Registered model name (`cnn` is PFLlib's FedAvgCNN; `cnn-bn`, `mlp`, `resnet8`, ...), or
    /// `torchscript:PATH`, a module saved by PyTorch's `torch.jit.save`.
    pub name: String,
    /// Feature normalization of the head's input, or layer norm in the body (Zhang et al.,
    /// arXiv:2308.09565).
    #[serde(default)]
    pub feature_norm: FeatureNorm,
    /// The classifier's parameters, a glob over the model's names (`classifier.*`): one linear
    /// layer, its weight `[classes, features]` and bias `[classes]`. Registered models name it
    /// `head.*`; for a TorchScript module, unset means its one linear layer with an output per
    /// class (see `parts.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

impl ModelConfig {
    /// The registered model `name`, without a head pattern or feature normalization.
    pub fn named(name: &str) -> Self {
        Self { name: name.to_string(), feature_norm: FeatureNorm::Off, head: None }
    }

    /// The module file of a `torchscript:PATH` model.
    pub fn torchscript_path(&self) -> Option<&str> {
        self.name.strip_prefix(TORCHSCRIPT_PREFIX)
    }
}

/// The model-name prefix of a TorchScript module file.
pub const TORCHSCRIPT_PREFIX: &str = "torchscript:";

/// Per-sample normalization of the features (Zhang et al., arXiv:2308.09565): `unit` and
/// `sqrt-d` scale the penultimate feature h before the classifier, h ← s·h/‖h‖₂; `layer-norm`
/// normalizes after every activation of the body instead. None of them adds a parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureNorm {
    #[default]
    Off,
    /// s = 1 (the authors' CNN code).
    Unit,
    /// s = √d, d the feature dimension (the authors' ResNet code).
    SqrtD,
    /// The paper's LN variant: layer norm without affine parameters (GroupNorm with one group
    /// over each sample's C×H×W, or its features) after each ReLU of the body.
    LayerNorm,
}

impl std::str::FromStr for FeatureNorm {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(FeatureNorm::Off),
            "unit" => Ok(FeatureNorm::Unit),
            "sqrt-d" => Ok(FeatureNorm::SqrtD),
            "layer-norm" => Ok(FeatureNorm::LayerNorm),
            other => {
                Err(InvalidValue(format!("unknown feature norm `{other}`: expected off, unit, sqrt-d or layer-norm")))
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub lr: f64,
    pub batch_size: usize,
    /// Full passes over the training samples per round; ignored when `local_steps` is set.
    pub local_epochs: usize,
    /// Optimizer steps per round instead of epochs (Zhang et al.'s protocol: 10 steps), with
    /// batches continuing across epoch boundaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_steps: Option<usize>,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub weight_decay: f64,
}

fn default_train_fraction() -> f64 {
    0.75
}

impl TrainConfig {
    /// The same settings for a phase that counts whole epochs (FedRep's head, Ditto's personal
    /// model), even when the shared model trains for `local_steps`.
    pub fn for_epochs(&self, epochs: usize) -> Self {
        Self { local_epochs: epochs.max(1), local_steps: None, ..self.clone() }
    }
}

impl RunConfig {
    /// PFLlib's reference setup for Fashion-MNIST: FedAvgCNN, 20 clients, Dirichlet(0.1),
    /// SGD lr 0.005, batch 10, one local epoch, every client every round.
    pub fn reference_fmnist() -> Self {
        Self {
            rounds: 20,
            clients: 20,
            min_clients: 20,
            fraction: 1.0,
            min_results: None,
            max_samples_per_client: None,
            round_timeout_secs: 600,
            seed: 1,
            method: Method::FedAvg,
            data: DataConfig {
                dataset: DatasetKind::Fmnist,
                path: None,
                split: PartitionSpec::Dirichlet { alpha: 0.1 },
                train_fraction: default_train_fraction(),
                synthetic: SyntheticConfig::default(),
                label_column: None,
                group_column: None,
                image_size: None,
                channels: None,
            },
            model: ModelConfig::named("cnn"),
            train: TrainConfig {
                lr: 0.005,
                batch_size: 10,
                local_epochs: 1,
                local_steps: None,
                momentum: 0.0,
                weight_decay: 0.0,
            },
            methods: MethodParams::default(),
            calibration: CalibrationConfig::default(),
            liveness: LivenessConfig::default(),
            evaluation: EvaluationConfig::default(),
            defense: DefenseConfig::default(),
            privacy: PrivacyConfig::default(),
            dp_sgd: DpSgdConfig::default(),
            secure_aggregation: None,
            compression: CompressionConfig::default(),
        }
    }

    /// The robust rule fits the method and the cohort.
    fn validate_defense(&self) -> Result<(), ConfigError> {
        let rule = self.defense.rule;
        rule.validate()?;
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        match (self.method, rule) {
            (_, Defense::None) => {}
            (Method::Local, _) => {
                return bad(format!("defense.rule `{rule}` has nothing to defend: method `local` shares no tensor"));
            }
            (Method::FedCac, Defense::NormBound(_)) => {}
            (Method::FedCac, _) => {
                return bad(format!(
                    "defense.rule `{rule}` does not compose with fedcac, which builds each client's model from \
                     individual updates; use norm-bound:M or norm-bound:median"
                ));
            }
            _ => {}
        }
        let cohort = self.cohort_size(self.clients as usize);
        if rule.min_updates() > cohort {
            return bad(format!(
                "defense.rule `{rule}` needs at least {} updates a round (n > 2f + 2), but the cohort is {cohort} \
                 (fraction {} of {} clients); lower f or raise fraction",
                rule.min_updates(),
                self.fraction,
                self.clients
            ));
        }
        Ok(())
    }

    /// `[privacy]` fits the method, the defense, calibration and the cohort.
    fn validate_privacy(&self) -> Result<(), ConfigError> {
        let privacy = &self.privacy;
        privacy.validate().map_err(ConfigError::Invalid)?;
        if !privacy.is_on() {
            return Ok(());
        }
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        match self.method {
            Method::Local => {
                return bad("privacy: method `local` shares nothing, so there is nothing to make private".into());
            }
            Method::FedCac => {
                return bad("privacy: fedcac builds each client's model from individual updates, which user-level DP \
                     never releases; use fedavg, fedprox, fedper, fedrep, fedbn or ditto"
                    .into());
            }
            _ => {}
        }
        if self.defense.rule != Defense::None {
            return bad(format!(
                "privacy: defense.rule `{}` does not compose with differential privacy, whose sensitivity assumes \
                 an average of clipped updates (the clip already bounds each client's influence); remove one",
                self.defense.rule
            ));
        }
        if !self.calibration.is_off() {
            return bad(
                "privacy: CCVR calibration would send per-class feature statistics without noise, outside the \
                 budget; turn calibration off with privacy on"
                    .into(),
            );
        }
        if self.min_results.is_some() {
            return bad(
                "privacy: every round releases a noised model whatever the number of results (skipping a round \
                 would reveal how many clients answered); remove min_results"
                    .into(),
            );
        }
        if privacy.delta >= 1.0 / f64::from(self.clients) {
            return bad(format!(
                "privacy.delta ({}) must be below 1 / clients ({}): a larger δ allows releasing one client's data outright",
                privacy.delta,
                1.0 / f64::from(self.clients)
            ));
        }
        if let Some(z) = privacy.noise_multiplier {
            privacy.sum_noise_multiplier(z, self.expected_cohort()).map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }

    /// `[compression]` is well formed and fits what else checks the uploads.
    fn validate_compression(&self) -> Result<(), ConfigError> {
        let compression = &self.compression;
        compression.validate()?;
        if !compression.up.is_on() {
            return Ok(());
        }
        let bad = |msg: &str| Err(ConfigError::Invalid(format!("compression.up `{}`: {msg}", compression.up)));
        if self.secure_aggregation.is_some() {
            return bad("under secure aggregation a client uploads a masked vector of integers, not tensors; \
                        remove one");
        }
        if self.privacy.is_on() && self.privacy.placement == ClipPlacement::Client {
            return bad("with privacy.placement = \"client\" the server refuses an update past the clip bound, \
                        and rounding after the clip may cross it; clip on the server (placement = \"server\") or \
                        upload in f32");
        }
        Ok(())
    }

    /// `[secure_aggregation]` fits the method, the defense, privacy and the cohort.
    fn validate_secure_aggregation(&self) -> Result<(), ConfigError> {
        let Some(secagg) = &self.secure_aggregation else { return Ok(()) };
        secagg.validate().map_err(ConfigError::Invalid)?;
        let bad = |msg: String| Err(ConfigError::Invalid(format!("secure_aggregation: {msg}")));
        match self.method {
            Method::Local => return bad("method `local` shares nothing, so there is nothing to aggregate".into()),
            Method::FedCac => {
                return bad("fedcac builds each client's model from the individual updates of the clients \
                            like it, which secure aggregation hides from the server"
                    .into());
            }
            _ => {}
        }
        if self.defense.rule != Defense::None {
            return bad(format!(
                "defense.rule `{}` needs every client's update, which secure aggregation hides from the server; \
                 the clipping range bounds what one client adds instead",
                self.defense.rule
            ));
        }
        if self.privacy.is_on() && self.privacy.placement != ClipPlacement::Client {
            return bad("with [privacy], updates are clipped on the server, which never sees them under secure \
                        aggregation; set privacy.placement = \"client\""
                .into());
        }
        // Under [privacy] each client is drawn independently: a round may hold all of them.
        let (cohort, largest) = match self.privacy.is_on() {
            true => (self.expected_cohort().round() as usize, self.clients as usize),
            false => (self.cohort_size(self.clients as usize), self.cohort_size(self.clients as usize)),
        };
        if cohort < 2 {
            return bad(format!(
                "a round's cohort of {cohort} client would be its own sum; secure aggregation needs at least 2 \
                 (raise fraction or clients)"
            ));
        }
        let (q, m) = (u64::from(secagg.quantization_range), secagg.modulus_range);
        if (largest as u64).saturating_mul(q) >= m {
            return bad(format!(
                "{largest} clients × quantization_range {q} reaches modulus_range {m}: the sum would wrap; \
                 lower quantization_range or raise modulus_range"
            ));
        }
        Ok(())
    }

    /// `[dp_sgd]` fits the method and calibration.
    fn validate_dp_sgd(&self) -> Result<(), ConfigError> {
        self.dp_sgd.validate().map_err(ConfigError::Invalid)?;
        if !self.dp_sgd.is_on() {
            return Ok(());
        }
        let bad = |msg: &str| Err(ConfigError::Invalid(format!("dp_sgd: {msg}")));
        match self.method {
            Method::Local => return bad("method `local` shares nothing, so there is nothing to make private"),
            Method::FedCac => {
                return bad("fedcac's masks come from each client's data without noise; use another method");
            }
            _ => {}
        }
        if !self.calibration.is_off() {
            return bad("CCVR calibration would send per-class feature statistics without noise; turn it off");
        }
        Ok(())
    }

    /// Under `[privacy]`, the clients a round samples on average (`fraction × clients`): the
    /// fixed denominator of the noised mean.
    pub fn expected_cohort(&self) -> f64 {
        self.fraction * f64::from(self.clients)
    }

    /// Clients that train in a round when `available` clients can be picked.
    pub fn cohort_size(&self, available: usize) -> usize {
        ((self.fraction * available as f64).ceil() as usize).clamp(available.min(1), available)
    }

    /// Training results a round of `training` clients needs to aggregate.
    pub fn results_needed(&self, training: usize) -> usize {
        (self.min_results.unwrap_or(self.min_clients) as usize).min(training)
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: RunConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the settings against each other; every message names the key to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError::Invalid(msg));
        if self.rounds == 0 {
            return bad("rounds must be at least 1".into());
        }
        if self.clients == 0 {
            return bad("clients must be at least 1".into());
        }
        if self.min_clients == 0 || self.min_clients > self.clients {
            return bad(format!(
                "min_clients must be between 1 and clients ({}), got {}",
                self.clients, self.min_clients
            ));
        }
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return bad(format!("fraction must be in (0, 1], got {}", self.fraction));
        }
        if self.max_samples_per_client == Some(0) {
            return bad("max_samples_per_client must be at least 1".into());
        }
        if let Some(needed) = self.min_results {
            let cohort = self.cohort_size(self.clients as usize);
            if needed == 0 || needed as usize > cohort {
                return bad(format!(
                    "min_results ({needed}) must be between 1 and the cohort: fraction {} of {} clients trains {cohort} \
                     a round; lower min_results or raise fraction",
                    self.fraction, self.clients
                ));
            }
        }
        let max_abs = self.defense.max_abs_value;
        if !(max_abs.is_finite() && max_abs > 0.0) {
            return bad(format!("defense.max_abs_value must be a positive number, got {max_abs}"));
        }
        self.validate_defense()?;
        self.validate_privacy()?;
        self.validate_dp_sgd()?;
        self.validate_secure_aggregation()?;
        self.validate_compression()?;
        if self.round_timeout_secs == 0 {
            return bad("round_timeout_secs must be at least 1".into());
        }
        if !(self.data.train_fraction > 0.0 && self.data.train_fraction < 1.0) {
            return bad(format!("data.train_fraction must be in (0, 1), got {}", self.data.train_fraction));
        }
        if !(self.train.lr.is_finite() && self.train.lr > 0.0) {
            return bad(format!("train.lr must be a positive number, got {}", self.train.lr));
        }
        if self.train.batch_size == 0 {
            return bad("train.batch_size must be at least 1".into());
        }
        if self.train.local_epochs == 0 {
            return bad("train.local_epochs must be at least 1".into());
        }
        if self.train.local_steps == Some(0) {
            return bad("train.local_steps must be at least 1 (or left out to train local_epochs epochs)".into());
        }
        if matches!(self.data.dataset, DatasetKind::Idx | DatasetKind::Cifar10) && self.data.path.is_none() {
            return bad(format!("data.path is required for dataset `{}`", self.data.dataset));
        }
        if !self.calibration.is_off() && !self.method.has_global_model() {
            let with: Vec<&str> = Method::ALL.into_iter().filter(|m| m.has_global_model()).map(Method::name).collect();
            return bad(format!(
                "calibration needs a method with a global model that clients evaluate ({}); `{}` has none",
                with.join(", "),
                self.method
            ));
        }
        let m = &self.methods;
        if !(m.fedcac_tau > 0.0 && m.fedcac_tau <= 1.0) {
            return bad(format!("methods.fedcac_tau must be in (0, 1], got {}", m.fedcac_tau));
        }
        if !(m.fedcac_beta.is_finite() && m.fedcac_beta > 0.0) {
            return bad(format!("methods.fedcac_beta must be positive, got {}", m.fedcac_beta));
        }
        if !(m.proximal_mu >= 0.0 && m.ditto_lambda >= 0.0) {
            return bad("methods.proximal_mu and methods.ditto_lambda must be >= 0".into());
        }
        self.calibration.validate()?;
        self.liveness.validate()?;
        self.evaluation.validate()?;
        let s = &self.data.synthetic;
        if self.data.dataset == DatasetKind::Synthetic
            && (s.samples == 0 || s.dim == 0 || s.classes < 2 || s.groups == 0)
        {
            return bad("data.synthetic needs samples >= 1, dim >= 1, classes >= 2 and groups >= 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::CalibrationMethod;
    use crate::secure_aggregation::CountOrFraction;

    #[test]
    fn reference_config_round_trips_through_toml() {
        let config = RunConfig::reference_fmnist();
        let text = config.to_toml();
        assert_eq!(RunConfig::from_toml(&text).unwrap(), config);
        assert!(text.contains("split = \"dirichlet:0.1\""), "{text}");
    }

    #[test]
    fn validation_names_the_key_to_fix() {
        let mut config = RunConfig::reference_fmnist();
        config.min_clients = 30;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("min_clients"), "{err}");

        let mut config = RunConfig::reference_fmnist();
        config.fraction = 0.0;
        assert!(config.validate().unwrap_err().to_string().contains("fraction"));
    }

    #[test]
    fn secure_aggregation_must_fit_the_method_defense_privacy_and_cohort() {
        let secure = |edit: &dyn Fn(&mut RunConfig)| {
            let mut config = RunConfig::reference_fmnist();
            config.secure_aggregation = Some(SecAggConfig::default());
            edit(&mut config);
            config.validate().map_err(|e| e.to_string())
        };
        assert!(secure(&|_| {}).is_ok());
        assert!(secure(&|c| c.method = Method::FedPer).is_ok());
        // With user-level DP: clients clip (the server never sees an update to clip).
        let private = |c: &mut RunConfig| {
            c.privacy.noise_multiplier = Some(1.0);
            c.privacy.placement = ClipPlacement::Client;
        };
        assert!(secure(&private).is_ok());
        // CCVR's statistics are summed securely too.
        assert!(secure(&|c| c.calibration.method = CalibrationMethod::Ccvr).is_ok());
        type Edit = &'static dyn Fn(&mut RunConfig);
        let refused: [(Edit, &str); 9] = [
            (&|c| c.method = Method::Local, "shares nothing"),
            (&|c| c.method = Method::FedCac, "individual updates"),
            (&|c| c.defense.rule = Defense::Median, "needs every client's update"),
            (&|c| c.privacy.noise_multiplier = Some(1.0), "privacy.placement = \"client\""),
            // Poisson rounds may draw every client: 20 × 2^28 wraps 2^32 though 0.1 × 20 would not.
            (
                &|c| {
                    c.privacy.noise_multiplier = Some(1.0);
                    c.privacy.placement = ClipPlacement::Client;
                    c.fraction = 0.1;
                    c.secure_aggregation.as_mut().unwrap().quantization_range = 1 << 28;
                },
                "20 clients × quantization_range",
            ),
            (
                &|c| {
                    c.privacy.noise_multiplier = Some(1.0);
                    c.privacy.placement = ClipPlacement::Client;
                    c.fraction = 0.05;
                },
                "at least 2",
            ),
            (&|c| c.fraction = 0.05, "at least 2"),
            (&|c| c.secure_aggregation.as_mut().unwrap().quantization_range = 1 << 30, "would wrap"),
            (&|c| c.secure_aggregation.as_mut().unwrap().num_shares = CountOrFraction::Count(4), "num_shares"),
        ];
        for (edit, named) in refused {
            let err = secure(edit).unwrap_err();
            assert!(err.contains(named), "expected `{named}` in: {err}");
        }
        // On, it reads and writes under [secure_aggregation]; off, it is not written at all.
        let mut config = RunConfig::reference_fmnist();
        assert!(!config.to_toml().contains("secure_aggregation"));
        config.secure_aggregation = Some(SecAggConfig { max_weight: Some(500.0), ..SecAggConfig::default() });
        let text = config.to_toml();
        assert!(text.contains("[secure_aggregation]") && text.contains("max_weight = 500"), "{text}");
        assert_eq!(RunConfig::from_toml(&text).unwrap(), config);
        let empty =
            RunConfig::from_toml(&format!("{}\n[secure_aggregation]\n", RunConfig::reference_fmnist().to_toml()));
        assert_eq!(empty.unwrap().secure_aggregation, Some(SecAggConfig::default()));
    }

    #[test]
    fn privacy_must_fit_the_method_defense_calibration_and_cohort() {
        let private = |edit: &dyn Fn(&mut RunConfig)| {
            let mut config = RunConfig::reference_fmnist();
            config.privacy.noise_multiplier = Some(1.0);
            edit(&mut config);
            config.validate().map_err(|e| e.to_string())
        };
        assert!(private(&|_| {}).is_ok());
        assert!(private(&|c| c.method = Method::FedPer).is_ok());
        type Edit = &'static dyn Fn(&mut RunConfig);
        let refused: [(Edit, &str); 7] = [
            (&|c| c.method = Method::Local, "shares nothing"),
            (&|c| c.method = Method::FedCac, "fedcac"),
            (&|c| c.defense.rule = Defense::Median, "defense.rule"),
            (&|c| c.calibration.method = CalibrationMethod::Ccvr, "calibration"),
            (&|c| c.min_results = Some(5), "min_results"),
            (&|c| c.privacy.delta = 0.1, "1 / clients"),
            // 20 expected clients: the default σ_b = 1 needs z < 2.
            (
                &|c| (c.privacy.target_quantile, c.privacy.noise_multiplier) = (Some(0.5), Some(2.5)),
                "clipped_count_stddev",
            ),
        ];
        for (edit, needle) in refused {
            let err = private(edit).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // Off, none of it matters; on, it reads and writes under [privacy].
        let mut config = RunConfig::reference_fmnist();
        config.method = Method::FedCac;
        config.privacy.delta = 0.5;
        assert!(config.validate().is_ok());
        let mut config = RunConfig::reference_fmnist();
        config.privacy.target_epsilon = Some(3.0);
        config.privacy.placement = crate::privacy::ClipPlacement::Client;
        let text = config.to_toml();
        assert!(text.contains("[privacy]") && text.contains("placement = \"client\""), "{text}");
        assert_eq!(RunConfig::from_toml(&text).unwrap(), config);
        assert!(!RunConfig::reference_fmnist().to_toml().contains("privacy"));
    }

    #[test]
    fn a_defense_must_fit_the_method_and_the_cohort() {
        let with = |method: Method, rule: &str| {
            let mut config = RunConfig { method, ..RunConfig::reference_fmnist() };
            config.defense.rule = rule.parse().unwrap();
            config.validate().map_err(|e| e.to_string())
        };
        assert!(with(Method::FedAvg, "krum:4").is_ok());
        assert!(with(Method::FedPer, "trimmed-mean:0.2").is_ok());
        assert!(with(Method::FedCac, "norm-bound:median").is_ok());
        assert!(with(Method::FedCac, "median").unwrap_err().contains("does not compose with fedcac"));
        assert!(with(Method::Local, "median").unwrap_err().contains("shares no tensor"));
        // 20 clients: Krum with f = 9 needs 21.
        let e = with(Method::FedAvg, "krum:9").unwrap_err();
        assert!(e.contains("at least 21 updates") && e.contains("cohort is 20"), "{e}");
        // The rule reads and writes as its spec in TOML, under [defense].
        let mut config = RunConfig::reference_fmnist();
        config.defense.rule = "multi-krum:2:10:uniform".parse().unwrap();
        let text = config.to_toml();
        assert!(text.contains("[defense]") && text.contains("rule = \"multi-krum:2:10:uniform\""), "{text}");
        assert_eq!(RunConfig::from_toml(&text).unwrap(), config);
        assert!(!RunConfig::reference_fmnist().to_toml().contains("defense"), "the default stays out of the file");
    }

    #[test]
    fn local_steps_is_optional_and_round_trips() {
        let config = RunConfig::reference_fmnist();
        assert!(!config.to_toml().contains("local_steps"), "unset steps stay out of the file");
        let mut steps = config.clone();
        steps.train.local_steps = Some(10);
        let text = steps.to_toml();
        assert!(text.contains("local_steps = 10"), "{text}");
        assert_eq!(RunConfig::from_toml(&text).unwrap(), steps);
        let without = text.replace("local_steps = 10\n", "");
        assert_eq!(RunConfig::from_toml(&without).unwrap(), config);
    }

    #[test]
    fn zero_local_steps_are_refused() {
        let mut config = RunConfig::reference_fmnist();
        config.train.local_steps = Some(0);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("train.local_steps"), "{err}");
        config.train.local_steps = Some(1);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn feature_norm_has_the_same_spellings_in_toml_and_flags() {
        for (text, norm) in [
            ("off", FeatureNorm::Off),
            ("unit", FeatureNorm::Unit),
            ("sqrt-d", FeatureNorm::SqrtD),
            ("layer-norm", FeatureNorm::LayerNorm),
        ] {
            assert_eq!(text.parse::<FeatureNorm>(), Ok(norm));
            let mut config = RunConfig::reference_fmnist();
            config.model.feature_norm = norm;
            let toml = config.to_toml();
            assert!(toml.contains(&format!("feature_norm = \"{text}\"")), "{toml}");
            assert_eq!(RunConfig::from_toml(&toml).unwrap(), config);
        }
        let err = "layernorm".parse::<FeatureNorm>().unwrap_err();
        assert!(err.to_string().contains("layer-norm"), "{err}");
    }

    #[test]
    fn fraction_sets_the_cohort_and_min_clients_does_not_override_it() {
        let mut config = RunConfig { clients: 1000, min_clients: 1000, fraction: 0.1, ..RunConfig::reference_fmnist() };
        assert!(config.validate().is_ok());
        assert_eq!(config.cohort_size(1000), 100);
        assert_eq!(config.cohort_size(7), 1, "at least one client trains");
        assert_eq!(config.cohort_size(0), 0);
        assert_eq!(config.results_needed(100), 100, "min_clients is capped at the cohort");
        config.min_results = Some(80);
        assert_eq!(config.results_needed(100), 80);
        config.min_results = Some(101);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("min_results (101)") && err.contains("trains 100"), "{err}");
        config.min_results = Some(0);
        assert!(config.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = RunConfig::reference_fmnist().to_toml().replace("rounds =", "roundz =");
        assert!(RunConfig::from_toml(&text).is_err());
    }
}
