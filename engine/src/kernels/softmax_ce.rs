//! `shaders/softmax_ce.wgsl`: fused softmax + cross-entropy (loss, accuracy and the logits'
//! gradient) over row-major logits; and its CPU twin ([`cpu`]).
use super::{grid_over, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform};
use crate::device::GpuContext;
use crate::error::{EngineError, Result};

uniform_params! {
    /// The uniform block of softmax_ce.wgsl.
    pub struct SoftmaxCeParams {
        pub rows: u32,
        pub classes: u32,
        pub write_grad: u32,
        pub grad_scale: f32,
    }
}

/// Rows handled by one workgroup of the softmax/cross-entropy kernel (`ROWS_PER_GROUP` in the
/// WGSL).
pub const SOFTMAX_ROWS_PER_GROUP: usize = 64;

pub const SOFTMAX_CE: EntryPoint = EntryPoint {
    name: "softmax_ce",
    bindings: &[
        Binding::uniform(0, "p"),
        Binding::read(1, "logits"),
        Binding::read(2, "labels"),
        Binding::read_write(3, "dlogits"),
        Binding::read_write(4, "stats"),
    ],
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("softmax_ce.wgsl"),
    uniform: SoftmaxCeParams::LAYOUT,
    overrides: &[],
    shared_constants: &[("ROWS_PER_GROUP", SOFTMAX_ROWS_PER_GROUP as u32)],
    entry_points: &[SOFTMAX_CE],
};

/// Slots of the statistics buffer needed for `rows` rows: two per workgroup (loss sum, correct).
pub fn softmax_stats_len(rows: usize) -> usize {
    2 * rows.div_ceil(SOFTMAX_ROWS_PER_GROUP).max(1)
}

/// Fused softmax + cross-entropy: adds each workgroup's loss sum and correct count to `stats`,
/// and when `grad_scale` is `Some(s)` writes `dlogits = s·(softmax − onehot)`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_ce(
    ctx: &GpuContext,
    logits: &wgpu::Buffer,
    labels: &wgpu::Buffer,
    dlogits: &wgpu::Buffer,
    stats: &wgpu::Buffer,
    rows: usize,
    classes: usize,
    grad_scale: Option<f32>,
) -> Result<Dispatch> {
    let op = SOFTMAX_CE.name;
    if classes == 0 {
        return Err(EngineError::Shape {
            op,
            detail: "zero classes".into(),
        });
    }
    if stats.size() < (softmax_stats_len(rows) * 4) as u64 {
        return Err(EngineError::Shape {
            op,
            detail: format!("stats buffer too small for {rows} rows"),
        });
    }
    let params = SoftmaxCeParams {
        rows: u32_of(op, "rows", rows)?,
        classes: u32_of(op, "classes", classes)?,
        write_grad: grad_scale.is_some() as u32,
        grad_scale: grad_scale.unwrap_or(0.0),
    };
    let groups = grid_over(op, rows, SOFTMAX_ROWS_PER_GROUP)?;
    let buffers = [
        ("logits", logits),
        ("labels", labels),
        ("dlogits", dlogits),
        ("stats", stats),
    ];
    Dispatch::new(ctx, &FAMILY, &SOFTMAX_CE, &[], &params, &buffers, groups)
}

/// Loss sum and number of correct predictions of a batch, as the softmax kernel accumulates them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    pub loss_sum: f64,
    pub correct: f64,
}

/// The plain-Rust twin of softmax_ce.wgsl (f64 accumulation).
pub mod cpu {
    use super::LossStats;

    /// Fused softmax + cross-entropy; writes `dlogits = scale·(softmax − onehot)` when given.
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
}
