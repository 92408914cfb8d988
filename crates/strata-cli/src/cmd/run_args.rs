//! The run's settings as flags, shared by `server` and `simulate`: a TOML config file
//! (or the reference Fashion-MNIST setup) with any flag overriding its key.

use std::path::PathBuf;

use anyhow::Context;
use strata_core::calibration::CalibrationMethod;
use strata_core::config::{DatasetKind, FeatureNorm, RunConfig};
use strata_core::evaluation::{EvalClients, EvalMoment};
use strata_core::method::Method;
use strata_core::partition_spec::PartitionSpec;

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// TOML file with the run's settings; flags override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub rounds: Option<u64>,
    /// Clients in the federation (the partition's size).
    #[arg(long)]
    pub clients: Option<u32>,
    /// Clients that must join before the first round (default: all clients); also the results
    /// a round needs, at most the cohort, unless --min-results is given.
    #[arg(long)]
    pub min_clients: Option<u32>,
    /// Fraction of the available clients picked to train each round (the cohort).
    #[arg(long)]
    pub fraction: Option<f64>,
    /// Training results a round needs to aggregate (at most the cohort).
    #[arg(long)]
    pub min_results: Option<u32>,
    /// Seconds to wait for min_clients to join before ending with an error (default: no limit).
    #[arg(long)]
    pub start_deadline: Option<u64>,
    /// The most training (and test) samples a client may report: its weight in an average,
    /// and its accuracy's in a round's, are at most this. Ignored where the server holds the data.
    #[arg(long)]
    pub max_samples_per_client: Option<u64>,
    /// How the server combines updates against hostile clients: none, norm-bound:M,
    /// norm-bound:median[*K], median, trimmed-mean[:BETA], krum:F, multi-krum:F[:M][:uniform].
    #[arg(long)]
    pub defense: Option<strata_core::defense::Defense>,
    /// The largest magnitude a value of an update may have; larger ones are refused
    /// (default 1e6).
    #[arg(long)]
    pub max_abs_value: Option<f64>,
    /// How tensors travel: X both ways, or up=X, down=Y, up=X,down=Y; X one of none, fp16,
    /// bf16, int8 (stochastic rounding) or, up only, topk:RATIO (with error feedback).
    #[arg(long, value_name = "SPEC")]
    pub compress: Option<strata_core::compression::CompressionConfig>,
    /// User-level differential privacy (DP-FedAvg): the noise multiplier z (noise standard
    /// deviation over the clipping bound). With --dp-target-epsilon too, training stops
    /// before a round that would spend more.
    #[arg(long)]
    pub dp_noise_multiplier: Option<f64>,
    /// The privacy budget ε; alone, the server picks the z that spends it over the run's rounds.
    #[arg(long)]
    pub dp_target_epsilon: Option<f64>,
    /// δ of the (ε, δ) guarantee (default 1e-5; below 1 / clients).
    #[arg(long)]
    pub dp_delta: Option<f64>,
    /// The L2 bound on each client's update (with --dp-target-quantile, the first round's;
    /// default 0.1).
    #[arg(long)]
    pub dp_clip: Option<f64>,
    /// Adaptive clipping: the share of updates the bound should leave unclipped (e.g. 0.5).
    #[arg(long)]
    pub dp_target_quantile: Option<f64>,
    /// Where updates are clipped: server, or client (the server never sees an unclipped update).
    #[arg(long)]
    pub dp_placement: Option<strata_core::privacy::ClipPlacement>,
    /// Secure aggregation (SecAgg+): the server learns each round's sum of the shared tensors'
    /// changes, never one client's. Settings under [secure_aggregation] in a config file.
    #[arg(long)]
    pub secure_aggregation: bool,
    /// SecAgg+'s neighbourhood size k (odd, at least 3) or a fraction of the round's clients.
    #[arg(long)]
    pub secagg_num_shares: Option<strata_core::secure_aggregation::CountOrFraction>,
    /// Shares that rebuild a secret: a count below k, or a fraction of k.
    #[arg(long)]
    pub secagg_threshold: Option<strata_core::secure_aggregation::CountOrFraction>,
    /// Who evaluates: cohort (the clients that train), all, or a fraction such as 0.1.
    #[arg(long)]
    pub eval_clients: Option<EvalClients>,
    /// Evaluate every N rounds (the final evaluation always runs).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// When clients evaluate: merged (as received, before training), trained, or both.
    #[arg(long)]
    pub eval_moment: Option<EvalMoment>,
    /// Seconds a round waits for results.
    #[arg(long)]
    pub round_timeout: Option<u64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Method (strategy and client half).
    #[arg(long, value_parser = method_parser())]
    pub method: Option<Method>,
    /// Dataset: fmnist, mnist, idx, cifar10, numpy (an .npz file or a directory of .npy
    /// files), csv (a table), synthetic.
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// Directory with the dataset's files (default: where Debian's package puts them).
    #[arg(long)]
    pub data_path: Option<PathBuf>,
    /// Split: iid, dirichlet:ALPHA, pathological:K, natural (by --group-column), file:PATH.
    #[arg(long)]
    pub split: Option<PartitionSpec>,
    /// A CSV table's label column (default: label).
    #[arg(long)]
    pub label_column: Option<String>,
    /// A CSV table's owner column: not a feature; `--split natural` keeps each owner's rows on
    /// one client.
    #[arg(long)]
    pub group_column: Option<String>,
    /// Model: cnn, cnn-bn, mlp, resnet8 (mlp-wide: 1 GB of parameters, for memory tests), or
    /// torchscript:PATH, a module saved by PyTorch's torch.jit.save.
    #[arg(long)]
    pub model: Option<String>,
    /// A TorchScript module's classifier, a glob over its parameter names (classifier.*);
    /// unset, its one linear layer with an output per class.
    #[arg(long)]
    pub head: Option<String>,
    /// Feature normalization: off, unit or sqrt-d (of the classifier's input), or layer-norm
    /// (after each ReLU of the body).
    #[arg(long)]
    pub feature_norm: Option<FeatureNorm>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub local_epochs: Option<usize>,
    /// Optimizer steps per round instead of epochs (`--local-epochs` alone goes back to epochs).
    #[arg(long)]
    pub local_steps: Option<usize>,
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Post-hoc classifier calibration after the last round: off or ccvr (methods with a global model).
    #[arg(long)]
    pub calibrate: Option<CalibrationMethod>,
    /// Also calibrate every N rounds, for evaluation only (needs --calibrate).
    #[arg(long)]
    pub calibrate_every: Option<u64>,
}

impl RunArgs {
    pub fn resolve(&self) -> anyhow::Result<RunConfig> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                RunConfig::from_toml(&text).with_context(|| format!("in config file {}", path.display()))?
            }
            None => RunConfig::reference_fmnist(),
        };
        let clients_given = self.clients.is_some();
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => {$(
                if let Some(v) = self.$field.clone() { $target = v; }
            )*};
        }
        set!(rounds => c.rounds, clients => c.clients, fraction => c.fraction, round_timeout => c.round_timeout_secs,
             seed => c.seed, method => c.method, dataset => c.data.dataset, split => c.data.split,
             model => c.model.name, feature_norm => c.model.feature_norm, lr => c.train.lr, batch_size => c.train.batch_size,
             local_epochs => c.train.local_epochs, momentum => c.train.momentum);
        if let Some(head) = &self.head {
            c.model.head = Some(head.clone());
        }
        if let Some(n) = self.min_results {
            c.min_results = Some(n);
        }
        if let Some(n) = self.max_samples_per_client {
            c.max_samples_per_client = Some(n);
        }
        if let Some(rule) = self.defense {
            c.defense.rule = rule;
        }
        if let Some(v) = self.max_abs_value {
            c.defense.max_abs_value = v;
        }
        if let Some(compression) = self.compress {
            c.compression = compression;
        }
        let p = &mut c.privacy;
        (p.noise_multiplier, p.target_epsilon, p.target_quantile) = (
            self.dp_noise_multiplier.or(p.noise_multiplier),
            self.dp_target_epsilon.or(p.target_epsilon),
            self.dp_target_quantile.or(p.target_quantile),
        );
        set!(dp_delta => c.privacy.delta, dp_clip => c.privacy.clipping_norm, dp_placement => c.privacy.placement);
        if self.secure_aggregation || self.secagg_num_shares.is_some() || self.secagg_threshold.is_some() {
            let secagg = c.secure_aggregation.get_or_insert_with(Default::default);
            if let Some(k) = self.secagg_num_shares {
                secagg.num_shares = k;
            }
            if let Some(t) = self.secagg_threshold {
                secagg.reconstruction_threshold = t;
            }
        }
        if let Some(secs) = self.start_deadline {
            c.liveness.start_deadline_secs = Some(secs);
        }
        if let Some(who) = self.eval_clients {
            c.evaluation.clients = who;
        }
        if let Some(n) = self.eval_every {
            c.evaluation.every = n;
        }
        if let Some(moment) = self.eval_moment {
            c.evaluation.moment = moment;
        }
        if let Some(m) = self.calibrate {
            c.calibration.method = m;
        }
        if let Some(n) = self.calibrate_every {
            c.calibration.every = n;
        }
        if let Some(p) = &self.data_path {
            c.data.path = Some(p.clone());
        }
        if let Some(column) = &self.label_column {
            c.data.label_column = Some(column.clone());
        }
        if let Some(column) = &self.group_column {
            c.data.group_column = Some(column.clone());
        }
        match self.local_steps {
            Some(k) => c.train.local_steps = Some(k),
            // Asking for epochs must not be silently overruled by a config's step count.
            None if self.local_epochs.is_some() => c.train.local_steps = None,
            None => {}
        }
        match self.min_clients {
            Some(m) => c.min_clients = m,
            // Changing the federation's size without saying how many must answer means all.
            None if clients_given => c.min_clients = c.clients,
            None => {}
        }
        c.validate()?;
        Ok(c)
    }
}

/// Methods by name, with every name listed in `--help` from [`Method::ALL`].
fn method_parser() -> impl clap::builder::TypedValueParser<Value = Method> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Method::ALL.map(Method::name)).try_map(|name| name.parse::<Method>())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn resolve(args: &[&str]) -> anyhow::Result<RunConfig> {
        Cli::try_parse_from(std::iter::once("strata").chain(args.iter().copied()))?.run.resolve()
    }

    #[test]
    fn flags_override_the_reference_setup() {
        let c =
            resolve(&["--clients", "3", "--split", "iid", "--rounds", "2", "--dataset", "synthetic", "--model", "mlp"])
                .unwrap();
        assert_eq!((c.clients, c.min_clients, c.rounds), (3, 3, 2));
        assert_eq!(c.data.split, PartitionSpec::Iid);
        assert_eq!(c.train.lr, 0.005);
    }

    #[test]
    fn local_steps_replace_epochs_until_epochs_are_asked_for() {
        let c = resolve(&["--local-steps", "10", "--batch-size", "32"]).unwrap();
        assert_eq!((c.train.local_steps, c.train.batch_size, c.train.local_epochs), (Some(10), 32, 1));
        assert_eq!(resolve(&[]).unwrap().train.local_steps, None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steps.toml");
        let mut file = RunConfig::reference_fmnist();
        file.train.local_steps = Some(10);
        std::fs::write(&path, file.to_toml()).unwrap();
        let config = path.to_str().unwrap();
        assert_eq!(resolve(&["--config", config]).unwrap().train.local_steps, Some(10));
        let c = resolve(&["--config", config, "--local-epochs", "2"]).unwrap();
        assert_eq!((c.train.local_steps, c.train.local_epochs), (None, 2));

        let err = resolve(&["--local-steps", "0"]).err().unwrap().to_string();
        assert!(err.contains("train.local_steps"), "{err}");
    }

    #[test]
    fn feature_norm_flag_takes_every_variant() {
        let c = resolve(&["--feature-norm", "layer-norm"]).unwrap();
        assert_eq!(c.model.feature_norm, FeatureNorm::LayerNorm);
        let err = resolve(&["--feature-norm", "ln"]).err().unwrap().to_string();
        assert!(err.contains("layer-norm"), "{err}");
    }

    #[test]
    fn fraction_alone_trains_that_fraction_and_contradictions_stop_the_run() {
        let c = resolve(&["--clients", "1000", "--fraction", "0.1"]).unwrap();
        assert_eq!((c.min_clients, c.cohort_size(1000), c.results_needed(100)), (1000, 100, 100));
        let err = resolve(&["--clients", "1000", "--fraction", "0.1", "--min-results", "200"]).err().unwrap();
        assert!(format!("{err:#}").contains("min_results (200)"), "{err:#}");
        let c = resolve(&["--eval-clients", "0.2", "--eval-every", "5", "--eval-moment", "both"]).unwrap();
        assert_eq!(c.evaluation.clients, EvalClients::Fraction(0.2));
        assert_eq!((c.evaluation.every, c.evaluation.moment), (5, EvalMoment::Both));
        let err = resolve(&["--eval-clients", "some"]).err().unwrap().to_string();
        assert!(err.contains("cohort, all"), "{err}");
    }

    #[test]
    fn bad_flags_name_the_problem() {
        let err = resolve(&["--split", "dirichlet:-1"]).err().unwrap().to_string();
        assert!(err.contains("dirichlet"), "{err}");
        let err = resolve(&["--clients", "2", "--min-clients", "5"]).err().unwrap().to_string();
        assert!(err.contains("min_clients"), "{err}");
        let err = resolve(&["--config", "/nonexistent/strata.toml"]).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/strata.toml"), "{err}");
    }
}
