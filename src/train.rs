//! Training: the run configuration, the run directory (resolved config, JSON-lines metrics,
//! `summary.json`) and the single-worker training loop.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use a2cid_engine::{AdapterChoice, GpuContext, LrSchedule, Mlp, MlpSpec, Sgd, SgdConfig};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::data::{self, BatchLoader, DatasetName};
use crate::sim::Method;
use crate::topology::{GraphSpec, Topology};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Multi-layer perceptron (`--hidden` sets its hidden widths).
    Mlp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    Constant,
    Cosine,
}

/// Everything that defines a run. Saved, resolved, as `config.toml` in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub workers: usize,
    /// acid, gossip or allreduce (multi-worker runs).
    pub method: Method,
    /// Communication graph (see `a2cid topology --help`): ring, torus, exponential, ...
    pub graph: String,
    /// Seed of the random graph families.
    pub graph_seed: u64,
    /// Expected pairwise averagings per worker per gradient step (acid, gossip).
    pub rate_com: f64,
    /// Stop when all workers together have computed this many gradients.
    pub grad_budget: Option<u64>,
    /// Stop after this many seconds of training.
    pub max_seconds: Option<f64>,
    /// Steps between two checkpoints of each worker (0: only at the end).
    pub checkpoint_every: usize,
    pub dataset: DatasetName,
    pub model: ModelKind,
    pub hidden: Vec<usize>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    pub schedule: ScheduleKind,
    pub warmup_steps: usize,
    pub seed: u64,
    pub data_dir: PathBuf,
    pub adapter: String,
    /// Steps between two train-loss records in the metrics.
    pub log_every: usize,
    /// Steps between two test-set evaluations of each worker's own model in multi-worker runs
    /// (0: only at the end). Training pauses meanwhile; the pause is not on the worker's clock.
    pub eval_every: usize,
    pub out: Option<PathBuf>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            workers: 4,
            method: Method::Acid,
            graph: "ring".into(),
            graph_seed: 0,
            rate_com: 1.0,
            grad_budget: None,
            max_seconds: None,
            checkpoint_every: 200,
            dataset: DatasetName::Digits,
            model: ModelKind::Mlp,
            hidden: vec![256, 128],
            epochs: 40,
            batch_size: 32,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            schedule: ScheduleKind::Cosine,
            warmup_steps: 0,
            seed: 0,
            data_dir: PathBuf::from("data"),
            adapter: "auto".into(),
            log_every: 20,
            eval_every: 100,
            out: None,
        }
    }
}

impl RunConfig {
    /// Checks the values that would otherwise fail deep inside a run.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if self.epochs == 0 && self.grad_budget.is_none() && self.max_seconds.is_none() {
            bail!(
                "nothing would stop the run: give --epochs (>= 1), --grad-budget or --max-seconds"
            );
        }
        if self.grad_budget == Some(0) {
            bail!("--grad-budget must be at least 1");
        }
        if let Some(s) = self.max_seconds {
            if !(s.is_finite() && s > 0.0) {
                bail!("--max-seconds must be a positive number, got {s}");
            }
        }
        if self.workers > 1 {
            self.topology()?;
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bail!("--momentum must be in [0, 1), got {}", self.momentum);
        }
        if self.hidden.contains(&0) {
            bail!("--hidden widths must be positive, got {:?}", self.hidden);
        }
        if self.log_every == 0 {
            bail!("log_every must be at least 1");
        }
        Ok(())
    }

    /// The communication graph with its rates and A²CiD² constants.
    pub fn topology(&self) -> anyhow::Result<Topology> {
        let spec: GraphSpec = self
            .graph
            .parse()
            .map_err(|e| anyhow::anyhow!("--graph {:?}: {e}", self.graph))?;
        Topology::from_spec(&spec, self.workers, self.rate_com, self.graph_seed)
            .map_err(|e| anyhow::anyhow!("--graph {} on {} workers: {e}", self.graph, self.workers))
    }

    pub fn sgd(&self) -> SgdConfig {
        SgdConfig {
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
        }
    }

    pub fn lr_schedule(&self) -> LrSchedule {
        match self.schedule {
            ScheduleKind::Constant => LrSchedule::Constant,
            ScheduleKind::Cosine => LrSchedule::Cosine,
        }
    }

    /// The run directory: `--out`, or `runs/<dataset>-<unix time>`.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from("runs").join(format!("{}-{t}", self.dataset))
        })
    }
}

/// One worker's line in `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSummary {
    pub rank: usize,
    /// Gradients this worker computed.
    pub grads: u64,
    /// Pairwise averagings it completed (all-reduces for `allreduce`).
    pub comms: u64,
    pub final_train_loss: f64,
    /// Test accuracy of this worker's own final model (before the final average).
    pub test_accuracy: f64,
    pub alive: bool,
}

/// `summary.json`: the keys scripts rely on are kept stable (`method`, `graph`, `workers`,
/// `dataset`, `model`, `wall_seconds`, `test_accuracy`, `test_loss`, `per_worker`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub method: String,
    pub graph: String,
    pub dataset: DatasetName,
    pub model: ModelKind,
    pub workers: usize,
    pub wall_seconds: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub per_worker: Vec<WorkerSummary>,
    pub parameters: usize,
    pub architecture: String,
    pub adapter: String,
    pub epochs: usize,
    /// How the final model was averaged: "single worker", "all-reduce", or from the survivors'
    /// checkpoints.
    #[serde(default)]
    pub averaged: String,
    /// Gradients computed by all workers together.
    #[serde(default)]
    pub total_grads: u64,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// JSON-lines metrics sink.
pub struct Metrics {
    out: std::io::BufWriter<std::fs::File>,
}

impl Metrics {
    /// Creates the file, or appends to it when `append` (a resumed worker).
    pub fn open(path: &Path, append: bool) -> anyhow::Result<Self> {
        if !append {
            return Self::create(path);
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Metrics {
            out: std::io::BufWriter::new(f),
        })
    }
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Metrics {
            out: std::io::BufWriter::new(f),
        })
    }
    pub fn record(&mut self, value: serde_json::Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, &value)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Trains one worker in-process and writes the run directory. Returns the summary.
pub fn run_single(cfg: &RunConfig, progress: bool) -> anyhow::Result<Summary> {
    cfg.validate()?;
    if cfg.epochs == 0 {
        bail!("a single-worker run stops on --epochs: give --epochs N (N >= 1)");
    }
    let out = cfg.out_dir();
    std::fs::create_dir_all(&out)
        .with_context(|| format!("creating run directory {}", out.display()))?;
    let mut resolved = cfg.clone();
    resolved.out = Some(out.clone());
    write_atomic(
        &out.join("config.toml"),
        toml::to_string_pretty(&resolved)?.as_bytes(),
    )?;

    let dataset = data::load(cfg.dataset, &cfg.data_dir)?;
    let ctx = GpuContext::new(&cfg.adapter.parse::<AdapterChoice>().expect("infallible"))?;
    let spec = MlpSpec::new(dataset.features, &cfg.hidden, dataset.classes)?;
    tracing::info!(
        "dataset {} ({} train / {} test), model mlp {}, adapter {:?}",
        dataset.name,
        dataset.train.len(),
        dataset.test.len(),
        spec.describe(),
        ctx.adapter.name
    );
    let eval_batch = 1024.max(cfg.batch_size);
    let mut mlp = Mlp::new(ctx.clone(), spec.clone(), eval_batch)?;
    mlp.set_params(&spec.init(cfg.seed))?;
    let mut sgd = Sgd::new(
        ctx.clone(),
        mlp.params_buffer(),
        mlp.grads_buffer(),
        spec.layout().len(),
        cfg.sgd(),
    )?;

    let train = Arc::new(dataset.train);
    let shard = data::shard_indices(train.len(), 0, 1, cfg.seed);
    let loader = BatchLoader::spawn(
        train.clone(),
        dataset.features,
        shard,
        cfg.batch_size,
        cfg.seed,
        Some(cfg.epochs),
    );
    let total_steps = loader.batches_per_epoch * cfg.epochs;

    let mut metrics = Metrics::create(&out.join("metrics.jsonl"))?;
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total_steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    let start = Instant::now();
    let schedule = cfg.lr_schedule();
    let mut step = 0usize;
    let mut since_log = 0usize;
    let mut epoch_loss = (0f64, 0f64, 0usize); // loss sum, correct, samples
    let mut window_samples = 0usize;
    let mut last_train_loss = f64::NAN;
    let (mut test_loss, mut test_acc) = (f64::NAN, f64::NAN);
    while let Some(batch) = loader.next_batch() {
        let lr = schedule.lr(cfg.lr, step, total_steps, cfg.warmup_steps);
        sgd.set_lr(lr)?;
        let rows = mlp.load_batch(&batch.x, &batch.y)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            mlp.record_train(&mut pass, rows)?;
            sgd.record(&mut pass);
        }
        ctx.queue.submit(Some(encoder.finish()));
        step += 1;
        since_log += 1;
        window_samples += rows;
        bar.inc(1);
        let end_of_epoch = batch.index + 1 == batch.batches_in_epoch;
        if since_log >= cfg.log_every || end_of_epoch {
            let s = mlp.read_stats()?;
            mlp.reset_stats()?;
            last_train_loss = s.loss_sum / window_samples as f64;
            epoch_loss.0 += s.loss_sum;
            epoch_loss.1 += s.correct;
            epoch_loss.2 += window_samples;
            metrics.record(serde_json::json!({
                "event": "train", "rank": 0, "epoch": batch.epoch, "step": step,
                "wall": start.elapsed().as_secs_f64(), "train_loss": last_train_loss,
                "train_accuracy": s.correct / window_samples as f64, "lr": lr, "grads": step,
            }))?;
            bar.set_message(format!(
                "epoch {} loss {last_train_loss:.4}",
                batch.epoch + 1
            ));
            since_log = 0;
            window_samples = 0;
        }
        if end_of_epoch {
            (test_loss, test_acc) = mlp.evaluate(&dataset.test.x, &dataset.test.y)?;
            let train_loss = epoch_loss.0 / epoch_loss.2 as f64;
            let train_acc = epoch_loss.1 / epoch_loss.2 as f64;
            metrics.record(serde_json::json!({
                "event": "epoch", "rank": 0, "epoch": batch.epoch + 1, "step": step,
                "wall": start.elapsed().as_secs_f64(), "train_loss": train_loss,
                "train_accuracy": train_acc, "test_loss": test_loss, "test_accuracy": test_acc,
            }))?;
            metrics.flush()?;
            bar.println(format!(
                "epoch {:>3}/{}  train loss {train_loss:.4}  train acc {:.2}%  test loss {test_loss:.4}  test acc {:.2}%",
                batch.epoch + 1,
                cfg.epochs,
                100.0 * train_acc,
                100.0 * test_acc
            ));
            if !progress {
                println!(
                    "epoch {:>3}/{}  train loss {train_loss:.4}  train acc {:.2}%  test loss {test_loss:.4}  test acc {:.2}%",
                    batch.epoch + 1,
                    cfg.epochs,
                    100.0 * train_acc,
                    100.0 * test_acc
                );
            }
            epoch_loss = (0.0, 0.0, 0);
        }
    }
    bar.finish_and_clear();
    ctx.sync()?;
    let wall = start.elapsed().as_secs_f64();
    let summary = Summary {
        method: "sgd".into(),
        graph: "none".into(),
        dataset: dataset.name,
        model: cfg.model,
        workers: 1,
        wall_seconds: wall,
        test_accuracy: test_acc,
        test_loss,
        per_worker: vec![WorkerSummary {
            rank: 0,
            grads: step as u64,
            comms: 0,
            final_train_loss: last_train_loss,
            test_accuracy: test_acc,
            alive: true,
        }],
        parameters: spec.layout().len(),
        architecture: spec.describe(),
        adapter: ctx.adapter.name.clone(),
        epochs: cfg.epochs,
        averaged: "single worker".into(),
        total_grads: step as u64,
    };
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    println!(
        "done in {wall:.1}s: test accuracy {:.2}%, test loss {test_loss:.4}; run directory {}",
        100.0 * test_acc,
        out.display()
    );
    Ok(summary)
}
