//! The server's state on disk, for `--resume`: after every completed round the round loop
//! takes the strategy's snapshot and, on a blocking thread while the next round runs, writes `state/strategy-r<N>.safetensors` (the strategy's [`Snapshot`] tensors, and its bit
//! masks as U8 tensors with their lengths in the file's metadata) and then
//! `state/state.json` (the round to resume at, the run id, the clients' identities, the
//! strategy's strings, and which tensor file goes with them). Both are written atomically and
//! `state.json` is renamed last, so it always names a complete tensor file: a crash at any
//! moment leaves the previous round's state or this one's, and loses at most the round in flight.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_core::mask::BitMask;
use uuid::Uuid;

use crate::strategy::Snapshot;

const VERSION: u32 = 1;
/// Names of a snapshot's masks in the tensor file, and of their lengths in its metadata.
const MASK_PREFIX: &str = "mask/";
const MASK_BITS_PREFIX: &str = "mask_bits/";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub run_id: String,
    /// The first round still to run: rounds before it are aggregated and recorded.
    pub next_round: u64,
    /// Who holds which partition index, so that clients rejoining with their UUID get theirs
    /// back (FedCAC keeps per-client state under these ids). On disk they are in
    /// `clients_file` (written only when someone joined since the last save: a million
    /// identities are 87 MB of JSON); states written before that hold them here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<SavedClient>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub clients_file: String,
    /// The dataset fingerprint every client must match.
    pub fingerprint: Option<String>,
    pub strategy_file: String,
    pub strategy_meta: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedClient {
    pub id: Uuid,
    pub index: u32,
    /// The SHA-256 (hex) of the client's session secret, which it must show to join its slot
    /// again; absent in states saved before sessions (the client then gets a new session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl SavedClient {
    pub fn of((id, index, session): crate::registry::Identity) -> Self {
        Self { id, index, session: session.map(|h| h.to_hex()) }
    }

    /// The registry's identity; a session that is not a SHA-256 in hex counts as none.
    pub fn identity(&self) -> crate::registry::Identity {
        (self.id, self.index, self.session.as_deref().and_then(strata_security::TokenHash::from_hex))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
    #[error(transparent)]
    Tensors(#[from] strata_core::safetensors::SafetensorsError),
}

pub fn state_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("state")
}

/// The clients' identities for a save: a new list, or the file an earlier save wrote.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientList {
    /// Written to `clients-g<generation>.json`.
    New {
        generation: u64,
        clients: Vec<SavedClient>,
    },
    Written(String),
}

/// Writes the state after a completed round; see the module's comment for the order.
/// Returns the name of the clients file the state refers to.
pub fn save(
    run_dir: &Path,
    run_id: &str,
    next_round: u64,
    clients: ClientList,
    fingerprint: Option<String>,
    snapshot: &Snapshot,
) -> Result<String, StateError> {
    let dir = state_dir(run_dir);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let strategy_file = format!("strategy-r{next_round}.safetensors");
    let blobs = snapshot.masks.iter().map(|(name, mask)| (format!("{MASK_PREFIX}{name}"), mask.to_bytes())).collect();
    let lengths = snapshot
        .masks
        .iter()
        .map(|(name, mask)| (format!("{MASK_BITS_PREFIX}{name}"), mask.len().to_string()))
        .collect();
    strata_core::safetensors::write_with_blobs(&dir.join(&strategy_file), &snapshot.tensors, &blobs, &lengths)?;
    let clients_file = match clients {
        ClientList::Written(file) => file,
        ClientList::New { generation, clients } => {
            let file = format!("clients-g{generation}.json");
            let json = serde_json::to_vec(&clients).expect("JSON of plain data");
            let path = dir.join(&file);
            strata_core::atomic_file::write(&path, &json).map_err(io(&path))?;
            file
        }
    };
    let state = SavedState {
        version: VERSION,
        run_id: run_id.to_string(),
        next_round,
        clients: Vec::new(),
        clients_file: clients_file.clone(),
        fingerprint,
        strategy_file: strategy_file.clone(),
        strategy_meta: snapshot.meta.clone(),
    };
    let json = serde_json::to_vec_pretty(&state).expect("JSON of plain data");
    let path = dir.join("state.json");
    strata_core::atomic_file::write(&path, &json).map_err(io(&path))?;
    // Older tensor files are no longer named by state.json.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = (name.starts_with("strategy-") && name != strategy_file)
                || (name.starts_with("clients-") && name != clients_file);
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(clients_file)
}

/// Reads the last saved state of the run in `run_dir`.
pub fn load(run_dir: &Path) -> Result<(SavedState, Snapshot), StateError> {
    let dir = state_dir(run_dir);
    let path = dir.join("state.json");
    let text = std::fs::read(&path).map_err(|source| StateError::Io { path: path.clone(), source })?;
    let state: SavedState = serde_json::from_slice(&text)
        .map_err(|e| StateError::Bad { path: path.clone(), reason: format!("not a Strata server state: {e}") })?;
    if state.version != VERSION {
        return Err(StateError::Bad {
            path,
            reason: format!("state version {} (this server reads version {VERSION})", state.version),
        });
    }
    if state.strategy_file.contains(['/', '\\']) {
        return Err(StateError::Bad { path, reason: "strategy_file must be a file name in state/".into() });
    }
    let mut state = state;
    if !state.clients_file.is_empty() {
        if state.clients_file.contains(['/', '\\']) {
            return Err(StateError::Bad { path, reason: "clients_file must be a file name in state/".into() });
        }
        let path = dir.join(&state.clients_file);
        let text = std::fs::read(&path).map_err(|source| StateError::Io { path: path.clone(), source })?;
        state.clients = serde_json::from_slice(&text)
            .map_err(|e| StateError::Bad { path: path.clone(), reason: format!("not a list of clients: {e}") })?;
    }
    let tensor_path = dir.join(&state.strategy_file);
    let (tensors, blobs, lengths) = strata_core::safetensors::read_with_blobs(&tensor_path)?;
    let mut masks = BTreeMap::new();
    for (blob, bytes) in blobs {
        let bad = |reason: String| StateError::Bad { path: tensor_path.clone(), reason };
        let name = blob.strip_prefix(MASK_PREFIX).ok_or_else(|| bad(format!("`{blob}` is not a mask")))?;
        let bits = lengths.get(&format!("{MASK_BITS_PREFIX}{name}")).and_then(|b| b.parse().ok());
        let bits = bits.ok_or_else(|| bad(format!("mask `{name}` has no length")))?;
        let mask = BitMask::from_bytes(bits, &bytes).map_err(|e| bad(format!("mask `{name}`: {e}")))?;
        masks.insert(name.to_string(), mask);
    }
    let snapshot = Snapshot { tensors: std::sync::Arc::new(tensors), masks, meta: state.strategy_meta.clone() };
    Ok((state, snapshot))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use strata_core::tensor::{NamedTensor, TensorSet};

    use super::*;

    fn snapshot(v: f32) -> Snapshot {
        let tensors = TensorSet::new(vec![NamedTensor::new("w", vec![2], vec![v, v + 1.0]).unwrap()]).unwrap();
        let masks = BTreeMap::from([("c".to_string(), BitMask::from_bools([true, false, true]))]);
        Snapshot {
            tensors: std::sync::Arc::new(tensors),
            masks,
            meta: BTreeMap::from([("method".into(), "fedavg".into())]),
        }
    }

    #[test]
    fn the_last_saved_round_is_what_loads_and_old_tensor_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let clients = vec![SavedClient { id: Uuid::from_u128(5), index: 2, session: Some("ab".repeat(32)) }];
        let list = ClientList::New { generation: 1, clients: clients.clone() };
        let file = save(dir.path(), "run-1", 1, list, Some("fp".into()), &snapshot(1.0)).unwrap();
        // Nobody joined since: the clients file is not written again.
        let written = ClientList::Written(file.clone());
        assert_eq!(save(dir.path(), "run-1", 2, written, Some("fp".into()), &snapshot(2.0)).unwrap(), file);
        let (state, snap) = load(dir.path()).unwrap();
        assert_eq!((state.next_round, state.run_id.as_str(), &state.clients), (2, "run-1", &clients));
        assert_eq!(snap, snapshot(2.0));
        let more = vec![clients[0].clone(), SavedClient { id: Uuid::from_u128(6), index: 0, session: None }];
        save(dir.path(), "run-1", 3, ClientList::New { generation: 2, clients: more.clone() }, None, &snapshot(3.0))
            .unwrap();
        assert_eq!(load(dir.path()).unwrap().0.clients, more);
        let files: Vec<_> =
            std::fs::read_dir(state_dir(dir.path())).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(files.len(), 3, "state.json, one clients file and one tensor file: {files:?}");
    }

    #[test]
    fn a_state_with_its_clients_inline_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "r", 1, ClientList::New { generation: 0, clients: vec![] }, None, &snapshot(1.0)).unwrap();
        let path = state_dir(dir.path()).join("state.json");
        let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        state["clients"] = serde_json::json!([{ "id": Uuid::from_u128(9), "index": 1 }]);
        state.as_object_mut().unwrap().remove("clients_file");
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(
            load(dir.path()).unwrap().0.clients,
            vec![SavedClient { id: Uuid::from_u128(9), index: 1, session: None }]
        );
    }

    #[test]
    fn missing_or_damaged_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("state.json"));
        save(dir.path(), "r", 1, ClientList::New { generation: 0, clients: vec![] }, None, &snapshot(1.0)).unwrap();
        std::fs::write(state_dir(dir.path()).join("state.json"), "{").unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("not a Strata server state"));
    }
}
