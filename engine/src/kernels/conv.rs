//! 2-D convolution over NCHW tensors as implicit GEMM on the tiled matmul of
//! `shaders/matmul.wgsl` (its `MODE` 1–3: the im2col matrix is never stored); and the CPU twins
//! ([`cpu`]). The weight is `[c_out, c_in, kh, kw]`, row-major (a `[c_out, c_in·kh·kw]` matrix);
//! any kernel size, stride and zero padding. The bias is a per-channel add
//! ([`super::channel`]).
use super::matmul::{launch, MatmulParams, Mode, MATMUL_TILE};
use super::{u32_of, util, Dispatch};
use crate::device::GpuContext;
use crate::error::{EngineError, Result};

/// The shape of one convolution: a batch of `c_in × h × w` images, `c_out` filters of
/// `kh × kw`, the stride and the zero padding on every side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvGeometry {
    /// Checks that the filter fits the padded input; the message names both.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        batch: usize,
        (c_in, h, w): (usize, usize, usize),
        c_out: usize,
        (kh, kw): (usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<ConvGeometry> {
        let g = ConvGeometry {
            batch,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride,
            pad,
        };
        if [batch, c_in, h, w, c_out, kh, kw, stride].contains(&0) {
            return Err(EngineError::Shape {
                op: "conv2d",
                detail: format!("{g:?}: every size and the stride must be positive"),
            });
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            return Err(EngineError::Shape {
                op: "conv2d",
                detail: format!(
                    "a {kh}×{kw} filter does not fit a {h}×{w} input padded by {pad} on each side"
                ),
            });
        }
        Ok(g)
    }

    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    /// Kernel taps per filter: `c_in·kh·kw` (the columns of the weight matrix).
    pub fn taps(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    /// Weights of the layer: `c_out·c_in·kh·kw`.
    pub fn weights(&self) -> usize {
        self.c_out * self.taps()
    }
    /// Values of one input image, one output image.
    pub fn input_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.c_out * self.oh() * self.ow()
    }

    /// Slices the weight gradient's products are split into, so that a small layer over a large
    /// batch still fills the device (each slice is summed separately, then the slices are added).
    pub fn weight_grad_splits(&self) -> usize {
        let tiles = self.c_out.div_ceil(MATMUL_TILE) * self.taps().div_ceil(MATMUL_TILE);
        let products = self.batch * self.oh() * self.ow();
        // About 64 workgroups in all, each summing at least 512 products.
        (64 / tiles).clamp(1, (products / 512).max(1))
    }

    /// The pipeline constants of this geometry (matmul.wgsl specialises its index arithmetic).
    fn constants(&self, op: &'static str) -> Result<Vec<(&'static str, f64)>> {
        let values = [
            ("C_IN", self.c_in),
            ("H", self.h),
            ("W", self.w),
            ("KH", self.kh),
            ("KW", self.kw),
            ("STRIDE", self.stride),
            ("PAD", self.pad),
            ("OH", self.oh()),
            ("OW", self.ow()),
            ("C_OUT", self.c_out),
        ];
        values
            .into_iter()
            .map(|(k, v)| Ok((k, f64::from(u32_of(op, k, v)?))))
            .collect()
    }
}

/// `y[n] = conv(x[n], w)` for every image of the batch (`y` overwritten; no bias).
pub fn conv_forward(
    ctx: &GpuContext,
    g: &ConvGeometry,
    x: (&wgpu::Buffer, usize),
    w: (&wgpu::Buffer, usize),
    y: (&wgpu::Buffer, usize),
) -> Result<Dispatch> {
    let op = "conv_forward";
    let p = MatmulParams {
        m: u32_of(op, "c_out", g.c_out)?,
        n: u32_of(op, "output pixels", g.oh() * g.ow())?,
        k: u32_of(op, "taps", g.taps())?,
        a_off: u32_of(op, "weight offset", w.1)?,
        b_off: u32_of(op, "input offset", x.1)?,
        c_off: u32_of(op, "output offset", y.1)?,
        b_stride: u32_of(op, "input image", g.input_len())?,
        c_stride: u32_of(op, "output image", g.output_len())?,
        ..Default::default()
    };
    launch(
        ctx,
        (Mode::ConvForward, false, false),
        &g.constants(op)?,
        &p,
        (w.0, x.0, y.0),
        g.batch,
    )
}

/// `dx (+)= ∂(Σ y·dy)/∂x`: the gradient with respect to the input, through the transposed
/// convolution (`accumulate` adds into `dx`, for an input that feeds several layers).
pub fn conv_input_grad(
    ctx: &GpuContext,
    g: &ConvGeometry,
    w: (&wgpu::Buffer, usize),
    dy: (&wgpu::Buffer, usize),
    dx: (&wgpu::Buffer, usize),
    accumulate: bool,
) -> Result<Dispatch> {
    let op = "conv_input_grad";
    // One product per stride phase of each image (matmul.wgsl, MODE 2): the phase's pixel grid
    // and the taps that reach it.
    let s = g.stride;
    let p = MatmulParams {
        m: u32_of(op, "c_in", g.c_in)?,
        n: u32_of(op, "phase pixels", g.h.div_ceil(s) * g.w.div_ceil(s))?,
        k: u32_of(
            op,
            "phase taps",
            g.c_out * g.kh.div_ceil(s) * g.kw.div_ceil(s),
        )?,
        accumulate: accumulate as u32,
        a_off: u32_of(op, "weight offset", w.1)?,
        b_off: u32_of(op, "output-gradient offset", dy.1)?,
        c_off: u32_of(op, "input-gradient offset", dx.1)?,
        b_stride: u32_of(op, "output image", g.output_len())?,
        c_stride: u32_of(op, "input image", g.input_len())?,
        ..Default::default()
    };
    launch(
        ctx,
        (Mode::ConvInputGrad, false, false),
        &g.constants(op)?,
        &p,
        (w.0, dy.0, dx.0),
        g.batch * s * s,
    )
}

/// `dw = Σ_n ∂(Σ y·dy)/∂w` over the batch, overwritten. The products are summed in
/// [`ConvGeometry::weight_grad_splits`] slices into `scratch` (at least `splits · weights`
/// values), then added into `dw`; with one slice the product lands in `dw` directly.
pub fn conv_weight_grad(
    ctx: &GpuContext,
    g: &ConvGeometry,
    dy: (&wgpu::Buffer, usize),
    x: (&wgpu::Buffer, usize),
    dw: (&wgpu::Buffer, usize),
    scratch: &wgpu::Buffer,
) -> Result<Vec<Dispatch>> {
    let op = "conv_weight_grad";
    let splits = g.weight_grad_splits();
    let products = g.batch * g.oh() * g.ow();
    // Chunks in whole tiles of the loop's K step.
    let chunk = products.div_ceil(splits).div_ceil(16) * 16;
    let splits = products.div_ceil(chunk);
    let (c, c_off) = if splits == 1 {
        (dw.0, dw.1)
    } else {
        (scratch, 0)
    };
    let p = MatmulParams {
        m: u32_of(op, "c_out", g.c_out)?,
        n: u32_of(op, "taps", g.taps())?,
        k: u32_of(op, "products", products)?,
        a_off: u32_of(op, "output-gradient offset", dy.1)?,
        b_off: u32_of(op, "input offset", x.1)?,
        c_off: u32_of(op, "weight-gradient offset", c_off)?,
        c_stride: u32_of(op, "weights", g.weights())?,
        k_chunk: u32_of(op, "chunk", chunk)?,
        ..Default::default()
    };
    let mut out = vec![launch(
        ctx,
        (Mode::ConvWeightGrad, false, true),
        &g.constants(op)?,
        &p,
        (dy.0, x.0, c),
        splits,
    )?];
    if splits > 1 {
        out.push(util::sum_slices(
            ctx,
            (scratch, 0),
            splits,
            dw,
            g.weights(),
        )?);
    }
    Ok(out)
}

/// The plain-Rust twins of the three convolution products (f64 accumulation).
pub mod cpu {
    use super::ConvGeometry;

    /// The input element feeding output pixel (oy, ox) through tap (i, j), if inside.
    fn tap(g: &ConvGeometry, oy: usize, ox: usize, i: usize, j: usize) -> Option<(usize, usize)> {
        let y = (oy * g.stride + i).checked_sub(g.pad)?;
        let x = (ox * g.stride + j).checked_sub(g.pad)?;
        (y < g.h && x < g.w).then_some((y, x))
    }

    /// Calls `f(output index, input index, weight index)` for every product of the convolution.
    fn each_product(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize)) {
        let (oh, ow) = (g.oh(), g.ow());
        for n in 0..g.batch {
            for oc in 0..g.c_out {
                for c in 0..g.c_in {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    if let Some((y, x)) = tap(g, oy, ox, i, j) {
                                        let out = ((n * g.c_out + oc) * oh + oy) * ow + ox;
                                        let inp = ((n * g.c_in + c) * g.h + y) * g.w + x;
                                        let wt = ((oc * g.c_in + c) * g.kh + i) * g.kw + j;
                                        f(out, inp, wt);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y = conv(x, w)`, NCHW, no bias.
    pub fn conv_forward(g: &ConvGeometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut acc = vec![0f64; g.batch * g.output_len()];
        each_product(g, |o, i, k| {
            acc[o] += f64::from(x[i]) * f64::from(w[k]);
        });
        acc.into_iter().map(|v| v as f32).collect()
    }

    /// The gradient with respect to the input.
    pub fn conv_input_grad(g: &ConvGeometry, w: &[f32], dy: &[f32]) -> Vec<f32> {
        let mut acc = vec![0f64; g.batch * g.input_len()];
        each_product(g, |o, i, k| {
            acc[i] += f64::from(dy[o]) * f64::from(w[k]);
        });
        acc.into_iter().map(|v| v as f32).collect()
    }

    /// The gradient with respect to the weight, summed over the batch.
    pub fn conv_weight_grad(g: &ConvGeometry, dy: &[f32], x: &[f32]) -> Vec<f32> {
        let mut acc = vec![0f64; g.weights()];
        each_product(g, |o, i, k| {
            acc[k] += f64::from(dy[o]) * f64::from(x[i]);
        });
        acc.into_iter().map(|v| v as f32).collect()
    }
}
