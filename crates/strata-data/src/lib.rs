//! Datasets on disk, read without libtorch: IDX (MNIST, Fashion-MNIST, EMNIST, KMNIST, ...),
//! CIFAR-10 binary, NumPy arrays, and FedProx's synthetic generator.
//!
//! Every dataset comes out in the merged index space: the official train set first, then the
//! official test set. Partitions index into that space.
//!
//! # Layout
//! - [`idx`]: IDX files (plain or gzip) and the four-file MNIST layout.
//! - [`cifar`]: CIFAR-10's binary batches.
//! - [`folders`]: image folders (`ROOT/[train|test]/<class>/<image>`, PNG or JPEG).
//! - [`numpy`]: `.npz` archives and `.npy` files (`x_train`, `y_train`, `x_test`, `y_test`).
//! - [`leaf`]: LEAF's JSON layout (users → samples; the users are the samples' owners).
//! - [`table`]: CSV tables with a label column and, optionally, an owner (group) column.
//! - [`synthetic`]: FedProx's Synthetic(α, β) generator.
//! - `fingerprint`: [`Dataset::fingerprint`], to check that clients hold the same data.

pub mod cifar;
mod fingerprint;
pub mod folders;
pub mod idx;
pub mod leaf;
pub mod numpy;
pub mod partition;
pub mod synthetic;
pub mod table;

use std::path::PathBuf;

use strata_core::config::{DataConfig, DatasetKind};

const FMNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Debian packages no MNIST; we keep the same layout so a manual install has an obvious home.
const MNIST_DIR: &str = "/usr/share/datasets/mnist";
const FMNIST_HINT: &str = "install it with `apt-get install dataset-fashion-mnist` or pass --data-path";
const MNIST_HINT: &str = "put the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
                          t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) there or pass --data-path";
const IDX_HINT: &str = "data.path must hold train-images-idx3-ubyte, train-labels-idx1-ubyte, \
                        t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each plain or .gz";

/// Loads the configured dataset in the merged index space. `seed` matters only to generators.
pub fn load(config: &DataConfig, seed: u64) -> Result<Dataset, DataError> {
    match config.dataset {
        DatasetKind::Fmnist | DatasetKind::Mnist | DatasetKind::Idx => {
            let (dir, hint) = idx_location(config)?;
            idx::load_dataset(config.dataset.name(), &dir, hint)
        }
        DatasetKind::Cifar10 => cifar::load(&required_path(config)?),
        DatasetKind::Numpy => numpy::load(&required_path(config)?),
        DatasetKind::Leaf => {
            leaf::load(&required_path(config)?, config.image_size.map(|s| (s, config.channels.unwrap_or(1))))
        }
        DatasetKind::Images => folders::load(
            &required_path(config)?,
            folders::ImageShape { size: config.image_size, channels: config.channels },
        ),
        DatasetKind::Csv => {
            table::load(&required_path(config)?, config.label_column.as_deref(), config.group_column.as_deref())
        }
        DatasetKind::Synthetic => synthetic::generate(&config.synthetic, seed),
    }
}

/// Where a dataset lives when `data.path` is not given, if it has a conventional place.
pub fn default_path(kind: DatasetKind) -> Option<PathBuf> {
    match kind {
        DatasetKind::Fmnist => Some(PathBuf::from(FMNIST_DIR)),
        DatasetKind::Mnist => Some(PathBuf::from(MNIST_DIR)),
        DatasetKind::Idx
        | DatasetKind::Cifar10
        | DatasetKind::Numpy
        | DatasetKind::Csv
        | DatasetKind::Images
        | DatasetKind::Leaf
        | DatasetKind::Synthetic => None,
    }
}

/// The sample shape and class count, without loading the samples where the kind fixes them.
/// For `idx` it reads the train image header and the label files (small).
pub fn describe(config: &DataConfig) -> Result<DataShape, DataError> {
    match config.dataset {
        DatasetKind::Fmnist | DatasetKind::Mnist => Ok(DataShape { sample_shape: vec![1, 28, 28], num_classes: 10 }),
        DatasetKind::Idx => {
            let (dir, hint) = idx_location(config)?;
            idx::describe_dataset(&dir, hint)
        }
        DatasetKind::Cifar10 => Ok(cifar::shape()),
        // The class count is in the labels: reading them means reading the arrays.
        DatasetKind::Numpy | DatasetKind::Csv | DatasetKind::Images | DatasetKind::Leaf => Ok(load(config, 0)?.shape),
        DatasetKind::Synthetic => Ok(synthetic::shape(&config.synthetic)),
    }
}

/// The directory of an IDX-format dataset and the hint to print if its files are missing.
fn idx_location(config: &DataConfig) -> Result<(PathBuf, &'static str), DataError> {
    let hint = match config.dataset {
        DatasetKind::Fmnist => FMNIST_HINT,
        DatasetKind::Mnist => MNIST_HINT,
        _ => IDX_HINT,
    };
    Ok((required_path(config)?, hint))
}

fn required_path(config: &DataConfig) -> Result<PathBuf, DataError> {
    config
        .path
        .clone()
        .or_else(|| default_path(config.dataset))
        .ok_or_else(|| DataError::Invalid(format!("data.path is required for dataset `{}`", config.dataset)))
}

/// A whole dataset in memory, train and test merged.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Short name for logs and records, e.g. `fmnist`.
    pub name: String,
    /// Sample values, row-major, `sample_shape` per sample, samples in index order.
    pub features: Features,
    pub labels: Vec<u32>,
    pub shape: DataShape,
    /// How many of the samples come from the official train set (they come first).
    pub official_train_len: usize,
    /// Each sample's owner (a writer, a site, a device), numbered from 0, when the data says:
    /// the `natural` split keeps an owner's samples on one client.
    pub owners: Option<Vec<u32>>,
}

/// Raw pixels stay u8 (a quarter of the memory); the trainer scales them to [-1, 1].
#[derive(Clone, Debug)]
pub enum Features {
    Pixels(Vec<u8>),
    Floats(Vec<f32>),
}

/// What a model needs to know about a dataset: one sample's shape and the number of classes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataShape {
    /// `[channels, height, width]` for images, `[dim]` for vectors.
    pub sample_shape: Vec<usize>,
    pub num_classes: usize,
}

impl DataShape {
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset file {path} is missing{hint}")]
    Missing { path: PathBuf, hint: String },
    #[error("dataset file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot read dataset file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid dataset settings: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::config::SyntheticConfig;
    use strata_core::partition_spec::PartitionSpec;

    fn config(dataset: DatasetKind, path: Option<PathBuf>) -> DataConfig {
        DataConfig {
            dataset,
            path,
            split: PartitionSpec::Iid,
            train_fraction: 0.75,
            synthetic: SyntheticConfig::default(),
            label_column: None,
            group_column: None,
            image_size: None,
            channels: None,
        }
    }

    #[test]
    fn idx_loads_and_describes_from_data_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        idx::tests::write_tiny_set(dir.path(), true);
        let config = config(DatasetKind::Idx, Some(dir.path().to_path_buf()));
        let data = load(&config, 0).expect("load");
        assert_eq!((data.name.as_str(), data.len(), data.official_train_len), ("idx", 8, 5));
        assert_eq!(describe(&config).expect("describe"), data.shape);
    }

    #[test]
    fn missing_fmnist_suggests_the_package() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load(&config(DatasetKind::Fmnist, Some(dir.path().to_path_buf())), 0).expect_err("empty dir");
        assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("apt-get install dataset-fashion-mnist"), "{err}");
    }

    #[test]
    fn defaults_and_fixed_shapes() {
        assert_eq!(default_path(DatasetKind::Fmnist), Some(PathBuf::from("/usr/share/datasets/fashion-mnist")));
        assert_eq!(default_path(DatasetKind::Cifar10), None);
        let err = load(&config(DatasetKind::Cifar10, None), 0).expect_err("no path").to_string();
        assert!(err.contains("data.path is required"), "{err}");
        let shape = describe(&config(DatasetKind::Cifar10, None)).expect("cifar shape");
        assert_eq!((shape.sample_shape, shape.num_classes), (vec![3, 32, 32], 10));
        let synthetic = config(DatasetKind::Synthetic, None);
        let data = load(&synthetic, 1).expect("synthetic");
        assert_eq!(describe(&synthetic).expect("synthetic shape"), data.shape);
        assert_eq!(data.len(), SyntheticConfig::default().samples);
    }

    /// The real Fashion-MNIST, where installed: `cargo test -p strata-core --release -- --ignored`.
    #[test]
    #[ignore = "reads /usr/share/datasets/fashion-mnist"]
    fn real_fashion_mnist() {
        let start = std::time::Instant::now();
        let data = load(&config(DatasetKind::Fmnist, None), 0).expect("installed fmnist");
        let elapsed = start.elapsed();
        assert_eq!((data.len(), data.official_train_len, data.shape.num_classes), (70_000, 60_000, 10));
        assert_eq!(data.shape.sample_shape, vec![1, 28, 28]);
        eprintln!("loaded {} in {elapsed:?}", data.fingerprint());
    }
}
