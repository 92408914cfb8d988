//! Tensor sets on disk in the safetensors format (8-byte little-endian header length, a JSON
//! header of names, dtypes, shapes and byte offsets, then the raw data), f32 only. Files are
//! written atomically ([`crate::atomic_file`]): a crash leaves the old file or the new one.
//!
//! The tensors keep their set's order on disk and on reading (the format does not require an
//! order; the offsets do it here), which matters for masks that follow that order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::tensor::{NamedTensor, TensorSet};

#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a safetensors file of f32 tensors: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// Writes `set` (with string `metadata`) to `path` atomically.
pub fn write(path: &Path, set: &TensorSet, metadata: &BTreeMap<String, String>) -> Result<(), SafetensorsError> {
    let mut header = Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), json!(metadata));
    }
    let mut offset = 0usize;
    for t in set.tensors() {
        let end = offset + t.values.len() * 4;
        header.insert(t.name.clone(), json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut header = serde_json::to_vec(&Value::Object(header)).expect("JSON of plain data");
    // The format pads the header with spaces to a multiple of 8 bytes.
    header.resize(header.len().div_ceil(8) * 8, b' ');
    crate::atomic_file::write_with(path, |out| {
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&header)?;
        for t in set.tensors() {
            for v in &t.values {
                out.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    })
    .map_err(|source| SafetensorsError::Io { path: path.to_path_buf(), source })?;
    Ok(())
}

/// Reads a file written by [`write`] (or any safetensors file of F32 tensors), checking every
/// offset; tensors come back in the order of their data.
pub fn read(path: &Path) -> Result<(TensorSet, BTreeMap<String, String>), SafetensorsError> {
    let bytes = std::fs::read(path).map_err(|source| SafetensorsError::Io { path: path.to_path_buf(), source })?;
    parse(&bytes).map_err(|reason| SafetensorsError::Format { path: path.to_path_buf(), reason })
}

fn parse(bytes: &[u8]) -> Result<(TensorSet, BTreeMap<String, String>), String> {
    let len_bytes: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or("shorter than 8 bytes")?;
    let header_len = usize::try_from(u64::from_le_bytes(len_bytes)).map_err(|_| "header length too large")?;
    let data_start = 8usize.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or("header runs past the end")?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes[8..data_start]).map_err(|e| format!("header is not a JSON object: {e}"))?;
    let data = &bytes[data_start..];
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            let map: BTreeMap<String, String> =
                serde_json::from_value(entry).map_err(|e| format!("__metadata__ is not strings: {e}"))?;
            metadata = map;
            continue;
        }
        let dtype = entry.get("dtype").and_then(Value::as_str).unwrap_or("?");
        if dtype != "F32" {
            return Err(format!("tensor `{name}` is {dtype}, only F32 is read"));
        }
        let shape: Vec<usize> = serde_json::from_value(entry.get("shape").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("tensor `{name}`: bad shape: {e}"))?;
        let offsets: [usize; 2] = serde_json::from_value(entry.get("data_offsets").cloned().unwrap_or(Value::Null))
            .map_err(|e| format!("tensor `{name}`: bad data_offsets: {e}"))?;
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
        if offsets[1] < offsets[0] || offsets[1] > data.len() || offsets[1] - offsets[0] != numel * 4 {
            return Err(format!("tensor `{name}`: data_offsets {offsets:?} do not hold {numel} f32 values"));
        }
        entries.push((offsets[0], name, shape, offsets));
    }
    entries.sort_by_key(|e| e.0);
    let tensors = entries
        .into_iter()
        .map(|(_, name, shape, [a, b])| {
            let values = data[a..b].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            NamedTensor::new(name, shape, values).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let set = TensorSet::new(tensors).map_err(|e| e.to_string())?;
    Ok((set, metadata))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set() -> TensorSet {
        TensorSet::new(vec![
            NamedTensor::new("z.first", vec![2, 3], (0..6).map(|i| i as f32 * 0.5 - 1.0).collect()).unwrap(),
            NamedTensor::new("a.second", vec![1], vec![f32::MIN_POSITIVE]).unwrap(),
            NamedTensor::new("m.empty", vec![0], vec![]).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn sets_round_trip_in_order_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let meta = BTreeMap::from([("round".to_string(), "7".to_string())]);
        write(&path, &set(), &meta).unwrap();
        let (back, meta_back) = read(&path).unwrap();
        assert_eq!(back, set());
        assert_eq!(meta_back, meta);
        let len = u64::from_le_bytes(std::fs::read(&path).unwrap()[..8].try_into().unwrap());
        assert_eq!(len % 8, 0, "the header is padded to 8 bytes");
        // Overwriting replaces the file whole.
        write(&path, &TensorSet::default(), &BTreeMap::new()).unwrap();
        assert!(read(&path).unwrap().0.is_empty());
    }

    /// Bytes as the hand-written writer of earlier versions laid them out: header keys in
    /// JSON-object (sorted) order, data in the set's order, header padded with spaces.
    #[test]
    fn files_from_earlier_versions_still_load() {
        let header = r#"{"__metadata__":{"round":"3"},"a.second":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"z.first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut header = header.as_bytes().to_vec();
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(&header);
        for v in [1.5f32, -2.0, 0.25] {
            bytes.extend(v.to_le_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let (set, meta) = read(&path).unwrap();
        let expected = TensorSet::new(vec![
            NamedTensor::new("z.first", vec![2], vec![1.5, -2.0]).unwrap(),
            NamedTensor::new("a.second", vec![1], vec![0.25]).unwrap(),
        ])
        .unwrap();
        assert_eq!(set, expected, "tensors come back in the order of their data");
        assert_eq!(meta, BTreeMap::from([("round".to_string(), "3".to_string())]));
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write(&path, &set(), &BTreeMap::new()).unwrap();
        let good = std::fs::read(&path).unwrap();
        let refused = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read(&path).unwrap_err().to_string()
        };
        assert!(refused(&good[..5]).contains("shorter than 8 bytes"));
        assert!(refused(&good[..good.len() - 4]).contains("data_offsets"));
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(refused(&huge).contains("header"));
        let mut f16 = good.clone();
        let at = f16.windows(3).position(|w| w == b"F32").unwrap();
        f16[at..at + 3].copy_from_slice(b"F16");
        assert!(refused(&f16).contains("only F32"));
        assert!(read(&dir.path().join("missing")).unwrap_err().to_string().contains("missing"));
    }
}
