//! CIFAR-10's binary format: records of one label byte and 3072 pixel bytes (3x32x32, CHW),
//! in `data_batch_1.bin` .. `data_batch_5.bin` (train) and `test_batch.bin` (test).
//!
//! The files may sit directly in the given directory or in the `cifar-10-batches-bin/`
//! subdirectory that the official tarball unpacks to, so users can point at either.

use std::path::{Path, PathBuf};

use super::{DataError, DataShape, Dataset, Features};

pub const CHANNELS: usize = 3;
pub const SIDE: usize = 32;
pub const CLASSES: usize = 10;
const PIXELS: usize = CHANNELS * SIDE * SIDE;
const RECORD: usize = 1 + PIXELS;
const SUBDIR: &str = "cifar-10-batches-bin";
const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
const TEST_FILE: &str = "test_batch.bin";
const HINT: &str = "; download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, \
                    unpack it there, or pass --data-path";

pub fn shape() -> DataShape {
    DataShape { sample_shape: vec![CHANNELS, SIDE, SIDE], num_classes: CLASSES }
}

/// Loads the five train batches then the test batch from `dir` or `dir/cifar-10-batches-bin`.
pub fn load(dir: &Path) -> Result<Dataset, DataError> {
    let base = batch_dir(dir)?;
    let mut labels = Vec::new();
    let mut pixels = Vec::new();
    for name in TRAIN_FILES {
        append_batch(&base.join(name), &mut labels, &mut pixels)?;
    }
    let official_train_len = labels.len();
    append_batch(&base.join(TEST_FILE), &mut labels, &mut pixels)?;
    Ok(Dataset {
        name: "cifar10".into(),
        features: Features::Pixels(pixels),
        labels,
        shape: shape(),
        official_train_len,
        owners: None,
    })
}

/// The directory holding the batches: `dir` itself, or its `cifar-10-batches-bin/`.
fn batch_dir(dir: &Path) -> Result<PathBuf, DataError> {
    let nested = dir.join(SUBDIR);
    for base in [dir, nested.as_path()] {
        if base.join(TRAIN_FILES[0]).is_file() {
            return Ok(base.to_path_buf());
        }
    }
    Err(DataError::Missing {
        path: dir.join(TRAIN_FILES[0]),
        hint: format!(" (nor is {} there){HINT}", nested.join(TRAIN_FILES[0]).display()),
    })
}

fn append_batch(path: &Path, labels: &mut Vec<u32>, pixels: &mut Vec<u8>) -> Result<(), DataError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing { path: path.to_path_buf(), hint: HINT.into() },
        _ => DataError::Io { path: path.to_path_buf(), source },
    })?;
    let corrupt = |reason: String| DataError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(corrupt(format!(
            "{} bytes is not a whole number of {RECORD}-byte records (label + 3x32x32 pixels)",
            bytes.len()
        )));
    }
    let count = bytes.len() / RECORD;
    labels.reserve(count);
    pixels.reserve(count * PIXELS);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0];
        if usize::from(label) >= CLASSES {
            return Err(corrupt(format!("record {i} has label {label}, but CIFAR-10 labels are 0..=9")));
        }
        labels.push(u32::from(label));
        pixels.extend_from_slice(&record[1..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of records whose label is `labels[i]` and whose pixels all equal `labels[i] * 10`.
    fn batch(labels: &[u8]) -> Vec<u8> {
        labels.iter().flat_map(|&l| std::iter::once(l).chain(std::iter::repeat_n(l * 10, PIXELS))).collect()
    }

    fn write_set(dir: &Path) {
        for (i, name) in TRAIN_FILES.iter().enumerate() {
            std::fs::write(dir.join(name), batch(&[i as u8, 9])).expect("write train batch");
        }
        std::fs::write(dir.join(TEST_FILE), batch(&[7])).expect("write test batch");
    }

    #[test]
    fn loads_flat_or_nested_layout() {
        let flat = tempfile::tempdir().expect("tempdir");
        write_set(flat.path());
        let nested = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(nested.path().join(SUBDIR)).expect("mkdir");
        write_set(&nested.path().join(SUBDIR));
        for dir in [flat.path(), nested.path()] {
            let data = load(dir).expect("load tiny cifar");
            assert_eq!(data.len(), 11);
            assert_eq!(data.official_train_len, 10);
            assert_eq!(data.labels, vec![0, 9, 1, 9, 2, 9, 3, 9, 4, 9, 7]);
            let Features::Pixels(pixels) = &data.features else { panic!("expected pixels") };
            assert_eq!(pixels.len(), 11 * PIXELS);
            assert_eq!(pixels[PIXELS], 90);
            assert_eq!(pixels[10 * PIXELS + 5], 70);
        }
    }

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load(dir.path()).expect_err("empty dir").to_string();
        assert!(err.contains("data_batch_1.bin is missing"), "{err}");
        assert!(err.contains(SUBDIR), "{err}");

        write_set(dir.path());
        std::fs::remove_file(dir.path().join(TEST_FILE)).expect("rm");
        let err = load(dir.path()).expect_err("no test batch").to_string();
        assert!(err.contains("test_batch.bin is missing"), "{err}");

        std::fs::write(dir.path().join(TEST_FILE), &batch(&[1])[..100]).expect("write short");
        let err = load(dir.path()).expect_err("short batch").to_string();
        assert!(err.contains("test_batch.bin is corrupt: 100 bytes"), "{err}");

        std::fs::write(dir.path().join(TEST_FILE), batch(&[1, 12])).expect("write bad label");
        let err = load(dir.path()).expect_err("bad label").to_string();
        assert!(err.contains("record 1 has label 12"), "{err}");
    }
}
