//! The `mlp` simulator problem: the engine's MLP on a real dataset with all n workers' states
//! (x, x̃, momentum) on the GPU, updated by the same fused kernels as the real runtime
//! (`mix_and_snapshot`, `mix_and_step`, `mix_and_average` of shaders/acid.wgsl). One model instance
//! (activations, gradient arena) is shared: a worker's event first mixes its (x, x̃) up to now and
//! writes the mixed x straight into the model's parameter arena (the snapshot), so the gradient is
//! taken at the mixed x, as the continuized model says.
use std::sync::Arc;

use a2cid_engine::acid::{mix_factor, AcidParams, SgdParams};
use a2cid_engine::kernels::{self, AcidUniform, Dispatch};
use a2cid_engine::{AdapterChoice, GpuContext, Mlp, MlpSpec};
use anyhow::Context;

use crate::problem::{average_and_consensus_distance, Metrics, Problem};
use a2cid_data::{self as data, BatchLoader, DatasetName};

/// What the `mlp` problem trains.
#[derive(Clone, Debug)]
pub struct MlpProblemConfig {
    pub dataset: DatasetName,
    pub data_dir: std::path::PathBuf,
    pub hidden: Vec<usize>,
    pub batch_size: usize,
    /// Training rows on which the global loss is measured (a fixed subset, for speed).
    pub eval_rows: usize,
    pub adapter: String,
    pub seed: u64,
    /// Keep an x̃ per worker (acid); gossip and all-reduce have none.
    pub with_tilde: bool,
}

struct Worker {
    x: wgpu::Buffer,
    x_tilde: Option<wgpu::Buffer>,
    loader: BatchLoader,
    /// Mix up to now and write the mixed x into the model's parameter arena.
    to_model: Dispatch,
    /// Mix up to now and write the mixed x into snapshot slot 0 or 1.
    to_slot: [Dispatch; 2],
    /// SGD step (mixing already done) with this worker's own gradient / the averaged gradient.
    step_own: Dispatch,
    step_avg: Dispatch,
    /// Pairwise average, sent snapshot in slot k, received in slot 1 − k.
    average: [Dispatch; 2],
    _momentum: wgpu::Buffer,
}

pub struct GpuMlpWorkers {
    ctx: Arc<GpuContext>,
    mlp: Mlp,
    n_params: usize,
    workers: Vec<Worker>,
    partials: wgpu::Buffer,
    _grad_sum: wgpu::Buffer,
    clear_grad_sum: Dispatch,
    add_grad: Dispatch,
    eval_x: Vec<f32>,
    eval_y: Vec<u32>,
    base: AcidUniform,
}

impl GpuMlpWorkers {
    pub fn new(n: usize, cfg: &MlpProblemConfig) -> anyhow::Result<Self> {
        let dataset = data::load(cfg.dataset, &cfg.data_dir)?;
        let ctx = GpuContext::new(&cfg.adapter.parse::<AdapterChoice>().expect("infallible"))?;
        let spec = MlpSpec::new(dataset.features, &cfg.hidden, dataset.classes)?;
        let n_params = spec.layout().len();
        let eval_rows = cfg.eval_rows.min(dataset.train.len()).max(1);
        let mlp = Mlp::new(
            ctx.clone(),
            spec.clone(),
            cfg.batch_size.max(eval_rows.min(1024)),
        )?;
        let init = spec.init(cfg.seed);
        let snapshots = [
            ctx.storage_buffer("snapshot 0", n_params)?,
            ctx.storage_buffer("snapshot 1", n_params)?,
        ];
        let partials = ctx.storage_buffer("partials", kernels::acid_partials_len(n_params))?;
        let grad_sum = ctx.storage_buffer("gradient sum", n_params)?;
        let base = AcidUniform::new(n_params)?;
        let train = Arc::new(dataset.train.clone());
        let mut workers = Vec::with_capacity(n);
        for rank in 0..n {
            let x = ctx.storage_buffer_from("x", &init)?;
            let x_tilde = if cfg.with_tilde {
                Some(ctx.storage_buffer_from("x_tilde", &init)?)
            } else {
                None
            };
            let momentum = ctx.storage_buffer("momentum", n_params)?;
            let xt = x_tilde.as_ref();
            let shard = data::shard_indices(train.len(), rank, n, cfg.seed);
            let loader = BatchLoader::spawn(
                train.clone(),
                dataset.features,
                shard,
                cfg.batch_size,
                cfg.seed ^ rank as u64,
                None,
            );
            workers.push(Worker {
                to_model: kernels::mix_and_snapshot(&ctx, &x, xt, mlp.params_buffer(), &base)?,
                to_slot: [
                    kernels::mix_and_snapshot(&ctx, &x, xt, &snapshots[0], &base)?,
                    kernels::mix_and_snapshot(&ctx, &x, xt, &snapshots[1], &base)?,
                ],
                step_own: kernels::mix_and_step(
                    &ctx,
                    &x,
                    xt,
                    &momentum,
                    mlp.grads_buffer(),
                    &base,
                )?,
                step_avg: kernels::mix_and_step(&ctx, &x, xt, &momentum, &grad_sum, &base)?,
                average: [
                    kernels::mix_and_average(
                        &ctx,
                        &x,
                        xt,
                        &snapshots[0],
                        &snapshots[1],
                        &partials,
                        &base,
                    )?,
                    kernels::mix_and_average(
                        &ctx,
                        &x,
                        xt,
                        &snapshots[1],
                        &snapshots[0],
                        &partials,
                        &base,
                    )?,
                ],
                x,
                x_tilde,
                loader,
                _momentum: momentum,
            });
        }
        let clear_grad_sum = kernels::fill(&ctx, &grad_sum, 0, n_params, 0.0)?;
        let add_grad = kernels::axpy(
            &ctx,
            1.0 / n as f32,
            mlp.grads_buffer(),
            &grad_sum,
            n_params,
        )?;
        let features = dataset.features;
        Ok(GpuMlpWorkers {
            eval_x: dataset.train.x[..eval_rows * features].to_vec(),
            eval_y: dataset.train.y[..eval_rows].to_vec(),
            ctx,
            mlp,
            n_params,
            workers,
            partials,
            _grad_sum: grad_sum,
            clear_grad_sum,
            add_grad,
            base,
        })
    }

    fn uniform(&self, mix: f64, sgd: Option<&SgdParams>, avg: Option<&AcidParams>) -> AcidUniform {
        let mut u = self.base;
        u.mix = mix as f32;
        if let Some(s) = sgd {
            u.lr = s.lr;
            u.momentum = s.momentum;
            u.weight_decay = s.weight_decay;
            u.nesterov = s.nesterov as u32;
        }
        if let Some(p) = avg {
            u.alpha = p.alpha as f32;
            u.alpha_tilde = p.alpha_tilde as f32;
        }
        u
    }

    /// Loads worker `i`'s next batch and records: mix to now → model params, forward/backward.
    fn record_gradient(
        &mut self,
        i: usize,
        mix: f64,
        pass: &mut wgpu::ComputePass<'_>,
    ) -> anyhow::Result<()> {
        let batch = self.workers[i]
            .loader
            .next_batch()
            .context("batch loader stopped")?;
        let rows = self.mlp.load_batch(&batch.x, &batch.y)?;
        let u = self.uniform(mix, None, None);
        self.workers[i].to_model.set_params(&self.ctx, &u);
        self.workers[i].to_model.record(pass);
        self.mlp.record_train(pass, rows)?;
        Ok(())
    }

    fn submit(
        &self,
        f: impl FnOnce(&mut wgpu::ComputePass<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            f(&mut pass)?;
        }
        self.ctx.queue.submit(Some(encoder.finish()));
        Ok(())
    }
}

impl Problem for GpuMlpWorkers {
    fn workers(&self) -> usize {
        self.workers.len()
    }

    fn mix(&mut self, worker: usize, eta: f64, elapsed: f64) -> anyhow::Result<()> {
        if self.workers[worker].x_tilde.is_none() {
            return Ok(());
        }
        let u = self.uniform(mix_factor(eta, elapsed), None, None);
        let d = &self.workers[worker].to_slot[0];
        d.set_params(&self.ctx, &u);
        self.submit(|pass| {
            d.record(pass);
            Ok(())
        })
    }

    fn gradient_step(
        &mut self,
        worker: usize,
        eta: f64,
        elapsed: f64,
        sgd: &SgdParams,
    ) -> anyhow::Result<()> {
        let mix = mix_factor(eta, elapsed);
        let step = self.uniform(0.0, Some(sgd), None);
        self.workers[worker].step_own.set_params(&self.ctx, &step);
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.record_gradient(worker, mix, &mut pass)?;
            self.workers[worker].step_own.record(&mut pass);
        }
        self.ctx.queue.submit(Some(encoder.finish()));
        Ok(())
    }

    fn pairwise_average(
        &mut self,
        (i, j): (usize, usize),
        (ei, ej): (f64, f64),
        params: &AcidParams,
    ) -> anyhow::Result<f64> {
        let (wi, wj) = (&self.workers[i], &self.workers[j]);
        wi.to_slot[0].set_params(
            &self.ctx,
            &self.uniform(mix_factor(params.eta, ei), None, None),
        );
        wj.to_slot[1].set_params(
            &self.ctx,
            &self.uniform(mix_factor(params.eta, ej), None, None),
        );
        let avg = self.uniform(0.0, None, Some(params));
        wi.average[0].set_params(&self.ctx, &avg);
        wj.average[1].set_params(&self.ctx, &avg);
        self.submit(|pass| {
            wi.to_slot[0].record(pass);
            wj.to_slot[1].record(pass);
            wi.average[0].record(pass);
            Ok(())
        })?;
        let partials: Vec<f32> =
            self.ctx
                .read(&self.partials, 0, kernels::acid_partials_len(self.n_params))?;
        self.submit(|pass| {
            wj.average[1].record(pass);
            Ok(())
        })?;
        Ok(partials.iter().map(|&v| f64::from(v)).sum())
    }

    fn allreduce_step(&mut self, sgd: &SgdParams) -> anyhow::Result<()> {
        let step = self.uniform(0.0, Some(sgd), None);
        for w in &self.workers {
            w.step_avg.set_params(&self.ctx, &step);
        }
        self.submit(|pass| {
            self.clear_grad_sum.record(pass);
            Ok(())
        })?;
        for i in 0..self.workers.len() {
            let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                self.record_gradient(i, 0.0, &mut pass)?;
                self.add_grad.record(&mut pass);
            }
            self.ctx.queue.submit(Some(encoder.finish()));
        }
        self.submit(|pass| {
            for w in &self.workers {
                w.step_avg.record(pass);
            }
            Ok(())
        })
    }

    fn metrics(&mut self) -> anyhow::Result<Metrics> {
        let n = self.workers.len();
        let mut xs = Vec::with_capacity(n);
        for w in &self.workers {
            xs.push(self.ctx.read::<f32>(&w.x, 0, self.n_params)?);
        }
        let views: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let (x_bar, consensus_distance) = average_and_consensus_distance(&views);
        let mut mean_worker_loss = 0.0;
        for x in &xs {
            self.mlp.set_params(x)?;
            mean_worker_loss += self.mlp.evaluate(&self.eval_x, &self.eval_y)?.0 / n as f64;
        }
        let x_bar32: Vec<f32> = x_bar.iter().map(|&v| v as f32).collect();
        self.mlp.set_params(&x_bar32)?;
        let average_model_loss = self.mlp.evaluate(&self.eval_x, &self.eval_y)?.0;
        Ok(Metrics {
            mean_worker_loss,
            average_model_loss,
            consensus_distance,
        })
    }
}
