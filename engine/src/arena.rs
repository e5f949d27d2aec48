//! The flat parameter arena. Every trainable tensor of a model is a view (offset, shape) into ONE
//! f32 vector; gradients, momentum, x̃ and checkpoints use the same layout, so optimizer steps,
//! A²CiD² mixing, exchanges with peers and checkpoints each act on the whole model in one pass.

/// One tensor of the layout: `shape.iter().product()` elements starting at `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorView {
    pub name: String,
    pub offset: usize,
    pub shape: Vec<usize>,
}

impl TensorView {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The layout of a model's parameters in the arena.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamLayout {
    tensors: Vec<TensorView>,
    len: usize,
}

impl ParamLayout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a tensor and returns its view.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> TensorView {
        let view = TensorView {
            name: name.into(),
            offset: self.len,
            shape: shape.to_vec(),
        };
        self.len += view.len();
        self.tensors.push(view.clone());
        view
    }

    /// Total number of parameters (elements of the arena).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn tensors(&self) -> &[TensorView] {
        &self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&TensorView> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A fingerprint of the layout (names, shapes, offsets): two processes agree on it exactly
    /// when their models have the same parameter layout. 64-bit FNV-1a over a canonical text form
    /// (stable across platforms and releases, unlike `std`'s default hasher).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::Hasher;
        let mut h = fnv::FnvHasher::default();
        for t in &self.tensors {
            h.write(format!("{}@{}:{:?};", t.name, t.offset, t.shape).as_bytes());
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A_FINGERPRINT: u64 = 0x555d_b919_1cfc_f4c0;

    #[test]
    fn views_are_contiguous_and_fingerprint_tracks_layout() {
        let mut a = ParamLayout::new();
        let w = a.push("fc0.weight", &[3, 4]);
        let b = a.push("fc0.bias", &[4]);
        assert_eq!((w.offset, w.len(), b.offset, a.len()), (0, 12, 12, 16));
        assert_eq!(a.get("fc0.bias").unwrap().range(), 12..16);
        let mut same = ParamLayout::new();
        same.push("fc0.weight", &[3, 4]);
        same.push("fc0.bias", &[4]);
        assert_eq!(a.fingerprint(), same.fingerprint());
        let mut other = ParamLayout::new();
        other.push("fc0.weight", &[4, 3]);
        other.push("fc0.bias", &[4]);
        assert_ne!(a.fingerprint(), other.fingerprint());
        // Pinned: the value every release computes for this layout (peers and checkpoints of
        // earlier versions compare against it).
        assert_eq!(a.fingerprint(), A_FINGERPRINT);
    }
}
