//! Rust side of the WGSL kernels in `shaders/`: the sources, the uniform parameter blocks, and one
//! constructor per kernel that returns a ready-to-record [`Dispatch`] (pipeline from the cache, bind
//! group, workgroup counts). Dispatches are built once and recorded every step, so a training step
//! costs no allocation. Every kernel has a plain-Rust twin in [`crate::cpu`].
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::device::GpuContext;
use crate::error::{EngineError, Result};

/// The WGSL source files, one per kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Util,
    Matmul,
    Bias,
    Relu,
    SoftmaxCe,
    Sgd,
    Acid,
}

impl Shader {
    pub const ALL: [Shader; 7] = [
        Shader::Util,
        Shader::Matmul,
        Shader::Bias,
        Shader::Relu,
        Shader::SoftmaxCe,
        Shader::Sgd,
        Shader::Acid,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            Shader::Util => "util.wgsl",
            Shader::Matmul => "matmul.wgsl",
            Shader::Bias => "bias.wgsl",
            Shader::Relu => "relu.wgsl",
            Shader::SoftmaxCe => "softmax_ce.wgsl",
            Shader::Sgd => "sgd.wgsl",
            Shader::Acid => "acid.wgsl",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Shader::Util => include_str!("../../shaders/util.wgsl"),
            Shader::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Shader::Bias => include_str!("../../shaders/bias.wgsl"),
            Shader::Relu => include_str!("../../shaders/relu.wgsl"),
            Shader::SoftmaxCe => include_str!("../../shaders/softmax_ce.wgsl"),
            Shader::Sgd => include_str!("../../shaders/sgd.wgsl"),
            Shader::Acid => include_str!("../../shaders/acid.wgsl"),
        }
    }
}

/// Invocations per workgroup of every 1-D kernel.
pub const WORKGROUP_1D: u32 = 256;
/// WebGPU guarantees 65,535 workgroups per dimension; larger 1-D grids spill into y.
pub const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// Workgroup counts covering `n_groups` groups: x up to 65,535, the rest in y. Shaders rebuild the
/// linear index as `gid.x + gid.y * num_workgroups.x * 256`.
pub fn grid_1d(n_groups: u32) -> [u32; 3] {
    let n = n_groups.max(1);
    if n <= MAX_GROUPS_PER_DIM {
        [n, 1, 1]
    } else {
        [MAX_GROUPS_PER_DIM, n.div_ceil(MAX_GROUPS_PER_DIM), 1]
    }
}

fn groups_for(n: usize, per_group: usize) -> Result<u32> {
    u32::try_from(n.div_ceil(per_group)).map_err(|_| EngineError::Shape {
        op: "dispatch",
        detail: format!("{n} elements exceed what one dispatch can index"),
    })
}

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| EngineError::Shape {
        op,
        detail: format!("{what} = {v} does not fit in 32 bits"),
    })
}

/// One recorded kernel launch: a cached pipeline, its bind group and its grid.
pub struct Dispatch {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    uniform: wgpu::Buffer,
    label: &'static str,
}

impl Dispatch {
    fn new<P: Pod>(
        ctx: &GpuContext,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        params: &P,
        storage: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Dispatch {
        let pipeline = ctx.pipeline(shader, entry, constants);
        let uniform = ctx.uniform_buffer(entry, params);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, b) in storage.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Dispatch {
            pipeline,
            bind_group,
            groups,
            uniform,
            label: entry,
        }
    }

    /// Records this launch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }

    /// Replaces the uniform parameters (e.g. a new learning rate); takes effect at the next submit.
    pub fn set_params<P: Pod>(&self, ctx: &GpuContext, params: &P) {
        ctx.queue
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(params));
    }

    pub fn groups(&self) -> [u32; 3] {
        self.groups
    }

    pub fn label(&self) -> &'static str {
        self.label
    }
}

// ---------------------------------------------------------------------------------------------
// util.wgsl

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct UtilParams {
    pub n: u32,
    pub dst_off: u32,
    pub src_off: u32,
    pub _pad: u32,
    pub value: f32,
    pub _pad1: [f32; 3],
}

fn util(
    ctx: &GpuContext,
    entry: &'static str,
    dst: (&wgpu::Buffer, usize),
    src: Option<(&wgpu::Buffer, usize)>,
    n: usize,
    value: f32,
) -> Result<Dispatch> {
    let params = UtilParams {
        n: u32_of(entry, "n", n)?,
        dst_off: u32_of(entry, "dst offset", dst.1)?,
        src_off: u32_of(entry, "src offset", src.map_or(0, |s| s.1))?,
        value,
        ..Default::default()
    };
    let mut storage = vec![dst.0];
    storage.extend(src.map(|s| s.0));
    let groups = grid_1d(groups_for(n, WORKGROUP_1D as usize)?);
    Ok(Dispatch::new(
        ctx,
        Shader::Util,
        entry,
        &[],
        &params,
        &storage,
        groups,
    ))
}

/// `dst[dst_off + i] = value` for `i < n`.
pub fn fill(
    ctx: &GpuContext,
    dst: &wgpu::Buffer,
    dst_off: usize,
    n: usize,
    value: f32,
) -> Result<Dispatch> {
    util(ctx, "fill", (dst, dst_off), None, n, value)
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
    util(ctx, "copy", (dst, dst_off), Some((src, src_off)), n, 0.0)
}

/// `y[i] += a * x[i]` for `i < n`.
pub fn axpy(
    ctx: &GpuContext,
    a: f32,
    x: &wgpu::Buffer,
    y: &wgpu::Buffer,
    n: usize,
) -> Result<Dispatch> {
    util(ctx, "axpy", (y, 0), Some((x, 0)), n, a)
}

// ---------------------------------------------------------------------------------------------
// matmul.wgsl

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub accumulate: u32,
    pub a_off: u32,
    pub b_off: u32,
    pub c_off: u32,
    pub _pad: u32,
}

/// Block of C computed by one workgroup of the matmul kernel.
pub const MATMUL_TILE: usize = 64;

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
    let op = "matmul";
    let params = MatmulParams {
        m: u32_of(op, "m", m)?,
        n: u32_of(op, "n", n)?,
        k: u32_of(op, "k", k)?,
        accumulate: accumulate as u32,
        a_off: u32_of(op, "a offset", a.offset)?,
        b_off: u32_of(op, "b offset", b.offset)?,
        c_off: u32_of(op, "c offset", c_off)?,
        _pad: 0,
    };
    let gx = groups_for(n, MATMUL_TILE)?;
    let gy = groups_for(m, MATMUL_TILE)?;
    if gx > MAX_GROUPS_PER_DIM || gy > MAX_GROUPS_PER_DIM {
        return Err(EngineError::Shape {
            op,
            detail: format!("{m}×{n} output needs more than 65,535 tiles per dimension; split it"),
        });
    }
    let constants = [
        ("TRANS_A", f64::from(a.transposed as u8)),
        ("TRANS_B", f64::from(b.transposed as u8)),
    ];
    Ok(Dispatch::new(
        ctx,
        Shader::Matmul,
        "matmul",
        &constants,
        &params,
        &[a.buffer, b.buffer, c],
        [gx.max(1), gy.max(1), 1],
    ))
}

// ---------------------------------------------------------------------------------------------
// bias.wgsl

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BiasParams {
    pub rows: u32,
    pub cols: u32,
    pub y_off: u32,
    pub bias_off: u32,
}

/// `y[r, j] += bias[j]` over a row-major `[rows, cols]` view; with `relu`, then `max(·, 0)`.
pub fn bias_add(
    ctx: &GpuContext,
    y: (&wgpu::Buffer, usize),
    bias: (&wgpu::Buffer, usize),
    rows: usize,
    cols: usize,
    relu: bool,
) -> Result<Dispatch> {
    let entry = if relu { "bias_add_relu" } else { "bias_add" };
    let params = BiasParams {
        rows: u32_of(entry, "rows", rows)?,
        cols: u32_of(entry, "cols", cols)?,
        y_off: u32_of(entry, "y offset", y.1)?,
        bias_off: u32_of(entry, "bias offset", bias.1)?,
    };
    u32_of(entry, "rows·cols", rows * cols)?;
    let groups = grid_1d(groups_for(rows * cols, WORKGROUP_1D as usize)?);
    Ok(Dispatch::new(
        ctx,
        Shader::Bias,
        entry,
        &[],
        &params,
        &[y.0, bias.0],
        groups,
    ))
}

/// `db[j] = Σ_r dy[r, j]` over a row-major `[rows, cols]` upstream gradient.
pub fn bias_grad(
    ctx: &GpuContext,
    dy: (&wgpu::Buffer, usize),
    db: (&wgpu::Buffer, usize),
    rows: usize,
    cols: usize,
) -> Result<Dispatch> {
    let entry = "bias_grad";
    let params = BiasParams {
        rows: u32_of(entry, "rows", rows)?,
        cols: u32_of(entry, "cols", cols)?,
        y_off: u32_of(entry, "db offset", db.1)?,
        bias_off: u32_of(entry, "dy offset", dy.1)?,
    };
    let groups = grid_1d(u32_of(entry, "cols", cols)?);
    Ok(Dispatch::new(
        ctx,
        Shader::Bias,
        entry,
        &[],
        &params,
        &[db.0, dy.0],
        groups,
    ))
}

// ---------------------------------------------------------------------------------------------
// relu.wgsl

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ReluParams {
    pub n: u32,
    pub grad_off: u32,
    pub act_off: u32,
    pub _pad: u32,
}

/// `h[i] = max(h[i], 0)` in place.
pub fn relu_forward(ctx: &GpuContext, h: (&wgpu::Buffer, usize), n: usize) -> Result<Dispatch> {
    let params = ReluParams {
        n: u32_of("relu_forward", "n", n)?,
        act_off: u32_of("relu_forward", "offset", h.1)?,
        ..Default::default()
    };
    let groups = grid_1d(groups_for(n, WORKGROUP_1D as usize)?);
    Ok(Dispatch::new(
        ctx,
        Shader::Relu,
        "relu_forward",
        &[],
        &params,
        &[h.0],
        groups,
    ))
}

/// `dh[i] = 0` where the forward output `h[i] <= 0` (in place on `dh`).
pub fn relu_backward(
    ctx: &GpuContext,
    dh: (&wgpu::Buffer, usize),
    h: (&wgpu::Buffer, usize),
    n: usize,
) -> Result<Dispatch> {
    let params = ReluParams {
        n: u32_of("relu_backward", "n", n)?,
        grad_off: u32_of("relu_backward", "grad offset", dh.1)?,
        act_off: u32_of("relu_backward", "act offset", h.1)?,
        _pad: 0,
    };
    let groups = grid_1d(groups_for(n, WORKGROUP_1D as usize)?);
    Ok(Dispatch::new(
        ctx,
        Shader::Relu,
        "relu_backward",
        &[],
        &params,
        &[dh.0, h.0],
        groups,
    ))
}

// ---------------------------------------------------------------------------------------------
// softmax_ce.wgsl

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SoftmaxCeParams {
    pub rows: u32,
    pub classes: u32,
    pub write_grad: u32,
    pub _pad: u32,
    pub grad_scale: f32,
    pub _pad1: [f32; 3],
}

/// Rows handled by one workgroup of the softmax/cross-entropy kernel.
pub const SOFTMAX_ROWS_PER_GROUP: usize = 64;

/// Slots of the statistics buffer needed for `rows` rows: two per workgroup (loss sum, correct).
pub fn softmax_stats_len(rows: usize) -> usize {
    2 * rows.div_ceil(SOFTMAX_ROWS_PER_GROUP).max(1)
}

/// Fused softmax + cross-entropy: adds each workgroup's loss sum and correct count to `stats`,
/// and when `grad_scale` is `Some(s)` writes `dlogits = s·(softmax − onehot)`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_ce(
    ctx: &GpuContext,
    logits: &wgpu::Buffer,
    labels: &wgpu::Buffer,
    dlogits: &wgpu::Buffer,
    stats: &wgpu::Buffer,
    rows: usize,
    classes: usize,
    grad_scale: Option<f32>,
) -> Result<Dispatch> {
    let op = "softmax_ce";
    if classes == 0 {
        return Err(EngineError::Shape {
            op,
            detail: "zero classes".into(),
        });
    }
    if stats.size() < (softmax_stats_len(rows) * 4) as u64 {
        return Err(EngineError::Shape {
            op,
            detail: format!("stats buffer too small for {rows} rows"),
        });
    }
    let params = SoftmaxCeParams {
        rows: u32_of(op, "rows", rows)?,
        classes: u32_of(op, "classes", classes)?,
        write_grad: grad_scale.is_some() as u32,
        grad_scale: grad_scale.unwrap_or(0.0),
        ..Default::default()
    };
    let groups = grid_1d(groups_for(rows, SOFTMAX_ROWS_PER_GROUP)?);
    Ok(Dispatch::new(
        ctx,
        Shader::SoftmaxCe,
        op,
        &[],
        &params,
        &[logits, labels, dlogits, stats],
        groups,
    ))
}

// ---------------------------------------------------------------------------------------------
// sgd.wgsl

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SgdParams {
    pub n: u32,
    pub nesterov: u32,
    pub _pad: [u32; 2],
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub _pad1: f32,
}

impl SgdParams {
    pub fn new(n: usize, cfg: &crate::optim::SgdConfig) -> Result<Self> {
        Ok(SgdParams {
            n: u32_of("sgd_step", "n", n)?,
            nesterov: cfg.nesterov as u32,
            lr: cfg.lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        })
    }
}

/// One fused SGD step over the first `n` elements of the arena: `x`, momentum `m`, gradient `g`.
pub fn sgd_step(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    m: &wgpu::Buffer,
    g: &wgpu::Buffer,
    n: usize,
    cfg: &crate::optim::SgdConfig,
) -> Result<Dispatch> {
    let params = SgdParams::new(n, cfg)?;
    let groups = grid_1d(groups_for(n, WORKGROUP_1D as usize)?);
    Ok(Dispatch::new(
        ctx,
        Shader::Sgd,
        "sgd_step",
        &[],
        &params,
        &[x, m, g],
        groups,
    ))
}

// ---------------------------------------------------------------------------------------------
// acid.wgsl: the fused A²CiD² updates (SPEC §3). The CPU twins are in `crate::acid`.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AcidUniform {
    pub n: u32,
    pub nesterov: u32,
    pub _pad: [u32; 2],
    /// `(1 − e^(−2·eta·d))/2`, see `crate::acid::mix_factor`.
    pub mix: f32,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub alpha: f32,
    pub alpha_tilde: f32,
    pub _pad1: [f32; 2],
}

impl AcidUniform {
    pub fn new(n: usize) -> Result<Self> {
        Ok(AcidUniform {
            n: u32_of("acid", "n", n)?,
            ..Default::default()
        })
    }
    pub fn with_sgd(mut self, cfg: &crate::optim::SgdConfig) -> Self {
        self.nesterov = cfg.nesterov as u32;
        self.lr = cfg.lr;
        self.momentum = cfg.momentum;
        self.weight_decay = cfg.weight_decay;
        self
    }
}

/// Elements handled by one invocation of `mix_and_average` (see acid.wgsl).
const AVG_PER_INVOCATION: usize = 16;

/// Number of partial sums `mix_and_average` writes for `n` elements (one per workgroup).
pub fn acid_partials_len(n: usize) -> usize {
    let g = grid_1d(n.div_ceil(WORKGROUP_1D as usize * AVG_PER_INVOCATION) as u32);
    (g[0] * g[1]) as usize
}

fn acid(
    ctx: &GpuContext,
    entry: &'static str,
    x_tilde: Option<&wgpu::Buffer>,
    params: &AcidUniform,
    rest: &[&wgpu::Buffer],
) -> Result<Dispatch> {
    let has_tilde = x_tilde.is_some();
    // Without x̃ (gossip) the specialisation never touches binding 2; it still has to be bound.
    let xt = x_tilde.unwrap_or(ctx.placeholder_buffer());
    let mut storage = vec![rest[0], xt];
    storage.extend(&rest[1..]);
    let per_group = if entry == "mix_and_average" {
        WORKGROUP_1D as usize * AVG_PER_INVOCATION
    } else {
        WORKGROUP_1D as usize
    };
    let groups = grid_1d(groups_for(params.n as usize, per_group)?);
    Ok(Dispatch::new(
        ctx,
        Shader::Acid,
        entry,
        &[("HAS_TILDE", f64::from(has_tilde as u8))],
        params,
        &storage,
        groups,
    ))
}

/// Mixing up to now, then the SGD step applied to x and x̃, in one pass. `params.mix`, the learning
/// rate and friends change per event: update them with [`Dispatch::set_params`].
pub fn mix_and_step(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    x_tilde: Option<&wgpu::Buffer>,
    momentum: &wgpu::Buffer,
    grad: &wgpu::Buffer,
    params: &AcidUniform,
) -> Result<Dispatch> {
    acid(ctx, "mix_and_step", x_tilde, params, &[x, momentum, grad])
}

/// Mixing up to now, then `snapshot = x` (the snapshot to send to a peer).
pub fn mix_and_snapshot(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    x_tilde: Option<&wgpu::Buffer>,
    snapshot: &wgpu::Buffer,
    params: &AcidUniform,
) -> Result<Dispatch> {
    acid(ctx, "mix_and_snapshot", x_tilde, params, &[x, snapshot])
}

/// Mixing up to now, then the pairwise update against the snapshot we sent (`sent`) with the
/// peer's (`received`), writing per-workgroup partial sums of ‖sent − received‖² to `partials`
/// (at least [`acid_partials_len`] elements).
#[allow(clippy::too_many_arguments)]
pub fn mix_and_average(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    x_tilde: Option<&wgpu::Buffer>,
    sent: &wgpu::Buffer,
    received: &wgpu::Buffer,
    partials: &wgpu::Buffer,
    params: &AcidUniform,
) -> Result<Dispatch> {
    if partials.size() < (acid_partials_len(params.n as usize) * 4) as u64 {
        return Err(EngineError::Shape {
            op: "mix_and_average",
            detail: format!("partials buffer too small for {} elements", params.n),
        });
    }
    acid(
        ctx,
        "mix_and_average",
        x_tilde,
        params,
        &[x, sent, received, partials],
    )
}
