//! Command-line arguments and the handlers behind each subcommand.
use std::io::IsTerminal;
use std::path::PathBuf;

use a2cid_engine::device::list_adapters;
use a2cid_engine::AdapterChoice;
use anyhow::Context;
use clap::Args;

use crate::data::DatasetName;
use crate::train::{self, ModelKind, RunConfig, ScheduleKind};

/// Logs go to stderr; `RUST_LOG` overrides the default (info for a2cid, warnings for the rest).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,a2cid=info,a2cid_engine=info,a2cid_net=info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Adapter to select: an index from this list or part of a name (default: the best one).
    #[arg(long, env = "A2CID_ADAPTER", default_value = "auto")]
    pub adapter: String,
}

pub fn devices(args: &DevicesArgs) -> anyhow::Result<()> {
    let choice: AdapterChoice = args.adapter.parse().expect("infallible");
    let (list, chosen) = list_adapters(&choice);
    if list.is_empty() {
        return Err(a2cid_engine::EngineError::NoAdapter.into());
    }
    println!(
        "{:<4} {:<40} {:<8} {:<14} driver",
        "idx", "name", "backend", "type"
    );
    for a in &list {
        let mark = if chosen.as_ref().ok() == Some(&a.index) {
            "  <- would be used"
        } else {
            ""
        };
        println!(
            "{:<4} {:<40} {:<8} {:<14} {}{mark}",
            format!("[{}]", a.index),
            a.name,
            a.backend,
            a.device_type,
            a.driver
        );
    }
    match chosen {
        Ok(i) if list[i].is_cpu => println!(
            "\nNo hardware GPU adapter: the CPU adapter [{i}] would be used (slow). Install your GPU's Vulkan driver to use it."
        ),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// `a2cid run`: flags override the values of `--config FILE`, which override the defaults.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// TOML file with any of the run's settings (keys as in the run directory's config.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of workers: N > 1 starts N local worker processes; 1 trains in-process [default: 4].
    #[arg(long)]
    pub workers: Option<usize>,
    /// acid (A²CiD²), gossip (asynchronous pairwise averaging) or allreduce (synchronous
    /// data-parallel SGD) [default: acid].
    #[arg(long, value_enum)]
    pub method: Option<crate::sim::Method>,
    /// Communication graph: ring, complete, exponential, torus, torus:RxC, star, hypercube,
    /// regular:D, erdos-renyi:P, file:PATH [default: ring].
    #[arg(long)]
    pub graph: Option<String>,
    /// Seed of the random graph families [default: 0].
    #[arg(long)]
    pub graph_seed: Option<u64>,
    /// Expected pairwise averagings per worker per gradient step [default: 1].
    #[arg(long)]
    pub rate_com: Option<f64>,
    /// Stop when all workers together have computed G gradients (faster workers do more).
    #[arg(long, value_name = "G")]
    pub grad_budget: Option<u64>,
    /// Stop after S seconds of training.
    #[arg(long, value_name = "S")]
    pub max_seconds: Option<f64>,
    /// Steps between two checkpoints of each worker; 0: only at the end [default: 200].
    #[arg(long, value_name = "K")]
    pub checkpoint_every: Option<usize>,
    /// Continue the run in RUN_DIR from its checkpoints (its config.toml, then any flags).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Dataset [default: digits].
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// Model [default: mlp].
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// Hidden layer widths of the MLP, comma-separated [default: 256,128].
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Epochs over each worker's shard; 0: no epoch limit [default: 40].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size per worker [default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate [default: 0.05].
    #[arg(long)]
    pub lr: Option<f32>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    pub momentum: Option<f32>,
    /// Weight decay [default: 1e-4].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Use Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Learning-rate schedule [default: cosine].
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    /// Linear warm-up steps [default: 0].
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
    /// No progress bar (per-epoch lines are printed instead).
    #[arg(long)]
    pub no_progress: bool,
}

impl RunArgs {
    /// Defaults, then the TOML file, then the flags.
    pub fn resolve(&self) -> anyhow::Result<RunConfig> {
        let resume_config = self.resume.as_ref().map(|d| d.join("config.toml"));
        let config = self.config.as_ref().or(resume_config.as_ref());
        let mut cfg = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config {}", path.display()))?;
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
        set!(
            workers,
            method,
            graph,
            graph_seed,
            checkpoint_every,
            dataset,
            model,
            hidden,
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
            eval_every
        );
        if self.nesterov {
            cfg.nesterov = true;
        }
        if self.out.is_some() {
            cfg.out = self.out.clone();
        }
        if let Some(dir) = &self.resume {
            if !dir.join("config.toml").exists() {
                anyhow::bail!(
                    "--resume {}: no config.toml there; give the run directory of an earlier                      `a2cid run`",
                    dir.display()
                );
            }
            cfg.out = Some(dir.clone());
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    if cfg.workers == 1 {
        if args.resume.is_some() {
            anyhow::bail!("--resume needs a multi-worker run (--workers N, N >= 2)");
        }
        train::run_single(&cfg, progress)?;
    } else {
        crate::runtime::run_local(&cfg, args.resume.is_some(), progress)?;
    }
    Ok(())
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
}
