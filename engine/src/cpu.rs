//! Plain-Rust reference twins of the WGSL kernels. They define what each kernel computes and are
//! the oracle of the GPU tests; they are written for clarity, not speed (f64 accumulation where a
//! kernel reduces).
use crate::optim::{sgd_update, SgdConfig};

/// `C[m×n] (+)= op(A)[m×k] · op(B)[k×n]`, row-major; `trans_a` means `a` stores `[k, m]`,
/// `trans_b` means `b` stores `[n, k]`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                acc += f64::from(av) * f64::from(bv);
            }
            let out = &mut c[i * n + j];
            *out = if accumulate {
                *out + acc as f32
            } else {
                acc as f32
            };
        }
    }
}

/// `y[r, j] += bias[j]`, then ReLU when `relu`.
pub fn bias_add(y: &mut [f32], bias: &[f32], rows: usize, cols: usize, relu: bool) {
    for r in 0..rows {
        for j in 0..cols {
            let v = y[r * cols + j] + bias[j];
            y[r * cols + j] = if relu { v.max(0.0) } else { v };
        }
    }
}

/// `db[j] = Σ_r dy[r, j]`.
pub fn bias_grad(dy: &[f32], db: &mut [f32], rows: usize, cols: usize) {
    for j in 0..cols {
        db[j] = (0..rows).map(|r| f64::from(dy[r * cols + j])).sum::<f64>() as f32;
    }
}

pub fn relu_forward(h: &mut [f32]) {
    for v in h {
        *v = v.max(0.0);
    }
}

/// Zeroes `dh` where the forward output `h` is not positive.
pub fn relu_backward(dh: &mut [f32], h: &[f32]) {
    for (d, &a) in dh.iter_mut().zip(h) {
        if a <= 0.0 {
            *d = 0.0;
        }
    }
}

/// Loss sum and number of correct predictions of a batch, as the softmax kernel accumulates them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    pub loss_sum: f64,
    pub correct: f64,
}

/// Fused softmax + cross-entropy; writes `dlogits = scale·(softmax − onehot)` when `grad_scale`.
pub fn softmax_ce(
    logits: &[f32],
    labels: &[u32],
    dlogits: Option<&mut [f32]>,
    rows: usize,
    classes: usize,
    grad_scale: f32,
) -> LossStats {
    let mut stats = LossStats::default();
    let mut grads = dlogits;
    for r in 0..rows {
        let z = &logits[r * classes..(r + 1) * classes];
        let label = labels[r] as usize;
        let (argmax, zmax) =
            z.iter()
                .copied()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                });
        let sum: f64 = z.iter().map(|&v| f64::from(v - zmax).exp()).sum();
        stats.loss_sum += sum.ln() + f64::from(zmax) - f64::from(z[label]);
        if argmax == label {
            stats.correct += 1.0;
        }
        if let Some(g) = grads.as_deref_mut() {
            for j in 0..classes {
                let p = f64::from(z[j] - zmax).exp() / sum;
                let onehot = if j == label { 1.0 } else { 0.0 };
                g[r * classes + j] = grad_scale * (p - onehot) as f32;
            }
        }
    }
    stats
}

/// One SGD step over whole slices.
pub fn sgd_step(x: &mut [f32], m: &mut [f32], g: &[f32], cfg: &SgdConfig) {
    for ((xi, mi), &gi) in x.iter_mut().zip(m.iter_mut()).zip(g) {
        *xi -= sgd_update(cfg, *xi, gi, mi);
    }
}

pub fn fill(dst: &mut [f32], value: f32) {
    dst.iter_mut().for_each(|v| *v = value);
}

pub fn copy(src: &[f32], dst: &mut [f32]) {
    dst.copy_from_slice(src);
}

/// `y += a·x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = a.mul_add(xi, *yi);
    }
}
