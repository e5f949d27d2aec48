//! `shaders/sketch.wgsl`: a random ±1 projection of a parameter vector to `k` numbers, generated
//! from a seed (no matrix stored), and its CPU twin ([`cpu`]). `E‖sketch(v)‖² = ‖v‖²` and the
//! sketch is linear, so workers sketching with one seed can estimate their consensus distance from
//! the sketches alone.
use super::{u32_of, Binding, Dispatch, EntryPoint, Family, Uniform};
use super::grid_1d;
use crate::device::GpuContext;
use crate::error::{EngineError, Result};

uniform_params! {
    /// The uniform block of sketch.wgsl.
    pub struct SketchParams {
        pub n: u32,
        pub k: u32,
        pub seed: u32,
        pub scale: f32,
    }
}

const P: Binding = Binding::uniform(0, "p");
const X: Binding = Binding::read(1, "x");
const OUT: Binding = Binding::read_write(2, "out");

pub const SKETCH: EntryPoint = EntryPoint {
    name: "sketch",
    bindings: &[P, X, OUT],
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("sketch.wgsl"),
    uniform: SketchParams::LAYOUT,
    overrides: &[],
    shared_constants: &[],
    entry_points: &[SKETCH],
};

impl SketchParams {
    /// The projection of `n` values to `k` with the signs of `seed`.
    pub fn new(n: usize, k: usize, seed: u32) -> Result<SketchParams> {
        let op = SKETCH.name;
        if k == 0 {
            return Err(EngineError::Shape {
                op,
                detail: "a sketch needs at least one row".into(),
            });
        }
        Ok(SketchParams {
            n: u32_of(op, "n", n)?,
            k: u32_of(op, "k", k)?,
            seed,
            scale: 1.0 / (k as f32).sqrt(),
        })
    }
}

/// `out[0..k] = sketch of x[0..n]` with the signs of `seed` (change them per call with
/// [`Dispatch::set_params`] and a new [`SketchParams`]).
pub fn sketch(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    out: &wgpu::Buffer,
    params: &SketchParams,
) -> Result<Dispatch> {
    if out.size() < u64::from(params.k) * 4 {
        return Err(EngineError::Shape {
            op: SKETCH.name,
            detail: format!("output buffer too small for {} rows", params.k),
        });
    }
    let groups = grid_1d(params.k);
    Dispatch::new(
        ctx,
        &FAMILY,
        &SKETCH,
        &[],
        params,
        &[("x", x), ("out", out)],
        groups,
    )
}

/// The plain-Rust twin of sketch.wgsl.
pub mod cpu {
    /// The hash the kernel uses (PCG, Jarzynski & Olano 2020).
    pub fn pcg_hash(v: u32) -> u32 {
        let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
        let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
        (word >> 22) ^ word
    }

    /// The sign s(j, i) ∈ {+1, −1} of row `j`, column `i` for `seed`.
    pub fn sign(seed: u32, row: u32, i: u32) -> f32 {
        let key = pcg_hash(seed ^ pcg_hash(row));
        if pcg_hash(key ^ i) >> 31 == 1 {
            -1.0
        } else {
            1.0
        }
    }

    /// The sketch of `x` to `k` rows with `seed` (f64 accumulation).
    pub fn sketch(x: &[f32], k: usize, seed: u32) -> Vec<f32> {
        let scale = 1.0 / (k as f64).sqrt();
        (0..k as u32)
            .map(|j| {
                let sum: f64 = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| f64::from(sign(seed, j, i as u32)) * f64::from(v))
                    .sum();
                (sum * scale) as f32
            })
            .collect()
    }
}
