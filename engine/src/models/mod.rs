//! Models on the flat parameter arena, behind one trait.
//!
//! A [`ModelKind`] is what `--model` names (`mlp` today); with the run's knobs it makes a
//! [`ModelSpec`], which checks that the model fits the dataset's input and builds a [`Model`] on
//! a device. Everything above the engine — the single-worker loop, the worker runtime, the
//! simulator's model problem, checkpoints, the mesh's peer fingerprint — goes through [`Model`],
//! so adding a model is a change in this folder alone: a new module implementing [`Model`], a
//! [`ModelKind`] variant and its arm in [`ModelSpec::build`].
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::arena::ParamLayout;
use crate::cpu::LossStats;
use crate::device::GpuContext;
use crate::error::{EngineError, Result};

pub mod mlp;
pub mod net;

/// The families of models `--model` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ModelKind {
    /// Multi-layer perceptron: dense layers with ReLU between them (`--hidden` sets the widths).
    #[default]
    Mlp,
    /// Two 5×5 convolutions with max-pooling, two linear layers (`--width` filters in the first).
    Cnn,
    /// CIFAR-style ResNet with GroupNorm of this depth (6n + 2: 8, 14, 20, …; `--width` filters in
    /// the first stage).
    ResNet(u32),
}

impl ModelKind {
    /// What `--model` accepts, for messages and help.
    pub const CHOICES: &'static str = "mlp, cnn, resnet:D (D = 8, 14, 20, … = 6n + 2)";

    /// Linear learning-rate warm-up steps when none is asked for: the convolutional models at the
    /// default rate (0.05, momentum 0.9) can blow up in their first steps without one (a `cnn` on
    /// MNIST did, docs/results.md §4); the MLP needs none.
    pub fn default_warmup_steps(self) -> usize {
        match self {
            ModelKind::Mlp => 0,
            ModelKind::Cnn | ModelKind::ResNet(_) => 100,
        }
    }

    pub fn name(self) -> String {
        match self {
            ModelKind::Mlp => "mlp".into(),
            ModelKind::Cnn => "cnn".into(),
            ModelKind::ResNet(d) => format!("resnet:{d}"),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let unknown = || format!("unknown model `{s}`: expected {}", ModelKind::CHOICES);
        match s {
            "mlp" => Ok(ModelKind::Mlp),
            "cnn" => Ok(ModelKind::Cnn),
            _ => {
                let depth = s.strip_prefix("resnet:").ok_or_else(unknown)?;
                let d: u32 = depth.parse().map_err(|_| unknown())?;
                if d < 8 || !(d - 2).is_multiple_of(6) {
                    return Err(format!(
                        "--model {s}: a ResNet's depth is 6n + 2 with n ≥ 1 (8, 14, 20, …)"
                    ));
                }
                Ok(ModelKind::ResNet(d))
            }
        }
    }
}

impl serde::Serialize for ModelKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> serde::Deserialize<'de> for ModelKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The shape of one input row: `[channels, height, width]` (stored NCHW, row-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputShape(pub [usize; 3]);

impl InputShape {
    /// Values per row.
    pub fn features(&self) -> usize {
        self.0.iter().product()
    }
}

impl fmt::Display for InputShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [c, h, w] = self.0;
        write!(f, "{h}×{w}×{c}")
    }
}

/// A model fully specified: its kind, its knobs, the input it takes and the classes it predicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub kind: ModelKind,
    /// Hidden widths (the MLP's layers).
    pub hidden: Vec<usize>,
    /// Filters of the first convolution (`cnn`) or stage (`resnet:D`).
    pub width: usize,
    pub input: InputShape,
    pub classes: usize,
}

impl ModelSpec {
    /// Checks the knobs against the input; the message names both when they do not fit.
    pub fn new(
        kind: ModelKind,
        hidden: &[usize],
        width: usize,
        input: InputShape,
        classes: usize,
    ) -> Result<ModelSpec> {
        let spec = ModelSpec {
            kind,
            hidden: hidden.to_vec(),
            width,
            input,
            classes,
        };
        match kind {
            ModelKind::Mlp => {
                mlp::MlpSpec::new(input.features(), hidden, classes)?;
            }
            _ => {
                spec.net()?;
            }
        }
        Ok(spec)
    }

    /// The parameter layout the model will have (no device needed).
    pub fn layout(&self) -> ParamLayout {
        match self.kind {
            ModelKind::Mlp => self.mlp().layout(),
            _ => self.net().expect("checked by ModelSpec::new").layout,
        }
    }

    /// The architecture in a few words, as [`Model::describe`] says it (no device needed).
    pub fn describe(&self) -> String {
        match self.kind {
            ModelKind::Mlp => self.mlp().describe(),
            _ => self.net().expect("checked by ModelSpec::new").describe(),
        }
    }

    /// The layer list of a convolutional model.
    pub fn net(&self) -> Result<net::NetSpec> {
        match self.kind {
            ModelKind::Cnn => net::NetSpec::cnn(self.input, self.classes, self.width),
            ModelKind::ResNet(d) => {
                net::NetSpec::resnet(self.input, self.classes, d as usize, self.width)
            }
            ModelKind::Mlp => Err(EngineError::Shape {
                op: "model",
                detail: "an MLP is not a layer list".into(),
            }),
        }
    }

    /// Bytes of device memory the model holds for batches of `max_batch` rows (parameters,
    /// gradients, activations and their gradients, the layers' own buffers).
    pub fn device_bytes(&self, max_batch: usize) -> u64 {
        match self.kind {
            ModelKind::Mlp => {
                let widths = self.mlp().widths();
                let acts: usize = widths.iter().sum::<usize>() * 2;
                4 * (2 * self.layout().len() + max_batch * acts) as u64
            }
            _ => self.net().map(|n| n.device_bytes(max_batch)).unwrap_or(0),
        }
    }

    fn mlp(&self) -> mlp::MlpSpec {
        mlp::MlpSpec {
            input: self.input.features(),
            hidden: self.hidden.clone(),
            classes: self.classes,
        }
    }

    /// Builds the model on `ctx` with room for batches of up to `max_batch` rows.
    pub fn build(&self, ctx: Arc<GpuContext>, max_batch: usize) -> Result<Box<dyn Model>> {
        match self.kind {
            ModelKind::Mlp => Ok(Box::new(mlp::Mlp::new(ctx, self.mlp(), max_batch)?)),
            _ => Ok(Box::new(net::Net::new(
                ctx,
                self.kind,
                self.net()?,
                max_batch,
            )?)),
        }
    }
}

/// What every model on the flat arena offers the trainers. The parameters (x) live in one buffer
/// laid out by [`Model::layout`], the gradients in a second buffer of the same layout.
pub trait Model: Send {
    fn kind(&self) -> ModelKind;
    /// The layout of the parameters in the arena.
    fn layout(&self) -> &ParamLayout;
    /// The architecture in a few words, e.g. `64-256-128-10 (50826 parameters)` for an MLP.
    fn describe(&self) -> String;
    /// Deterministic initial parameters for `seed`: bit-identical in every process and platform.
    fn init(&self, seed: u64) -> Vec<f32>;
    fn ctx(&self) -> &Arc<GpuContext>;
    /// The most rows one batch may have.
    fn max_batch(&self) -> usize;
    /// The parameter arena (x).
    fn params_buffer(&self) -> &wgpu::Buffer;
    /// The gradient arena, laid out as the parameters.
    fn grads_buffer(&self) -> &wgpu::Buffer;
    /// Uploads a batch (rows of the input shape, labels below the class count); returns its rows.
    fn load_batch(&self, x: &[f32], labels: &[u32]) -> Result<usize>;
    /// Records forward, loss (accumulated into the statistics) and backward of the loaded batch:
    /// afterwards the gradient arena holds d(mean loss)/d(params).
    fn record_train(&mut self, pass: &mut wgpu::ComputePass<'_>, rows: usize) -> Result<()>;
    /// Records forward and loss only (evaluation).
    fn record_eval(&mut self, pass: &mut wgpu::ComputePass<'_>, rows: usize) -> Result<()>;
    /// Builds the launches (and so compiles the shader pipelines) for batches of `rows` now,
    /// rather than at the first such batch: a worker does this before it joins the mesh, so the
    /// one-off compile (seconds on a CPU adapter) is not on its training clock.
    fn prepare(&mut self, rows: usize) -> Result<()>;
    /// Loss sum and correct predictions accumulated since the last reset (waits for the GPU).
    fn read_stats(&self) -> Result<LossStats>;
    fn reset_stats(&self) -> Result<()>;

    /// Number of parameters.
    fn parameters(&self) -> usize {
        self.layout().len()
    }

    /// A fingerprint of the architecture: two processes agree on it exactly when they hold the
    /// same model (kind, shapes and arena layout). Peers and checkpoints are checked against it.
    fn fingerprint(&self) -> String {
        format!(
            "{} {} layout {:016x}",
            self.kind(),
            self.describe(),
            self.layout().fingerprint()
        )
    }

    fn set_params(&self, values: &[f32]) -> Result<()> {
        check_len("set_params", values.len(), self.parameters())?;
        self.ctx().write(self.params_buffer(), 0, values);
        Ok(())
    }

    fn params(&self) -> Result<Vec<f32>> {
        self.ctx().read(self.params_buffer(), 0, self.parameters())
    }

    fn grads(&self) -> Result<Vec<f32>> {
        self.ctx().read(self.grads_buffer(), 0, self.parameters())
    }

    /// Mean loss and accuracy of the current parameters over a whole split, in batches.
    fn evaluate(&mut self, x: &[f32], labels: &[u32]) -> Result<(f64, f64)> {
        let n = labels.len();
        if n == 0 {
            return Ok((f64::NAN, f64::NAN));
        }
        let width = x.len() / n;
        self.reset_stats()?;
        let batch = self.max_batch();
        for start in (0..n).step_by(batch) {
            let end = (start + batch).min(n);
            let rows = self.load_batch(&x[start * width..end * width], &labels[start..end])?;
            let ctx = self.ctx().clone();
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                self.record_eval(&mut pass, rows)?;
            }
            ctx.queue.submit(Some(encoder.finish()));
        }
        let s = self.read_stats()?;
        self.reset_stats()?;
        Ok((s.loss_sum / n as f64, s.correct / n as f64))
    }

    /// Forward + backward of one batch, submitted; gradients land in the gradient arena.
    fn forward_backward(&mut self, x: &[f32], labels: &[u32]) -> Result<()> {
        let rows = self.load_batch(x, labels)?;
        let ctx = self.ctx().clone();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.record_train(&mut pass, rows)?;
        }
        ctx.queue.submit(Some(encoder.finish()));
        Ok(())
    }
}

/// All launches of one forward/backward pass of a model at a fixed number of rows, built once and
/// recorded every step.
pub(crate) struct Plan {
    pub forward: Vec<crate::kernels::Dispatch>,
    pub loss_train: crate::kernels::Dispatch,
    pub loss_eval: crate::kernels::Dispatch,
    pub backward: Vec<crate::kernels::Dispatch>,
}

impl Plan {
    /// Forward, loss with its gradient, backward.
    pub fn record_train(&self, pass: &mut wgpu::ComputePass<'_>) {
        let all = self.forward.iter().chain([&self.loss_train]);
        for d in all.chain(&self.backward) {
            d.record(pass);
        }
    }

    /// Forward and loss statistics only.
    pub fn record_eval(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in self.forward.iter().chain([&self.loss_eval]) {
            d.record(pass);
        }
    }
}

/// Checks a batch for a model of input `width` and `classes` taking at most `max_batch` rows;
/// returns its rows.
pub(crate) fn check_batch(
    x: &[f32],
    labels: &[u32],
    width: usize,
    classes: usize,
    max_batch: usize,
) -> Result<usize> {
    let rows = labels.len();
    if rows == 0 || rows > max_batch || x.len() != rows * width {
        return Err(EngineError::Shape {
            op: "load_batch",
            detail: format!(
                "{} inputs and {rows} labels for width {width} and at most {max_batch} rows",
                x.len()
            ),
        });
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(EngineError::Shape {
            op: "load_batch",
            detail: format!("label {bad} out of range for {classes} classes"),
        });
    }
    Ok(rows)
}

/// The loss sum and correct count accumulated in a softmax statistics buffer of `max_batch` rows.
pub(crate) fn read_loss_stats(
    ctx: &GpuContext,
    stats: &wgpu::Buffer,
    max_batch: usize,
) -> Result<LossStats> {
    let raw: Vec<f32> = ctx.read(stats, 0, crate::kernels::softmax_stats_len(max_batch))?;
    let mut s = LossStats::default();
    for pair in raw.chunks_exact(2) {
        s.loss_sum += f64::from(pair[0]);
        s.correct += f64::from(pair[1]);
    }
    Ok(s)
}

/// Zeroes a softmax statistics buffer of `max_batch` rows.
pub(crate) fn reset_loss_stats(ctx: &GpuContext, stats: &wgpu::Buffer, max_batch: usize) {
    let zeros = vec![0f32; crate::kernels::softmax_stats_len(max_batch)];
    ctx.write(stats, 0, &zeros);
}

fn check_len(op: &'static str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(EngineError::Shape {
            op,
            detail: format!("got {got} values for a model of {want} parameters"),
        });
    }
    Ok(())
}
