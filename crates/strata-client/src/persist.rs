//! The client's state on disk (`--state-dir`): who it is in the federation (`client.json`:
//! UUID, partition index, run id, session secret; readable by its owner only) and its personal model (`personal.safetensors`: every
//! variable, BatchNorm statistics included), written atomically after every task, so that a
//! daemon restarted with the same directory rejoins as itself and goes on with the model it had.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_core::safetensors::SafetensorsError;
use strata_core::tensor::TensorSet;
use uuid::Uuid;

const IDENTITY: &str = "client.json";
const MODEL: &str = "personal.safetensors";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub client_id: Uuid,
    pub index: u32,
    pub run_id: String,
    /// The session secret the server gave at join: a restarted daemon needs it to take its
    /// slot back (files written before sessions have none).
    #[serde(default)]
    pub session: String,
    /// What DP-SGD has spent of this client's data in this run, so that a restart does not
    /// forget it (files written before DP-SGD have none).
    #[serde(default)]
    pub example_ledger: crate::example_ledger::ExampleLedger,
}

/// Why the state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// `client.json` is there but is not what this client writes.
    #[error("{}: not a Strata client state: {source}", path.display())]
    NotState { path: PathBuf, source: serde_json::Error },
    /// The personal model's file (its path is in the message).
    #[error(transparent)]
    Model(#[from] SafetensorsError),
}

/// The saved identity, if the directory has one.
pub fn load_identity(dir: &Path) -> Result<Option<Identity>, PersistError> {
    let path = dir.join(IDENTITY);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| PersistError::NotState { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Io { path, source }),
    }
}

/// The saved personal model, if any.
pub fn load_model(dir: &Path) -> Result<Option<TensorSet>, PersistError> {
    let path = dir.join(MODEL);
    if !path.exists() {
        return Ok(None);
    }
    Ok(strata_core::safetensors::read(&path).map(|(set, _)| Some(set))?)
}

/// Saves the model, then the identity (each atomically; the identity last, so that it never
/// names a run whose model is not on disk).
pub fn save(dir: &Path, identity: &Identity, model: &TensorSet) -> Result<(), PersistError> {
    std::fs::create_dir_all(dir).map_err(|source| PersistError::Io { path: dir.to_path_buf(), source })?;
    let meta = [("run_id".to_string(), identity.run_id.clone())].into_iter().collect();
    strata_core::safetensors::write(&dir.join(MODEL), model, &meta)?;
    let path = dir.join(IDENTITY);
    let json = serde_json::to_vec_pretty(identity).expect("JSON of plain data");
    strata_core::atomic_file::write(&path, &json).map_err(|source| PersistError::Io { path, source })?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use strata_core::tensor::NamedTensor;

    use super::*;

    #[test]
    fn identity_and_model_round_trip_and_an_empty_dir_has_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_identity(dir.path()).unwrap(), None);
        assert_eq!(load_model(dir.path()).unwrap(), None);
        let example_ledger = crate::example_ledger::ExampleLedger { sampling_rate: 0.01, steps: 300 };
        let identity = Identity {
            client_id: Uuid::from_u128(9),
            index: 4,
            run_id: "run".into(),
            session: "s".repeat(32),
            example_ledger,
        };
        let model = TensorSet::new(vec![NamedTensor::new("head.weight", vec![2], vec![0.5, -1.0]).unwrap()]).unwrap();
        save(dir.path(), &identity, &model).unwrap();
        assert_eq!(load_identity(dir.path()).unwrap(), Some(identity));
        assert_eq!(load_model(dir.path()).unwrap(), Some(model));
        // A file from before DP-SGD: nothing spent.
        let old = format!(r#"{{"client_id":"{}","index":4,"run_id":"run","session":""}}"#, Uuid::from_u128(9));
        std::fs::write(dir.path().join(IDENTITY), old).unwrap();
        assert_eq!(load_identity(dir.path()).unwrap().unwrap().example_ledger, Default::default());
        std::fs::write(dir.path().join(IDENTITY), "{").unwrap();
        let err = load_identity(dir.path()).unwrap_err();
        assert!(matches!(err, PersistError::NotState { .. }), "{err}");
        assert!(err.to_string().contains("client.json") && err.to_string().contains("not a Strata client state"));
        std::fs::write(dir.path().join(MODEL), "not safetensors").unwrap();
        let err = load_model(dir.path()).unwrap_err();
        assert!(matches!(err, PersistError::Model(_)), "{err}");
        assert!(err.to_string().contains(MODEL), "{err}");
    }

    #[test]
    fn a_state_dir_that_cannot_be_made_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let identity = Identity {
            client_id: Uuid::from_u128(9),
            index: 4,
            run_id: "run".into(),
            session: "s".repeat(32),
            example_ledger: Default::default(),
        };
        let err = save(&file.join("state"), &identity, &TensorSet::default()).unwrap_err();
        assert!(matches!(&err, PersistError::Io { path, .. } if path.ends_with("state")), "{err}");
        assert!(err.to_string().contains("a-file"), "{err}");
        std::fs::create_dir(dir.path().join(IDENTITY)).unwrap();
        assert!(matches!(load_identity(dir.path()), Err(PersistError::Io { .. })));
    }
}
