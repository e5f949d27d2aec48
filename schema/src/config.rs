//! The run configuration: everything that defines a run, saved resolved as `config.toml` in the
//! run directory. Defaults, then a TOML file, then command-line flags (the binary merges those).
use std::path::PathBuf;

use a2cid_datasets::Dataset;
use a2cid_datasets::{DatasetName, Partition};
use a2cid_engine::models::{InputShape, ModelKind, ModelSpec};
use a2cid_engine::{LrSchedule, SgdConfig};
use a2cid_topology::{GraphSpec, Topology};
use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::method::Method;
use crate::speeds::SpeedSpec;

/// Everything that defines a run. Saved, resolved, as `config.toml` in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub workers: usize,
    /// acid, gossip, allreduce, local, lasgd or relaysum (multi-worker runs); dadao is refused
    /// here, it runs in `a2cid simulate` only.
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
    /// Filters of the first convolution (`cnn`) or stage (`resnet:D`).
    pub width: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    pub schedule: LrSchedule,
    pub warmup_steps: usize,
    pub seed: u64,
    pub data_dir: PathBuf,
    pub adapter: String,
    /// Steps between two train-loss records in the metrics.
    pub log_every: usize,
    /// Steps between two test-set evaluations of each worker's own model in multi-worker runs
    /// (0: only at the end). Training pauses meanwhile; the pause is not on the worker's clock.
    pub eval_every: usize,
    /// Clock units (gradients) between two sketches of each worker's parameters, from which the
    /// consensus distance is estimated (0: no sketches).
    pub sketch_every: f64,
    /// Rows of a sketch (its relative error is about sqrt(2/rows)).
    pub sketch_dim: usize,
    pub out: Option<PathBuf>,
    /// How the training set is dealt to the workers (iid or label-skewed).
    pub partition: Partition,
    /// Emulated relative speeds of the workers (`crate::speeds`).
    pub worker_speeds: SpeedSpec,
    /// Seconds every worker's step is padded to at least (divided by its speed): emulates one
    /// device per worker on a shared machine (`crate::speeds::Slowdown`). None: no pacing.
    pub step_time: Option<f64>,
    /// Test accuracies (fractions) whose time to reach the summary records.
    pub target_accuracy: Vec<f64>,
    /// lasgd: local steps of each worker between two all-reduce averages of the models.
    pub sync_every: usize,
    /// lasgd: the outer optimizer applied to the averaged change at each synchronisation
    /// (`nesterov:LR,MOMENTUM`: DiLoCo); none: the average is adopted as is.
    pub outer: Option<a2cid_engine::outer::OuterSpec>,
    /// acid, gossip: how the exchanged parameters travel (`none`, `fp16`, `lowrank:R`).
    pub compress: crate::Compression,
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
            width: 16,
            epochs: 40,
            batch_size: 32,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            schedule: LrSchedule::Cosine,
            warmup_steps: 0,
            seed: 0,
            data_dir: PathBuf::from("data"),
            adapter: "auto".into(),
            log_every: 20,
            eval_every: 100,
            sketch_every: 5.0,
            sketch_dim: 128,
            out: None,
            partition: Partition::Iid,
            worker_speeds: SpeedSpec::Homogeneous,
            step_time: None,
            target_accuracy: Vec::new(),
            sync_every: 10,
            outer: None,
            compress: crate::Compression::None,
        }
    }
}

impl RunConfig {
    /// Checks the values that would otherwise fail deep inside a run.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if self.method.simulator_only() {
            bail!(
                "--method {}: runs in `a2cid simulate` only (the runtime implements acid, gossip, \
                 allreduce, local, lasgd and relaysum; dadao runs on the simulator's quadratic)",
                self.method
            );
        }
        if self.method == Method::Lasgd && self.sync_every == 0 {
            bail!("--sync-every must be at least 1 local step between two synchronisations");
        }
        if self.outer.is_some() && self.method != Method::Lasgd {
            bail!(
                "--outer (an outer optimizer at each synchronisation, DiLoCo) needs --method \
                 lasgd; this run uses {}",
                self.method
            );
        }
        match self.compress {
            crate::Compression::None => {}
            _ if !self.method.is_pairwise() => bail!(
                "--compress {} compresses pairwise exchanges: it needs --method acid or gossip \
                 (this run uses {})",
                self.compress,
                self.method
            ),
            crate::Compression::LowRank(r) if r > a2cid_engine::compress::MAX_RANK => bail!(
                "--compress lowrank:{r}: the rank is at most {}",
                a2cid_engine::compress::MAX_RANK
            ),
            crate::Compression::LowRank(_) | crate::Compression::Fp16 => {}
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
        if let Some(p) = self.step_time {
            if !(p.is_finite() && p > 0.0 && p <= 60.0) {
                bail!("--step-time must be a number of seconds in (0, 60], got {p}");
            }
            if self.workers == 1 {
                bail!(
                    "--step-time paces each worker of a multi-worker run as if it had a device to                      itself; a single worker already has this machine to itself (drop --step-time)"
                );
            }
        }
        if self.workers > 1 {
            self.topology()?;
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "--weight-decay must be a number >= 0, got {}",
                self.weight_decay
            );
        }
        if !(self.rate_com.is_finite() && self.rate_com > 0.0) {
            bail!(
                "--rate-com must be a positive number, got {}",
                self.rate_com
            );
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
        if !(self.sketch_every.is_finite() && self.sketch_every >= 0.0) {
            bail!(
                "--sketch-every must be a number of gradients >= 0 (0: no sketches), got {}",
                self.sketch_every
            );
        }
        if self.sketch_every > 0.0 && self.sketch_dim < 8 {
            bail!(
                "--sketch-dim must be at least 8 (its relative error is about sqrt(2/rows)), got {}",
                self.sketch_dim
            );
        }
        if let Some(&a) = self
            .target_accuracy
            .iter()
            .find(|a| !(a.is_finite() && **a > 0.0 && **a <= 1.0))
        {
            bail!("--target-accuracy takes fractions in (0, 1] (0.9 for 90%), got {a}");
        }
        self.speeds()?;
        Ok(())
    }

    /// `--worker-speeds` and, when steps are paced, `--step-time`, as the summary and the report
    /// name them ("straggler:2", "straggler:2, paced 0.2 s/step").
    pub fn speeds_label(&self) -> String {
        match self.step_time {
            None => self.worker_speeds.to_string(),
            Some(p) => format!("{}, paced {p} s/step", self.worker_speeds),
        }
    }

    /// Each worker's emulated relative speed (`--worker-speeds`), by rank.
    pub fn speeds(&self) -> anyhow::Result<Vec<f64>> {
        self.worker_speeds
            .speeds(self.workers, self.seed)
            .map_err(|e| anyhow::anyhow!("--worker-speeds: {e}"))
    }

    /// The rows of every shard of `dataset`'s training set among `world` workers
    /// (`--partition`).
    pub fn shards(&self, dataset: &Dataset, world: usize) -> anyhow::Result<Vec<Vec<usize>>> {
        self.partition
            .shards(&dataset.train.y, dataset.classes, world, self.seed)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e} (dataset {}, {} rows)",
                    dataset.name,
                    dataset.train.len()
                )
            })
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

    /// The run's model fitted to `dataset`'s input shape and classes.
    pub fn model_spec(&self, dataset: &Dataset) -> anyhow::Result<ModelSpec> {
        model_spec(self.model, &self.hidden, self.width, dataset)
    }

    pub fn sgd(&self) -> SgdConfig {
        SgdConfig {
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
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

/// Model `kind` with hidden widths `hidden` (MLP) or `width` (convolutional models), fitted to
/// `dataset`'s input shape and classes; when they do not fit, the error names both.
pub fn model_spec(
    kind: ModelKind,
    hidden: &[usize],
    width: usize,
    dataset: &Dataset,
) -> anyhow::Result<ModelSpec> {
    ModelSpec::new(
        kind,
        hidden,
        width,
        InputShape(dataset.shape),
        dataset.classes,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "--model {kind} on {} ({}): {e}",
            dataset.name,
            InputShape(dataset.shape)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulator_only_methods_are_refused_naming_the_method() {
        for method in Method::ALL.into_iter().filter(|m| m.simulator_only()) {
            let config = RunConfig {
                method,
                ..RunConfig::default()
            };
            let e = config.validate().unwrap_err().to_string();
            assert!(
                e.contains(&format!("--method {method}")) && e.contains("a2cid simulate"),
                "{e}"
            );
        }
        assert!(RunConfig::default().validate().is_ok());
    }

    #[test]
    fn lasgd_needs_a_synchronisation_period_and_the_outer_optimizer_only_with_lasgd() {
        let lasgd = RunConfig {
            method: Method::Lasgd,
            sync_every: 0,
            ..RunConfig::default()
        };
        let e = lasgd.validate().unwrap_err().to_string();
        assert!(e.contains("--sync-every"), "{e}");
        let outer = RunConfig {
            outer: Some("nesterov:0.7,0.9".parse().unwrap()),
            ..RunConfig::default()
        };
        let e = outer.validate().unwrap_err().to_string();
        assert!(e.contains("--outer") && e.contains("lasgd"), "{e}");
        let diloco = RunConfig {
            method: Method::Lasgd,
            ..outer
        };
        assert!(diloco.validate().is_ok());
        let text = toml::to_string(&diloco).unwrap();
        assert!(text.contains("outer = \"nesterov:0.7,0.9\""), "{text}");
        assert_eq!(toml::from_str::<RunConfig>(&text).unwrap(), diloco);
    }
}
