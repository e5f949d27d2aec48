//! Convolutional networks on the flat arena: a list of layer operations over NCHW activations
//! ([`NetSpec`]), built into one [`Net`] on a device. `cnn` and `resnet:D` are two such lists.
//!
//! Every parameter lives in the arena (no BatchNorm running statistics: GroupNorm normalises each
//! sample by itself, so the state that averaging sees is the whole state of the model). Each
//! tensor of the list has its own activation buffer and gradient buffer, sized for `max_batch`
//! samples; ReLU and the residual add work in place. Backward runs the list in reverse; the first
//! gradient written into a tensor overwrites, later ones (a tensor feeding two layers) add.
use std::collections::HashMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::arena::{ParamLayout, TensorView};
use crate::cpu::LossStats;
use crate::device::GpuContext;
use crate::error::{EngineError, Result};
use crate::kernels::{self, ConvGeometry, GroupNorm, MatRef, Nchw, PoolGeometry, PoolKind};
use crate::models::{
    check_batch, read_loss_stats, reset_loss_stats, InputShape, Model, ModelKind, Plan,
};

/// The per-sample shape of an activation: channels, height, width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn plane(&self) -> usize {
        self.h * self.w
    }
}

/// GroupNorm's epsilon.
pub const GN_EPS: f32 = 1e-5;

/// One layer operation; `x`, `y`, `t`, `dst`, `src` index the spec's tensors (0 is the input).
#[derive(Clone, Debug)]
pub enum Op {
    /// `y = conv(x, weight) (+ bias)`, square `k × k` filters.
    Conv {
        x: usize,
        y: usize,
        k: usize,
        stride: usize,
        pad: usize,
        weight: TensorView,
        bias: Option<TensorView>,
    },
    GroupNorm {
        x: usize,
        y: usize,
        groups: usize,
        gamma: TensorView,
        beta: TensorView,
    },
    /// In place.
    Relu { t: usize },
    /// `k × k` windows every `stride`, no padding.
    MaxPool {
        x: usize,
        y: usize,
        k: usize,
        stride: usize,
    },
    /// One value per channel.
    GlobalAvgPool { x: usize, y: usize },
    /// `y = flatten(x) · weight + bias`, weight stored `[in, out]`.
    Linear {
        x: usize,
        y: usize,
        weight: TensorView,
        bias: TensorView,
    },
    /// `dst += src` in place (a residual connection).
    Add { dst: usize, src: usize },
}

/// How a parameter tensor starts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    /// Uniform in ±√(6/fan_in) (He).
    HeUniform(usize),
    Zeros,
    Ones,
}

/// A network: its tensors' shapes, its operations in forward order and its parameter layout.
#[derive(Clone, Debug)]
pub struct NetSpec {
    /// e.g. `cnn 16-32-128`.
    pub name: String,
    pub classes: usize,
    /// Per-sample shape of every tensor; 0 is the input, the last the logits.
    pub shapes: Vec<Shape>,
    pub ops: Vec<Op>,
    pub layout: ParamLayout,
    inits: Vec<(TensorView, Init)>,
}

/// Groups of a GroupNorm over `c` channels: up to 8, dividing `c`.
pub fn groups_for(c: usize) -> usize {
    (1..=8.min(c))
        .rev()
        .find(|g| c.is_multiple_of(*g))
        .unwrap_or(1)
}

struct Builder {
    spec: NetSpec,
}

impl Builder {
    fn new(name: String, input: InputShape, classes: usize) -> Builder {
        let [c, h, w] = input.0;
        Builder {
            spec: NetSpec {
                name,
                classes,
                shapes: vec![Shape { c, h, w }],
                ops: Vec::new(),
                layout: ParamLayout::new(),
                inits: Vec::new(),
            },
        }
    }

    fn tensor(&mut self, s: Shape) -> usize {
        self.spec.shapes.push(s);
        self.spec.shapes.len() - 1
    }

    fn param(&mut self, name: String, shape: &[usize], init: Init) -> TensorView {
        let v = self.spec.layout.push(name, shape);
        self.spec.inits.push((v.clone(), init));
        v
    }

    fn conv(
        &mut self,
        name: &str,
        x: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        bias: bool,
    ) -> usize {
        let s = self.spec.shapes[x];
        let pad = k / 2;
        let out = Shape {
            c: c_out,
            h: (s.h + 2 * pad - k) / stride + 1,
            w: (s.w + 2 * pad - k) / stride + 1,
        };
        let weight = self.param(
            format!("{name}.weight"),
            &[c_out, s.c, k, k],
            Init::HeUniform(s.c * k * k),
        );
        let bias = bias.then(|| self.param(format!("{name}.bias"), &[c_out], Init::Zeros));
        let y = self.tensor(out);
        self.spec.ops.push(Op::Conv {
            x,
            y,
            k,
            stride,
            pad,
            weight,
            bias,
        });
        y
    }

    fn group_norm(&mut self, name: &str, x: usize) -> usize {
        let s = self.spec.shapes[x];
        let gamma = self.param(format!("{name}.gamma"), &[s.c], Init::Ones);
        let beta = self.param(format!("{name}.beta"), &[s.c], Init::Zeros);
        let y = self.tensor(s);
        self.spec.ops.push(Op::GroupNorm {
            x,
            y,
            groups: groups_for(s.c),
            gamma,
            beta,
        });
        y
    }

    fn relu(&mut self, t: usize) -> usize {
        self.spec.ops.push(Op::Relu { t });
        t
    }

    fn max_pool(&mut self, x: usize, k: usize) -> usize {
        let s = self.spec.shapes[x];
        let y = self.tensor(Shape {
            c: s.c,
            h: (s.h - k) / k + 1,
            w: (s.w - k) / k + 1,
        });
        self.spec.ops.push(Op::MaxPool { x, y, k, stride: k });
        y
    }

    fn global_avg_pool(&mut self, x: usize) -> usize {
        let s = self.spec.shapes[x];
        let y = self.tensor(Shape { c: s.c, h: 1, w: 1 });
        self.spec.ops.push(Op::GlobalAvgPool { x, y });
        y
    }

    fn linear(&mut self, name: &str, x: usize, out: usize) -> usize {
        let fan_in = self.spec.shapes[x].len();
        let weight = self.param(
            format!("{name}.weight"),
            &[fan_in, out],
            Init::HeUniform(fan_in),
        );
        let bias = self.param(format!("{name}.bias"), &[out], Init::Zeros);
        let y = self.tensor(Shape { c: out, h: 1, w: 1 });
        self.spec.ops.push(Op::Linear { x, y, weight, bias });
        y
    }

    fn add(&mut self, dst: usize, src: usize) -> usize {
        self.spec.ops.push(Op::Add { dst, src });
        dst
    }
}

fn shape_error(detail: String) -> EngineError {
    EngineError::Shape {
        op: "model",
        detail,
    }
}

impl NetSpec {
    /// `cnn`: conv 5×5 (`width` filters) → ReLU → max-pool 2 → conv 5×5 (2·`width`) → ReLU →
    /// max-pool 2 → linear 128 → ReLU → linear `classes`. Needs at least 4×4 inputs.
    pub fn cnn(input: InputShape, classes: usize, width: usize) -> Result<NetSpec> {
        let [_, h, w] = input.0;
        if h < 4 || w < 4 || width == 0 {
            return Err(shape_error(format!(
                "cnn (width {width}) needs inputs of at least 4×4 (two 2×2 poolings) and a positive width; the input is {input}"
            )));
        }
        let mut b = Builder::new(
            format!("conv {}-{}, linear 128", width, 2 * width),
            input,
            classes,
        );
        let t = b.conv("conv1", 0, width, 5, 1, true);
        let t = b.relu(t);
        let t = b.max_pool(t, 2);
        let t = b.conv("conv2", t, 2 * width, 5, 1, true);
        let t = b.relu(t);
        let t = b.max_pool(t, 2);
        let t = b.linear("fc1", t, 128);
        let t = b.relu(t);
        b.linear("fc2", t, classes);
        Ok(b.spec)
    }

    /// `resnet:D`, CIFAR-style (He et al. 2016, §4.2) with GroupNorm: a 3×3 stem of `width`
    /// filters, three stages of (D − 2)/6 basic blocks at `width`, 2·`width`, 4·`width` filters
    /// (the first block of stages 2 and 3 halves the resolution, its shortcut a strided 1×1 conv
    /// and GroupNorm), a global average pool and a linear layer. D = 6n + 2 (8, 14, 20, …).
    pub fn resnet(
        input: InputShape,
        classes: usize,
        depth: usize,
        width: usize,
    ) -> Result<NetSpec> {
        let [_, h, w] = input.0;
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(shape_error(format!(
                "resnet depth {depth}: it must be 6n + 2 with n ≥ 1 (8, 14, 20, …)"
            )));
        }
        if h < 4 || w < 4 || width == 0 {
            return Err(shape_error(format!(
                "resnet:{depth} (width {width}) needs inputs of at least 4×4 (two halvings) and a positive width; the input is {input}"
            )));
        }
        let blocks = (depth - 2) / 6;
        let mut b = Builder::new(
            format!(
                "depth {depth}, widths {}-{}-{}",
                width,
                2 * width,
                4 * width
            ),
            input,
            classes,
        );
        let t = b.conv("stem.conv", 0, width, 3, 1, false);
        let t = b.group_norm("stem.gn", t);
        let mut t = b.relu(t);
        for stage in 0..3 {
            let c = width << stage;
            for block in 0..blocks {
                let name = format!("s{}b{}", stage + 1, block + 1);
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                let x = t;
                let y = b.conv(&format!("{name}.conv1"), x, c, 3, stride, false);
                let y = b.group_norm(&format!("{name}.gn1"), y);
                let y = b.relu(y);
                let y = b.conv(&format!("{name}.conv2"), y, c, 3, 1, false);
                let y = b.group_norm(&format!("{name}.gn2"), y);
                let shortcut = if stride != 1 || b.spec.shapes[x].c != c {
                    let s = b.conv(&format!("{name}.down.conv"), x, c, 1, stride, false);
                    b.group_norm(&format!("{name}.down.gn"), s)
                } else {
                    x
                };
                let y = b.add(y, shortcut);
                t = b.relu(y);
            }
        }
        let t = b.global_avg_pool(t);
        b.linear("fc", t, classes);
        Ok(b.spec)
    }

    /// Deterministic initial parameters: He-uniform weights, zero biases and betas, unit gammas,
    /// from ChaCha8 seeded with `seed` in layout order — bit-identical everywhere.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![0f32; self.layout.len()];
        for (v, init) in &self.inits {
            match *init {
                Init::HeUniform(fan_in) => {
                    let bound = (6.0 / fan_in as f64).sqrt() as f32;
                    for p in &mut params[v.range()] {
                        *p = (rng.random::<f32>() * 2.0 - 1.0) * bound;
                    }
                }
                Init::Zeros => {}
                Init::Ones => params[v.range()].iter_mut().for_each(|p| *p = 1.0),
            }
        }
        params
    }

    /// e.g. `cnn 16-32-128 on 28×28×1 (215,338 parameters)`.
    pub fn describe(&self) -> String {
        let s = self.shapes[0];
        format!(
            "{} on {}×{}×{} ({} parameters)",
            self.name,
            s.h,
            s.w,
            s.c,
            self.layout.len()
        )
    }

    /// Bytes of device memory a [`Net`] of this spec holds for batches of `max_batch`:
    /// parameters and gradients, activations and their gradients, and the layers' own buffers.
    pub fn device_bytes(&self, max_batch: usize) -> u64 {
        let acts: usize = self.shapes.iter().map(|s| 2 * s.len()).sum();
        let aux: usize = self
            .ops
            .iter()
            .map(|op| match *op {
                Op::GroupNorm { y, .. } => self.shapes[y].len(),
                Op::MaxPool { y, .. } => self.shapes[y].len(),
                _ => 0,
            })
            .sum();
        4 * (2 * self.layout.len() + max_batch * (acts + aux) + self.scratch_len(max_batch)) as u64
    }

    fn conv_geometry(&self, op: &Op, rows: usize) -> Option<Result<ConvGeometry>> {
        match *op {
            Op::Conv {
                x,
                y,
                k,
                stride,
                pad,
                ..
            } => {
                let (s, o) = (self.shapes[x], self.shapes[y]);
                Some(ConvGeometry::new(
                    rows,
                    (s.c, s.h, s.w),
                    o.c,
                    (k, k),
                    stride,
                    pad,
                ))
            }
            _ => None,
        }
    }

    /// Values of the split-K scratch of the convolutions' weight gradients.
    fn scratch_len(&self, rows: usize) -> usize {
        self.ops
            .iter()
            .filter_map(|op| self.conv_geometry(op, rows)?.ok())
            .map(|g| g.weight_grad_splits() * g.weights())
            .max()
            .unwrap_or(1)
    }

    fn nchw(&self, t: usize, rows: usize) -> Nchw {
        let s = self.shapes[t];
        Nchw {
            batch: rows,
            channels: s.c,
            plane: s.plane(),
        }
    }
}

/// The buffers one layer keeps beyond its output: GroupNorm's normalised input and statistics, a
/// max pool's argmax.
enum Aux {
    None,
    GroupNorm {
        xhat: wgpu::Buffer,
        stats: wgpu::Buffer,
    },
    Argmax(wgpu::Buffer),
}

/// A [`NetSpec`] on a device.
pub struct Net {
    ctx: Arc<GpuContext>,
    kind: ModelKind,
    spec: NetSpec,
    max_batch: usize,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    labels: wgpu::Buffer,
    /// Per tensor: its activations (0 is the batch input) and their gradients (none for 0).
    acts: Vec<wgpu::Buffer>,
    dacts: Vec<Option<wgpu::Buffer>>,
    aux: Vec<Aux>,
    scratch: wgpu::Buffer,
    stats: wgpu::Buffer,
    plans: HashMap<usize, Plan>,
}

impl Net {
    pub fn new(
        ctx: Arc<GpuContext>,
        kind: ModelKind,
        spec: NetSpec,
        max_batch: usize,
    ) -> Result<Net> {
        if max_batch == 0 {
            return Err(shape_error("batch size must be at least 1".into()));
        }
        let mut acts = Vec::new();
        let mut dacts = Vec::new();
        for (i, s) in spec.shapes.iter().enumerate() {
            acts.push(ctx.storage_buffer(&format!("act{i}"), max_batch * s.len())?);
            dacts.push(if i == 0 {
                None
            } else {
                Some(ctx.storage_buffer(&format!("dact{i}"), max_batch * s.len())?)
            });
        }
        let mut aux = Vec::new();
        for (i, op) in spec.ops.iter().enumerate() {
            aux.push(match *op {
                Op::GroupNorm { y, groups, .. } => Aux::GroupNorm {
                    xhat: ctx
                        .storage_buffer(&format!("gn{i} xhat"), max_batch * spec.shapes[y].len())?,
                    stats: ctx.storage_buffer(&format!("gn{i} stats"), 2 * max_batch * groups)?,
                },
                Op::MaxPool { y, .. } => Aux::Argmax(ctx.storage_buffer(
                    &format!("pool{i} argmax"),
                    max_batch * spec.shapes[y].len(),
                )?),
                _ => Aux::None,
            });
        }
        let net = Net {
            params: ctx.storage_buffer("params", spec.layout.len())?,
            grads: ctx.storage_buffer("grads", spec.layout.len())?,
            labels: ctx.storage_buffer("labels", max_batch)?,
            scratch: ctx.storage_buffer("conv scratch", spec.scratch_len(max_batch))?,
            stats: ctx.storage_buffer("loss stats", kernels::softmax_stats_len(max_batch))?,
            acts,
            dacts,
            aux,
            ctx,
            kind,
            spec,
            max_batch,
            plans: HashMap::new(),
        };
        net.reset_stats()?;
        Ok(net)
    }

    pub fn spec(&self) -> &NetSpec {
        &self.spec
    }

    fn dact(&self, t: usize) -> &wgpu::Buffer {
        self.dacts[t].as_ref().expect("the input has no gradient")
    }

    fn group_norm(
        &self,
        i: usize,
        t: Nchw,
        groups: usize,
        gamma: &TensorView,
        beta: &TensorView,
    ) -> GroupNorm<'_> {
        let Aux::GroupNorm { xhat, stats } = &self.aux[i] else {
            unreachable!("a GroupNorm op has GroupNorm buffers")
        };
        GroupNorm {
            shape: t,
            groups,
            eps: GN_EPS,
            params: &self.params,
            gamma_off: gamma.offset,
            beta_off: beta.offset,
            xhat,
            stats,
        }
    }

    fn argmax(&self, i: usize) -> &wgpu::Buffer {
        match &self.aux[i] {
            Aux::Argmax(b) => b,
            // An average pool binds no argmax; any buffer stands in.
            _ => &self.scratch,
        }
    }

    fn pool_geometry(&self, op: &Op, rows: usize) -> Result<PoolGeometry> {
        match *op {
            Op::MaxPool { x, k, stride, .. } => {
                let s = self.spec.shapes[x];
                PoolGeometry::new(PoolKind::Max, rows * s.c, (s.h, s.w), (k, k), stride, 0)
            }
            Op::GlobalAvgPool { x, .. } => {
                let s = self.spec.shapes[x];
                PoolGeometry::global_avg(rows * s.c, (s.h, s.w))
            }
            _ => unreachable!("not a pooling op"),
        }
    }

    fn build_plan(&self, rows: usize) -> Result<Plan> {
        let ctx = &*self.ctx;
        let spec = &self.spec;
        let p = &self.params;
        let mut forward = Vec::new();
        for (i, op) in spec.ops.iter().enumerate() {
            match op {
                Op::Conv {
                    x, y, bias, weight, ..
                } => {
                    let g = spec.conv_geometry(op, rows).expect("a conv")?;
                    forward.push(kernels::conv_forward(
                        ctx,
                        &g,
                        (&self.acts[*x], 0),
                        (p, weight.offset),
                        (&self.acts[*y], 0),
                    )?);
                    if let Some(b) = bias {
                        forward.push(kernels::channel_bias_add(
                            ctx,
                            spec.nchw(*y, rows),
                            (&self.acts[*y], 0),
                            (p, b.offset),
                        )?);
                    }
                }
                Op::GroupNorm {
                    x,
                    y,
                    groups,
                    gamma,
                    beta,
                } => {
                    let gn = self.group_norm(i, spec.nchw(*x, rows), *groups, gamma, beta);
                    forward.push(gn.forward(ctx, (&self.acts[*x], 0), (&self.acts[*y], 0))?);
                }
                Op::Relu { t } => {
                    forward.push(kernels::relu_forward(
                        ctx,
                        (&self.acts[*t], 0),
                        rows * spec.shapes[*t].len(),
                    )?);
                }
                Op::MaxPool { x, y, .. } | Op::GlobalAvgPool { x, y } => {
                    let g = self.pool_geometry(op, rows)?;
                    forward.push(g.forward(
                        ctx,
                        (&self.acts[*x], 0),
                        (&self.acts[*y], 0),
                        self.argmax(i),
                    )?);
                }
                Op::Linear { x, y, weight, bias } => {
                    let (fan_in, out) = (spec.shapes[*x].len(), spec.shapes[*y].len());
                    forward.push(kernels::matmul(
                        ctx,
                        MatRef::new(&self.acts[*x], 0),
                        MatRef::new(p, weight.offset),
                        &self.acts[*y],
                        0,
                        (rows, fan_in, out),
                        false,
                    )?);
                    forward.push(kernels::bias_add(
                        ctx,
                        (&self.acts[*y], 0),
                        (p, bias.offset),
                        rows,
                        out,
                        false,
                    )?);
                }
                Op::Add { dst, src } => {
                    forward.push(kernels::axpy(
                        ctx,
                        1.0,
                        &self.acts[*src],
                        &self.acts[*dst],
                        rows * spec.shapes[*dst].len(),
                    )?);
                }
            }
        }

        let last = spec.shapes.len() - 1;
        let loss = |grad_scale| {
            kernels::softmax_ce(
                ctx,
                &self.acts[last],
                &self.labels,
                self.dact(last),
                &self.stats,
                rows,
                spec.classes,
                grad_scale,
            )
        };
        let loss_train = loss(Some(1.0 / rows as f32))?;
        let loss_eval = loss(None)?;

        // Backward, in reverse: `written[t]` once some layer has put a gradient into tensor t.
        let mut written = vec![false; spec.shapes.len()];
        written[last] = true;
        let mut backward = Vec::new();
        let g = &self.grads;
        for (i, op) in spec.ops.iter().enumerate().rev() {
            match op {
                Op::Conv {
                    x, y, weight, bias, ..
                } => {
                    let geom = spec.conv_geometry(op, rows).expect("a conv")?;
                    let dy = (self.dact(*y), 0);
                    backward.extend(kernels::conv_weight_grad(
                        ctx,
                        &geom,
                        dy,
                        (&self.acts[*x], 0),
                        (g, weight.offset),
                        &self.scratch,
                    )?);
                    if let Some(b) = bias {
                        backward.push(kernels::channel_sum(
                            ctx,
                            spec.nchw(*y, rows),
                            dy,
                            (g, b.offset),
                        )?);
                    }
                    if *x != 0 {
                        backward.push(kernels::conv_input_grad(
                            ctx,
                            &geom,
                            (p, weight.offset),
                            dy,
                            (self.dact(*x), 0),
                            written[*x],
                        )?);
                        written[*x] = true;
                    }
                }
                Op::GroupNorm {
                    x,
                    y,
                    groups,
                    gamma,
                    beta,
                } => {
                    let t = spec.nchw(*y, rows);
                    let gn = self.group_norm(i, t, *groups, gamma, beta);
                    let dy = (self.dact(*y), 0);
                    backward.push(kernels::channel_dot(
                        ctx,
                        t,
                        dy,
                        gn.xhat,
                        (g, gamma.offset),
                    )?);
                    backward.push(kernels::channel_sum(ctx, t, dy, (g, beta.offset))?);
                    if *x != 0 {
                        backward.push(gn.backward(ctx, dy, (self.dact(*x), 0), written[*x])?);
                        written[*x] = true;
                    }
                }
                Op::Relu { t } => {
                    backward.push(kernels::relu_backward(
                        ctx,
                        (self.dact(*t), 0),
                        (&self.acts[*t], 0),
                        rows * spec.shapes[*t].len(),
                    )?);
                }
                Op::MaxPool { x, y, .. } | Op::GlobalAvgPool { x, y } => {
                    if *x != 0 {
                        let geom = self.pool_geometry(op, rows)?;
                        backward.push(geom.backward(
                            ctx,
                            (self.dact(*y), 0),
                            (self.dact(*x), 0),
                            self.argmax(i),
                            written[*x],
                        )?);
                        written[*x] = true;
                    }
                }
                Op::Linear { x, y, weight, bias } => {
                    let (fan_in, out) = (spec.shapes[*x].len(), spec.shapes[*y].len());
                    let dy = self.dact(*y);
                    // dW = xᵀ · dy, db = Σ_rows dy, dx (+)= dy · Wᵀ.
                    backward.push(kernels::matmul(
                        ctx,
                        MatRef::new(&self.acts[*x], 0).t(),
                        MatRef::new(dy, 0),
                        g,
                        weight.offset,
                        (fan_in, rows, out),
                        false,
                    )?);
                    backward.push(kernels::bias_grad(
                        ctx,
                        (dy, 0),
                        (g, bias.offset),
                        rows,
                        out,
                    )?);
                    if *x != 0 {
                        backward.push(kernels::matmul(
                            ctx,
                            MatRef::new(dy, 0),
                            MatRef::new(p, weight.offset).t(),
                            self.dact(*x),
                            0,
                            (rows, out, fan_in),
                            written[*x],
                        )?);
                        written[*x] = true;
                    }
                }
                Op::Add { dst, src } => {
                    if *src != 0 {
                        let n = rows * spec.shapes[*dst].len();
                        backward.push(if written[*src] {
                            kernels::axpy(ctx, 1.0, self.dact(*dst), self.dact(*src), n)?
                        } else {
                            kernels::copy(ctx, self.dact(*dst), 0, self.dact(*src), 0, n)?
                        });
                        written[*src] = true;
                    }
                }
            }
        }
        Ok(Plan {
            forward,
            loss_train,
            loss_eval,
            backward,
        })
    }

    fn plan(&mut self, rows: usize) -> Result<&Plan> {
        if rows == 0 || rows > self.max_batch {
            return Err(shape_error(format!(
                "{rows} rows for at most {}",
                self.max_batch
            )));
        }
        if !self.plans.contains_key(&rows) {
            let plan = self.build_plan(rows)?;
            self.plans.insert(rows, plan);
        }
        Ok(&self.plans[&rows])
    }

    /// The logits of the last forward pass, `[rows, classes]`.
    pub fn logits(&self, rows: usize) -> Result<Vec<f32>> {
        let last = self.acts.len() - 1;
        self.ctx.read(&self.acts[last], 0, rows * self.spec.classes)
    }
}

impl Model for Net {
    fn kind(&self) -> ModelKind {
        self.kind
    }

    fn layout(&self) -> &ParamLayout {
        &self.spec.layout
    }

    fn describe(&self) -> String {
        self.spec.describe()
    }

    fn init(&self, seed: u64) -> Vec<f32> {
        self.spec.init(seed)
    }

    fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn params_buffer(&self) -> &wgpu::Buffer {
        &self.params
    }

    fn grads_buffer(&self) -> &wgpu::Buffer {
        &self.grads
    }

    fn load_batch(&self, x: &[f32], labels: &[u32]) -> Result<usize> {
        let rows = check_batch(
            x,
            labels,
            self.spec.shapes[0].len(),
            self.spec.classes,
            self.max_batch,
        )?;
        self.ctx.write(&self.acts[0], 0, x);
        self.ctx.write(&self.labels, 0, labels);
        Ok(rows)
    }

    fn record_train(&mut self, pass: &mut wgpu::ComputePass<'_>, rows: usize) -> Result<()> {
        self.plan(rows)?.record_train(pass);
        Ok(())
    }

    fn prepare(&mut self, rows: usize) -> Result<()> {
        self.plan(rows).map(|_| ())
    }

    fn record_eval(&mut self, pass: &mut wgpu::ComputePass<'_>, rows: usize) -> Result<()> {
        self.plan(rows)?.record_eval(pass);
        Ok(())
    }

    fn read_stats(&self) -> Result<LossStats> {
        read_loss_stats(&self.ctx, &self.stats, self.max_batch)
    }

    fn reset_stats(&self) -> Result<()> {
        reset_loss_stats(&self.ctx, &self.stats, self.max_batch);
        Ok(())
    }
}
