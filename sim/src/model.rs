//! The `mlp` simulator problem: one of the engine's models on a real dataset, with every worker's
//! training state on the GPU as an `a2cid_engine::TrainState` — the type and the fused kernels
//! the real runtime trains with. One model instance (activations, gradient arena) is shared: a
//! worker's gradient event first mixes its (x, x̃) up to now into its snapshot buffer and copies
//! that into the model's parameter arena, so the gradient is taken at the mixed x, as the
//! continuized model says (docs/algorithm.md §1).
use std::sync::Arc;

use a2cid_datasets::{self as data, BatchLoader, DatasetName};
use a2cid_engine::acid::AcidParams;
use a2cid_engine::kernels::{self, Dispatch};
use a2cid_engine::models::{Model, ModelKind};
use a2cid_engine::TrainState;
use a2cid_engine::{GpuContext, SgdConfig};
use anyhow::Context;

use crate::problem::{
    average_and_consensus_distance, ExchangeCodec, Problem, Quality, TestAccuracy,
};

/// What the model problem trains.
#[derive(Clone, Debug)]
pub struct ModelProblemConfig {
    pub dataset: DatasetName,
    pub data_dir: std::path::PathBuf,
    pub model: ModelKind,
    pub hidden: Vec<usize>,
    pub width: usize,
    pub partition: a2cid_datasets::Partition,
    pub batch_size: usize,
    /// Training rows on which the global loss is measured (a fixed subset, for speed).
    pub eval_rows: usize,
    pub adapter: String,
    pub seed: u64,
    /// Keep an x̃ per worker (acid); gossip and all-reduce have none.
    pub with_tilde: bool,
    pub params: AcidParams,
    pub sgd: SgdConfig,
}

/// n workers of one model on one GPU.
pub struct GpuModelWorkers {
    ctx: Arc<GpuContext>,
    model: Box<dyn Model>,
    states: Vec<TrainState>,
    loaders: Vec<BatchLoader>,
    grad_sum: wgpu::Buffer,
    clear_grad_sum: Dispatch,
    add_grad: Dispatch,
    eval_x: Vec<f32>,
    eval_y: Vec<u32>,
    test_x: Vec<f32>,
    test_y: Vec<u32>,
}

impl GpuModelWorkers {
    pub fn new(n: usize, cfg: &ModelProblemConfig) -> anyhow::Result<Self> {
        let dataset = data::load(cfg.dataset, &cfg.data_dir)?;
        let ctx = GpuContext::open(&cfg.adapter)?;
        let spec = a2cid_schema::model_spec(cfg.model, &cfg.hidden, cfg.width, &dataset)?;
        let eval_rows = cfg.eval_rows.min(dataset.train.len()).max(1);
        let model = spec.build(ctx.clone(), cfg.batch_size.max(eval_rows.min(1024)))?;
        let d = model.parameters();
        let init = model.init(cfg.seed);
        let train = Arc::new(dataset.train.clone());
        let shards = cfg
            .partition
            .shards(&dataset.train.y, dataset.classes, n, cfg.seed)
            .map_err(|e| anyhow::anyhow!("{e} (dataset {})", dataset.name))?;
        let mut states = Vec::with_capacity(n);
        let mut loaders = Vec::with_capacity(n);
        for (rank, shard) in shards.into_iter().enumerate() {
            let x = ctx.storage_buffer_from("x", &init)?;
            states.push(TrainState::new(
                ctx.clone(),
                &x,
                model.grads_buffer(),
                d,
                cfg.sgd,
                cfg.params,
                cfg.with_tilde,
            )?);
            loaders.push(BatchLoader::spawn(
                train.clone(),
                dataset.features,
                shard,
                cfg.batch_size,
                cfg.seed ^ rank as u64,
                None,
                (0, 0),
            ));
        }
        let grad_sum = ctx.storage_buffer("gradient sum", d)?;
        let clear_grad_sum = kernels::fill(&ctx, &grad_sum, 0, d, 0.0)?;
        let add_grad = kernels::axpy(&ctx, 1.0 / n as f32, model.grads_buffer(), &grad_sum, d)?;
        let features = dataset.features;
        Ok(GpuModelWorkers {
            eval_x: dataset.train.x[..eval_rows * features].to_vec(),
            eval_y: dataset.train.y[..eval_rows].to_vec(),
            test_x: dataset.test.x.clone(),
            test_y: dataset.test.y.clone(),
            ctx,
            model,
            states,
            loaders,
            grad_sum,
            clear_grad_sum,
            add_grad,
        })
    }

    /// Every worker's x as it is on the device (as last mixed).
    fn current_models(&self) -> anyhow::Result<Vec<Vec<f32>>> {
        self.states
            .iter()
            .map(|state| Ok(self.ctx.read::<f32>(state.x_buffer(), 0, state.len())?))
            .collect()
    }

    fn bytes(&self) -> u64 {
        (self.model.parameters() * 4) as u64
    }

    /// Loads worker `i`'s next batch and records into `encoder`: mix up to `now` into the
    /// worker's snapshot, copy it into the model's parameters, forward and backward; `then`
    /// records what follows in the same pass.
    fn record_gradient(
        &mut self,
        i: usize,
        now: f64,
        encoder: &mut wgpu::CommandEncoder,
        then: impl FnOnce(&mut Self, &mut wgpu::ComputePass<'_>),
    ) -> anyhow::Result<()> {
        let batch = self.loaders[i]
            .next_batch()
            .context("batch loader stopped")?;
        let rows = self.model.load_batch(&batch.x, &batch.y)?;
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.states[i].record_snapshot(&mut pass, now);
        }
        let bytes = self.bytes();
        encoder.copy_buffer_to_buffer(
            self.states[i].snapshot_buffer(),
            0,
            self.model.params_buffer(),
            0,
            bytes,
        );
        let mut pass = encoder.begin_compute_pass(&Default::default());
        self.model.record_train(&mut pass, rows)?;
        then(self, &mut pass);
        Ok(())
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.ctx.device.create_command_encoder(&Default::default())
    }
}

impl Problem for GpuModelWorkers {
    fn workers(&self) -> usize {
        self.states.len()
    }

    fn mix(&mut self, worker: usize, now: f64) -> anyhow::Result<()> {
        if self.states[worker].has_tilde() {
            self.states[worker].submit(|s, pass| s.record_snapshot(pass, now));
        }
        Ok(())
    }

    fn gradient_step(&mut self, worker: usize, now: f64, sgd: &SgdConfig) -> anyhow::Result<()> {
        let mut encoder = self.encoder();
        self.record_gradient(worker, now, &mut encoder, |this, pass| {
            this.states[worker].record_step(pass, sgd.lr, now);
        })?;
        self.ctx.queue.submit(Some(encoder.finish()));
        Ok(())
    }

    fn pairwise_average(&mut self, (i, j): (usize, usize), now: f64) -> anyhow::Result<f64> {
        anyhow::ensure!(
            i != j,
            "pairwise_average: a worker cannot average with itself ({i})"
        );
        let bytes = self.bytes();
        let mut encoder = self.encoder();
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.states[i].record_snapshot(&mut pass, now);
            self.states[j].record_snapshot(&mut pass, now);
        }
        for (from, to) in [(i, j), (j, i)] {
            encoder.copy_buffer_to_buffer(
                self.states[from].snapshot_buffer(),
                0,
                self.states[to].received_buffer(),
                0,
                bytes,
            );
        }
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.states[i].record_average(&mut pass, now);
            self.states[j].record_average(&mut pass, now);
        }
        self.ctx.queue.submit(Some(encoder.finish()));
        Ok(self.states[i].read_distance()?)
    }

    fn pairwise_average_via(
        &mut self,
        (i, j): (usize, usize),
        now: f64,
        codec: &mut ExchangeCodec<'_>,
    ) -> anyhow::Result<f64> {
        anyhow::ensure!(
            i != j,
            "pairwise_average: a worker cannot average with itself ({i})"
        );
        let mut encoder = self.encoder();
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.states[i].record_snapshot(&mut pass, now);
            self.states[j].record_snapshot(&mut pass, now);
        }
        self.ctx.queue.submit(Some(encoder.finish()));
        let (s_i, s_j) = (
            self.states[i].read_snapshot()?,
            self.states[j].read_snapshot()?,
        );
        let v = codec(&s_i, &s_j)?;
        self.states[i].write_sent(&v.own_i);
        self.states[i].write_received(&v.peer_i);
        self.states[j].write_sent(&v.own_j);
        self.states[j].write_received(&v.peer_j);
        let mut encoder = self.encoder();
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.states[i].record_average(&mut pass, now);
            self.states[j].record_average(&mut pass, now);
        }
        self.ctx.queue.submit(Some(encoder.finish()));
        Ok(self.states[i].read_distance()?)
    }

    fn layout(&self) -> Option<a2cid_engine::arena::ParamLayout> {
        Some(self.model.layout().clone())
    }

    fn allreduce_step(&mut self, now: f64, sgd: &SgdConfig) -> anyhow::Result<()> {
        let mut encoder = self.encoder();
        self.clear_grad_sum
            .record(&mut encoder.begin_compute_pass(&Default::default()));
        self.ctx.queue.submit(Some(encoder.finish()));
        for i in 0..self.states.len() {
            // One submit per worker: each loads its own batch into the shared input buffer.
            let mut encoder = self.encoder();
            self.record_gradient(i, now, &mut encoder, |this, pass| {
                this.add_grad.record(pass)
            })?;
            self.ctx.queue.submit(Some(encoder.finish()));
        }
        let mut encoder = self.encoder();
        encoder.copy_buffer_to_buffer(
            &self.grad_sum,
            0,
            self.model.grads_buffer(),
            0,
            self.bytes(),
        );
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for state in &mut self.states {
                state.record_step(&mut pass, sgd.lr, now);
            }
        }
        self.ctx.queue.submit(Some(encoder.finish()));
        Ok(())
    }

    fn parameters(&self) -> usize {
        self.model.parameters()
    }

    fn models(&mut self, now: f64) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut xs = Vec::with_capacity(self.states.len());
        for worker in 0..self.states.len() {
            self.mix(worker, now)?;
            let state = &self.states[worker];
            xs.push(self.ctx.read::<f32>(state.x_buffer(), 0, state.len())?);
        }
        Ok(xs)
    }

    fn set_model(&mut self, worker: usize, x: &[f32], _now: f64) -> anyhow::Result<()> {
        let state = &self.states[worker];
        anyhow::ensure!(
            !state.has_tilde() && x.len() == state.len(),
            "set_model: worker {worker} keeps an x̃ or the model has {} values, not {}",
            state.len(),
            x.len()
        );
        self.ctx.write(state.x_buffer(), 0, x);
        Ok(())
    }

    fn quality(&mut self) -> anyhow::Result<Quality> {
        let n = self.states.len();
        let xs = self.current_models()?;
        let views: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let (x_bar, consensus_distance) = average_and_consensus_distance(&views);
        let mut mean_worker_loss = 0.0;
        for x in &xs {
            self.model.set_params(x)?;
            mean_worker_loss += self.model.evaluate(&self.eval_x, &self.eval_y)?.0 / n as f64;
        }
        let x_bar32: Vec<f32> = x_bar.iter().map(|&v| v as f32).collect();
        self.model.set_params(&x_bar32)?;
        let average_model_loss = self.model.evaluate(&self.eval_x, &self.eval_y)?.0;
        Ok(Quality {
            mean_worker_loss,
            average_model_loss,
            consensus_distance,
        })
    }

    fn test_accuracy(&mut self) -> anyhow::Result<Option<TestAccuracy>> {
        if self.test_y.is_empty() {
            return Ok(None);
        }
        let xs = self.current_models()?;
        let n = xs.len();
        let views: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let (x_bar, _) = average_and_consensus_distance(&views);
        let mut mean_worker = 0.0;
        for x in &xs {
            self.model.set_params(x)?;
            mean_worker += self.model.evaluate(&self.test_x, &self.test_y)?.1 / n as f64;
        }
        let x_bar32: Vec<f32> = x_bar.iter().map(|&v| v as f32).collect();
        self.model.set_params(&x_bar32)?;
        let average_model = self.model.evaluate(&self.test_x, &self.test_y)?.1;
        Ok(Some(TestAccuracy {
            mean_worker,
            average_model,
        }))
    }
}
