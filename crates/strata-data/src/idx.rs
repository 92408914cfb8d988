//! IDX files, MNIST's format: u8 images `[n, rows, cols]` and u8 labels `[n]` after a
//! big-endian header, and the four-file layout (train/t10k images/labels) MNIST-like sets use.
//!
//! Files may be gzip-compressed or plain. We tell them apart by the gzip magic bytes rather
//! than by the name, because mirrors ship decompressed files under `.gz` names and vice versa.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::bufread::MultiGzDecoder;

use super::{DataError, DataShape, Dataset, Features};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest label we accept. Real IDX sets have at most 62 classes (EMNIST byclass); a larger
/// value means a wrong or damaged file, and would otherwise silently become hundreds of classes.
pub const MAX_LABEL: u8 = 127;

/// Never preallocate more than this on the word of a header, which may be damaged; beyond it
/// the buffer grows as data actually arrives.
const MAX_PREALLOC: usize = 256 << 20;

/// The four files of an MNIST-like set, by their canonical stems.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The images of one IDX file, pixels row-major, image after image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Finds `<stem>.gz` or `<stem>` in `dir`, also under the `train-images.idx3-ubyte` spelling
/// some distributions use. `hint` ends the error message when none exists.
pub fn locate(dir: &Path, stem: &str, hint: &str) -> Result<PathBuf, DataError> {
    let mut stems = vec![stem.to_string()];
    let dotted = stem.replacen("-idx", ".idx", 1);
    if dotted != stem {
        stems.push(dotted);
    }
    let candidates: Vec<PathBuf> = stems.iter().flat_map(|s| [dir.join(format!("{s}.gz")), dir.join(s)]).collect();
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let others: Vec<String> =
        candidates[1..].iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    let place = if dir.is_dir() { String::new() } else { format!("; directory {} does not exist", dir.display()) };
    Err(DataError::Missing {
        path: candidates[0].clone(),
        hint: format!(" (also looked for {}{place}){}", others.join(", "), if hint.is_empty() { "" } else { "; " })
            + hint,
    })
}

/// Reads a whole IDX image file (`0x00000803`).
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    let mut reader = open(path)?;
    let (count, rows, cols) = image_header(&mut reader, path)?;
    let len = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .ok_or_else(|| corrupt(path, format!("header claims {count} images of {rows}x{cols}, too many to hold")))?;
    let pixels = read_body(&mut reader, path, len, "pixels")?;
    Ok(IdxImages { count, rows, cols, pixels })
}

/// Reads only the header of an IDX image file: `(count, rows, cols)`. Cheap even for `.gz`.
pub fn read_image_header(path: &Path) -> Result<(usize, usize, usize), DataError> {
    let mut reader = open(path)?;
    image_header(&mut reader, path)
}

/// Reads a whole IDX label file (`0x00000801`), refusing labels above [`MAX_LABEL`].
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut reader = open(path)?;
    let magic = read_u32(&mut reader, path)?;
    if magic != LABELS_MAGIC {
        return Err(corrupt(
            path,
            format!("expected magic 0x{LABELS_MAGIC:08x} (u8 labels, 1 dimension), found 0x{magic:08x}"),
        ));
    }
    let count = read_u32(&mut reader, path)? as usize;
    let labels = read_body(&mut reader, path, count, "labels")?;
    if let Some((i, &label)) = labels.iter().enumerate().find(|&(_, &l)| l > MAX_LABEL) {
        return Err(corrupt(
            path,
            format!("label {label} at position {i} is above {MAX_LABEL}, so this is no label file"),
        ));
    }
    Ok(labels)
}

/// Loads an MNIST-like set from the four files in `dir`: train then test, merged.
pub fn load_dataset(name: &str, dir: &Path, hint: &str) -> Result<Dataset, DataError> {
    let (train, train_labels) = read_pair(dir, TRAIN_IMAGES, TRAIN_LABELS, hint)?;
    let (test, test_labels) = read_pair(dir, TEST_IMAGES, TEST_LABELS, hint)?;
    if (test.rows, test.cols) != (train.rows, train.cols) {
        let path = locate(dir, TEST_IMAGES, hint)?;
        return Err(corrupt(
            &path,
            format!("images are {}x{}, but the train images are {}x{}", test.rows, test.cols, train.rows, train.cols),
        ));
    }
    let official_train_len = train.count;
    let mut pixels = train.pixels;
    pixels.extend_from_slice(&test.pixels);
    let labels: Vec<u32> = train_labels.iter().chain(&test_labels).map(|&l| u32::from(l)).collect();
    let shape = DataShape { sample_shape: vec![1, train.rows, train.cols], num_classes: num_classes(&labels) };
    Ok(Dataset {
        name: name.to_string(),
        features: Features::Pixels(pixels),
        labels,
        shape,
        official_train_len,
        owners: None,
    })
}

/// The shape of an MNIST-like set in `dir`, reading the image header and the (small) label files.
pub fn describe_dataset(dir: &Path, hint: &str) -> Result<DataShape, DataError> {
    let (_, rows, cols) = read_image_header(&locate(dir, TRAIN_IMAGES, hint)?)?;
    let mut labels = read_labels(&locate(dir, TRAIN_LABELS, hint)?)?;
    labels.extend(read_labels(&locate(dir, TEST_LABELS, hint)?)?);
    let labels: Vec<u32> = labels.into_iter().map(u32::from).collect();
    Ok(DataShape { sample_shape: vec![1, rows, cols], num_classes: num_classes(&labels) })
}

/// Max label + 1, but at least 2: a classifier needs two outputs even if a file holds one class.
pub fn num_classes(labels: &[u32]) -> usize {
    labels.iter().max().map_or(0, |&m| m as usize + 1).max(2)
}

/// Reads an image file and its label file, checking that they agree on the count.
fn read_pair(dir: &Path, images: &str, labels: &str, hint: &str) -> Result<(IdxImages, Vec<u8>), DataError> {
    let images_path = locate(dir, images, hint)?;
    let labels_path = locate(dir, labels, hint)?;
    let images = read_images(&images_path)?;
    let labels = read_labels(&labels_path)?;
    if labels.len() != images.count {
        return Err(corrupt(
            &labels_path,
            format!("holds {} labels, but {} holds {} images", labels.len(), images_path.display(), images.count),
        ));
    }
    Ok((images, labels))
}

/// Opens a file, decompressing on the fly if it starts with the gzip magic.
fn open(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    // A large buffer: the reads below are big sequential ones.
    let mut buffered = BufReader::with_capacity(1 << 20, file);
    let head = buffered.fill_buf().map_err(|e| io_error(path, e))?;
    if head.starts_with(&GZIP_MAGIC) { Ok(Box::new(MultiGzDecoder::new(buffered))) } else { Ok(Box::new(buffered)) }
}

fn image_header(reader: &mut dyn Read, path: &Path) -> Result<(usize, usize, usize), DataError> {
    let magic = read_u32(reader, path)?;
    if magic != IMAGES_MAGIC {
        return Err(corrupt(
            path,
            format!("expected magic 0x{IMAGES_MAGIC:08x} (u8 images, 3 dimensions), found 0x{magic:08x}"),
        ));
    }
    let count = read_u32(reader, path)? as usize;
    let rows = read_u32(reader, path)? as usize;
    let cols = read_u32(reader, path)? as usize;
    if rows == 0 || cols == 0 {
        return Err(corrupt(path, format!("header says images are {rows}x{cols}")));
    }
    Ok((count, rows, cols))
}

fn read_u32(reader: &mut dyn Read, path: &Path) -> Result<u32, DataError> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => corrupt(path, "the file ends inside the header".into()),
        _ => read_error(path, e),
    })?;
    Ok(u32::from_be_bytes(bytes))
}

/// Reads exactly `len` bytes of `what` and checks that nothing follows them.
fn read_body(reader: &mut dyn Read, path: &Path, len: usize, what: &str) -> Result<Vec<u8>, DataError> {
    let mut body = Vec::with_capacity(len.min(MAX_PREALLOC));
    reader.take(len as u64).read_to_end(&mut body).map_err(|e| read_error(path, e))?;
    if body.len() < len {
        return Err(corrupt(path, format!("expected {len} bytes of {what} after the header, found {}", body.len())));
    }
    if !at_end(reader).map_err(|e| read_error(path, e))? {
        return Err(corrupt(path, format!("more data follows the {len} bytes of {what} the header announces")));
    }
    Ok(body)
}

fn at_end(reader: &mut dyn Read) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(n) => return Ok(n == 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A read error mid-file is damaged gzip data more often than a failing disk; say which.
fn read_error(path: &Path, e: io::Error) -> DataError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            corrupt(path, format!("bad gzip data: {e}"))
        }
        _ => io_error(path, e),
    }
}

fn io_error(path: &Path, source: io::Error) -> DataError {
    DataError::Io { path: path.to_path_buf(), source }
}

fn corrupt(path: &Path, reason: String) -> DataError {
    DataError::Corrupt { path: path.to_path_buf(), reason }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// Bytes of an IDX image file holding `count` images of `rows`x`cols`, pixel i = i mod 251.
    pub(crate) fn image_bytes(count: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        for v in [IMAGES_MAGIC, count, rows, cols] {
            bytes.extend(v.to_be_bytes());
        }
        bytes.extend((0..count * rows * cols).map(|i| (i % 251) as u8));
        bytes
    }

    pub(crate) fn label_bytes(labels: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for v in [LABELS_MAGIC, labels.len() as u32] {
            bytes.extend(v.to_be_bytes());
        }
        bytes.extend(labels);
        bytes
    }

    pub(crate) fn write(path: &Path, bytes: &[u8], gzip: bool) {
        let mut file = File::create(path).expect("create test file");
        if gzip {
            let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            encoder.write_all(bytes).expect("write gz");
            encoder.finish().expect("finish gz");
        } else {
            file.write_all(bytes).expect("write plain");
        }
    }

    /// Writes a tiny MNIST-like set: 5 train and 3 test images of 2x3, labels 0..=3.
    pub(crate) fn write_tiny_set(dir: &Path, gzip: bool) {
        let suffix = if gzip { ".gz" } else { "" };
        write(&dir.join(format!("{TRAIN_IMAGES}{suffix}")), &image_bytes(5, 2, 3), gzip);
        write(&dir.join(format!("{TRAIN_LABELS}{suffix}")), &label_bytes(&[0, 1, 2, 3, 0]), gzip);
        write(&dir.join(format!("{TEST_IMAGES}{suffix}")), &image_bytes(3, 2, 3), gzip);
        write(&dir.join(format!("{TEST_LABELS}{suffix}")), &label_bytes(&[3, 2, 1]), gzip);
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[test]
    fn reads_gz_and_plain_alike() {
        for gzip in [true, false] {
            let dir = tempdir();
            write_tiny_set(dir.path(), gzip);
            let data = load_dataset("tiny", dir.path(), "").expect("load tiny set");
            assert_eq!(data.len(), 8);
            assert_eq!(data.official_train_len, 5);
            assert_eq!(data.labels, vec![0, 1, 2, 3, 0, 3, 2, 1]);
            assert_eq!(data.shape, DataShape { sample_shape: vec![1, 2, 3], num_classes: 4 });
            let Features::Pixels(pixels) = &data.features else { panic!("expected pixels") };
            assert_eq!(pixels.len(), 8 * 6);
            // The test images follow the train images, each file starting again at 0.
            assert_eq!(&pixels[30..33], &[0, 1, 2]);
            assert_eq!(describe_dataset(dir.path(), "").expect("describe"), data.shape);
        }
    }

    #[test]
    fn accepts_the_dotted_spelling() {
        let dir = tempdir();
        write(&dir.path().join("train-images.idx3-ubyte"), &image_bytes(2, 2, 2), false);
        let path = locate(dir.path(), TRAIN_IMAGES, "").expect("locate dotted");
        assert_eq!(read_images(&path).expect("read").count, 2);
    }

    #[test]
    fn a_missing_file_names_the_paths_tried_and_the_hint() {
        let dir = tempdir();
        let err = load_dataset("tiny", dir.path(), "install it somehow").expect_err("empty dir").to_string();
        assert!(err.contains("train-images-idx3-ubyte.gz is missing"), "{err}");
        assert!(err.contains("train-images.idx3-ubyte"), "{err}");
        assert!(err.contains("install it somehow"), "{err}");
        let err = locate(&dir.path().join("nope"), TRAIN_IMAGES, "").expect_err("no dir").to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn truncated_pixels_are_corrupt() {
        let dir = tempdir();
        let path = dir.path().join("images");
        let mut bytes = image_bytes(4, 3, 3);
        bytes.truncate(bytes.len() - 10);
        write(&path, &bytes, true);
        let err = read_images(&path).expect_err("truncated").to_string();
        assert!(err.contains("expected 36 bytes of pixels after the header, found 26"), "{err}");
        assert!(err.contains("images"), "{err}");
    }

    #[test]
    fn wrong_magic_and_trailing_data_are_corrupt() {
        let dir = tempdir();
        let path = dir.path().join("labels-as-images");
        write(&path, &label_bytes(&[1, 2]), false);
        let err = read_images(&path).expect_err("wrong magic").to_string();
        assert!(err.contains("expected magic 0x00000803"), "{err}");
        assert!(err.contains("found 0x00000801"), "{err}");

        let mut bytes = label_bytes(&[1, 2]);
        bytes.push(7);
        write(&path, &bytes, false);
        let err = read_labels(&path).expect_err("trailing").to_string();
        assert!(err.contains("more data follows"), "{err}");

        write(&path, &[0, 0, 8], false);
        let err = read_labels(&path).expect_err("short header").to_string();
        assert!(err.contains("inside the header"), "{err}");
    }

    #[test]
    fn mismatched_counts_and_absurd_labels_are_corrupt() {
        let dir = tempdir();
        write_tiny_set(dir.path(), false);
        write(&dir.path().join(TEST_LABELS), &label_bytes(&[1, 2]), false);
        let err = load_dataset("tiny", dir.path(), "").expect_err("count mismatch").to_string();
        assert!(err.contains("holds 2 labels"), "{err}");
        assert!(err.contains("holds 3 images"), "{err}");

        write(&dir.path().join(TEST_LABELS), &label_bytes(&[1, 200, 2]), false);
        let err = load_dataset("tiny", dir.path(), "").expect_err("bad label").to_string();
        assert!(err.contains("label 200 at position 1"), "{err}");
    }

    #[test]
    fn damaged_gzip_is_corrupt() {
        let dir = tempdir();
        let path = dir.path().join("images.gz");
        write(&path, &image_bytes(20, 8, 8), true);
        let mut bytes = std::fs::read(&path).expect("read back");
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&path, &bytes).expect("rewrite");
        let err = read_images(&path).expect_err("half a gzip").to_string();
        assert!(err.contains("is corrupt"), "{err}");
    }
}
