//! `shaders/matmul.wgsl`: the tiled matrix product with optional transposes (pipeline
//! specialisations) and accumulation, on views at element offsets; and its CPU twin ([`cpu`]).
use super::{
    groups_for, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform, MAX_GROUPS_PER_DIM,
};
use crate::device::{GpuContext, MatmulVariant};
use crate::error::{EngineError, Result};

uniform_params! {
    /// The uniform block of matmul.wgsl.
    pub struct MatmulParams {
        pub m: u32,
        pub n: u32,
        pub k: u32,
        pub accumulate: u32,
        pub a_off: u32,
        pub b_off: u32,
        pub c_off: u32,
        /// Per-z element offsets of A, B and C (batched products).
        pub a_stride: u32,
        pub b_stride: u32,
        pub c_stride: u32,
        /// Split-K (the conv weight gradient): products summed per z; 0 = all of K.
        pub k_chunk: u32,
    }
}

/// Block of C computed by one workgroup of the matmul kernel (`BM` = `BN` in the WGSL).
pub const MATMUL_TILE: usize = 64;

pub const MATMUL: EntryPoint = EntryPoint {
    name: "matmul",
    bindings: &[
        Binding::uniform(0, "p"),
        Binding::read(1, "a"),
        Binding::read(2, "b"),
        Binding::read_write(3, "c"),
    ],
};

pub const MATMUL_DIRECT: EntryPoint = EntryPoint {
    name: "matmul_direct",
    bindings: MATMUL.bindings,
};

/// The product with an 8×8 block per invocation (CPU adapters).
pub const MATMUL_WIDE: EntryPoint = EntryPoint {
    name: "matmul_wide",
    bindings: MATMUL.bindings,
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("matmul.wgsl"),
    uniform: MatmulParams::LAYOUT,
    overrides: &[
        "MODE", "TRANS_A", "TRANS_B", "C_IN", "H", "W", "KH", "KW", "STRIDE", "PAD", "OH", "OW",
        "C_OUT",
    ],
    shared_constants: &[
        ("BM", MATMUL_TILE as u32),
        ("BN", MATMUL_TILE as u32),
    ],
    entry_points: &[MATMUL, MATMUL_DIRECT, MATMUL_WIDE],
};

/// A matrix operand: a view of `buffer` starting at element `offset`, stored row-major; when
/// `transposed`, the stored matrix is the transpose of the logical operand.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: usize,
    pub transposed: bool,
}

impl<'a> MatRef<'a> {
    pub fn new(buffer: &'a wgpu::Buffer, offset: usize) -> Self {
        MatRef {
            buffer,
            offset,
            transposed: false,
        }
    }
    pub fn t(self) -> Self {
        MatRef {
            transposed: !self.transposed,
            ..self
        }
    }
}

/// `C[m×n] (+)= op(A)[m×k] · op(B)[k×n]`, C row-major at `c_off` of `c` (distinct from A and B's
/// buffers). `accumulate` adds into C instead of overwriting it.
pub fn matmul(
    ctx: &GpuContext,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &wgpu::Buffer,
    c_off: usize,
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) -> Result<Dispatch> {
    let op = MATMUL.name;
    let params = MatmulParams {
        m: u32_of(op, "m", m)?,
        n: u32_of(op, "n", n)?,
        k: u32_of(op, "k", k)?,
        accumulate: accumulate as u32,
        a_off: u32_of(op, "a offset", a.offset)?,
        b_off: u32_of(op, "b offset", b.offset)?,
        c_off: u32_of(op, "c offset", c_off)?,
        ..Default::default()
    };
    let modes = (Mode::Plain, a.transposed, b.transposed);
    launch(ctx, modes, &[], &params, (a.buffer, b.buffer, c), 1)
}

/// What the tiled loop's operand loads read (`MODE` of matmul.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Plain = 0,
    ConvForward = 1,
    ConvInputGrad = 2,
    ConvWeightGrad = 3,
}

/// A launch of the tiled loop over `params.m × params.n` outputs and `z` slices, specialised by
/// `geometry` (the convolution's constants) besides the mode.
pub(crate) fn launch(
    ctx: &GpuContext,
    (mode, trans_a, trans_b): (Mode, bool, bool),
    geometry: &[(&'static str, f64)],
    params: &MatmulParams,
    (a, b, c): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
    z: usize,
) -> Result<Dispatch> {
    let op = MATMUL.name;
    let (m, n) = (params.m as usize, params.n as usize);
    let variant = ctx.matmul_variant();
    let gx = groups_for(op, n, MATMUL_TILE)?;
    let gy = groups_for(op, m, MATMUL_TILE)?;
    let gz = u32_of(op, "batch", z)?;
    if gx > MAX_GROUPS_PER_DIM || gy > MAX_GROUPS_PER_DIM || gz > MAX_GROUPS_PER_DIM {
        return Err(EngineError::Shape {
            op,
            detail: format!(
                "{m}×{n} output in {z} slices needs more than 65,535 tiles per dimension; split it"
            ),
        });
    }
    let mut constants = vec![
        ("MODE", f64::from(mode as u8)),
        ("TRANS_A", f64::from(trans_a as u8)),
        ("TRANS_B", f64::from(trans_b as u8)),
    ];
    constants.extend_from_slice(geometry);
    let entry = match variant {
        MatmulVariant::Direct => &MATMUL_DIRECT,
        MatmulVariant::Wide => &MATMUL_WIDE,
        MatmulVariant::Tiled => &MATMUL,
    };
    Dispatch::new(
        ctx,
        &FAMILY,
        entry,
        &constants,
        params,
        &[("a", a), ("b", b), ("c", c)],
        [gx.max(1), gy.max(1), gz.max(1)],
    )
}

/// The plain-Rust twin of matmul.wgsl (f64 accumulation).
pub mod cpu {
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
}
