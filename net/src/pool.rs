//! A small pool of `f32` buffers shared by the links, the driver and the collectives, so a 45 MB
//! exchange does not fault in fresh pages every time.

use std::sync::{Arc, Mutex};

/// Recycles large f32 buffers. Cheap to clone (one shared list).
#[derive(Clone, Debug, Default)]
pub struct BufPool {
    inner: Arc<Mutex<Vec<Vec<f32>>>>,
}

/// Buffers kept at most: a few snapshots and chunks in flight; more would only hold memory.
const POOL_MAX: usize = 8;

impl BufPool {
    /// A buffer of exactly `len` floats (contents unspecified: the caller overwrites all of it).
    pub fn take(&self, len: usize) -> Vec<f32> {
        if let Ok(mut v) = self.inner.lock() {
            if let Some(i) = v.iter().position(|b| b.len() == len) {
                return v.swap_remove(i);
            }
        }
        vec![0.0; len]
    }

    /// A pooled copy of `data` (one memcpy).
    pub fn copy_of(&self, data: &[f32]) -> Vec<f32> {
        let mut buf = self.take(data.len());
        buf.copy_from_slice(data);
        buf
    }

    /// Give a buffer back for reuse.
    pub fn give(&self, buf: Vec<f32>) {
        if buf.is_empty() {
            return;
        }
        if let Ok(mut v) = self.inner.lock() {
            if v.len() < POOL_MAX {
                v.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_of_the_same_length_only() {
        let pool = BufPool::default();
        let a = pool.copy_of(&[1.0, 2.0, 3.0]);
        let ptr = a.as_ptr();
        pool.give(a);
        let other = pool.take(2);
        assert_ne!(other.as_ptr(), ptr);
        let b = pool.take(3);
        assert_eq!(b.as_ptr(), ptr);
        for _ in 0..2 * POOL_MAX {
            pool.give(vec![0.0; 4]);
        }
        assert_eq!(pool.inner.lock().map(|v| v.len()).unwrap_or(0), POOL_MAX);
    }
}
