//! Tensor sets on disk in the safetensors format: f32 tensors, and byte strings beside them. Files are written atomically
//! ([`crate::atomic_file`]): a crash leaves the old file or the new one.
//!
//! The header (names, dtypes, shapes, offsets, `__metadata__`) is built, parsed and checked by
//! the `safetensors` crate, Hugging Face's reference implementation, so that the format's
//! rules (offsets back to back, sizes matching dtype and shape, the header's limits) are its.
//!
//! The tensors keep their set's order on disk and on reading (the format does not require an
//! order; the offsets do it here), which matters for masks that follow that order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::tensor::{NamedTensor, TensorError, TensorSet};

#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a safetensors file: {source}")]
    Format { path: PathBuf, source: SafeTensorError },
    #[error("{path}: tensor `{tensor}` is {dtype}, only F32 is read")]
    Dtype { path: PathBuf, tensor: String, dtype: Dtype },
    #[error("{path}: {source}")]
    Tensors { path: PathBuf, source: TensorError },
    #[error("{path}: `{name}` names both a tensor and a blob")]
    NameClash { path: PathBuf, name: String },
}

/// Named byte strings stored beside the f32 tensors, as one-dimensional U8 tensors (bit-packed
/// masks, for instance, which are bits and not numbers).
pub type Blobs = BTreeMap<String, Vec<u8>>;

/// Writes `set` (with string `metadata`) to `path` atomically.
pub fn write(path: &Path, set: &TensorSet, metadata: &BTreeMap<String, String>) -> Result<(), SafetensorsError> {
    write_with_blobs(path, set, &Blobs::new(), metadata)
}

/// Writes `set`, then `blobs` as U8 tensors, with string `metadata`, to `path` atomically.
///
/// Not `safetensors::serialize_to_file`: it lays tensors out sorted by dtype and name (losing the
/// set's order) and syncs neither the file nor its directory.
pub fn write_with_blobs(
    path: &Path,
    set: &TensorSet,
    blobs: &Blobs,
    metadata: &BTreeMap<String, String>,
) -> Result<(), SafetensorsError> {
    if let Some(name) = blobs.keys().find(|name| set.get(name).is_some()) {
        return Err(SafetensorsError::NameClash { path: path.to_path_buf(), name: name.clone() });
    }
    let mut offset = 0;
    let mut info = |name: &str, dtype: Dtype, shape: Vec<usize>, bytes: usize| {
        let info = TensorInfo { dtype, shape, data_offsets: (offset, offset + bytes) };
        offset += bytes;
        (name.to_string(), info)
    };
    let mut infos: Vec<(String, TensorInfo)> =
        set.tensors().iter().map(|t| info(t.name(), Dtype::F32, t.shape().to_vec(), size_of_val(t.values()))).collect();
    infos.extend(blobs.iter().map(|(name, bytes)| info(name, Dtype::U8, vec![bytes.len()], bytes.len())));
    let metadata = (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let header = Metadata::new(metadata, infos)
        .map_err(|source| SafetensorsError::Format { path: path.to_path_buf(), source })?;
    let mut header = serde_json::to_vec(&header).expect("JSON of plain data");
    // The format pads the header with spaces to a multiple of 8 bytes.
    header.resize(header.len().div_ceil(8) * 8, b' ');
    crate::atomic_file::write_with(path, |out| {
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&header)?;
        for t in set.tensors() {
            for v in t.values() {
                out.write_all(&v.to_le_bytes())?;
            }
        }
        for bytes in blobs.values() {
            out.write_all(bytes)?;
        }
        Ok(())
    })
    .map_err(|source| SafetensorsError::Io { path: path.to_path_buf(), source })
}

/// Reads a file written by [`write()`] (or any safetensors file of F32 tensors), checking every
/// offset; tensors come back in the order of their data.
pub fn read(path: &Path) -> Result<(TensorSet, BTreeMap<String, String>), SafetensorsError> {
    let (set, blobs, metadata) = read_with_blobs(path)?;
    match blobs.into_keys().next() {
        Some(tensor) => Err(SafetensorsError::Dtype { path: path.to_path_buf(), tensor, dtype: Dtype::U8 }),
        None => Ok((set, metadata)),
    }
}

/// Reads a file written by [`write_with_blobs`]: its F32 tensors in the order of their data,
/// and its one-dimensional U8 tensors as blobs.
pub fn read_with_blobs(path: &Path) -> Result<(TensorSet, Blobs, BTreeMap<String, String>), SafetensorsError> {
    let bytes = std::fs::read(path).map_err(|source| SafetensorsError::Io { path: path.to_path_buf(), source })?;
    let format = |source| SafetensorsError::Format { path: path.to_path_buf(), source };
    let (header_len, header) = SafeTensors::read_metadata(&bytes).map_err(format)?;
    let data = &bytes[size_of::<u64>() + header_len..];
    let mut infos: Vec<_> = header.tensors().into_iter().collect();
    // Zero-sized tensors can share an offset: their names order them, as before.
    infos.sort_by(|(a, x), (b, y)| (x.data_offsets, a).cmp(&(y.data_offsets, b)));
    let (mut tensors, mut blobs) = (Vec::new(), Blobs::new());
    for (name, info) in infos {
        // `read_metadata` checked that the offsets cover the data exactly.
        let (start, end) = info.data_offsets;
        match info.dtype {
            Dtype::F32 => {
                let values = data[start..end]
                    .chunks_exact(size_of::<f32>())
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let tensor = NamedTensor::new(name, info.shape.clone(), values)
                    .map_err(|source| SafetensorsError::Tensors { path: path.to_path_buf(), source })?;
                tensors.push(tensor);
            }
            Dtype::U8 if info.shape.len() == 1 => {
                blobs.insert(name, data[start..end].to_vec());
            }
            dtype => return Err(SafetensorsError::Dtype { path: path.to_path_buf(), tensor: name, dtype }),
        }
    }
    let set =
        TensorSet::new(tensors).map_err(|source| SafetensorsError::Tensors { path: path.to_path_buf(), source })?;
    let metadata = header.metadata().iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok((set, blobs, metadata))
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
        assert!(refused(&good[..5]).contains("header too small"));
        assert!(refused(&good[..good.len() - 4]).contains("not fully covered"));
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(refused(&huge).contains("header"));
        // I32 has F32's size, so the file is sound and only its dtype is refused.
        let mut i32s = good.clone();
        let at = i32s.windows(3).position(|w| w == b"F32").unwrap();
        i32s[at..at + 3].copy_from_slice(b"I32");
        assert!(refused(&i32s).contains("is I32, only F32 is read"));
        let mut f16 = good.clone();
        f16[at..at + 3].copy_from_slice(b"F16");
        assert!(refused(&f16).contains("invalid shape, data type, or offset"));
        assert!(read(&dir.path().join("missing")).unwrap_err().to_string().contains("missing"));
    }

    #[test]
    fn blobs_travel_beside_the_tensors_and_plain_reads_refuse_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.safetensors");
        let blobs = Blobs::from([("mask/a".to_string(), vec![0b1010_0101, 0xff, 0]), ("mask/b".into(), vec![])]);
        let meta = BTreeMap::from([("mask_bits/a".to_string(), "17".to_string())]);
        write_with_blobs(&path, &set(), &blobs, &meta).unwrap();
        assert_eq!(read_with_blobs(&path).unwrap(), (set(), blobs, meta));
        assert!(read(&path).unwrap_err().to_string().contains("is U8, only F32 is read"));
        // A name used twice (tensor and blob) is the format's error, not a silent overwrite.
        let clash = Blobs::from([("z.first".to_string(), vec![1])]);
        assert!(write_with_blobs(&path, &set(), &clash, &BTreeMap::new()).is_err());
    }
}
