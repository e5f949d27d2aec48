//! One worker's learning machinery, the same for a single worker and for each worker of a
//! multi-worker run: the model (`--model`), its shard of the data and the loss window. Its
//! training state on the device (x, x̃, momentum, snapshots: `a2cid_engine::TrainState`) is made
//! here and held by the caller — a single worker owns it, a worker of a run shares it with the
//! task that answers exchanges. A single worker is the `gossip` path without peers.
use std::sync::Arc;

use a2cid_datasets::{self as data, Batch, BatchLoader, Dataset};
use a2cid_engine::acid::AcidParams;
use a2cid_engine::models::Model;
use a2cid_engine::TrainState;
use a2cid_engine::{GpuContext, SgdConfig};
use a2cid_schema::RunConfig;

/// Rows of one evaluation batch (the model's activations are sized for the larger of this and
/// the training batch).
const EVAL_BATCH: usize = 1024;

/// Where a worker's data comes from: its shard of the training split and its shuffles.
#[derive(Clone, Copy, Debug)]
pub struct DataPlan {
    pub rank: usize,
    pub world: usize,
    /// Seeds the shuffles of this worker's batches (the shard itself is seeded by the run's seed).
    pub shuffle_seed: u64,
    /// Stop the loader after this many epochs (`None`: it never stops).
    pub epochs: Option<usize>,
    /// Resume at batch `.1` of epoch `.0`.
    pub position: (usize, usize),
}

/// A model and its data, on one device.
pub struct Learner {
    pub ctx: Arc<GpuContext>,
    pub model: Box<dyn Model>,
    pub dataset: Dataset,
    loader: BatchLoader,
    /// Rows of every worker's shard (`--partition`), by rank.
    pub shard_sizes: Vec<usize>,
    /// How many rows of each class this worker's shard holds.
    pub shard_histogram: Vec<u64>,
    /// Rows trained on since the loss statistics were last read.
    window_rows: usize,
}

/// A window's mean train loss above this many times that of a uniform guess (ln of the number of
/// classes) is a divergence: no trained or training model scores that badly.
pub const DIVERGED_LOSS: f64 = 20.0;

/// Training statistics over a window of steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub loss_sum: f64,
    pub correct: f64,
    pub rows: usize,
}

impl Window {
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.rows.max(1) as f64
    }
    pub fn accuracy(&self) -> f64 {
        self.correct / self.rows.max(1) as f64
    }

    /// An error naming the divergence when the window's loss is not finite or has exploded
    /// (above [`DIVERGED_LOSS`] times ln(classes), the loss of a uniform guess): the step, the
    /// loss, the learning rate in use and what to change.
    pub fn check_diverged(
        &self,
        step: u64,
        lr: f32,
        classes: usize,
        cfg: &RunConfig,
    ) -> anyhow::Result<()> {
        let loss = self.loss();
        let limit = DIVERGED_LOSS * (classes.max(2) as f64).ln();
        if self.rows == 0 || (loss.is_finite() && loss <= limit) {
            return Ok(());
        }
        anyhow::bail!(
            "the training diverged by step {step}: the train loss over the last {} rows is {loss} \
             ({}; learning rate {lr} at that step, --lr {}, --warmup-steps {}, --weight-decay {}); \
             lower --lr or add --warmup-steps. The last good checkpoint is kept",
            self.rows,
            if loss.is_finite() {
                format!("a uniform guess scores {:.2}", limit / DIVERGED_LOSS)
            } else {
                "not a number".to_string()
            },
            cfg.lr,
            cfg.warmup_steps,
            cfg.weight_decay
        )
    }
}

/// What one gradient step trained on.
#[derive(Clone, Copy, Debug)]
pub struct Stepped {
    pub rows: usize,
    pub epoch: usize,
    /// Index of the batch within its epoch, and the epoch's number of batches.
    pub batch: usize,
    pub batches_in_epoch: usize,
}

impl Stepped {
    fn of(batch: &Batch, rows: usize) -> Stepped {
        Stepped {
            rows,
            epoch: batch.epoch,
            batch: batch.index,
            batches_in_epoch: batch.batches_in_epoch,
        }
    }

    pub fn ends_epoch(&self) -> bool {
        self.batch + 1 >= self.batches_in_epoch
    }

    /// The data position after this step: the next batch to train on.
    pub fn next_position(&self) -> (usize, usize) {
        if self.ends_epoch() {
            (self.epoch + 1, 0)
        } else {
            (self.epoch, self.batch + 1)
        }
    }
}

impl Learner {
    /// Loads the dataset, opens the device and builds the model at its seeded initial
    /// parameters.
    pub fn new(cfg: &RunConfig, plan: DataPlan) -> anyhow::Result<Learner> {
        let dataset = data::load(cfg.dataset, &cfg.data_dir)?;
        let ctx = GpuContext::open(&cfg.adapter)?;
        let spec = cfg.model_spec(&dataset)?;
        let mut model = spec.build(ctx.clone(), EVAL_BATCH.max(cfg.batch_size))?;
        model.set_params(&model.init(cfg.seed))?;
        // The training step's pipelines compiled now, off the clock (before the mesh forms).
        model.prepare(cfg.batch_size)?;
        let train = Arc::new(dataset.train.clone());
        let mut shards = cfg.shards(&dataset, plan.world)?;
        let shard_sizes = shards.iter().map(Vec::len).collect();
        let shard = std::mem::take(&mut shards[plan.rank]);
        let shard_histogram = data::label_histogram(&train.y, &shard, dataset.classes);
        let loader = BatchLoader::spawn(
            train,
            dataset.features,
            shard,
            cfg.batch_size,
            plan.shuffle_seed,
            plan.epochs,
            plan.position,
        );
        Ok(Learner {
            ctx,
            model,
            dataset,
            loader,
            shard_sizes,
            shard_histogram,
            window_rows: 0,
        })
    }

    /// A training state bound to the model's parameter and gradient arenas, with the method's
    /// update-rule parameters (`with_tilde`: keep x̃, equal to x at first).
    pub fn train_state(
        &self,
        sgd: SgdConfig,
        params: AcidParams,
        with_tilde: bool,
    ) -> anyhow::Result<TrainState> {
        Ok(TrainState::new(
            self.ctx.clone(),
            self.model.params_buffer(),
            self.model.grads_buffer(),
            self.model.parameters(),
            sgd,
            params,
            with_tilde,
        )?)
    }

    /// Batches in one epoch of this worker's shard.
    pub fn batches_per_epoch(&self) -> usize {
        self.loader.batches_per_epoch
    }

    /// The next batch, or `None` when the loader's epochs are done.
    pub fn next_batch(&self) -> Option<Batch> {
        self.loader.next_batch()
    }

    /// Records and submits one gradient event on `batch` at clock value `tau`: forward, loss,
    /// backward, then the (mixing +) SGD step of `state` with learning rate `lr`. `before` may
    /// record events that happened before the step into the same pass (pairwise averages: one
    /// submission instead of one each), `also` copies after the pass (a read-back of the
    /// parameters). Returns what was trained on and the
    /// submission; nothing waits for the GPU.
    pub fn step(
        &mut self,
        state: &mut TrainState,
        batch: &Batch,
        lr: f32,
        tau: f64,
        before: impl FnOnce(&mut TrainState, &mut wgpu::ComputePass<'_>) -> anyhow::Result<()>,
        also: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> anyhow::Result<(Stepped, wgpu::SubmissionIndex)> {
        let rows = self.model.load_batch(&batch.x, &batch.y)?;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            before(state, &mut pass)?;
            self.model.record_train(&mut pass, rows)?;
            state.record_step(&mut pass, lr, tau);
        }
        also(&mut encoder);
        let submission = self.ctx.queue.submit(Some(encoder.finish()));
        self.window_rows += rows;
        Ok((Stepped::of(batch, rows), submission))
    }

    /// Forward, loss and backward only: the gradient arena then holds this batch's gradient
    /// (for `allreduce`, which averages it before the step).
    pub fn gradient(&mut self, batch: &Batch) -> anyhow::Result<Stepped> {
        let rows = self.model.load_batch(&batch.x, &batch.y)?;
        let mut encoder = self.ctx.device.create_command_encoder(&Default::default());
        self.model
            .record_train(&mut encoder.begin_compute_pass(&Default::default()), rows)?;
        self.ctx.queue.submit(Some(encoder.finish()));
        self.window_rows += rows;
        Ok(Stepped::of(batch, rows))
    }

    /// Rows trained on since the last [`Learner::take_window`].
    pub fn window_rows(&self) -> usize {
        self.window_rows
    }

    /// The training loss and correct predictions since the last call (waits for the GPU);
    /// starts a new window.
    /// The statistics since the window was last taken, without resetting them.
    pub fn peek_window(&self) -> anyhow::Result<Window> {
        let s = self.model.read_stats()?;
        Ok(Window {
            loss_sum: s.loss_sum,
            correct: s.correct,
            rows: self.window_rows,
        })
    }

    pub fn take_window(&mut self) -> anyhow::Result<Window> {
        let s = self.model.read_stats()?;
        self.model.reset_stats()?;
        Ok(Window {
            loss_sum: s.loss_sum,
            correct: s.correct,
            rows: std::mem::take(&mut self.window_rows),
        })
    }

    /// Test loss and accuracy of the current parameters.
    pub fn evaluate_test(&mut self) -> anyhow::Result<(f64, f64)> {
        let test = &self.dataset.test;
        Ok(self.model.evaluate(&test.x, &test.y)?)
    }

    /// Test loss and accuracy of other parameters (e.g. the average over the workers); the
    /// model's own parameters are left unchanged.
    pub fn evaluate_params(&mut self, x: &[f32]) -> anyhow::Result<(f64, f64)> {
        let own = self.model.params()?;
        self.model.set_params(x)?;
        let result = self.evaluate_test();
        self.model.set_params(&own)?;
        result
    }
}
