//! `shaders/sgd.wgsl`: one fused SGD step over the whole parameter arena; and its CPU twin
//! ([`cpu`]), built on [`crate::optim::sgd_update`], the definition of one element's update.
use super::{grid_over, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform, WORKGROUP_1D};
use crate::device::GpuContext;
use crate::error::Result;
use crate::optim::SgdConfig;

uniform_params! {
    /// The uniform block of sgd.wgsl.
    pub struct SgdParams {
        pub n: u32,
        pub nesterov: u32,
        pub lr: f32,
        pub momentum: f32,
        pub weight_decay: f32,
    }
}

impl SgdParams {
    pub fn new(n: usize, cfg: &SgdConfig) -> Result<Self> {
        Ok(SgdParams {
            n: u32_of(SGD_STEP.name, "n", n)?,
            nesterov: cfg.nesterov as u32,
            lr: cfg.lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
        })
    }
}

pub const SGD_STEP: EntryPoint = EntryPoint {
    name: "sgd_step",
    bindings: &[
        Binding::uniform(0, "p"),
        Binding::read_write(1, "x"),
        Binding::read_write(2, "m"),
        Binding::read(3, "g"),
    ],
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("sgd.wgsl"),
    uniform: SgdParams::LAYOUT,
    overrides: &[],
    shared_constants: &[],
    entry_points: &[SGD_STEP],
};

/// One fused SGD step over the first `n` elements of the arena: `x`, momentum `m`, gradient `g`.
pub fn sgd_step(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    m: &wgpu::Buffer,
    g: &wgpu::Buffer,
    n: usize,
    cfg: &SgdConfig,
) -> Result<Dispatch> {
    let params = SgdParams::new(n, cfg)?;
    let groups = grid_over(SGD_STEP.name, n, WORKGROUP_1D as usize)?;
    let buffers = [("x", x), ("m", m), ("g", g)];
    Dispatch::new(ctx, &FAMILY, &SGD_STEP, &[], &params, &buffers, groups)
}

/// The plain-Rust twin of sgd.wgsl.
pub mod cpu {
    use crate::optim::{sgd_update, SgdConfig};

    /// One SGD step over whole slices.
    pub fn sgd_step(x: &mut [f32], m: &mut [f32], g: &[f32], cfg: &SgdConfig) {
        for ((xi, mi), &gi) in x.iter_mut().zip(m.iter_mut()).zip(g) {
            *xi -= sgd_update(cfg, *xi, gi, mi);
        }
    }
}
