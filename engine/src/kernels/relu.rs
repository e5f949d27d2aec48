//! `shaders/relu.wgsl`: ReLU over a flat range, forward in place and backward masked by the forward
//! output; and their CPU twins ([`cpu`]).
use super::{grid_over, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform, WORKGROUP_1D};
use crate::device::GpuContext;
use crate::error::Result;

uniform_params! {
    /// The uniform block of relu.wgsl.
    pub struct ReluParams {
        pub n: u32,
        pub grad_off: u32,
        pub act_off: u32,
    }
}

const P: Binding = Binding::uniform(0, "p");
const DST: Binding = Binding::read_write(1, "dst");
const ACT: Binding = Binding::read(2, "act");

/// In place on the activations, bound as `dst` (at `act_off`).
pub const RELU_FORWARD: EntryPoint = EntryPoint {
    name: "relu_forward",
    bindings: &[P, DST],
};
/// In place on the upstream gradient `dst` (at `grad_off`), masked by the activations `act`.
pub const RELU_BACKWARD: EntryPoint = EntryPoint {
    name: "relu_backward",
    bindings: &[P, DST, ACT],
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("relu.wgsl"),
    uniform: ReluParams::LAYOUT,
    overrides: &[],
    shared_constants: &[],
    entry_points: &[RELU_FORWARD, RELU_BACKWARD],
};

/// `h[i] = max(h[i], 0)` in place.
pub fn relu_forward(ctx: &GpuContext, h: (&wgpu::Buffer, usize), n: usize) -> Result<Dispatch> {
    let op = RELU_FORWARD.name;
    let params = ReluParams {
        n: u32_of(op, "n", n)?,
        grad_off: 0,
        act_off: u32_of(op, "offset", h.1)?,
    };
    let groups = grid_over(op, n, WORKGROUP_1D as usize)?;
    Dispatch::new(
        ctx,
        &FAMILY,
        &RELU_FORWARD,
        &[],
        &params,
        &[("dst", h.0)],
        groups,
    )
}

/// `dh[i] = 0` where the forward output `h[i] <= 0` (in place on `dh`).
pub fn relu_backward(
    ctx: &GpuContext,
    dh: (&wgpu::Buffer, usize),
    h: (&wgpu::Buffer, usize),
    n: usize,
) -> Result<Dispatch> {
    let op = RELU_BACKWARD.name;
    let params = ReluParams {
        n: u32_of(op, "n", n)?,
        grad_off: u32_of(op, "grad offset", dh.1)?,
        act_off: u32_of(op, "act offset", h.1)?,
    };
    let groups = grid_over(op, n, WORKGROUP_1D as usize)?;
    let buffers = [("dst", dh.0), ("act", h.0)];
    Dispatch::new(ctx, &FAMILY, &RELU_BACKWARD, &[], &params, &buffers, groups)
}

/// The plain-Rust twins of relu.wgsl.
pub mod cpu {
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
}
