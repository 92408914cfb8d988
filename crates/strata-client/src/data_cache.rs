//! Datasets and partitions loaded once per process, so that simulated clients in one process
//! share one copy of Fashion-MNIST instead of holding twenty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use strata_core::config::RunConfig;
use strata_data::partition::{self, Partition};
use strata_data::{self as data, Dataset};

/// A loaded dataset and the run's partition of it.
type Loaded = (Arc<Dataset>, Arc<Partition>);

#[derive(Debug, Default)]
pub struct DataCache {
    // Held while loading: a second client asking for the same data waits for the first.
    entries: Mutex<HashMap<String, Loaded>>,
}

impl DataCache {
    /// The run's dataset and partition, loaded on first use.
    pub fn get(&self, config: &RunConfig) -> Result<Loaded, String> {
        let key = format!("{:?}|{}|{}", config.data, config.clients, config.seed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, p)) = entries.get(&key) {
            return Ok((Arc::clone(d), Arc::clone(p)));
        }
        let dataset = data::load(&config.data, config.seed).map_err(|e| e.to_string())?;
        let split = partition::for_run(&config.data, config.clients as usize, config.seed, &dataset)
            .map_err(|e| e.to_string())?;
        let value = (Arc::new(dataset), Arc::new(split));
        entries.insert(key, value.clone());
        Ok(value)
    }
}
