//! `a2cid run` and `a2cid worker`: the run's settings from defaults, a TOML file and flags.
use std::io::IsTerminal;
use std::path::PathBuf;

use a2cid_datasets::DatasetName;
use a2cid_engine::LrSchedule;
use a2cid_runtime::{Placement, WorkerOptions};
use a2cid_schema::{Method, ModelKind, RunConfig, RunDir};
use anyhow::Context;

/// `a2cid run`: flags override the values of `--config FILE`, which override the defaults.
#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// TOML file with any of the run's settings (keys as in the run directory's config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of workers: N > 1 starts N local worker processes; 1 trains in-process [default: 4].
    #[arg(long)]
    pub workers: Option<usize>,
    /// acid (A²CiD²), gossip (asynchronous pairwise averaging), allreduce (synchronous
    /// data-parallel SGD) or local (no averaging until the end) [default: acid].
    #[arg(long)]
    pub method: Option<Method>,
    /// Communication graph: ring, complete, exponential, torus, torus:RxC, star, hypercube,
    /// regular:D, erdos-renyi:P, file:PATH [default: ring].
    #[arg(long)]
    pub graph: Option<String>,
    /// Seed of the random graph families [default: 0].
    #[arg(long)]
    pub graph_seed: Option<u64>,
    /// Expected pairwise averagings per worker per gradient step [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub rate_com: Option<f64>,
    /// Stop when all workers together have computed G gradients (faster workers do more); a
    /// single worker's learning-rate schedule then ends at G.
    #[arg(long, value_name = "G")]
    pub grad_budget: Option<u64>,
    /// Stop after S seconds of training (evaluations not counted); the model is evaluated there.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub max_seconds: Option<f64>,
    /// Steps between two checkpoints of each worker; 0: only at the end [default: 200].
    #[arg(long, value_name = "K")]
    pub checkpoint_every: Option<usize>,
    /// Restart a worker of an acid or gossip run that dies mid-run up to K times; it rejoins the
    /// running mesh from a live neighbour's state (local runs) [default: 0].
    #[arg(long, value_name = "K")]
    pub max_restarts: Option<u32>,
    /// Continue the run in RUN_DIR from its checkpoints (its config.toml, then any flags).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Dataset: digits, mnist or fashion-mnist [default: digits].
    #[arg(long)]
    pub dataset: Option<DatasetName>,
    /// Model: mlp, cnn (two 5×5 convolutions with max-pooling, two linear layers) or resnet:D
    /// (CIFAR-style ResNet with GroupNorm, D = 8, 14, 20, …) [default: mlp].
    #[arg(long)]
    pub model: Option<ModelKind>,
    /// Hidden layer widths of the MLP, comma-separated [default: 256,128].
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Filters of the first convolution (cnn) or of the first stage (resnet:D) [default: 16].
    #[arg(long, value_name = "W")]
    pub width: Option<usize>,
    /// Epochs: for acid, gossip and local a budget of as many gradients as E epochs of every
    /// shard, all workers together (faster workers do more); for allreduce E epochs of each
    /// worker's shard; 0: no epoch limit [default: 40].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size per worker [default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate [default: 0.05].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// SGD momentum [default: 0.9].
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// Weight decay [default: 1e-4].
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Use Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Learning-rate schedule: constant or cosine [default: cosine].
    #[arg(long)]
    pub schedule: Option<LrSchedule>,
    /// Linear warm-up steps [default: 100 for cnn and resnet:D, 0 for mlp].
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Seed of the initial parameters, the shards and the shuffles [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run directory [default: runs/<dataset>-<unix time>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder holding the fetched datasets [default: data].
    #[arg(long, env = "A2CID_DATA")]
    pub data_dir: Option<PathBuf>,
    /// GPU adapter: index (see `a2cid devices`) or part of its name [default: auto].
    #[arg(long, env = "A2CID_ADAPTER")]
    pub adapter: Option<String>,
    /// Steps between two train-loss records [default: 20].
    #[arg(long)]
    pub log_every: Option<usize>,
    /// Steps between two test-set evaluations of each worker's own model (multi-worker runs;
    /// single-worker runs evaluate every epoch); 0: only at the end [default: 100].
    #[arg(long, value_name = "K")]
    pub eval_every: Option<usize>,
    /// Units of the worker clock (about one gradient each) between two sketches of each
    /// worker's parameters, from which the consensus distance is estimated; 0: none [default: 5].
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub sketch_every: Option<f64>,
    /// Rows of a sketch (relative error about sqrt(2/rows)) [default: 128].
    #[arg(long, value_name = "K")]
    pub sketch_dim: Option<usize>,
    /// How the training set is dealt to the workers: iid, dirichlet:ALPHA (label-skewed: each
    /// class split in Dirichlet(ALPHA) proportions; 0.3 is strongly skewed) or classes:K (K
    /// classes per worker) [default: iid].
    #[arg(long, value_name = "SPEC")]
    pub partition: Option<a2cid_datasets::Partition>,
    /// Emulated relative speeds of the workers (one machine, so emulation: a worker of speed s
    /// sleeps (1/s - 1) times each step's duration): homogeneous, straggler:FACTOR (the last
    /// rank FACTOR times slower), slow:FRACTION:SPEED, lognormal:SIGMA or list:S0,S1,...
    /// [default: homogeneous].
    #[arg(long, value_name = "SPEC")]
    pub worker_speeds: Option<a2cid_schema::SpeedSpec>,
    /// Pace every worker's step to at least S seconds (S/speed for a slower worker): emulates
    /// one device per worker on a machine the workers share. A sleeping straggler frees the
    /// shared cores for the others; paced, no worker competes for them and each runs at its
    /// own fixed speed. S must exceed the step's own work with all workers running (a worker
    /// whose steps overran the pace says so at the end) [default: off].
    #[arg(long, value_name = "S")]
    pub step_time: Option<f64>,
    /// Test accuracies (fractions, comma-separated) whose time to reach the summary records:
    /// the training wall time and gradients at which the mean over the workers of their own
    /// models' accuracy first reached each.
    #[arg(
        long,
        value_name = "A[,A..]",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    pub target_accuracy: Option<Vec<f64>>,
    /// lasgd: local steps of each worker between two all-reduce averages of the models
    /// [default: 10].
    #[arg(long, value_name = "H")]
    pub sync_every: Option<usize>,
    /// lasgd: outer optimizer on the averaged change since the last synchronisation,
    /// nesterov:LR,MOMENTUM (lasgd with it is DiLoCo; nesterov:1,0 is plain lasgd).
    #[arg(long, value_name = "SPEC")]
    pub outer: Option<a2cid_engine::outer::OuterSpec>,
    /// acid, gossip: how the exchanged parameters travel: none (f32), fp16 (half the bytes;
    /// both peers average the rounded values) or lowrank:R (PowerGossip: a rank-R power step of
    /// each weight matrix's difference, R <= 8) [default: none].
    #[arg(long, value_name = "none|fp16|lowrank:R")]
    pub compress: Option<a2cid_schema::Compression>,
    /// No progress bar (per-epoch lines are printed instead).
    #[arg(long)]
    pub no_progress: bool,
}

impl RunArgs {
    /// Defaults, then the TOML file, then the flags.
    pub fn resolve(&self) -> anyhow::Result<RunConfig> {
        let resume_config = self.resume.as_ref().map(|d| d.join("config.toml"));
        let config = self.config.as_ref().or(resume_config.as_ref());
        let mut file_sets_warmup = false;
        let mut cfg = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?;
                file_sets_warmup = toml::from_str::<toml::Table>(&text)
                    .is_ok_and(|t| t.contains_key("warmup_steps"));
                toml::from_str(&text)
                    .with_context(|| format!("config {} is not valid", path.display()))?
            }
            None => RunConfig::default(),
        };
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { cfg.$f = v.clone(); } )* };
        }
        if self.rate_com.is_some() {
            cfg.rate_com = self.rate_com.unwrap_or_default();
        }
        if self.grad_budget.is_some() {
            cfg.grad_budget = self.grad_budget;
        }
        if self.max_seconds.is_some() {
            cfg.max_seconds = self.max_seconds;
        }
        if self.step_time.is_some() {
            cfg.step_time = self.step_time;
        }
        set!(
            workers,
            method,
            graph,
            graph_seed,
            checkpoint_every,
            dataset,
            model,
            hidden,
            width,
            epochs,
            batch_size,
            lr,
            momentum,
            weight_decay,
            schedule,
            warmup_steps,
            seed,
            data_dir,
            adapter,
            log_every,
            eval_every,
            sketch_every,
            sketch_dim,
            partition,
            worker_speeds,
            target_accuracy,
            sync_every,
            compress
        );
        if self.outer.is_some() {
            cfg.outer = self.outer;
        }
        if self.nesterov {
            cfg.nesterov = true;
        }
        if self.warmup_steps.is_none() && !file_sets_warmup {
            cfg.warmup_steps = cfg.model.default_warmup_steps();
        }
        if self.out.is_some() {
            cfg.out = self.out.clone();
        }
        if let Some(dir) = &self.resume {
            if !dir.join("config.toml").exists() {
                anyhow::bail!(
                    "--resume {}: no config.toml there; give the run directory of an earlier \
                     `a2cid run`",
                    dir.display()
                );
            }
            cfg.out = Some(dir.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// `a2cid run`: one worker in-process, or N local worker processes; then the report.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    if cfg.workers == 1 {
        if args.resume.is_some() {
            anyhow::bail!("--resume needs a multi-worker run (--workers N, N >= 2)");
        }
        a2cid_runtime::run_single(&cfg, progress)?;
    } else {
        a2cid_runtime::run_local(
            &cfg,
            args.resume.is_some(),
            args.max_restarts.unwrap_or(0),
            progress,
        )?;
        let run = RunDir::new(cfg.out_dir());
        let report = a2cid_report::render(&[run.root().to_path_buf()], &run.report())?;
        println!("report {}", report.display());
    }
    Ok(())
}

/// `a2cid worker`: one worker of a multi-worker run, for cluster launchers (SLURM's `srun`) and for
/// `a2cid run`, which starts N of them.
#[derive(clap::Args, Debug, Default)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// This worker's rank (default: SLURM_PROCID).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Number of workers (default: SLURM_NTASKS, else `workers` of the config).
    #[arg(long)]
    pub world: Option<usize>,
    /// Rank 0's HOST:PORT: rank 0 listens there, the others register with it (torchrun style).
    #[arg(long, conflicts_with = "peers")]
    pub master: Option<String>,
    /// Every rank's HOST:PORT, comma-separated, in rank order (instead of --master).
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// File holding the cluster secret (default: the A2CID_SECRET environment variable).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Interface (address) to listen on [default: 127.0.0.1 when --master/--peers are all on
    /// loopback, else 0.0.0.0].
    #[arg(long, value_name = "HOST")]
    pub bind: Option<String>,
    /// Longest wait for the other workers to join, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub connect_timeout: f64,
    /// Rejoin a running acid or gossip run as a restarted worker of this rank: re-open the links,
    /// take a live neighbour's parameters (and x̃), clock and gradient count over the mesh — no
    /// checkpoint needed — and train on. The address table is read from the run directory.
    #[arg(long, conflicts_with = "resume")]
    pub rejoin: bool,
    /// Print machine-readable progress lines on stdout and stop when stdin closes (used by
    /// `a2cid run`, which holds the other end).
    #[arg(long, hide = true)]
    pub progress_lines: bool,
}

pub fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    let cfg = args.run.resolve()?;
    let place = Placement::resolve(
        args.rank,
        args.world,
        args.master.as_deref(),
        args.peers.as_deref(),
        cfg.workers,
    )?;
    let options = WorkerOptions {
        secret: a2cid_net::Secret::resolve(args.secret_file.as_deref())?,
        connect_timeout: std::time::Duration::from_secs_f64(args.connect_timeout.max(1.0)),
        progress_lines: args.progress_lines,
        resume: args.run.resume.is_some(),
        rejoin: args.rejoin,
        stop_with_launcher: args.progress_lines,
        bind: args.bind.clone(),
    };
    a2cid_runtime::run_worker(cfg, place, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "epochs = 7\nlr = 0.2\ndataset = \"mnist\"\n").unwrap();
        let args = RunArgs {
            config: Some(path.clone()),
            lr: Some(0.3),
            ..Default::default()
        };
        let cfg = args.resolve().unwrap();
        assert_eq!(
            (cfg.epochs, cfg.lr, cfg.dataset, cfg.batch_size),
            (7, 0.3, DatasetName::Mnist, 32)
        );

        std::fs::write(&path, "epochs = 7\nlearning_rate = 0.2\n").unwrap();
        let e = format!("{:#}", args.resolve().unwrap_err());
        assert!(
            e.contains("not valid") && e.contains("learning_rate"),
            "{e}"
        );
        let bad = RunArgs {
            batch_size: Some(0),
            ..Default::default()
        };
        assert!(bad
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("--batch-size"));
    }

    #[test]
    fn convolutional_models_warm_up_unless_told_otherwise() {
        let cnn = RunArgs {
            model: Some(ModelKind::Cnn),
            ..Default::default()
        };
        assert_eq!(cnn.resolve().unwrap().warmup_steps, 100);
        assert_eq!(RunArgs::default().resolve().unwrap().warmup_steps, 0, "mlp");
        let told = RunArgs {
            model: Some(ModelKind::Cnn),
            warmup_steps: Some(0),
            ..Default::default()
        };
        assert_eq!(told.resolve().unwrap().warmup_steps, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "model = \"cnn\"\nwarmup_steps = 7\n").unwrap();
        let from_file = RunArgs {
            config: Some(path),
            ..Default::default()
        };
        assert_eq!(from_file.resolve().unwrap().warmup_steps, 7);
    }
}
