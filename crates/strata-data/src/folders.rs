//! Image folders as a dataset (`--dataset images --data-path ROOT`), torchvision's
//! `ImageFolder` layout: `ROOT/train/<class>/<image>` and optionally `ROOT/test/<class>/...`
//! (or `ROOT/<class>/<image>` alone, all training data before the split). PNG or JPEG. Classes
//! are the class directories' names in sorted order (over train and test together).
//!
//! Every image becomes `data.image_size` pixels (default: the first image's size; others are
//! resized to it, bilinearly) in grayscale or RGB (`data.channels`; default: RGB when the first
//! image has colour), stored as bytes and scaled to [-1, 1] by the trainer, like IDX images.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::{DataError, DataShape, Dataset, Features};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How images are brought to one shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImageShape {
    /// `[height, width]`; `None`: the first image's.
    pub size: Option<[u32; 2]>,
    /// 1 or 3; `None`: 3 when the first image has colour, else 1.
    pub channels: Option<u32>,
}

/// Loads the folders under `root`.
pub fn load(root: &Path, shape: ImageShape) -> Result<Dataset, DataError> {
    if !root.is_dir() {
        return Err(DataError::Missing {
            path: root.to_path_buf(),
            hint: ": data.path must be a directory of class folders (ROOT/<class>/<image>), or of train/ and \
                   test/ each holding them"
                .into(),
        });
    }
    let (train_dir, test_dir) = if root.join("train").is_dir() {
        (root.join("train"), Some(root.join("test")).filter(|t| t.is_dir()))
    } else {
        (root.to_path_buf(), None)
    };
    let train = list(&train_dir)?;
    let test = test_dir.as_deref().map(list).transpose()?.unwrap_or_default();
    let mut classes: Vec<String> = train.iter().chain(&test).map(|(class, _)| class.clone()).collect();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        return Err(DataError::Corrupt {
            path: train_dir,
            reason: format!("{} class folder(s) with images: a classifier needs at least 2", classes.len()),
        });
    }
    let first = train.first().map(|(_, p)| p).ok_or_else(|| DataError::Corrupt {
        path: train_dir.clone(),
        reason: "no PNG or JPEG image in its class folders".into(),
    })?;
    let first_image = decode(first)?;
    let [height, width] = shape.size.unwrap_or([first_image.height(), first_image.width()]);
    let channels = shape.channels.unwrap_or(if first_image.color().has_color() { 3 } else { 1 });
    if !matches!(channels, 1 | 3) || height == 0 || width == 0 {
        return Err(DataError::Invalid(format!(
            "images become {channels} channel(s) of {height}x{width}: data.channels is 1 or 3, the size positive"
        )));
    }
    let mut pixels = Vec::with_capacity((train.len() + test.len()) * (channels * height * width) as usize);
    let mut labels = Vec::with_capacity(train.len() + test.len());
    for (class, path) in train.iter().chain(&test) {
        let image = decode(path)?;
        let image = if image.width() == width && image.height() == height {
            image
        } else {
            image.resize_exact(width, height, FilterType::Triangle)
        };
        // Channel-first, as the models take them: all of R, then G, then B.
        if channels == 1 {
            pixels.extend_from_slice(image.to_luma8().as_raw());
        } else {
            let rgb = image.to_rgb8();
            for c in 0..3 {
                pixels.extend(rgb.as_raw().iter().skip(c).step_by(3));
            }
        }
        labels.push(classes.binary_search(class).unwrap_or(0) as u32);
    }
    Ok(Dataset {
        name: "images".into(),
        features: Features::Pixels(pixels),
        labels,
        shape: DataShape {
            sample_shape: vec![channels as usize, height as usize, width as usize],
            num_classes: classes.len(),
        },
        official_train_len: train.len(),
        owners: None,
    })
}

/// `(class, image path)` for every image under `dir/<class>/`, in sorted order.
fn list(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let read = |d: &Path| {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(|source| DataError::Io { path: d.to_path_buf(), source })?
            .map(|e| e.map(|e| e.path()).map_err(|source| DataError::Io { path: d.to_path_buf(), source }))
            .collect::<Result<_, _>>()?;
        entries.sort();
        Ok::<_, DataError>(entries)
    };
    let mut out = Vec::new();
    for class_dir in read(dir)?.into_iter().filter(|p| p.is_dir()) {
        let class = class_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for file in read(&class_dir)? {
            let ext = file.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
            if EXTENSIONS.contains(&ext.as_str()) {
                out.push((class.clone(), file));
            }
        }
    }
    Ok(out)
}

fn decode(path: &Path) -> Result<image::DynamicImage, DataError> {
    let reader = image::io::Reader::open(path)
        .map_err(|source| DataError::Io { path: path.to_path_buf(), source })?
        .with_guessed_format()
        .map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    reader.decode().map_err(|e| DataError::Corrupt { path: path.to_path_buf(), reason: format!("cannot decode: {e}") })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn save(path: &Path, width: u32, height: u32, value: u8, color: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if color {
            image::RgbImage::from_fn(width, height, |x, _| image::Rgb([value, x as u8, 255 - value]))
                .save(path)
                .unwrap();
        } else {
            image::GrayImage::from_pixel(width, height, image::Luma([value])).save(path).unwrap();
        }
    }

    #[test]
    fn train_and_test_folders_load_in_the_merged_space() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        save(&root.join("train/cat/a.png"), 4, 3, 10, false);
        save(&root.join("train/cat/b.png"), 4, 3, 20, false);
        save(&root.join("train/dog/c.png"), 8, 6, 200, false);
        save(&root.join("test/dog/d.png"), 4, 3, 30, false);
        std::fs::write(root.join("train/cat/notes.txt"), "not an image").unwrap();
        let data = load(root, ImageShape::default()).unwrap();
        assert_eq!(data.shape, DataShape { sample_shape: vec![1, 3, 4], num_classes: 2 });
        assert_eq!((data.labels.clone(), data.official_train_len), (vec![0, 0, 1, 1], 3));
        let Features::Pixels(p) = &data.features else { panic!("pixels") };
        assert_eq!((p.len(), p[0], p[12], p[24], p[36]), (48, 10, 20, 200, 30), "the 8x6 image is resized");
    }

    #[test]
    fn colour_images_are_channel_first_and_size_is_configurable() {
        let dir = tempfile::tempdir().unwrap();
        save(&dir.path().join("a/1.png"), 2, 2, 100, true);
        save(&dir.path().join("b/2.png"), 2, 2, 50, true);
        let data = load(dir.path(), ImageShape::default()).unwrap();
        assert_eq!(data.shape.sample_shape, vec![3, 2, 2]);
        let Features::Pixels(p) = &data.features else { panic!("pixels") };
        assert_eq!(p[..12], [100, 100, 100, 100, 0, 1, 0, 1, 155, 155, 155, 155]);
        let gray = load(dir.path(), ImageShape { size: Some([5, 7]), channels: Some(1) }).unwrap();
        assert_eq!(gray.shape.sample_shape, vec![1, 5, 7]);
    }

    #[test]
    fn bad_folders_and_images_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        save(&root.join("only/a.png"), 2, 2, 1, false);
        assert!(load(root, ImageShape::default()).unwrap_err().to_string().contains("1 class folder(s)"));
        save(&root.join("other/a.png"), 2, 2, 1, false);
        let err = load(root, ImageShape { size: None, channels: Some(2) }).unwrap_err().to_string();
        assert!(err.contains("data.channels is 1 or 3"), "{err}");
        std::fs::create_dir_all(root.join("broken")).unwrap();
        std::fs::write(root.join("broken/b.jpg"), b"\xff\xd8 truncated jpeg").unwrap();
        let err = load(root, ImageShape::default()).unwrap_err().to_string();
        assert!(err.contains("b.jpg") && err.contains("cannot decode"), "{err}");
        let err = load(&root.join("nowhere"), ImageShape::default()).unwrap_err().to_string();
        assert!(err.contains("nowhere is missing") && err.contains("class folders"), "{err}");
    }
}
