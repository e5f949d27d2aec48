//! `shaders/channel.wgsl`: per-channel operations over NCHW tensors — a convolution's bias and its
//! gradient, GroupNorm forward and backward and its parameters' gradients; and their CPU twins
//! ([`cpu`]).
use super::{
    grid_1d, grid_over, groups_for, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform,
    WORKGROUP_1D,
};
use crate::device::GpuContext;
use crate::error::{EngineError, Result};

uniform_params! {
    /// The uniform block of channel.wgsl.
    pub struct ChannelParams {
        pub batch: u32,
        pub channels: u32,
        pub plane: u32,
        pub groups: u32,
        pub eps: f32,
        pub accumulate: u32,
        pub dst_off: u32,
        pub src_off: u32,
        pub p0_off: u32,
        pub p1_off: u32,
    }
}

const P: Binding = Binding::uniform(0, "p");
const DST: Binding = Binding::read_write(1, "dst");
const SRC: Binding = Binding::read(2, "src");
const PARAM: Binding = Binding::read(3, "param");
const SAVED: Binding = Binding::read_write(4, "saved");
const STATS: Binding = Binding::read_write(5, "stats");

pub const CHANNEL_BIAS_ADD: EntryPoint = EntryPoint {
    name: "channel_bias_add",
    bindings: &[P, DST, PARAM],
};
pub const CHANNEL_SUM: EntryPoint = EntryPoint {
    name: "channel_sum",
    bindings: &[P, DST, SRC],
};
pub const CHANNEL_DOT: EntryPoint = EntryPoint {
    name: "channel_dot",
    bindings: &[P, DST, SRC, SAVED],
};
pub const GROUP_NORM_FORWARD: EntryPoint = EntryPoint {
    name: "group_norm_forward",
    bindings: &[P, DST, SRC, PARAM, SAVED, STATS],
};
pub const GROUP_NORM_BACKWARD: EntryPoint = EntryPoint {
    name: "group_norm_backward",
    bindings: &[P, DST, SRC, PARAM, SAVED, STATS],
};

pub const FAMILY: Family = Family {
    source: wgsl_source!("channel.wgsl"),
    uniform: ChannelParams::LAYOUT,
    overrides: &[],
    shared_constants: &[],
    entry_points: &[
        CHANNEL_BIAS_ADD,
        CHANNEL_SUM,
        CHANNEL_DOT,
        GROUP_NORM_FORWARD,
        GROUP_NORM_BACKWARD,
    ],
};

/// The shape `[batch, channels, plane]` of an NCHW tensor (plane = height·width).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nchw {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl Nchw {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn params(op: &'static str, t: Nchw) -> Result<ChannelParams> {
    Ok(ChannelParams {
        batch: u32_of(op, "batch", t.batch)?,
        channels: u32_of(op, "channels", t.channels)?,
        plane: u32_of(op, "plane", t.plane)?,
        ..Default::default()
    })
}

/// `y[n, c, i] += bias[c]`.
pub fn channel_bias_add(
    ctx: &GpuContext,
    t: Nchw,
    y: (&wgpu::Buffer, usize),
    bias: (&wgpu::Buffer, usize),
) -> Result<Dispatch> {
    let e = &CHANNEL_BIAS_ADD;
    let p = ChannelParams {
        dst_off: u32_of(e.name, "y offset", y.1)?,
        p0_off: u32_of(e.name, "bias offset", bias.1)?,
        ..params(e.name, t)?
    };
    let groups = grid_over(e.name, t.len(), WORKGROUP_1D as usize)?;
    Dispatch::new(
        ctx,
        &FAMILY,
        e,
        &[],
        &p,
        &[("dst", y.0), ("param", bias.0)],
        groups,
    )
}

/// `out[c] = Σ_(n,i) dy[n, c, i]` (the bias gradient), overwritten.
pub fn channel_sum(
    ctx: &GpuContext,
    t: Nchw,
    dy: (&wgpu::Buffer, usize),
    out: (&wgpu::Buffer, usize),
) -> Result<Dispatch> {
    let e = &CHANNEL_SUM;
    let p = ChannelParams {
        dst_off: u32_of(e.name, "out offset", out.1)?,
        src_off: u32_of(e.name, "dy offset", dy.1)?,
        ..params(e.name, t)?
    };
    let groups = grid_1d(groups_for(e.name, t.channels, 1)?);
    Dispatch::new(
        ctx,
        &FAMILY,
        e,
        &[],
        &p,
        &[("dst", out.0), ("src", dy.0)],
        groups,
    )
}

/// `out[c] = Σ_(n,i) dy[n, c, i] · xhat[n, c, i]` (GroupNorm's gamma gradient), overwritten;
/// `xhat` is the forward's saved buffer (from element 0).
pub fn channel_dot(
    ctx: &GpuContext,
    t: Nchw,
    dy: (&wgpu::Buffer, usize),
    xhat: &wgpu::Buffer,
    out: (&wgpu::Buffer, usize),
) -> Result<Dispatch> {
    let e = &CHANNEL_DOT;
    let p = ChannelParams {
        dst_off: u32_of(e.name, "out offset", out.1)?,
        src_off: u32_of(e.name, "dy offset", dy.1)?,
        ..params(e.name, t)?
    };
    let groups = grid_1d(groups_for(e.name, t.channels, 1)?);
    Dispatch::new(
        ctx,
        &FAMILY,
        e,
        &[],
        &p,
        &[("dst", out.0), ("src", dy.0), ("saved", xhat)],
        groups,
    )
}

/// One GroupNorm layer: its shape, its groups and epsilon, where gamma and beta sit in the
/// parameter arena, and its own buffers for the normalised input (`batch·channels·plane`) and the
/// per-(sample, group) mean and 1/std (`2·batch·groups`).
pub struct GroupNorm<'a> {
    pub shape: Nchw,
    pub groups: usize,
    pub eps: f32,
    pub params: &'a wgpu::Buffer,
    pub gamma_off: usize,
    pub beta_off: usize,
    pub xhat: &'a wgpu::Buffer,
    pub stats: &'a wgpu::Buffer,
}

impl GroupNorm<'_> {
    fn uniform(&self, op: &'static str) -> Result<ChannelParams> {
        if self.groups == 0 || !self.shape.channels.is_multiple_of(self.groups) {
            return Err(EngineError::Shape {
                op,
                detail: format!(
                    "{} channels do not split into {} groups",
                    self.shape.channels, self.groups
                ),
            });
        }
        Ok(ChannelParams {
            groups: u32_of(op, "groups", self.groups)?,
            eps: self.eps,
            p0_off: u32_of(op, "gamma offset", self.gamma_off)?,
            p1_off: u32_of(op, "beta offset", self.beta_off)?,
            ..params(op, self.shape)?
        })
    }

    fn grid(&self, op: &'static str) -> Result<[u32; 3]> {
        Ok(grid_1d(groups_for(op, self.shape.batch * self.groups, 1)?))
    }

    /// `y = GroupNorm(x)` (overwritten), saving what the backward needs.
    pub fn forward(
        &self,
        ctx: &GpuContext,
        x: (&wgpu::Buffer, usize),
        y: (&wgpu::Buffer, usize),
    ) -> Result<Dispatch> {
        let e = &GROUP_NORM_FORWARD;
        let p = ChannelParams {
            dst_off: u32_of(e.name, "y offset", y.1)?,
            src_off: u32_of(e.name, "x offset", x.1)?,
            ..self.uniform(e.name)?
        };
        let buffers = [
            ("dst", y.0),
            ("src", x.0),
            ("param", self.params),
            ("saved", self.xhat),
            ("stats", self.stats),
        ];
        Dispatch::new(ctx, &FAMILY, e, &[], &p, &buffers, self.grid(e.name)?)
    }

    /// `dx (+)= ∂(Σ y·dy)/∂x` through the normalisation.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        dy: (&wgpu::Buffer, usize),
        dx: (&wgpu::Buffer, usize),
        accumulate: bool,
    ) -> Result<Dispatch> {
        let e = &GROUP_NORM_BACKWARD;
        let p = ChannelParams {
            dst_off: u32_of(e.name, "dx offset", dx.1)?,
            src_off: u32_of(e.name, "dy offset", dy.1)?,
            accumulate: accumulate as u32,
            ..self.uniform(e.name)?
        };
        let buffers = [
            ("dst", dx.0),
            ("src", dy.0),
            ("param", self.params),
            ("saved", self.xhat),
            ("stats", self.stats),
        ];
        Dispatch::new(ctx, &FAMILY, e, &[], &p, &buffers, self.grid(e.name)?)
    }
}

/// The plain-Rust twins of channel.wgsl (f64 accumulation).
pub mod cpu {
    use super::Nchw;

    fn channel_of(t: Nchw, i: usize) -> usize {
        (i / t.plane) % t.channels
    }

    pub fn channel_bias_add(t: Nchw, y: &mut [f32], bias: &[f32]) {
        for (i, v) in y.iter_mut().enumerate() {
            *v += bias[channel_of(t, i)];
        }
    }

    /// `Σ_(n,i) a[n, c, i] · b[n, c, i]` per channel (`b` = 1 when `None`).
    pub fn channel_dot(t: Nchw, a: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let mut acc = vec![0f64; t.channels];
        for (i, &v) in a.iter().enumerate() {
            acc[channel_of(t, i)] += f64::from(v) * b.map_or(1.0, |b| f64::from(b[i]));
        }
        acc.into_iter().map(|v| v as f32).collect()
    }

    /// GroupNorm forward: `(y, xhat, stats)` with stats `[batch·groups, 2]` = (mean, 1/std).
    pub fn group_norm_forward(
        t: Nchw,
        groups: usize,
        eps: f32,
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let m = t.channels / groups * t.plane;
        let (mut y, mut xhat, mut stats) = (vec![0.0; x.len()], vec![0.0; x.len()], Vec::new());
        for (ng, chunk) in x.chunks(m).enumerate() {
            let mean = chunk.iter().map(|&v| f64::from(v)).sum::<f64>() / m as f64;
            let var = chunk
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / m as f64;
            let rstd = 1.0 / (var + f64::from(eps)).sqrt();
            for (e, &v) in chunk.iter().enumerate() {
                let i = ng * m + e;
                let c = channel_of(t, i);
                let h = (f64::from(v) - mean) * rstd;
                xhat[i] = h as f32;
                y[i] = (h * f64::from(gamma[c]) + f64::from(beta[c])) as f32;
            }
            stats.extend([mean as f32, rstd as f32]);
        }
        (y, xhat, stats)
    }

    /// GroupNorm backward: the input gradient from `dy`, the saved `xhat` and `stats`.
    pub fn group_norm_backward(
        t: Nchw,
        groups: usize,
        dy: &[f32],
        xhat: &[f32],
        stats: &[f32],
        gamma: &[f32],
    ) -> Vec<f32> {
        let m = t.channels / groups * t.plane;
        let mut dx = vec![0.0; dy.len()];
        for ng in 0..dy.len() / m {
            let range = ng * m..(ng + 1) * m;
            let dxhat = |i: usize| f64::from(dy[i]) * f64::from(gamma[channel_of(t, i)]);
            let mean1 = range.clone().map(dxhat).sum::<f64>() / m as f64;
            let mean2 = range
                .clone()
                .map(|i| dxhat(i) * f64::from(xhat[i]))
                .sum::<f64>()
                / m as f64;
            let rstd = f64::from(stats[2 * ng + 1]);
            for i in range {
                dx[i] = (rstd * (dxhat(i) - mean1 - f64::from(xhat[i]) * mean2)) as f32;
            }
        }
        dx
    }
}
