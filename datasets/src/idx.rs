//! Reader for IDX files (the MNIST format), gzipped or raw. Validates the magic number, the element
//! type, the dimensions and the length; a truncated or corrupt file is an error naming the file and
//! what is wrong with it.
use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum IdxError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid gzip stream ({source}); the file is corrupt: fetch it again")]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an IDX file: {detail}")]
    BadHeader { path: PathBuf, detail: String },
    #[error(
        "{path} is truncated: its header declares {expected} bytes of data but it holds {found}; \
         fetch it again"
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path} has {extra} bytes after the {expected} bytes its header declares; the file is corrupt")]
    Trailing {
        path: PathBuf,
        expected: u64,
        extra: u64,
    },
}

/// An IDX array of unsigned bytes (type 0x08, the only type MNIST-like datasets use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads and validates an IDX file; gzip is detected from the content, not the name.
pub fn read_idx(path: &Path) -> Result<IdxArray, IdxError> {
    let raw = std::fs::read(path).map_err(|source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|source| IdxError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        out
    } else {
        raw
    };
    parse_idx(&bytes, path)
}

/// Parses IDX bytes; `path` only names the source in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, IdxError> {
    let bad = |detail: String| IdxError::BadHeader {
        path: path.to_path_buf(),
        detail,
    };
    if bytes.len() < 4 {
        return Err(bad(format!(
            "only {} bytes, shorter than the 4-byte magic number",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "magic number starts with {:#04x} {:#04x}, expected 0x00 0x00",
            bytes[0], bytes[1]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "element type {:#04x} is not unsigned byte (0x08), the type of image and label files",
            bytes[2]
        )));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 || ndims > 4 {
        return Err(bad(format!("{ndims} dimensions (expected 1 to 4)")));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected: header as u64,
            found: bytes.len() as u64,
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    if dims.contains(&0) {
        return Err(bad(format!("a zero dimension in {dims:?}")));
    }
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let Some(expected) = expected.filter(|&e| e <= 1 << 34) else {
        return Err(bad(format!("dimensions {dims:?} are implausibly large")));
    };
    let found = (bytes.len() - header) as u64;
    if found < expected {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    if found > expected {
        return Err(IdxError::Trailing {
            path: path.to_path_buf(),
            expected,
            extra: found - expected,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Encodes a u8 IDX array (used by tests and tools that write small fixtures).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend((d as u32).to_be_bytes());
    }
    out.extend(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.idx")
    }

    #[test]
    fn round_trip() {
        let data: Vec<u8> = (0..24).collect();
        let a = parse_idx(&encode_idx(&[2, 3, 4], &data), p()).unwrap();
        assert_eq!(a.dims, vec![2, 3, 4]);
        assert_eq!(a.data, data);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let good = encode_idx(&[2, 3], &[1; 6]);
        let e = parse_idx(&good[..good.len() - 2], p())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.idx is truncated")
                && e.contains("declares 6 bytes")
                && e.contains("holds 4"),
            "{e}"
        );
        let mut long = good.clone();
        long.push(0);
        let e = parse_idx(&long, p()).unwrap_err().to_string();
        assert!(e.contains("1 bytes after"), "{e}");
        let mut bad = good.clone();
        bad[0] = 0x1f;
        let e = parse_idx(&bad, p()).unwrap_err().to_string();
        assert!(e.contains("not an IDX file") && e.contains("magic"), "{e}");
        let mut ty = good.clone();
        ty[2] = 0x0d;
        let e = parse_idx(&ty, p()).unwrap_err().to_string();
        assert!(e.contains("element type 0x0d"), "{e}");
        let e = parse_idx(&[0, 0], p()).unwrap_err().to_string();
        assert!(e.contains("shorter than the 4-byte magic"), "{e}");
        let e = parse_idx(&[0, 0, 8, 3, 0, 0], p()).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
