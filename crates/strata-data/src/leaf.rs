//! LEAF's JSON layout (`--dataset leaf --data-path DIR`): `DIR/train/*.json` and optionally
//! `DIR/test/*.json`, each `{"users": [...], "user_data": {"<user>": {"x": [...], "y": [...]}}}`
//! (FEMNIST, Shakespeare's numeric variants, Sent140 once featurized, and datasets written
//! like them). Each user is a sample's owner, so `--split natural` gives every client whole
//! users: LEAF's own federated split.
//!
//! A sample's `x` is a list of numbers (nested lists are flattened); with `data.image_size =
//! [H, W]` (and `data.channels`) whose product is its length it is an image `[C, H, W]`, else a
//! vector. Labels are integers from 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{DataError, DataShape, Dataset, Features};

#[derive(Deserialize)]
struct LeafFile {
    users: Vec<String>,
    user_data: BTreeMap<String, UserData>,
}

#[derive(Deserialize)]
struct UserData {
    x: Vec<serde_json::Value>,
    y: Vec<serde_json::Value>,
}

/// Loads the users' samples under `dir`; `image` is `([H, W], channels)` when configured.
pub fn load(dir: &Path, image: Option<([u32; 2], u32)>) -> Result<Dataset, DataError> {
    let train_dir = dir.join("train");
    if !train_dir.is_dir() {
        return Err(DataError::Missing {
            path: train_dir,
            hint: ": a LEAF dataset directory holds train/*.json (and test/*.json)".into(),
        });
    }
    let mut owners_by_name: BTreeMap<String, u32> = BTreeMap::new();
    let (mut features, mut labels, mut owners) = (Vec::new(), Vec::new(), Vec::new());
    let mut width = None;
    let mut official_train_len = 0;
    for (part, folder) in [("train", train_dir), ("test", dir.join("test"))] {
        if part == "test" && !folder.is_dir() {
            break;
        }
        let files = json_files(&folder)?;
        if files.is_empty() {
            return Err(DataError::Missing { path: folder.join("*.json"), hint: String::new() });
        }
        for file in files {
            let corrupt = |reason: String| DataError::Corrupt { path: file.clone(), reason };
            let text = std::fs::read(&file).map_err(|source| DataError::Io { path: file.clone(), source })?;
            let parsed: LeafFile = serde_json::from_slice(&text).map_err(|e| corrupt(format!("not LEAF JSON: {e}")))?;
            for user in &parsed.users {
                let data =
                    parsed.user_data.get(user).ok_or_else(|| corrupt(format!("user `{user}` has no user_data")))?;
                if data.x.len() != data.y.len() {
                    return Err(corrupt(format!("user `{user}`: {} x but {} y", data.x.len(), data.y.len())));
                }
                let next = owners_by_name.len() as u32;
                let owner = *owners_by_name.entry(user.clone()).or_insert(next);
                for (i, (x, y)) in data.x.iter().zip(&data.y).enumerate() {
                    let before = features.len();
                    flatten(x, &mut features).map_err(|e| corrupt(format!("user `{user}`, sample {i}: {e}")))?;
                    let len = features.len() - before;
                    match width {
                        None => width = Some(len),
                        Some(w) if w != len => {
                            return Err(corrupt(format!(
                                "user `{user}`, sample {i} has {len} values, the first sample {w}"
                            )));
                        }
                        Some(_) => {}
                    }
                    let label = y.as_u64().and_then(|l| u32::try_from(l).ok()).ok_or_else(|| {
                        corrupt(format!("user `{user}`, sample {i}: label {y} is not a class number from 0"))
                    })?;
                    labels.push(label);
                    owners.push(owner);
                }
            }
        }
        if part == "train" {
            official_train_len = labels.len();
        }
    }
    let width = width.ok_or_else(|| DataError::Corrupt { path: dir.to_path_buf(), reason: "no samples".into() })?;
    let num_classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    if num_classes < 2 {
        return Err(DataError::Corrupt { path: dir.to_path_buf(), reason: "fewer than 2 classes".into() });
    }
    let sample_shape = match image {
        Some(([h, w], c)) if (h * w * c) as usize == width => vec![c as usize, h as usize, w as usize],
        Some(([h, w], c)) => {
            return Err(DataError::Invalid(format!(
                "data.image_size {h}x{w} with {c} channel(s) is {} values; the samples have {width}",
                h * w * c
            )));
        }
        None => vec![width],
    };
    Ok(Dataset {
        name: "leaf".into(),
        features: Features::Floats(features),
        labels,
        shape: DataShape { sample_shape, num_classes },
        official_train_len,
        owners: Some(owners),
    })
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| DataError::Io { path: dir.to_path_buf(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

fn flatten(value: &serde_json::Value, out: &mut Vec<f32>) -> Result<(), String> {
    match value {
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out)),
        serde_json::Value::Number(n) => match n.as_f64().map(|f| f as f32).filter(|f| f.is_finite()) {
            Some(f) => {
                out.push(f);
                Ok(())
            }
            None => Err(format!("{n} is not a finite float32")),
        },
        other => Err(format!("{} is not a number", clip(&other.to_string()))),
    }
}

fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(dir: &Path, part: &str, file: &str, json: &str) {
        std::fs::create_dir_all(dir.join(part)).unwrap();
        std::fs::write(dir.join(part).join(file), json).unwrap();
    }

    #[test]
    fn users_become_owners_across_train_and_test() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "train",
            "a.json",
            r#"{"users": ["f1", "f2"], "num_samples": [2, 1],
            "user_data": {"f1": {"x": [[0, 1, 2, 3], [4, 5, 6, 7]], "y": [0, 1]}, "f2": {"x": [[1, 1, 1, 1]], "y": [2]}}}"#,
        );
        write(d, "test", "a.json", r#"{"users": ["f2"], "user_data": {"f2": {"x": [[[9, 9], [9, 9]]], "y": [1]}}}"#);
        let data = load(d, None).unwrap();
        assert_eq!((data.len(), data.official_train_len), (4, 3));
        assert_eq!(data.shape, DataShape { sample_shape: vec![4], num_classes: 3 });
        assert_eq!(data.owners, Some(vec![0, 0, 1, 1]));
        assert_eq!(load(d, Some(([2, 2], 1))).unwrap().shape.sample_shape, vec![1, 2, 2]);
        let err = load(d, Some(([3, 3], 1))).unwrap_err().to_string();
        assert!(err.contains("9 values; the samples have 4"), "{err}");
    }

    #[test]
    fn bad_files_name_the_user_and_sample() {
        let expect = |json: &str, words: &[&str]| {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "train", "bad.json", json);
            let err = load(dir.path(), None).unwrap_err().to_string();
            for w in words {
                assert!(err.contains(w), "`{w}` missing from: {err}");
            }
        };
        expect(r#"{"users": ["u"], "user_data": {"u": {"x": [[1]], "y": [0, 1]}}}"#, &["bad.json", "1 x but 2 y"]);
        expect(r#"{"users": ["u"], "user_data": {}}"#, &["user `u` has no user_data"]);
        expect(
            r#"{"users": ["u"], "user_data": {"u": {"x": [[1, 2], [1]], "y": [0, 1]}}}"#,
            &["sample 1 has 1 values"],
        );
        expect(r#"{"users": ["u"], "user_data": {"u": {"x": [["a"]], "y": [0]}}}"#, &["sample 0", "is not a number"]);
        expect(r#"{"users": ["u"], "user_data": {"u": {"x": [[1]], "y": [-1]}}}"#, &["label -1"]);
        expect(r#"{"users": ["u"], "user_data": {"u": {"x": [[1]], "y": [0]}"#, &["bad.json", "not LEAF JSON"]);
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), None).unwrap_err().to_string().contains("train/*.json"));
    }
}
