//! One client's samples as tensors on its device, gathered from the merged dataset.

use strata_data::partition::ClientShare;
use strata_data::{Dataset, Features};
use tch::{Device, Kind, Tensor};

use crate::TorchError;

/// A client's train and test splits: inputs `[n, sample_shape...]` (f32), labels `[n]` (i64).
#[derive(Debug)]
pub struct ClientTensors {
    pub train_x: Tensor,
    pub train_y: Tensor,
    pub test_x: Tensor,
    pub test_y: Tensor,
}

impl ClientTensors {
    /// Gathers the samples of `share` from `dataset` onto `device`.
    ///
    /// Pixels are scaled as torchvision's `ToTensor()` then `Normalize(0.5, 0.5)` do
    /// (PFLlib's transform): x/255, then (x − 0.5)/0.5, in f32. Floats are used as they are.
    pub fn from_share(dataset: &Dataset, share: &ClientShare, device: Device) -> Result<Self, TorchError> {
        let sample_len = dataset.shape.sample_len();
        let stored = match &dataset.features {
            Features::Pixels(v) => v.len(),
            Features::Floats(v) => v.len(),
        };
        if stored != dataset.len() * sample_len {
            return Err(TorchError::Data(format!(
                "dataset `{}` holds {stored} values for {} samples of shape {:?}",
                dataset.name,
                dataset.len(),
                dataset.shape.sample_shape
            )));
        }
        let (train_x, train_y) = gather(dataset, &share.train, "train", device)?;
        let (test_x, test_y) = gather(dataset, &share.test, "test", device)?;
        Ok(Self { train_x, train_y, test_x, test_y })
    }

    pub fn train_len(&self) -> usize {
        rows(&self.train_y)
    }

    pub fn test_len(&self) -> usize {
        rows(&self.test_y)
    }
}

fn rows(t: &Tensor) -> usize {
    t.size().first().map_or(0, |&n| usize::try_from(n).unwrap_or(0))
}

/// Copies the listed samples (inputs and labels), checking indices and labels.
fn gather(dataset: &Dataset, indices: &[usize], split: &str, device: Device) -> Result<(Tensor, Tensor), TorchError> {
    let sample_len = dataset.shape.sample_len();
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        let label = *dataset.labels.get(i).ok_or_else(|| {
            TorchError::Data(format!(
                "{split} index {i} is out of range: dataset `{}` has {} samples",
                dataset.name,
                dataset.len()
            ))
        })?;
        if label as usize >= dataset.shape.num_classes {
            return Err(TorchError::Data(format!(
                "sample {i} of `{}` has label {label}, but there are {} classes",
                dataset.name, dataset.shape.num_classes
            )));
        }
        labels.push(i64::from(label));
    }
    let mut shape: Vec<i64> = vec![i64::try_from(indices.len()).unwrap_or(i64::MAX)];
    shape.extend(dataset.shape.sample_shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)));
    let x = match &dataset.features {
        Features::Pixels(all) => {
            let bytes = pick(all, indices, sample_len);
            let x = Tensor::from_slice(&bytes).view(shape.as_slice()).to_kind(Kind::Float) / 255.0;
            (x - 0.5) / 0.5
        }
        Features::Floats(all) => Tensor::from_slice(&pick(all, indices, sample_len)).view(shape.as_slice()),
    };
    Ok((x.to_device(device), Tensor::from_slice(&labels).to_device(device)))
}

/// The rows of `all` at `indices`, concatenated (indices already checked).
fn pick<T: Copy>(all: &[T], indices: &[usize], sample_len: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(indices.len() * sample_len);
    for &i in indices {
        out.extend_from_slice(&all[i * sample_len..(i + 1) * sample_len]);
    }
    out
}

#[cfg(test)]
mod tests {
    use strata_data::DataShape;

    use super::*;

    fn pixels() -> Dataset {
        Dataset {
            name: "tiny".into(),
            features: Features::Pixels(vec![0, 255, 51, 204, 10, 20, 30, 40]),
            labels: vec![0, 1],
            shape: DataShape { sample_shape: vec![1, 2, 2], num_classes: 2 },
            official_train_len: 2,
            owners: None,
        }
    }

    #[test]
    fn pixels_are_scaled_like_to_tensor_and_normalize() {
        let share = ClientShare { train: vec![0], test: vec![1, 0] };
        let t = ClientTensors::from_share(&pixels(), &share, Device::Cpu).expect("gather");
        assert_eq!(t.train_x.size(), [1, 1, 2, 2]);
        assert_eq!((t.train_len(), t.test_len()), (1, 2));
        let x = Vec::<f32>::try_from(&t.train_x.reshape([-1])).expect("values");
        let expected: Vec<f32> = [0u8, 255, 51, 204].iter().map(|&p| (f32::from(p) / 255.0 - 0.5) / 0.5).collect();
        assert_eq!(x, expected);
        assert_eq!(x[0], -1.0);
        assert_eq!(x[1], 1.0);
        assert_eq!(t.test_y.kind(), Kind::Int64);
        assert_eq!(Vec::<i64>::try_from(&t.test_y).expect("labels"), [1, 0]);
    }

    #[test]
    fn floats_are_used_as_is_and_bad_indices_or_labels_are_refused() {
        let data = Dataset {
            name: "vec".into(),
            features: Features::Floats(vec![1.5, -2.0, 3.0, 4.0, 5.0, 6.0]),
            labels: vec![2, 0],
            shape: DataShape { sample_shape: vec![3], num_classes: 3 },
            official_train_len: 2,
            owners: None,
        };
        let share = ClientShare { train: vec![1, 0], test: vec![] };
        let t = ClientTensors::from_share(&data, &share, Device::Cpu).expect("gather");
        assert_eq!(t.train_x.size(), [2, 3]);
        assert_eq!(Vec::<f32>::try_from(&t.train_x.reshape([-1])).expect("values"), [4.0, 5.0, 6.0, 1.5, -2.0, 3.0]);
        assert_eq!(t.test_len(), 0);
        assert_eq!(t.test_x.size(), [0, 3]);

        let bad = ClientShare { train: vec![2], test: vec![] };
        let err = ClientTensors::from_share(&data, &bad, Device::Cpu).expect_err("index 2").to_string();
        assert!(err.contains("train index 2 is out of range"), "{err}");
        let mut wrong_label = data.clone();
        wrong_label.labels[0] = 3;
        let err = ClientTensors::from_share(&wrong_label, &share, Device::Cpu).expect_err("label").to_string();
        assert!(err.contains("label 3"), "{err}");
    }
}
