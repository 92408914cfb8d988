//! The personal state of a population's virtual clients between their tasks: in memory up to
//! a budget, and past it the least recently used spill to disk as safetensors, written
//! atomically (as the server's state is). A client with nothing stored starts from the run's
//! initial model, as a daemon does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_core::tensor::TensorSet;

/// How the store holds what it holds, for the run's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub in_memory: usize,
    pub memory_bytes: u64,
    pub on_disk: usize,
    pub disk_bytes: u64,
    /// States written to disk to stay within the budget, and read back from it.
    pub spilled: u64,
    pub reloaded: u64,
    /// The most bytes held in memory at once.
    pub peak_memory_bytes: u64,
}

#[derive(Debug)]
pub struct PersonalStore {
    budget_bytes: u64,
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// State by client index, with the tick of its last use.
    memory: HashMap<u32, (TensorSet, u64)>,
    on_disk: HashSet<u32>,
    tick: u64,
    stats: StoreStats,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the personal-state directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("personal state of client {index}: {source}")]
    Tensors { index: u32, source: strata_core::safetensors::SafetensorsError },
}

impl PersonalStore {
    /// A store that keeps up to `budget_bytes` in memory and spills the rest into `dir`.
    pub fn new(budget_bytes: u64, dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir { path: dir.to_path_buf(), source })?;
        Ok(Self { budget_bytes, dir: dir.to_path_buf(), inner: Mutex::new(Inner::default()) })
    }

    fn path(&self, index: u32) -> PathBuf {
        self.dir.join(format!("client-{index}.safetensors"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's stored state, if it has one (a copy: the store keeps it until replaced).
    pub fn get(&self, index: u32) -> Result<Option<TensorSet>, StoreError> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((set, used)) = inner.memory.get_mut(&index) {
            *used = tick;
            return Ok(Some(set.clone()));
        }
        if !inner.on_disk.contains(&index) {
            return Ok(None);
        }
        inner.stats.reloaded += 1;
        drop(inner);
        let (set, _) = strata_core::safetensors::read(&self.path(index))
            .map_err(|source| StoreError::Tensors { index, source })?;
        Ok(Some(set))
    }

    /// Stores the client's state after a task, spilling the least recently used past the budget.
    pub fn put(&self, index: u32, state: TensorSet) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if inner.on_disk.remove(&index) {
            // The disk copy is stale now; a leftover file would only cost space.
            inner.stats.disk_bytes = inner.stats.disk_bytes.saturating_sub(file_len(&self.path(index)));
            let _ = std::fs::remove_file(self.path(index));
        }
        let bytes = state.byte_len() as u64;
        if let Some((old, _)) = inner.memory.insert(index, (state, tick)) {
            inner.stats.memory_bytes -= old.byte_len() as u64;
        }
        inner.stats.memory_bytes += bytes;
        while inner.stats.memory_bytes > self.budget_bytes {
            let Some(oldest) = inner.memory.iter().min_by_key(|(_, (_, used))| *used).map(|(&i, _)| i) else { break };
            let Some((set, _)) = inner.memory.remove(&oldest) else { break };
            inner.stats.memory_bytes -= set.byte_len() as u64;
            let path = self.path(oldest);
            strata_core::safetensors::write(&path, &set, &Default::default())
                .map_err(|source| StoreError::Tensors { index: oldest, source })?;
            inner.on_disk.insert(oldest);
            inner.stats.spilled += 1;
            inner.stats.disk_bytes += file_len(&path);
        }
        inner.stats.peak_memory_bytes = inner.stats.peak_memory_bytes.max(inner.stats.memory_bytes);
        Ok(())
    }

    pub fn stats(&self) -> StoreStats {
        let inner = self.lock();
        StoreStats { in_memory: inner.memory.len(), on_disk: inner.on_disk.len(), ..inner.stats }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use strata_core::tensor::NamedTensor;

    use super::*;

    fn state(seed: f32) -> TensorSet {
        let values: Vec<f32> = (0..250).map(|i| seed * 1e-3 * i as f32 + f32::EPSILON * seed).collect();
        TensorSet::new(vec![NamedTensor::new("head.weight", vec![25, 10], values).unwrap()]).unwrap()
    }

    #[test]
    fn states_past_the_budget_spill_to_disk_and_come_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        // Room for two states of 1,000 bytes.
        let store = PersonalStore::new(2_000, dir.path()).unwrap();
        assert_eq!(store.get(0).unwrap(), None, "nothing stored: the initial model");
        for i in 0..5 {
            store.put(i, state(i as f32 + 0.5)).unwrap();
        }
        let stats = store.stats();
        assert_eq!((stats.in_memory, stats.on_disk, stats.spilled), (2, 3, 3));
        assert!(stats.memory_bytes <= 2_000 && stats.peak_memory_bytes <= 2_000, "{stats:?}");
        assert!(stats.disk_bytes >= 3_000, "{stats:?}");
        for i in 0..5 {
            assert_eq!(store.get(i).unwrap(), Some(state(i as f32 + 0.5)), "client {i}");
        }
        assert_eq!(store.stats().reloaded, 3);
        // A reloaded client's new state replaces its disk copy.
        store.put(0, state(9.0)).unwrap();
        assert_eq!(store.get(0).unwrap(), Some(state(9.0)));
        assert!(!dir.path().join("client-0.safetensors").exists() || store.stats().on_disk == 3);
    }

    #[test]
    fn a_zero_budget_keeps_everything_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = PersonalStore::new(0, dir.path()).unwrap();
        store.put(7, state(1.0)).unwrap();
        assert_eq!(store.stats().in_memory, 0);
        assert!(dir.path().join("client-7.safetensors").exists());
        assert_eq!(store.get(7).unwrap(), Some(state(1.0)));
    }
}
