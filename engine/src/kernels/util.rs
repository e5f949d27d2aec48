//! `shaders/util.wgsl`: fill, copy, axpy and the sum of slices over flat f32 buffers, at element
//! offsets; and their CPU twins ([`cpu`]).
use super::{grid_over, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform, WORKGROUP_1D};
use crate::device::GpuContext;
use crate::error::Result;

uniform_params! {
    /// The uniform block of util.wgsl.
    pub struct UtilParams {
        pub n: u32,
        pub dst_off: u32,
        pub src_off: u32,
        /// The fill value, or axpy's `a`.
        pub value: f32,
        /// sum_slices: how many slices of `n` values `src` holds.
        pub count: u32,
    }
}

const P: Binding = Binding::uniform(0, "p");
const DST: Binding = Binding::read_write(1, "dst");
const SRC: Binding = Binding::read(2, "src");

pub const FILL: EntryPoint = EntryPoint {
    name: "fill",
    bindings: &[P, DST],
};
pub const COPY: EntryPoint = EntryPoint {
    name: "copy",
    bindings: &[P, DST, SRC],
};
pub const AXPY: EntryPoint = EntryPoint {
    name: "axpy",
    bindings: &[P, DST, SRC],
};
pub const SUM_SLICES: EntryPoint = EntryPoint {
    name: "sum_slices",
    bindings: &[P, DST, SRC],
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("util.wgsl"),
    uniform: UtilParams::LAYOUT,
    overrides: &[],
    shared_constants: &[],
    entry_points: &[FILL, COPY, AXPY, SUM_SLICES],
};

/// The entry points differ only in whether they read `src` and what `value` and `count` mean.
fn launch(
    ctx: &GpuContext,
    entry: &'static EntryPoint,
    dst: (&wgpu::Buffer, usize),
    src: Option<(&wgpu::Buffer, usize)>,
    n: usize,
    value: f32,
    count: usize,
) -> Result<Dispatch> {
    let op = entry.name;
    let params = UtilParams {
        n: u32_of(op, "n", n)?,
        dst_off: u32_of(op, "dst offset", dst.1)?,
        src_off: u32_of(op, "src offset", src.map_or(0, |s| s.1))?,
        value,
        count: u32_of(op, "count", count)?,
    };
    let mut buffers = vec![("dst", dst.0)];
    buffers.extend(src.map(|s| ("src", s.0)));
    let groups = grid_over(op, n, WORKGROUP_1D as usize)?;
    Dispatch::new(ctx, &FAMILY, entry, &[], &params, &buffers, groups)
}

/// `dst[dst_off + i] = value` for `i < n`.
pub fn fill(
    ctx: &GpuContext,
    dst: &wgpu::Buffer,
    dst_off: usize,
    n: usize,
    value: f32,
) -> Result<Dispatch> {
    launch(ctx, &FILL, (dst, dst_off), None, n, value, 0)
}

/// `dst[dst_off + i] = src[src_off + i]` for `i < n` (`dst` and `src` distinct buffers).
pub fn copy(
    ctx: &GpuContext,
    src: &wgpu::Buffer,
    src_off: usize,
    dst: &wgpu::Buffer,
    dst_off: usize,
    n: usize,
) -> Result<Dispatch> {
    launch(ctx, &COPY, (dst, dst_off), Some((src, src_off)), n, 0.0, 0)
}

/// `y[i] += a * x[i]` for `i < n`.
pub fn axpy(
    ctx: &GpuContext,
    a: f32,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    n: usize,
) -> Result<Dispatch> {
    launch(ctx, &AXPY, (y, 0), Some((x, 0)), n, a, 0)
}

/// `dst[i] = Σ_s src[s·n + i]` over `count` consecutive slices of `n` values (`dst` and `src`
/// distinct buffers).
pub fn sum_slices(
    ctx: &GpuContext,
    src: (&wgpu::Buffer, usize),
    count: usize,
    dst: (&wgpu::Buffer, usize),
    n: usize,
) -> Result<Dispatch> {
    launch(ctx, &SUM_SLICES, dst, Some(src), n, 0.0, count)
}

/// The plain-Rust twins of util.wgsl over whole slices.
pub mod cpu {
    pub fn fill(dst: &mut [f32], value: f32) {
        dst.iter_mut().for_each(|v| *v = value);
    }

    pub fn copy(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }

    /// `dst[i] = Σ_s src[s·n + i]` over the `src.len() / dst.len()` slices, in slice order.
    pub fn sum_slices(src: &[f32], dst: &mut [f32]) {
        let n = dst.len();
        for (i, d) in dst.iter_mut().enumerate() {
            *d = src.iter().skip(i).step_by(n).sum();
        }
    }

    /// `y += a·x`, with the kernel's fused multiply-add.
    pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = a.mul_add(xi, *yi);
        }
    }
}
