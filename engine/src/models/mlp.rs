//! A multi-layer perceptron on the GPU: dense layers with ReLU between them and a fused
//! softmax/cross-entropy head. Its parameters live in the flat arena (`fc{i}.weight` as
//! `[in, out]`, then `fc{i}.bias` as `[out]`), its gradients in a second buffer of the same layout.
//! All launches of one batch size are built once (a [`Plan`]) and recorded every step.
use std::collections::HashMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::arena::{ParamLayout, TensorView};
use crate::cpu::LossStats;
use crate::device::GpuContext;
use crate::error::{EngineError, Result};
use crate::kernels::{self, MatRef};
use crate::models::{check_batch, read_loss_stats, reset_loss_stats, Model, ModelKind, Plan};

/// The shape of an MLP: input width, hidden widths, number of classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlpSpec {
    pub input: usize,
    pub hidden: Vec<usize>,
    pub classes: usize,
}

/// Indices of one dense layer's tensors in the layout.
#[derive(Clone, Debug)]
pub struct DenseLayer {
    pub weight: TensorView,
    pub bias: TensorView,
    pub fan_in: usize,
    pub fan_out: usize,
}

impl MlpSpec {
    pub fn new(input: usize, hidden: &[usize], classes: usize) -> Result<Self> {
        if input == 0 || classes < 2 || hidden.contains(&0) {
            return Err(EngineError::Shape {
                op: "mlp",
                detail: format!("invalid MLP {input} -> {hidden:?} -> {classes}: widths must be positive and classes >= 2"),
            });
        }
        Ok(MlpSpec {
            input,
            hidden: hidden.to_vec(),
            classes,
        })
    }

    /// Layer widths from input to output.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.input];
        w.extend(&self.hidden);
        w.push(self.classes);
        w
    }

    pub fn layers(&self) -> Vec<DenseLayer> {
        let mut layout = ParamLayout::new();
        self.widths()
            .windows(2)
            .enumerate()
            .map(|(i, w)| DenseLayer {
                weight: layout.push(format!("fc{i}.weight"), &[w[0], w[1]]),
                bias: layout.push(format!("fc{i}.bias"), &[w[1]]),
                fan_in: w[0],
                fan_out: w[1],
            })
            .collect()
    }

    pub fn layout(&self) -> ParamLayout {
        let mut layout = ParamLayout::new();
        for l in self.layers() {
            layout.push(l.weight.name, &l.weight.shape);
            layout.push(l.bias.name, &l.bias.shape);
        }
        layout
    }

    /// Deterministic initial parameters: He-uniform weights (bound √(6/fan_in)), zero biases, from
    /// ChaCha8 seeded with `seed` — bit-identical in every process and on every platform.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![0f32; self.layout().len()];
        for l in self.layers() {
            let bound = (6.0 / l.fan_in as f64).sqrt() as f32;
            for v in &mut params[l.weight.range()] {
                *v = (rng.random::<f32>() * 2.0 - 1.0) * bound;
            }
        }
        params
    }

    /// e.g. `784-128-64-10 (109,386 parameters)`.
    pub fn describe(&self) -> String {
        let w: Vec<String> = self.widths().iter().map(|w| w.to_string()).collect();
        format!("{} ({} parameters)", w.join("-"), self.layout().len())
    }
}

/// An MLP bound to a device: parameter and gradient arenas, activations for up to `max_batch`
/// rows, the batch input, and the loss statistics accumulator.
pub struct Mlp {
    ctx: Arc<GpuContext>,
    spec: MlpSpec,
    layout: ParamLayout,
    layers: Vec<DenseLayer>,
    max_batch: usize,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    input: wgpu::Buffer,
    labels: wgpu::Buffer,
    /// Post-activation outputs of each layer (the last one holds the logits).
    acts: Vec<wgpu::Buffer>,
    /// Gradients with respect to each layer's pre-activation output.
    dacts: Vec<wgpu::Buffer>,
    stats: wgpu::Buffer,
    plans: HashMap<usize, Plan>,
}

impl Mlp {
    pub fn new(ctx: Arc<GpuContext>, spec: MlpSpec, max_batch: usize) -> Result<Self> {
        if max_batch == 0 {
            return Err(EngineError::Shape {
                op: "mlp",
                detail: "batch size must be at least 1".into(),
            });
        }
        let layout = spec.layout();
        let layers = spec.layers();
        let params = ctx.storage_buffer("params", layout.len())?;
        let grads = ctx.storage_buffer("grads", layout.len())?;
        let input = ctx.storage_buffer("input", max_batch * spec.input)?;
        let labels = ctx.storage_buffer("labels", max_batch)?;
        let mut acts = Vec::new();
        let mut dacts = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            acts.push(ctx.storage_buffer(&format!("act{i}"), max_batch * l.fan_out)?);
            dacts.push(ctx.storage_buffer(&format!("dact{i}"), max_batch * l.fan_out)?);
        }
        let stats = ctx.storage_buffer("loss stats", kernels::softmax_stats_len(max_batch))?;
        let mlp = Mlp {
            ctx,
            spec,
            layout,
            layers,
            max_batch,
            params,
            grads,
            input,
            labels,
            acts,
            dacts,
            stats,
            plans: HashMap::new(),
        };
        mlp.reset_stats()?;
        Ok(mlp)
    }

    pub fn spec(&self) -> &MlpSpec {
        &self.spec
    }

    fn build_plan(&self, rows: usize) -> Result<Plan> {
        let ctx = &*self.ctx;
        let n_layers = self.layers.len();
        let mut forward = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let (h_in, h_in_off) = if i == 0 {
                (&self.input, 0)
            } else {
                (&self.acts[i - 1], 0)
            };
            forward.push(kernels::matmul(
                ctx,
                MatRef::new(h_in, h_in_off),
                MatRef::new(&self.params, l.weight.offset),
                &self.acts[i],
                0,
                (rows, l.fan_in, l.fan_out),
                false,
            )?);
            let hidden = i + 1 < n_layers;
            forward.push(kernels::bias_add(
                ctx,
                (&self.acts[i], 0),
                (&self.params, l.bias.offset),
                rows,
                l.fan_out,
                hidden,
            )?);
        }
        let logits = &self.acts[n_layers - 1];
        let dlogits = &self.dacts[n_layers - 1];
        let classes = self.spec.classes;
        // Training writes d(mean loss)/d(logits); evaluation only accumulates the statistics.
        let loss = |grad_scale| {
            kernels::softmax_ce(
                ctx,
                logits,
                &self.labels,
                dlogits,
                &self.stats,
                rows,
                classes,
                grad_scale,
            )
        };
        let loss_train = loss(Some(1.0 / rows as f32))?;
        let loss_eval = loss(None)?;
        let mut backward = Vec::new();
        for (i, l) in self.layers.iter().enumerate().rev() {
            let h_in = if i == 0 {
                &self.input
            } else {
                &self.acts[i - 1]
            };
            // dW = h_inᵀ · dz
            backward.push(kernels::matmul(
                ctx,
                MatRef::new(h_in, 0).t(),
                MatRef::new(&self.dacts[i], 0),
                &self.grads,
                l.weight.offset,
                (l.fan_in, rows, l.fan_out),
                false,
            )?);
            backward.push(kernels::bias_grad(
                ctx,
                (&self.dacts[i], 0),
                (&self.grads, l.bias.offset),
                rows,
                l.fan_out,
            )?);
            if i > 0 {
                // dh_in = dz · Wᵀ, then through the ReLU of the layer below.
                backward.push(kernels::matmul(
                    ctx,
                    MatRef::new(&self.dacts[i], 0),
                    MatRef::new(&self.params, l.weight.offset).t(),
                    &self.dacts[i - 1],
                    0,
                    (rows, l.fan_out, l.fan_in),
                    false,
                )?);
                backward.push(kernels::relu_backward(
                    ctx,
                    (&self.dacts[i - 1], 0),
                    (&self.acts[i - 1], 0),
                    rows * l.fan_in,
                )?);
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
            return Err(EngineError::Shape {
                op: "mlp",
                detail: format!("{rows} rows for at most {}", self.max_batch),
            });
        }
        if !self.plans.contains_key(&rows) {
            let plan = self.build_plan(rows)?;
            self.plans.insert(rows, plan);
        }
        Ok(&self.plans[&rows])
    }

    /// The logits of the last forward pass, `[rows, classes]`.
    pub fn logits(&self, rows: usize) -> Result<Vec<f32>> {
        self.ctx.read(
            &self.acts[self.layers.len() - 1],
            0,
            rows * self.spec.classes,
        )
    }
}

impl Model for Mlp {
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    fn kind(&self) -> ModelKind {
        ModelKind::Mlp
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

    /// Uploads a batch (`x` row-major `[rows, input]`, labels `< classes`); returns its rows.
    fn load_batch(&self, x: &[f32], labels: &[u32]) -> Result<usize> {
        let rows = check_batch(
            x,
            labels,
            self.spec.input,
            self.spec.classes,
            self.max_batch,
        )?;
        self.ctx.write(&self.input, 0, x);
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
