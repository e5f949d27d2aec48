//! `shaders/bias.wgsl`: a dense layer's bias over a row-major `[rows, cols]` activation (add,
//! add + ReLU, and the bias gradient); and their CPU twins ([`cpu`]).
use super::WORKGROUP_1D;
use super::{grid_1d, grid_over, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform};
use crate::device::GpuContext;
use crate::error::Result;

uniform_params! {
    /// The uniform block of bias.wgsl.
    pub struct BiasParams {
        pub rows: u32,
        pub cols: u32,
        pub dst_off: u32,
        pub src_off: u32,
    }
}

// bias_add: dst = y (in place), src = bias. bias_grad: dst = db, src = dy.
const P: Binding = Binding::uniform(0, "p");
const DST: Binding = Binding::read_write(1, "dst");
const SRC: Binding = Binding::read(2, "src");

pub const BIAS_ADD: EntryPoint = EntryPoint {
    name: "bias_add",
    bindings: &[P, DST, SRC],
};
pub const BIAS_ADD_RELU: EntryPoint = EntryPoint {
    name: "bias_add_relu",
    bindings: &[P, DST, SRC],
};
pub const BIAS_GRAD: EntryPoint = EntryPoint {
    name: "bias_grad",
    bindings: &[P, DST, SRC],
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("bias.wgsl"),
    uniform: BiasParams::LAYOUT,
    overrides: &[],
    shared_constants: &[],
    entry_points: &[BIAS_ADD, BIAS_ADD_RELU, BIAS_GRAD],
};

/// `y[r, j] += bias[j]` over a row-major `[rows, cols]` view; with `relu`, then `max(·, 0)`.
pub fn bias_add(
    ctx: &GpuContext,
    y: (&wgpu::Buffer, usize),
    bias: (&wgpu::Buffer, usize),
    rows: usize,
    cols: usize,
    relu: bool,
) -> Result<Dispatch> {
    let entry = if relu { &BIAS_ADD_RELU } else { &BIAS_ADD };
    let op = entry.name;
    let params = BiasParams {
        rows: u32_of(op, "rows", rows)?,
        cols: u32_of(op, "cols", cols)?,
        dst_off: u32_of(op, "y offset", y.1)?,
        src_off: u32_of(op, "bias offset", bias.1)?,
    };
    u32_of(op, "rows·cols", rows * cols)?;
    let groups = grid_over(op, rows * cols, WORKGROUP_1D as usize)?;
    let buffers = [("dst", y.0), ("src", bias.0)];
    Dispatch::new(ctx, &FAMILY, entry, &[], &params, &buffers, groups)
}

/// `db[j] = Σ_r dy[r, j]` over a row-major `[rows, cols]` upstream gradient (one workgroup per
/// column).
pub fn bias_grad(
    ctx: &GpuContext,
    dy: (&wgpu::Buffer, usize),
    db: (&wgpu::Buffer, usize),
    rows: usize,
    cols: usize,
) -> Result<Dispatch> {
    let op = BIAS_GRAD.name;
    let params = BiasParams {
        rows: u32_of(op, "rows", rows)?,
        cols: u32_of(op, "cols", cols)?,
        dst_off: u32_of(op, "db offset", db.1)?,
        src_off: u32_of(op, "dy offset", dy.1)?,
    };
    let groups = grid_1d(u32_of(op, "cols", cols)?);
    let buffers = [("dst", db.0), ("src", dy.0)];
    Dispatch::new(ctx, &FAMILY, &BIAS_GRAD, &[], &params, &buffers, groups)
}

/// The plain-Rust twins of bias.wgsl (f64 accumulation in the reduction).
pub mod cpu {
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
}
