//! NumPy arrays as a dataset (`--dataset numpy --data-path PATH`): an `.npz` archive
//! (`np.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)`, Keras's layout) or a
//! directory with the same names as `.npy` files. The test arrays are optional; without them
//! every sample counts as training data before the split.
//!
//! Samples are `x[i]`: `(n, C, H, W)` images, `(n, H, W)` one-channel images, `(n, d)`
//! vectors. `uint8` samples are pixels (scaled to [-1, 1] by the trainer, as IDX images are);
//! other numbers are used as they are, as float32. Labels are integers from 0.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{DataError, DataShape, Dataset, Features};

const MAGIC: &[u8] = b"\x93NUMPY";
const NAMES: [&str; 4] = ["x_train", "y_train", "x_test", "y_test"];

/// One array read from a `.npy` file: its shape and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Values,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    U8(Vec<u8>),
    Int(Vec<i64>),
    Float(Vec<f64>),
}

impl Values {
    fn type_name(&self) -> &'static str {
        match self {
            Values::U8(_) => "uint8",
            Values::Int(_) => "integers",
            Values::Float(_) => "floats",
        }
    }
}

/// Parses one `.npy` file's bytes; `path` names it in errors.
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<Array, DataError> {
    let corrupt = |reason: String| DataError::Corrupt { path: path.to_path_buf(), reason };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(corrupt("not a NumPy .npy file (no \\x93NUMPY magic)".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(corrupt(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| corrupt(format!("truncated: the header says {header_len} bytes, the file is shorter")))?;
    let header = std::str::from_utf8(header).map_err(|_| corrupt("the header is not text".into()))?;
    let descr = dict_value(header, "descr").ok_or_else(|| corrupt(format!("no 'descr' in the header {header:?}")))?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    if dict_value(header, "fortran_order").is_some_and(|v| v.trim().starts_with("True")) {
        return Err(corrupt("the array is in Fortran order: save np.ascontiguousarray(x) instead".into()));
    }
    let shape_text =
        dict_value(header, "shape").ok_or_else(|| corrupt(format!("no 'shape' in the header {header:?}")))?;
    let shape = parse_shape(shape_text).ok_or_else(|| corrupt(format!("cannot read the shape {shape_text:?}")))?;
    let count =
        shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| corrupt("shape overflows".into()))?;
    let data = &bytes[start + header_len..];
    let (order, kind, width) = {
        let mut chars = descr.chars();
        let order = chars.next().unwrap_or(' ');
        let kind = chars.next().unwrap_or(' ');
        let width: usize = chars.as_str().parse().unwrap_or(0);
        (order, kind, width)
    };
    if order == '>' && width > 1 {
        return Err(corrupt(format!("big-endian values ({descr}): save them little-endian (x.astype('<f4'))")));
    }
    let expected = count.checked_mul(width).ok_or_else(|| corrupt("shape overflows".into()))?;
    if width == 0 || data.len() < expected {
        return Err(corrupt(format!(
            "truncated: shape {shape:?} of {descr} needs {expected} bytes of values, the file has {}",
            data.len()
        )));
    }
    let data = &data[..expected];
    let chunks = |w: usize| data.chunks_exact(w);
    let values = match (kind, width) {
        ('u', 1) => Values::U8(data.to_vec()),
        ('i', 1) => Values::Int(data.iter().map(|&b| i64::from(b as i8)).collect()),
        ('i', 2) => Values::Int(chunks(2).map(|c| i64::from(i16::from_le_bytes([c[0], c[1]]))).collect()),
        ('u', 2) => Values::Int(chunks(2).map(|c| i64::from(u16::from_le_bytes([c[0], c[1]]))).collect()),
        ('i', 4) => {
            Values::Int(chunks(4).map(|c| i64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4])))).collect())
        }
        ('u', 4) => {
            Values::Int(chunks(4).map(|c| i64::from(u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))).collect())
        }
        ('i', 8) => Values::Int(chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
        ('u', 8) => Values::Int(
            chunks(8)
                .map(|c| i64::try_from(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).unwrap_or(-1))
                .collect(),
        ),
        ('f', 4) => {
            Values::Float(chunks(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))).collect())
        }
        ('f', 8) => Values::Float(chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
        ('b', 1) => Values::Int(data.iter().map(|&b| i64::from(b != 0)).collect()),
        _ => return Err(corrupt(format!("unsupported dtype {descr}: use integers or float32/float64"))),
    };
    Ok(Array { shape, values })
}

/// The text after `'key':` up to the next top-level comma of a Python dict literal.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?;
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    Some(rest)
}

fn parse_shape(text: &str) -> Option<Vec<usize>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    inner.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.trim_end_matches('L').parse().ok()).collect()
}

/// The four arrays, by name, from an `.npz` archive or a directory of `.npy` files.
fn read_arrays(path: &Path) -> Result<Vec<Option<(PathBuf, Array)>>, DataError> {
    let io = |p: &Path, source| DataError::Io { path: p.to_path_buf(), source };
    if path.is_dir() {
        return NAMES
            .iter()
            .map(|name| {
                let file = path.join(format!("{name}.npy"));
                if !file.exists() {
                    return Ok(None);
                }
                let bytes = std::fs::read(&file).map_err(|e| io(&file, e))?;
                Ok(Some((file.clone(), parse_npy(&bytes, &file)?)))
            })
            .collect();
    }
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::Missing {
            path: path.to_path_buf(),
            hint:
                ": data.path must be an .npz file or a directory of x_train.npy, y_train.npy[, x_test.npy, y_test.npy]"
                    .into(),
        },
        _ => io(path, e),
    })?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| DataError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("not an .npz (zip) archive: {e}"),
    })?;
    NAMES
        .iter()
        .map(|name| {
            let member = format!("{name}.npy");
            let inside = path.join(&member);
            let mut entry = match archive.by_name(&member) {
                Ok(entry) => entry,
                Err(zip::result::ZipError::FileNotFound) => return Ok(None),
                Err(e) => return Err(DataError::Corrupt { path: inside, reason: e.to_string() }),
            };
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| DataError::Corrupt { path: inside.clone(), reason: format!("cannot inflate: {e}") })?;
            Ok(Some((inside.clone(), parse_npy(&bytes, &inside)?)))
        })
        .collect()
}

/// Loads `path` in the merged index space (train first, then test).
pub fn load(path: &Path) -> Result<Dataset, DataError> {
    let mut arrays = read_arrays(path)?.into_iter();
    let (x_train, y_train, x_test, y_test) =
        (arrays.next().flatten(), arrays.next().flatten(), arrays.next().flatten(), arrays.next().flatten());
    let (Some(x_train), Some(y_train)) = (x_train, y_train) else {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            hint: " x_train and y_train: an .npz needs arrays named x_train and y_train (x_test, y_test optional), \
                   a directory x_train.npy and y_train.npy"
                .into(),
        });
    };
    let test = match (x_test, y_test) {
        (Some(x), Some(y)) => Some((x, y)),
        (None, None) => None,
        (Some((p, _)), None) | (None, Some((p, _))) => {
            return Err(DataError::Corrupt {
                path: p,
                reason: "x_test and y_test come together: one is missing".into(),
            });
        }
    };
    let official_train_len = x_train.1.shape.first().copied().unwrap_or(0);
    let mut parts = vec![(x_train, y_train)];
    parts.extend(test);
    let sample_shape = sample_shape(&parts[0].0)?;
    let mut labels = Vec::new();
    let mut pixels = Vec::new();
    let mut floats = Vec::new();
    for ((x_path, x), (y_path, y)) in &parts {
        let n = x.shape.first().copied().unwrap_or(0);
        if sample_shape != self::sample_shape(&(x_path.clone(), x.clone()))? {
            return Err(DataError::Corrupt {
                path: x_path.clone(),
                reason: format!("samples of shape {:?}, x_train's are {sample_shape:?}", &x.shape[1..]),
            });
        }
        if y.shape != [n] {
            return Err(DataError::Corrupt {
                path: y_path.clone(),
                reason: format!("labels of shape {:?}; x has {n} samples, so y must be of shape ({n},)", y.shape),
            });
        }
        for (i, label) in labels_of(y, y_path)?.into_iter().enumerate() {
            let label = u32::try_from(label).map_err(|_| DataError::Corrupt {
                path: y_path.clone(),
                reason: format!("label {label} at {i}: labels are class numbers from 0"),
            })?;
            labels.push(label);
        }
        match &x.values {
            Values::U8(v) if floats.is_empty() => pixels.extend_from_slice(v),
            Values::Float(v) if pixels.is_empty() => {
                if let Some(i) = v.iter().position(|f| !f.is_finite()) {
                    return Err(DataError::Corrupt { path: x_path.clone(), reason: format!("value {} at {i}", v[i]) });
                }
                floats.extend(v.iter().map(|&f| f as f32));
            }
            Values::Int(v) if pixels.is_empty() => floats.extend(v.iter().map(|&i| i as f32)),
            other => {
                return Err(DataError::Corrupt {
                    path: x_path.clone(),
                    reason: format!("{} where x_train holds another type: use one dtype for both", other.type_name()),
                });
            }
        }
    }
    let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    if num_classes < 2 {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            reason: "the labels name fewer than 2 classes".into(),
        });
    }
    let features =
        if pixels.is_empty() && !floats.is_empty() { Features::Floats(floats) } else { Features::Pixels(pixels) };
    Ok(Dataset {
        name: "numpy".into(),
        features,
        labels,
        shape: DataShape { sample_shape, num_classes },
        official_train_len,
        owners: None,
    })
}

/// One sample's shape: `(n, H, W)` images get a channel, `(n,)` scalars a length of 1.
fn sample_shape((path, x): &(PathBuf, Array)) -> Result<Vec<usize>, DataError> {
    match &x.shape[..] {
        [] => Err(DataError::Corrupt { path: path.clone(), reason: "a scalar, not samples".into() }),
        [_] => Ok(vec![1]),
        [_, h, w] => Ok(vec![1, *h, *w]),
        [_, rest @ ..] => Ok(rest.to_vec()),
    }
}

/// Labels as integers; float labels are refused rather than rounded.
fn labels_of(y: &Array, path: &Path) -> Result<Vec<i64>, DataError> {
    match &y.values {
        Values::Int(v) => Ok(v.clone()),
        Values::U8(v) => Ok(v.iter().map(|&b| i64::from(b)).collect()),
        Values::Float(_) => Err(DataError::Corrupt {
            path: path.to_path_buf(),
            reason: "labels are floats: save them as integers (y.astype('int64'))".into(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// A `.npy` file of `values` (little-endian, `descr` such as `<f4`), as NumPy writes it.
    pub(crate) fn npy(descr: &str, shape: &[usize], values: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
        let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(values);
        out
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    fn i64s(v: &[i64]) -> Vec<u8> {
        v.iter().flat_map(|f| f.to_le_bytes()).collect()
    }

    /// Six 2-feature samples (four train, two test) in three classes.
    pub(crate) fn write_dir(dir: &Path) {
        let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
        write("x_train.npy", npy("<f4", &[4, 2], &f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])));
        write("y_train.npy", npy("<i8", &[4], &i64s(&[0, 1, 2, 0])));
        write("x_test.npy", npy("<f4", &[2, 2], &f32s(&[8.0, 9.0, 10.0, 11.0])));
        write("y_test.npy", npy("<i8", &[2], &i64s(&[1, 2])));
    }

    #[test]
    fn a_directory_of_npy_files_loads_in_the_merged_space() {
        let dir = tempfile::tempdir().unwrap();
        write_dir(dir.path());
        let data = load(dir.path()).unwrap();
        assert_eq!((data.len(), data.official_train_len), (6, 4));
        assert_eq!(data.shape, DataShape { sample_shape: vec![2], num_classes: 3 });
        assert_eq!(data.labels, [0, 1, 2, 0, 1, 2]);
        match &data.features {
            Features::Floats(v) => assert_eq!(v[8..], [8.0, 9.0, 10.0, 11.0]),
            Features::Pixels(_) => panic!("floats stay floats"),
        }
    }

    /// `np.savez` writes a zip of `.npy` members; uint8 images get their channel.
    #[test]
    fn an_npz_archive_of_images_loads_as_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.npz");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let options = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("x_train.npy", options).unwrap();
        zip.write_all(&npy("|u1", &[3, 2, 2], &[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110])).unwrap();
        zip.start_file("y_train.npy", options).unwrap();
        zip.write_all(&npy("|u1", &[3], &[1, 0, 1])).unwrap();
        zip.finish().unwrap();
        let data = load(&path).unwrap();
        assert_eq!(data.shape, DataShape { sample_shape: vec![1, 2, 2], num_classes: 2 });
        assert_eq!((data.len(), data.official_train_len), (3, 3));
        assert!(matches!(&data.features, Features::Pixels(p) if p.len() == 12 && p[11] == 110));
    }

    #[test]
    fn bad_arrays_are_refused_with_the_file_and_the_reason() {
        let expect = |edit: &dyn Fn(&Path), words: &[&str]| {
            let dir = tempfile::tempdir().unwrap();
            write_dir(dir.path());
            edit(dir.path());
            let err = load(dir.path()).unwrap_err().to_string();
            for w in words {
                assert!(err.contains(w), "`{w}` missing from: {err}");
            }
        };
        let write = |name: &'static str, bytes: Vec<u8>| move |d: &Path| std::fs::write(d.join(name), &bytes).unwrap();
        let truncated = {
            let mut b = npy("<f4", &[4, 2], &f32s(&[0.0; 8]));
            b.truncate(b.len() - 5);
            b
        };
        expect(&write("x_train.npy", truncated), &["x_train.npy", "truncated", "32 bytes"]);
        expect(&write("y_train.npy", npy("<i8", &[3], &i64s(&[0, 1, 2]))), &["y_train.npy", "(4,)"]);
        expect(&write("y_test.npy", npy("<f4", &[2], &f32s(&[1.0, 2.0]))), &["y_test.npy", "integers"]);
        expect(&write("y_train.npy", npy("<i8", &[4], &i64s(&[0, -1, 2, 0]))), &["y_train.npy", "label -1 at 1"]);
        expect(&write("x_test.npy", npy("<f4", &[2, 3], &f32s(&[0.0; 6]))), &["x_test.npy", "[3]", "[2]"]);
        expect(&write("x_train.npy", b"PK\x03\x04 not numpy".to_vec()), &["x_train.npy", "magic"]);
        expect(&write("x_train.npy", npy("<c8", &[4, 2], &[0; 64])), &["x_train.npy", "unsupported dtype <c8"]);
        expect(&write("x_train.npy", npy(">f4", &[4, 2], &[0; 32])), &["x_train.npy", "big-endian"]);
        expect(&|d: &Path| std::fs::remove_file(d.join("y_test.npy")).unwrap(), &["x_test.npy", "one is missing"]);
        expect(&|d: &Path| std::fs::remove_file(d.join("y_train.npy")).unwrap(), &["x_train and y_train"]);
        let nan = f32s(&[0.0, 1.0, f32::NAN, 3.0, 4.0, 5.0, 6.0, 7.0]);
        expect(&write("x_train.npy", npy("<f4", &[4, 2], &nan)), &["x_train.npy", "NaN at 2"]);

        let dir = tempfile::tempdir().unwrap();
        let npz = dir.path().join("broken.npz");
        std::fs::write(&npz, b"not a zip").unwrap();
        assert!(load(&npz).unwrap_err().to_string().contains("not an .npz (zip) archive"));
        assert!(load(&dir.path().join("none.npz")).unwrap_err().to_string().contains("none.npz is missing"));
    }
}
