//! `shaders/lowrank.wgsl`: the matrix products of low-rank compressed exchanges (PowerGossip,
//! Vogels et al. 2020) — `X·Q` and `Xᵀ·P` against a thin basis of rank R ≤ [`MAX_RANK`] — and the
//! rank-R update `X += c·P·Qᵀ`; and their CPU twins ([`cpu`]). The exchange protocol around them
//! (which product each half-step sends, the orthonormalisation, the update rule) is
//! [`crate::compress`]; a parameter block is an m×n row-major matrix at an element offset of the
//! arena, a factor an m×R (P) or n×R (Q) row-major matrix.
use super::{grid_over, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform, WORKGROUP_1D};
use crate::device::GpuContext;
use crate::error::{EngineError, Result};

/// The largest rank the kernels hold in registers and workgroup memory (`MAX_RANK` in the WGSL).
pub const MAX_RANK: usize = 8;
/// `right_product`: rows of X per workgroup (`RIGHT_ROWS` in the WGSL).
pub const RIGHT_ROWS: usize = 8;
/// `right_product`: invocations sharing one row, each summing every `RIGHT_LANES`-th column.
pub const RIGHT_LANES: usize = 32;
/// `left_product`: columns of X per workgroup (`LEFT_COLUMNS` in the WGSL).
pub const LEFT_COLUMNS: usize = 32;
/// `left_product`: invocations sharing one column, each summing every `LEFT_LANES`-th row.
pub const LEFT_LANES: usize = 8;

uniform_params! {
    /// The uniform block of lowrank.wgsl.
    pub struct LowRankParams {
        pub m: u32,
        pub n: u32,
        pub rank: u32,
        /// The block's offset (X for the products, `dst` for the update).
        pub x_off: u32,
        /// Products: the basis' offset. `rank_update`: the left factor's (m×R).
        pub f_off: u32,
        /// Products: the output's offset. `rank_update`: the right factor's (n×R).
        pub g_off: u32,
        /// `rank_update`: c in `dst += c·left·rightᵀ`.
        pub coeff: f32,
        pub _pad: u32,
    }
}

const P: Binding = Binding::uniform(0, "p");
const X: Binding = Binding::read(1, "x");
const BASIS: Binding = Binding::read(2, "basis");
const OUT: Binding = Binding::read_write(3, "out");
const DST: Binding = Binding::read_write(4, "dst");
const LEFT: Binding = Binding::read(5, "left");
const RIGHT: Binding = Binding::read(6, "right");

pub const RIGHT_PRODUCT: EntryPoint = EntryPoint {
    name: "right_product",
    bindings: &[P, X, BASIS, OUT],
};
pub const LEFT_PRODUCT: EntryPoint = EntryPoint {
    name: "left_product",
    bindings: &[P, X, BASIS, OUT],
};
pub const RANK_UPDATE: EntryPoint = EntryPoint {
    name: "rank_update",
    bindings: &[P, DST, LEFT, RIGHT],
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("lowrank.wgsl"),
    uniform: LowRankParams::LAYOUT,
    overrides: &[],
    shared_constants: &[
        ("MAX_RANK", MAX_RANK as u32),
        ("RIGHT_ROWS", RIGHT_ROWS as u32),
        ("RIGHT_LANES", RIGHT_LANES as u32),
        ("LEFT_COLUMNS", LEFT_COLUMNS as u32),
        ("LEFT_LANES", LEFT_LANES as u32),
    ],
    entry_points: &[RIGHT_PRODUCT, LEFT_PRODUCT, RANK_UPDATE],
};

/// A view of a buffer: the buffer and the element offset where the view starts.
pub type View<'a> = (&'a wgpu::Buffer, usize);

/// Checks the rank and that each `(what, view, len)` fits in its buffer; returns the uniform block.
fn params(
    op: &'static str,
    (m, n): (usize, usize),
    rank: usize,
    views: [(&str, View<'_>, usize); 3],
) -> Result<LowRankParams> {
    if rank == 0 || rank > MAX_RANK {
        return Err(EngineError::Shape {
            op,
            detail: format!("rank {rank} is outside 1..={MAX_RANK}"),
        });
    }
    for (what, (buffer, off), len) in views {
        let need = (off as u64 + len as u64) * 4;
        if need > buffer.size() {
            return Err(EngineError::Shape {
                op,
                detail: format!(
                    "{what}: {len} values at offset {off} need {need} bytes, the buffer has {}",
                    buffer.size()
                ),
            });
        }
    }
    let [(_, x, _), (_, f, _), (_, g, _)] = views;
    u32_of(op, "m·n", m * n)?;
    Ok(LowRankParams {
        m: u32_of(op, "m", m)?,
        n: u32_of(op, "n", n)?,
        rank: rank as u32,
        x_off: u32_of(op, "block offset", x.1)?,
        f_off: u32_of(op, "first factor offset", f.1)?,
        g_off: u32_of(op, "second factor offset", g.1)?,
        coeff: 0.0,
        _pad: 0,
    })
}

/// `out (m×R) = X · basis`, X the m×n block at `x`, `basis` n×R.
pub fn right_product(
    ctx: &GpuContext,
    x: View<'_>,
    (m, n): (usize, usize),
    rank: usize,
    basis: View<'_>,
    out: View<'_>,
) -> Result<Dispatch> {
    let op = RIGHT_PRODUCT.name;
    let params = params(
        op,
        (m, n),
        rank,
        [("x", x, m * n), ("basis", basis, n * rank), ("out", out, m * rank)],
    )?;
    let groups = grid_over(op, m, RIGHT_ROWS)?;
    let buffers = [("x", x.0), ("basis", basis.0), ("out", out.0)];
    Dispatch::new(ctx, &FAMILY, &RIGHT_PRODUCT, &[], &params, &buffers, groups)
}

/// `out (n×R) = Xᵀ · basis`, X the m×n block at `x`, `basis` m×R.
pub fn left_product(
    ctx: &GpuContext,
    x: View<'_>,
    (m, n): (usize, usize),
    rank: usize,
    basis: View<'_>,
    out: View<'_>,
) -> Result<Dispatch> {
    let op = LEFT_PRODUCT.name;
    let params = params(
        op,
        (m, n),
        rank,
        [("x", x, m * n), ("basis", basis, m * rank), ("out", out, n * rank)],
    )?;
    let groups = grid_over(op, n, LEFT_COLUMNS)?;
    let buffers = [("x", x.0), ("basis", basis.0), ("out", out.0)];
    Dispatch::new(ctx, &FAMILY, &LEFT_PRODUCT, &[], &params, &buffers, groups)
}

/// `dst += coeff · left · rightᵀ` on the m×n block at `dst`, `left` m×R, `right` n×R (`dst` a
/// buffer distinct from the factors').
pub fn rank_update(
    ctx: &GpuContext,
    dst: View<'_>,
    (m, n): (usize, usize),
    rank: usize,
    left: View<'_>,
    right: View<'_>,
    coeff: f32,
) -> Result<Dispatch> {
    let op = RANK_UPDATE.name;
    let mut params = params(
        op,
        (m, n),
        rank,
        [("dst", dst, m * n), ("left", left, m * rank), ("right", right, n * rank)],
    )?;
    params.coeff = coeff;
    let groups = grid_over(op, m * n, WORKGROUP_1D as usize)?;
    let buffers = [("dst", dst.0), ("left", left.0), ("right", right.0)];
    Dispatch::new(ctx, &FAMILY, &RANK_UPDATE, &[], &params, &buffers, groups)
}

/// The plain-Rust twins of lowrank.wgsl (f64 accumulation). X is m×n row-major, factors are
/// row-major with R = `rank` columns.
pub mod cpu {
    /// `X · basis` (m×R), `basis` n×R.
    pub fn right_product(x: &[f32], (m, n): (usize, usize), rank: usize, basis: &[f32]) -> Vec<f32> {
        assert_eq!((x.len(), basis.len()), (m * n, n * rank), "right_product shapes");
        let mut out = vec![0f32; m * rank];
        for i in 0..m {
            for r in 0..rank {
                let sum: f64 = (0..n)
                    .map(|j| f64::from(x[i * n + j]) * f64::from(basis[j * rank + r]))
                    .sum();
                out[i * rank + r] = sum as f32;
            }
        }
        out
    }

    /// `Xᵀ · basis` (n×R), `basis` m×R.
    pub fn left_product(x: &[f32], (m, n): (usize, usize), rank: usize, basis: &[f32]) -> Vec<f32> {
        assert_eq!((x.len(), basis.len()), (m * n, m * rank), "left_product shapes");
        let mut acc = vec![0f64; n * rank];
        for i in 0..m {
            for j in 0..n {
                let v = f64::from(x[i * n + j]);
                for r in 0..rank {
                    acc[j * rank + r] += v * f64::from(basis[i * rank + r]);
                }
            }
        }
        acc.into_iter().map(|v| v as f32).collect()
    }

    /// `dst += coeff · left · rightᵀ`, `left` m×R, `right` n×R; each element is one f32
    /// multiply-add of the f64-accumulated sum, as the kernel's `fma`.
    pub fn rank_update(
        dst: &mut [f32],
        (m, n): (usize, usize),
        rank: usize,
        left: &[f32],
        right: &[f32],
        coeff: f32,
    ) {
        assert_eq!(
            (dst.len(), left.len(), right.len()),
            (m * n, m * rank, n * rank),
            "rank_update shapes"
        );
        for i in 0..m {
            for j in 0..n {
                let sum: f64 = (0..rank)
                    .map(|r| f64::from(left[i * rank + r]) * f64::from(right[j * rank + r]))
                    .sum();
                let d = &mut dst[i * n + j];
                *d = coeff.mul_add(sum as f32, *d);
            }
        }
    }
}
