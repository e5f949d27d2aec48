//! # a2cid-sim — an exact simulator of n workers
//!
//! `a2cid simulate`: n virtual workers in one process with the exact continuized dynamics of
//! A²CiD² (docs/algorithm.md §1–5), to study methods, graphs and rates without a cluster.
//!
//! **Owns:** the event loop (`runner`, one seeded queue of every Poisson clock), the `Problem`
//! abstraction and its CPU implementation (`problem`), the `quadratic` problem, the GPU model
//! problem (`model`: one `a2cid_engine::TrainState` per worker, as in the real runtime),
//! heterogeneous speeds (`speeds`), and the outputs (`output`: series, summaries, figures drawn
//! with the report's plotting stack).
//!
//! **Must not touch:** the update rules (`a2cid_engine::acid` and the fused kernels), the graph
//! constants (`a2cid_topology`), the network. Nothing here re-implements them.
//!
//! Plugging in another problem: implement `Problem` (or `Objective` for a CPU one), add a
//! `ProblemKind` variant and build it in `build_problem`.

pub mod codec;
pub mod dadao;
pub mod events;
/// LASGD's synchronisation and DiLoCo's outer optimizer: the engine's, shared with the runtime.
pub use a2cid_engine::outer as lasgd;
pub mod model;
pub mod output;
pub mod problem;
pub mod quadratic;
pub mod relaysum;
pub mod runner;

use std::path::PathBuf;
use std::time::Instant;

use a2cid_engine::acid::AcidParams;
use a2cid_engine::models::ModelKind;
use a2cid_engine::SgdConfig;
use anyhow::Context;

pub use a2cid_schema::speeds::{self, SpeedSpec};
pub use a2cid_schema::Method;
pub use lasgd::OuterSpec;
pub use output::RunSummary;
pub use problem::{CpuWorkers, Objective, Problem, Quality};
pub use quadratic::{Quadratic, QuadraticConfig};
pub use runner::{simulate, Sample, SimConfig, SimOutcome};

use a2cid_topology::{GraphSpec, Topology, TorusShape};

/// The problems the simulator can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProblemKind {
    /// Distributed least squares, heterogeneous local optima, noisy gradients (CPU).
    Quadratic,
    /// One of the engine's models (`--model`) on a real dataset, all workers' training states on
    /// the GPU (the runtime's `TrainState` and fused kernels).
    #[value(name = "model", alias = "mlp")]
    Model,
}

/// `a2cid simulate`. `--workers`, `--method`, `--rate-com` and `--seed` take comma-separated
/// lists: every combination is run (allreduce once per worker count and seed, it has no rate).
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Number(s) of workers n, e.g. 16 or 16,32,64.
    #[arg(long, value_delimiter = ',', required = true)]
    pub workers: Vec<usize>,
    /// ring, complete, exponential, torus, torus:RxC, star, hypercube, regular:D, erdos-renyi:P,
    /// file:PATH.
    #[arg(long, default_value = "ring")]
    pub graph: GraphSpec,
    /// Torus shape RxC (R*C = workers).
    #[arg(long)]
    pub torus_shape: Option<TorusShape>,
    /// Seed of the random graph families.
    #[arg(long, default_value_t = 0)]
    pub graph_seed: u64,
    #[arg(long, value_enum, default_value = "quadratic")]
    pub problem: ProblemKind,
    /// acid, gossip, allreduce, local, lasgd, relaysum, dadao (or a list, e.g. gossip,acid;
    /// docs/algorithm.md §9 for the last three; dadao on the quadratic only).
    #[arg(long, value_delimiter = ',', default_value = "acid")]
    pub method: Vec<Method>,
    /// lasgd: local steps of each worker between two all-reduce averages (H >= 1).
    #[arg(long, default_value_t = 10)]
    pub sync_every: usize,
    /// lasgd: outer optimizer on the averaged change since the last synchronisation,
    /// nesterov:LR,MOMENTUM (lasgd with it is DiLoCo; nesterov:1,0 is plain lasgd).
    #[arg(long)]
    pub outer: Option<OuterSpec>,
    /// acid, gossip: how the pairwise exchanges travel: none (f32), fp16 or lowrank:R (PowerGossip
    /// per weight matrix, R <= 8; --problem model only), as in `a2cid run`.
    #[arg(long, default_value = "none")]
    pub compress: a2cid_schema::Compression,
    /// Expected pairwise averagings per worker per unit of time (or a list, e.g. 1,2).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub rate_com: Vec<f64>,
    /// Seed(s) of the clocks, the data and the gradient noise.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seed: Vec<u64>,
    /// Simulated time, in gradients per (speed-1) worker.
    #[arg(long, default_value_t = 2000.0)]
    pub time: f64,
    /// Interval between recorded samples [default: time/500].
    #[arg(long)]
    pub sample_every: Option<f64>,
    /// Worker speeds: homogeneous, straggler:FACTOR, slow:FRACTION:SPEED, lognormal:SIGMA,
    /// list:S0,S1,...
    #[arg(long, default_value = "homogeneous")]
    pub speeds: SpeedSpec,
    /// Learning rate of the local SGD.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// Momentum of the local SGD, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f32,
    /// Weight decay of the local SGD (added to the gradient as wd * x).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Use Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// quadratic: dimension of the parameters.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// quadratic: condition number of the data covariance.
    #[arg(long, default_value_t = 10.0)]
    pub condition: f64,
    /// quadratic: spread of the workers' local optima (data heterogeneity).
    #[arg(long, default_value_t = 1.0)]
    pub heterogeneity: f64,
    /// quadratic: standard deviation of the gradient noise per coordinate.
    #[arg(long, default_value_t = 1.0)]
    pub noise: f64,
    /// model: dataset (digits is embedded; mnist and fashion-mnist need scripts/fetch-datasets.sh).
    #[arg(long, default_value = "digits")]
    pub dataset: a2cid_datasets::DatasetName,
    /// model: which model (mlp, cnn, resnet:D).
    #[arg(long, default_value = "mlp")]
    pub model: ModelKind,
    /// model: hidden layer widths of the MLP, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    pub hidden: Vec<usize>,
    /// model: filters of the first convolution (cnn) or stage (resnet:D).
    #[arg(long, default_value_t = 16)]
    pub width: usize,
    /// model: how the training set is dealt to the workers: iid, dirichlet:ALPHA or classes:K.
    #[arg(long, default_value = "iid")]
    pub partition: a2cid_datasets::Partition,
    /// model: batch size of one gradient.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// model: training rows on which the losses are measured (a fixed subset, for speed).
    #[arg(long, default_value_t = 1024)]
    pub eval_rows: usize,
    /// model: folder holding the fetched datasets.
    #[arg(long, env = "A2CID_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// model: GPU adapter (index or part of its name).
    #[arg(long, env = "A2CID_ADAPTER", default_value = "auto")]
    pub adapter: String,
    /// Print the final summary as JSON (one object; an array when several runs).
    #[arg(long)]
    pub json: bool,
    /// Write series.csv, series.jsonl, summary.json and plot.svg here (one sub-folder per run
    /// and a comparison.svg when several runs).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One run's summary and series.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub summary: RunSummary,
    pub outcome: SimOutcome,
}

/// Whether a method's communication follows `--rate-com` (the edge clocks); allreduce, lasgd
/// and relaysum communicate on their own schedule and run once per worker count and seed.
fn uses_rate(method: Method) -> bool {
    !matches!(method, Method::AllReduce | Method::Lasgd | Method::RelaySum)
}

/// The name a run goes by in tables and plots: the method, or `diloco` for lasgd with an
/// outer optimizer.
fn display_name(summary: &RunSummary) -> String {
    match &summary.outer {
        Some(_) => "diloco".into(),
        None if summary.compress != "none" => format!("{}+{}", summary.method, summary.compress),
        None => summary.method.clone(),
    }
}

/// The (workers, method, rate, seed) combinations `args` asks for, in a stable order.
fn combinations(args: &SimulateArgs) -> Vec<(usize, Method, f64, u64)> {
    let mut runs = Vec::new();
    for &n in &args.workers {
        for &method in &args.method {
            let rates: &[f64] = if !uses_rate(method) {
                &args.rate_com[..1]
            } else {
                &args.rate_com
            };
            for &rate in rates {
                for &seed in &args.seed {
                    runs.push((n, method, rate, seed));
                }
            }
        }
    }
    runs
}

fn build_problem(
    args: &SimulateArgs,
    workers: usize,
    topology: &Topology,
    method: Method,
    params: AcidParams,
    sgd: SgdConfig,
    seed: u64,
) -> anyhow::Result<Box<dyn Problem>> {
    match args.problem {
        ProblemKind::Quadratic if method == Method::Dadao => {
            let config = QuadraticConfig {
                workers,
                dim: args.dim,
                condition: args.condition,
                heterogeneity: args.heterogeneity,
                noise: args.noise,
            };
            let objective = Quadratic::new(config, seed)?;
            dadao::workers(objective, topology, seed)
        }
        ProblemKind::Model if method == Method::Dadao => anyhow::bail!(
            "--method dadao runs on --problem quadratic only (its constants need the local \
             functions' strong convexity mu and smoothness L)"
        ),
        ProblemKind::Quadratic => {
            let config = QuadraticConfig {
                workers,
                dim: args.dim,
                condition: args.condition,
                heterogeneity: args.heterogeneity,
                noise: args.noise,
            };
            let objective = Quadratic::new(config, seed)?;
            Ok(Box::new(CpuWorkers::new(
                objective,
                params,
                method.uses_x_tilde(),
                seed,
            )))
        }
        ProblemKind::Model => {
            let config = model::ModelProblemConfig {
                dataset: args.dataset,
                data_dir: args.data_dir.clone(),
                model: args.model,
                hidden: args.hidden.clone(),
                width: args.width,
                partition: args.partition,
                batch_size: args.batch_size,
                eval_rows: args.eval_rows,
                adapter: args.adapter.clone(),
                seed,
                with_tilde: method.uses_x_tilde(),
                params,
                sgd,
            };
            Ok(Box::new(model::GpuModelWorkers::new(workers, &config)?))
        }
    }
}

/// Runs every combination `args` asks for and returns their reports (writes nothing).
pub fn simulate_runs(args: &SimulateArgs) -> anyhow::Result<Vec<RunReport>> {
    anyhow::ensure!(
        !args.rate_com.is_empty() && !args.seed.is_empty(),
        "--rate-com and --seed need a value"
    );
    let spec = args.graph.clone().with_torus_shape(args.torus_shape)?;
    let sample_every = args.sample_every.unwrap_or(args.time / 500.0);
    let sgd = SgdConfig {
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        nesterov: args.nesterov,
    };
    anyhow::ensure!(
        args.lr > 0.0 && args.lr.is_finite() && (0.0..1.0).contains(&args.momentum),
        "--lr must be positive and --momentum in [0, 1), got {} and {}",
        args.lr,
        args.momentum
    );
    anyhow::ensure!(
        args.sync_every >= 1,
        "--sync-every must be at least 1 local step, got 0"
    );
    anyhow::ensure!(
        args.outer.is_none() || args.method.contains(&Method::Lasgd),
        "--outer applies to --method lasgd (with it, DiLoCo); none of {:?} uses it",
        args.method.iter().map(|m| m.name()).collect::<Vec<_>>()
    );
    anyhow::ensure!(
        args.compress == a2cid_schema::Compression::None
            || args.method.iter().all(|m| m.is_pairwise()),
        "--compress {} applies to the pairwise exchanges of acid and gossip; drop it or run \
         only those (got {:?})",
        args.compress,
        args.method.iter().map(|m| m.name()).collect::<Vec<_>>()
    );
    let mut reports = Vec::new();
    let mut warned = false;
    for (workers, method, rate_com, seed) in combinations(args) {
        let topology = Topology::from_spec(&spec, workers, rate_com, args.graph_seed)?;
        if method == Method::Acid && !warned {
            for warning in topology.warnings() {
                eprintln!("warning: {warning}");
                warned = true;
            }
        }
        if method == Method::Dadao {
            let c = topology.constants();
            if c.chi_1 * c.chi_2 > 0.5 {
                eprintln!(
                    "warning: dadao on {} n={workers} at rate_com {rate_com}: chi_1 chi_2 = {:.3} > 1/2; \
                     its analysis needs rate_com >= {:.2} (below it, it may diverge)",
                    topology.name(),
                    c.chi_1 * c.chi_2,
                    rate_com * (2.0 * c.chi_1 * c.chi_2).sqrt()
                );
            }
        }
        let speeds = args.speeds.speeds(workers, seed)?;
        let params = method.acid_params(&topology);
        let config = SimConfig {
            method,
            topology,
            speeds,
            sgd,
            horizon: args.time,
            sample_every,
            seed,
            sync_every: args.sync_every,
            outer: (method == Method::Lasgd).then_some(args.outer).flatten(),
            compress: args.compress,
        };
        let mut problem =
            build_problem(args, workers, &config.topology, method, params, sgd, seed)?;
        let started = Instant::now();
        let outcome = simulate(problem.as_mut(), &config)?;
        let wall_seconds = started.elapsed().as_secs_f64();
        let mut summary = summarize(args, &config, &spec, &outcome, params, wall_seconds);
        if let Some(accuracy) = problem.test_accuracy()? {
            summary.test_accuracy = Some(accuracy.average_model);
            summary.mean_worker_test_accuracy = Some(accuracy.mean_worker);
        }
        reports.push(RunReport { summary, outcome });
    }
    Ok(reports)
}

fn summarize(
    args: &SimulateArgs,
    config: &SimConfig,
    spec: &GraphSpec,
    outcome: &SimOutcome,
    params: a2cid_engine::acid::AcidParams,
    wall_seconds: f64,
) -> RunSummary {
    let horizon = config.horizon;
    let samples = &outcome.samples;
    let loss = output::second_half_mean(samples, horizon, |s| s.mean_worker_loss);
    let last = samples.last().copied();
    let (method, n) = (config.method, config.topology.workers());
    let rate = if uses_rate(method) {
        config.topology.rate_com()
    } else {
        0.0
    };
    let (eta, alpha_tilde) = match method {
        Method::Acid => (params.eta, params.alpha_tilde),
        _ => (0.0, params.alpha),
    };
    RunSummary {
        label: match (method, config.outer) {
            (Method::Lasgd, Some(outer)) => format!(
                "diloco H={} {outer} n={n} seed={}",
                config.sync_every, config.seed
            ),
            (Method::Lasgd, None) => {
                format!("lasgd H={} n={n} seed={}", config.sync_every, config.seed)
            }
            (method, _) if !uses_rate(method) => {
                format!("{} n={n} seed={}", method.name(), config.seed)
            }
            _ if config.compress != a2cid_schema::Compression::None => format!(
                "{}@{rate} {} n={n} seed={}",
                method.name(),
                config.compress,
                config.seed
            ),
            _ => format!("{}@{rate} n={n} seed={}", method.name(), config.seed),
        },
        problem: format!("{:?}", args.problem).to_lowercase(),
        graph: spec.to_string(),
        method: method.name().to_string(),
        workers: n,
        rate_com: rate,
        seed: config.seed,
        time: horizon,
        consensus_distance: output::second_half_mean(samples, horizon, |s| s.consensus_distance),
        loss,
        loss_of_average_model: output::second_half_mean(samples, horizon, |s| s.average_model_loss),
        excess_loss: outcome.optimal_loss.map(|f| loss - f),
        optimal_loss: outcome.optimal_loss,
        final_consensus_distance: last.map_or(f64::NAN, |s| s.consensus_distance),
        final_loss: last.map_or(f64::NAN, |s| s.mean_worker_loss),
        gradients: outcome.gradients_per_worker.iter().sum(),
        averagings: outcome.averagings_per_worker.iter().sum::<u64>() / 2,
        allreduce_steps: outcome.allreduce_steps,
        min_gradients_per_worker: outcome
            .gradients_per_worker
            .iter()
            .copied()
            .min()
            .unwrap_or(0),
        max_gradients_per_worker: outcome
            .gradients_per_worker
            .iter()
            .copied()
            .max()
            .unwrap_or(0),
        mean_pair_distance: outcome.mean_pair_distance,
        eta,
        alpha: params.alpha,
        alpha_tilde,
        wall_seconds,
        sync_every: (method == Method::Lasgd).then_some(config.sync_every),
        outer: config.outer.map(|o| o.to_string()),
        syncs: outcome.syncs,
        compress: config.compress.to_string(),
        messages_per_worker: outcome.messages_per_worker,
        bytes_per_worker: outcome.bytes_per_worker,
        test_accuracy: None,
        mean_worker_test_accuracy: None,
    }
}

/// Mean of per-seed series (all runs of one simulation share the sampling grid).
fn mean_series(runs: &[&RunReport]) -> Vec<Sample> {
    let mut mean = runs[0].outcome.samples.clone();
    let k = runs.len() as f64;
    for (t, sample) in mean.iter_mut().enumerate() {
        let at =
            |f: fn(&Sample) -> f64| runs.iter().map(|r| f(&r.outcome.samples[t])).sum::<f64>() / k;
        sample.mean_worker_loss = at(|s| s.mean_worker_loss);
        sample.average_model_loss = at(|s| s.average_model_loss);
        sample.consensus_distance = at(|s| s.consensus_distance);
    }
    mean
}

/// Writes each run into its own folder, plus summary.json, summary.csv and comparison.svg.
fn write_outputs(dir: &std::path::Path, reports: &[RunReport]) -> anyhow::Result<()> {
    if let [single] = reports {
        return output::write_run(dir, &single.summary, &single.outcome);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for report in reports {
        let s = &report.summary;
        let name = display_name(s).replace(':', "");
        let folder = if s.rate_com == 0.0 {
            format!("{name}-n{}-seed{}", s.workers, s.seed)
        } else {
            format!("{name}-rate{}-n{}-seed{}", s.rate_com, s.workers, s.seed)
        };
        output::write_run(&dir.join(folder), &report.summary, &report.outcome)?;
    }
    let summaries: Vec<&RunSummary> = reports.iter().map(|r| &r.summary).collect();
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summaries)? + "\n",
    )?;
    std::fs::write(dir.join("summary.csv"), summary_table(reports, ','))?;
    std::fs::write(dir.join("summary_over_seeds.tsv"), aggregate_table(reports))?;
    // One column per worker count; one curve per (method, rate), averaged over seeds.
    let mut worker_counts: Vec<usize> = reports.iter().map(|r| r.summary.workers).collect();
    worker_counts.dedup();
    let mut panels = Vec::new();
    for n in worker_counts {
        let mut variants: Vec<(String, f64)> = Vec::new();
        for r in reports.iter().filter(|r| r.summary.workers == n) {
            let key = (r.summary.method.clone(), r.summary.rate_com);
            if !variants.contains(&key) {
                variants.push(key);
            }
        }
        let curves = variants
            .iter()
            .map(|(method, rate)| {
                let runs: Vec<&RunReport> = reports
                    .iter()
                    .filter(|r| {
                        r.summary.workers == n
                            && &r.summary.method == method
                            && r.summary.rate_com == *rate
                    })
                    .collect();
                let label = if *rate == 0.0 {
                    match runs[0].summary.sync_every {
                        Some(h) => format!("{} H={h}", display_name(&runs[0].summary)),
                        None => method.clone(),
                    }
                } else {
                    format!("{method} @ rate {rate}")
                };
                output::Curve {
                    label,
                    samples: mean_series(&runs),
                    optimal_loss: runs[0].outcome.optimal_loss,
                }
            })
            .collect();
        panels.push(output::Panel {
            title: format!("{} n = {n}", reports[0].summary.graph),
            curves,
        });
    }
    output::plot_panels(&dir.join("comparison.svg"), &panels)
}

/// A table of the runs: one line each.
fn summary_table(reports: &[RunReport], separator: char) -> String {
    let header = [
        "workers",
        "method",
        "rate_com",
        "seed",
        "consensus_distance",
        "loss",
        "excess_loss",
        "gradients",
        "averagings",
        "syncs",
        "messages_per_worker",
        "bytes_per_worker",
        "wall_seconds",
        "test_accuracy",
        "mean_worker_test_accuracy",
    ];
    let mut table = header.join(&separator.to_string()) + "\n";
    for r in reports {
        let s = &r.summary;
        let row = [
            s.workers.to_string(),
            display_name(s),
            s.rate_com.to_string(),
            s.seed.to_string(),
            format!("{:.6e}", s.consensus_distance),
            format!("{:.6}", s.loss),
            s.excess_loss.map_or(String::new(), |e| format!("{e:.6e}")),
            s.gradients.to_string(),
            s.averagings.to_string(),
            s.syncs.to_string(),
            format!("{:.1}", s.messages_per_worker),
            format!("{:.0}", s.bytes_per_worker),
            format!("{:.2}", s.wall_seconds),
            s.test_accuracy.map_or(String::new(), |a| format!("{a:.4}")),
            s.mean_worker_test_accuracy
                .map_or(String::new(), |a| format!("{a:.4}")),
        ];
        table += &(row.join(&separator.to_string()) + "\n");
    }
    table
}

/// Mean and sample standard deviation.
fn mean_sd(values: &[f64]) -> (f64, f64) {
    let k = values.len() as f64;
    let mean = values.iter().sum::<f64>() / k;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// One line per (workers, method, rate): mean ± standard deviation over the seeds.
fn aggregate_table(reports: &[RunReport]) -> String {
    let mut variants: Vec<(usize, String, f64)> = Vec::new();
    for r in reports {
        let key = (
            r.summary.workers,
            display_name(&r.summary),
            r.summary.rate_com,
        );
        if !variants.contains(&key) {
            variants.push(key);
        }
    }
    let mut table = String::from("workers\tmethod\trate_com\tseeds\tconsensus_distance (mean ± sd)\texcess_loss (mean ± sd)\tbytes_per_worker\ttest_accuracy (mean ± sd)\n");
    for (n, method, rate) in variants {
        let runs: Vec<&RunSummary> = reports
            .iter()
            .map(|r| &r.summary)
            .filter(|s| s.workers == n && display_name(s) == method && s.rate_com == rate)
            .collect();
        let (cd, cd_sd) = mean_sd(
            &runs
                .iter()
                .map(|s| s.consensus_distance)
                .collect::<Vec<_>>(),
        );
        let (el, el_sd) = mean_sd(
            &runs
                .iter()
                .map(|s| s.excess_loss.unwrap_or(s.loss))
                .collect::<Vec<_>>(),
        );
        let accuracies: Vec<f64> = runs.iter().filter_map(|s| s.test_accuracy).collect();
        let accuracy = if accuracies.is_empty() {
            String::new()
        } else {
            let (a, a_sd) = mean_sd(&accuracies);
            format!("{a:.4} ± {a_sd:.4}")
        };
        table += &format!(
            "{n}\t{method}\t{rate}\t{}\t{cd:.4} ± {cd_sd:.4}\t{el:.4} ± {el_sd:.4}\t{:.0}\t{accuracy}\n",
            runs.len(),
            runs.iter().map(|s| s.bytes_per_worker).sum::<f64>() / runs.len() as f64
        );
    }
    table
}

/// Runs `a2cid simulate`.
pub fn run_simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    let reports = simulate_runs(args)?;
    if let Some(dir) = &args.out {
        write_outputs(dir, &reports)?;
    }
    if args.json {
        let summaries: Vec<&RunSummary> = reports.iter().map(|r| &r.summary).collect();
        match summaries.as_slice() {
            [single] => println!("{}", serde_json::to_string_pretty(single)?),
            many => println!("{}", serde_json::to_string_pretty(many)?),
        }
    } else {
        print!("{}", summary_table(&reports, '\t'));
        if args.seed.len() > 1 {
            println!("\nmean over seeds (time averages over [T/2, T]):");
            print!("{}", aggregate_table(&reports));
        }
        if let Some(dir) = &args.out {
            println!("wrote {}", dir.display());
        }
    }
    Ok(())
}
