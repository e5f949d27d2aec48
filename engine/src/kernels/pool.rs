//! `shaders/pool.wgsl`: max and average pooling over the planes of NCHW tensors, forward and
//! backward (gathers, so no two invocations write one value); and their CPU twins ([`cpu`]).
use super::{grid_over, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform, WORKGROUP_1D};
use crate::device::GpuContext;
use crate::error::{EngineError, Result};

uniform_params! {
    /// The uniform block of pool.wgsl.
    pub struct PoolParams {
        pub planes: u32,
        pub h: u32,
        pub w: u32,
        pub oh: u32,
        pub ow: u32,
        pub kh: u32,
        pub kw: u32,
        pub stride: u32,
        pub pad: u32,
        pub accumulate: u32,
        pub dst_off: u32,
        pub src_off: u32,
    }
}

const P: Binding = Binding::uniform(0, "p");
const DST: Binding = Binding::read_write(1, "dst");
const SRC: Binding = Binding::read(2, "src");
const IDX: Binding = Binding::read_write(3, "idx");

pub const MAX_POOL_FORWARD: EntryPoint = EntryPoint {
    name: "max_pool_forward",
    bindings: &[P, DST, SRC, IDX],
};
pub const MAX_POOL_BACKWARD: EntryPoint = EntryPoint {
    name: "max_pool_backward",
    bindings: &[P, DST, SRC, IDX],
};
pub const AVG_POOL_FORWARD: EntryPoint = EntryPoint {
    name: "avg_pool_forward",
    bindings: &[P, DST, SRC],
};
pub const AVG_POOL_BACKWARD: EntryPoint = EntryPoint {
    name: "avg_pool_backward",
    bindings: &[P, DST, SRC],
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("pool.wgsl"),
    uniform: PoolParams::LAYOUT,
    overrides: &[],
    shared_constants: &[],
    entry_points: &[
        MAX_POOL_FORWARD,
        MAX_POOL_BACKWARD,
        AVG_POOL_FORWARD,
        AVG_POOL_BACKWARD,
    ],
};

/// Max or average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// One pooling layer: `planes` (batch·channels) planes of `h × w`, windows of `kh × kw` every
/// `stride`, `pad` zeros of padding on each side that never count as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    pub kind: PoolKind,
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl PoolGeometry {
    pub fn new(
        kind: PoolKind,
        planes: usize,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<PoolGeometry> {
        let g = PoolGeometry {
            kind,
            planes,
            h,
            w,
            kh,
            kw,
            stride,
            pad,
        };
        if [planes, h, w, kh, kw, stride].contains(&0) {
            return Err(EngineError::Shape {
                op: "pool",
                detail: format!("{g:?}: every size and the stride must be positive"),
            });
        }
        if pad >= kh || pad >= kw || h + 2 * pad < kh || w + 2 * pad < kw {
            return Err(EngineError::Shape {
                op: "pool",
                detail: format!(
                    "a {kh}×{kw} window padded by {pad} does not fit a {h}×{w} input (the \
                     padding must be smaller than the window)"
                ),
            });
        }
        Ok(g)
    }

    /// The global average pool of `planes` planes of `h × w`: one value per plane.
    pub fn global_avg(planes: usize, (h, w): (usize, usize)) -> Result<PoolGeometry> {
        PoolGeometry::new(PoolKind::Avg, planes, (h, w), (h, w), 1, 0)
    }

    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    pub fn input_len(&self) -> usize {
        self.planes * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.planes * self.oh() * self.ow()
    }

    fn params(&self, op: &'static str, dst_off: usize, src_off: usize) -> Result<PoolParams> {
        Ok(PoolParams {
            planes: u32_of(op, "planes", self.planes)?,
            h: u32_of(op, "h", self.h)?,
            w: u32_of(op, "w", self.w)?,
            oh: u32_of(op, "oh", self.oh())?,
            ow: u32_of(op, "ow", self.ow())?,
            kh: u32_of(op, "kh", self.kh)?,
            kw: u32_of(op, "kw", self.kw)?,
            stride: u32_of(op, "stride", self.stride)?,
            pad: u32_of(op, "pad", self.pad)?,
            accumulate: 0,
            dst_off: u32_of(op, "dst offset", dst_off)?,
            src_off: u32_of(op, "src offset", src_off)?,
        })
    }

    /// `y = pool(x)`; a max pool records where each maximum sits in `idx` (`output_len` u32s).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        x: (&wgpu::Buffer, usize),
        y: (&wgpu::Buffer, usize),
        idx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let e = match self.kind {
            PoolKind::Max => &MAX_POOL_FORWARD,
            PoolKind::Avg => &AVG_POOL_FORWARD,
        };
        let p = self.params(e.name, y.1, x.1)?;
        let mut buffers = vec![("dst", y.0), ("src", x.0)];
        if self.kind == PoolKind::Max {
            buffers.push(("idx", idx));
        }
        let groups = grid_over(e.name, self.output_len(), WORKGROUP_1D as usize)?;
        Dispatch::new(ctx, &FAMILY, e, &[], &p, &buffers, groups)
    }

    /// `dx (+)= ∂(Σ y·dy)/∂x`.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        dy: (&wgpu::Buffer, usize),
        dx: (&wgpu::Buffer, usize),
        idx: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<Dispatch> {
        let e = match self.kind {
            PoolKind::Max => &MAX_POOL_BACKWARD,
            PoolKind::Avg => &AVG_POOL_BACKWARD,
        };
        let p = PoolParams {
            accumulate: accumulate as u32,
            ..self.params(e.name, dx.1, dy.1)?
        };
        let mut buffers = vec![("dst", dx.0), ("src", dy.0)];
        if self.kind == PoolKind::Max {
            buffers.push(("idx", idx));
        }
        let groups = grid_over(e.name, self.input_len(), WORKGROUP_1D as usize)?;
        Dispatch::new(ctx, &FAMILY, e, &[], &p, &buffers, groups)
    }
}

/// The plain-Rust twins of pool.wgsl.
pub mod cpu {
    use super::{PoolGeometry, PoolKind};

    /// The input rows [lo, hi) of output row `o` along a dimension of size `n`.
    fn window(g: &PoolGeometry, o: usize, k: usize, n: usize) -> (usize, usize) {
        let start = (o * g.stride) as isize - g.pad as isize;
        (start.max(0) as usize, ((start + k as isize) as usize).min(n))
    }

    /// `(y, idx)`: the pooled values and, for a max pool, where each maximum sits in its plane.
    pub fn pool_forward(g: &PoolGeometry, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
        let (oh, ow) = (g.oh(), g.ow());
        let (mut y, mut idx) = (Vec::new(), Vec::new());
        for plane in 0..g.planes {
            let base = plane * g.h * g.w;
            for oy in 0..oh {
                for ox in 0..ow {
                    let (y0, y1) = window(g, oy, g.kh, g.h);
                    let (x0, x1) = window(g, ox, g.kw, g.w);
                    let cells = (y0..y1).flat_map(|r| (x0..x1).map(move |c| r * g.w + c));
                    match g.kind {
                        PoolKind::Max => {
                            let mut best = (f32::NEG_INFINITY, 0);
                            for at in cells {
                                if x[base + at] > best.0 {
                                    best = (x[base + at], at);
                                }
                            }
                            y.push(best.0);
                            idx.push(best.1 as u32);
                        }
                        PoolKind::Avg => {
                            let n = ((y1 - y0) * (x1 - x0)) as f64;
                            y.push((cells.map(|at| f64::from(x[base + at])).sum::<f64>() / n) as f32);
                        }
                    }
                }
            }
        }
        (y, idx)
    }

    /// The input gradient (a scatter of each output's gradient onto its window).
    pub fn pool_backward(g: &PoolGeometry, dy: &[f32], idx: &[u32]) -> Vec<f32> {
        let (oh, ow) = (g.oh(), g.ow());
        let mut dx = vec![0f64; g.input_len()];
        for plane in 0..g.planes {
            let base = plane * g.h * g.w;
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = (plane * oh + oy) * ow + ox;
                    let (y0, y1) = window(g, oy, g.kh, g.h);
                    let (x0, x1) = window(g, ox, g.kw, g.w);
                    match g.kind {
                        PoolKind::Max => dx[base + idx[o] as usize] += f64::from(dy[o]),
                        PoolKind::Avg => {
                            let share = f64::from(dy[o]) / ((y1 - y0) * (x1 - x0)) as f64;
                            for r in y0..y1 {
                                for c in x0..x1 {
                                    dx[base + r * g.w + c] += share;
                                }
                            }
                        }
                    }
                }
            }
        }
        dx.into_iter().map(|v| v as f32).collect()
    }
}
