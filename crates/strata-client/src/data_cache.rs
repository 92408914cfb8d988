//! Datasets and partitions loaded once per process, so that simulated clients in one process
//! share one copy of Fashion-MNIST instead of holding twenty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_core::config::RunConfig;
use strata_data::partition::{self, Partition, PartitionError};
use strata_data::{self as data, DataError, Dataset};

/// A loaded dataset and the run's partition of it.
type Loaded = (Arc<Dataset>, Arc<Partition>);

/// Why a run's data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataLoadError {
    #[error(transparent)]
    Dataset(#[from] DataError),
    #[error(transparent)]
    Partition(#[from] PartitionError),
}

#[derive(Debug, Default)]
pub struct DataCache {
    // Held while loading: a second client asking for the same data waits for the first.
    entries: Mutex<HashMap<String, Loaded>>,
}

impl DataCache {
    /// The run's dataset and partition, loaded on first use.
    pub fn get(&self, config: &RunConfig) -> Result<Loaded, DataLoadError> {
        let key = format!("{:?}|{}|{}", config.data, config.clients, config.seed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, p)) = entries.get(&key) {
            return Ok((Arc::clone(d), Arc::clone(p)));
        }
        let dataset = data::load(&config.data, config.seed)?;
        let split = partition::for_run(&config.data, config.clients as usize, config.seed, &dataset)?;
        let value = (Arc::new(dataset), Arc::new(split));
        entries.insert(key, value.clone());
        Ok(value)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use strata_core::config::DatasetKind;
    use strata_core::partition_spec::PartitionSpec;

    use super::*;

    #[test]
    fn data_that_cannot_load_says_whether_the_dataset_or_the_split_failed() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RunConfig::reference_fmnist();
        config.data.path = Some(dir.path().to_path_buf());
        let err = DataCache::default().get(&config).unwrap_err();
        assert!(matches!(err, DataLoadError::Dataset(DataError::Missing { .. })), "{err}");

        config.data.dataset = DatasetKind::Synthetic;
        config.data.synthetic.samples = 200;
        config.data.split = PartitionSpec::File { path: dir.path().join("no-such-split.json") };
        let err = DataCache::default().get(&config).unwrap_err();
        assert!(matches!(err, DataLoadError::Partition(_)), "{err}");
        assert!(err.to_string().contains("no-such-split.json"), "{err}");
    }
}
