//! `summary.json` of a multi-worker run, built from the workers' result files; when a worker was
//! lost (so the final all-reduce could not run) the averaged model is the mean of the survivors'
//! final checkpoints, evaluated here.

use a2cid_engine::GpuContext;
use anyhow::Context;
use tracing::info;

use a2cid_schema::sketch::{consensus_series, mean_of, GridSketch};
use a2cid_schema::{
    read_json, write_json_atomic, AverageResult, ConsensusSummary, Constants, EdgeReport,
    MetricEvent, MetricsLog, RateSummary, RunConfig, RunDir, Summary, WorkerResult, WorkerSummary,
};

use crate::checkpoint::Checkpoint;

/// Builds and writes `RUN_DIR/summary.json`. A worker is alive when it wrote its result file (and,
/// if the launcher knows, its process exited successfully: `exited_ok[rank]`).
pub fn gather(
    run: &RunDir,
    cfg: &RunConfig,
    exited_ok: Option<&[bool]>,
) -> anyhow::Result<Summary> {
    let n = cfg.workers;
    let mut per_worker = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    for rank in 0..n {
        let r: Option<WorkerResult> = read_json(&run.result(rank));
        let alive = r.is_some() && exited_ok.is_none_or(|ok| ok[rank]);
        let (grads, comms, loss, acc) = match (&r, alive) {
            (Some(r), true) => (r.grads, r.comms, r.final_train_loss, r.test_accuracy),
            _ => match Checkpoint::load(&run.checkpoint(rank)) {
                // A lost worker: its last periodic checkpoint says how far it got.
                Ok(c) => (
                    c.state.grads,
                    c.state.comms,
                    c.state.final_train_loss,
                    f64::NAN,
                ),
                Err(_) => (0, 0, f64::NAN, f64::NAN),
            },
        };
        per_worker.push(WorkerSummary {
            rank,
            grads,
            comms,
            final_train_loss: loss,
            test_accuracy: acc,
            alive,
            rejoins: rejoins(run, rank),
        });
        results.push(if alive { r } else { None });
    }
    let alive: Vec<usize> = per_worker
        .iter()
        .filter(|w| w.alive)
        .map(|w| w.rank)
        .collect();
    if alive.is_empty() {
        anyhow::bail!(
            "no worker of {} finished: see the logs in {}",
            run.root().display(),
            run.workers().display()
        );
    }
    let dataset = a2cid_datasets::load(cfg.dataset, &cfg.data_dir)?;
    let spec = cfg.model_spec(&dataset)?;
    let all_alive = alive.len() == n;
    let from_allreduce: Option<AverageResult> = if all_alive {
        read_json(&run.average())
    } else {
        None
    };
    let (test_accuracy, test_loss, averaged, adapter) = match from_allreduce {
        Some(a) => (
            a.test_accuracy,
            a.test_loss,
            format!("all-reduce over the {} workers", a.workers),
            String::new(),
        ),
        None => {
            // Mean of the survivors' final checkpoints.
            let mut mean = vec![0f64; spec.layout().len()];
            for &rank in &alive {
                let c = Checkpoint::load(&run.checkpoint(rank))?;
                for (m, v) in mean.iter_mut().zip(&c.x) {
                    *m += f64::from(*v) / alive.len() as f64;
                }
            }
            let x: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
            let ctx = GpuContext::open(&cfg.adapter)?;
            let mut model = spec.build(ctx.clone(), 1024)?;
            model.set_params(&x)?;
            let (loss, acc) = model.evaluate(&dataset.test.x, &dataset.test.y)?;
            let lost: Vec<usize> = (0..n).filter(|r| !alive.contains(r)).collect();
            info!(
                "averaged the final checkpoints of the {} surviving workers (lost: {lost:?})",
                alive.len()
            );
            (
                acc,
                loss,
                format!(
                    "mean of the final checkpoints of the {} survivors (lost ranks {lost:?})",
                    alive.len()
                ),
                ctx.adapter.name.clone(),
            )
        }
    };
    let wall_seconds = results
        .iter()
        .flatten()
        .map(|r| r.wall_seconds)
        .fold(0.0, f64::max);
    let adapter = results
        .iter()
        .flatten()
        .map(|r| r.adapter.clone())
        .next()
        .unwrap_or(adapter);
    let rates = if cfg.method.is_pairwise() {
        Some(rate_summary(cfg, &per_worker, &results)?)
    } else {
        None
    };
    let consensus = consensus_summary(run, &alive)?;
    let events = alive
        .iter()
        .map(|&r| MetricsLog::read(&run.metrics(r)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let summary = Summary {
        method: cfg.method.name().to_string(),
        graph: cfg.graph.clone(),
        dataset: cfg.dataset,
        model: cfg.model,
        workers: n,
        wall_seconds,
        test_accuracy,
        test_loss,
        total_grads: per_worker.iter().map(|w| w.grads).sum(),
        per_worker,
        parameters: spec.layout().len(),
        architecture: spec.describe(),
        adapter,
        epochs: cfg.epochs,
        averaged,
        rates,
        consensus,
        partition: cfg.partition.to_string(),
        worker_speeds: cfg.speeds_label(),
        time_to_accuracy: a2cid_schema::time_to_accuracy(&events, &cfg.target_accuracy),
    };
    write_json_atomic(&run.summary(), &summary).context("writing summary.json")?;
    Ok(summary)
}

/// Averagings asked and achieved, per worker and per edge, and the A²CiD² constants the achieved
/// per-edge rates imply (docs/algorithm.md §5).
fn rate_summary(
    cfg: &RunConfig,
    per_worker: &[WorkerSummary],
    results: &[Option<WorkerResult>],
) -> anyhow::Result<RateSummary> {
    let ratio = |comms: u64, grads: u64| comms as f64 / grads.max(1) as f64;
    let (comms, grads) = per_worker
        .iter()
        .fold((0, 0), |(c, g), w| (c + w.comms, g + w.grads));
    let mut edges: Vec<EdgeReport> = results
        .iter()
        .flatten()
        .flat_map(|r| r.edges.iter().cloned())
        .collect();
    edges.sort_by_key(|e| (e.owner, e.peer));
    let topology = cfg.topology()?;
    let achieved: Vec<f64> = topology
        .edges()
        .iter()
        .map(|&(i, j)| {
            edges
                .iter()
                .find(|e| (e.owner, e.peer) == (i.min(j), i.max(j)))
                .and_then(|e| e.gaps)
                .map_or(0.0, |g| g.achieved_rate)
        })
        .collect();
    let constants_implied = topology
        .constants_with_rates(&achieved)
        .ok()
        .map(|c| Constants {
            eta: c.eta,
            alpha_tilde: c.alpha_tilde,
        });
    Ok(RateSummary {
        asked_rate: cfg.rate_com,
        achieved_rate: ratio(comms, grads),
        achieved_rate_per_worker: per_worker.iter().map(|w| ratio(w.comms, w.grads)).collect(),
        edges,
        constants_in_use: results.iter().flatten().find_map(|r| r.constants),
        constants_implied,
    })
}

/// How many times worker `rank` rejoined the run (its metrics' `rejoin` events).
fn rejoins(run: &RunDir, rank: usize) -> u32 {
    MetricsLog::read(&run.metrics(rank)).map_or(0, |events| {
        events
            .iter()
            .filter(|e| matches!(e, MetricEvent::Rejoin { .. }))
            .count() as u32
    })
}

/// Every sketch a worker logged, from its metrics file.
pub fn sketches(run: &RunDir, rank: usize) -> anyhow::Result<Vec<GridSketch>> {
    Ok(MetricsLog::read(&run.metrics(rank))?
        .into_iter()
        .filter_map(|e| match e {
            MetricEvent::Sketch { at, grid, values } => Some(GridSketch {
                grid,
                tau: at.tau.unwrap_or(f64::NAN),
                values,
            }),
            _ => None,
        })
        .collect())
}

/// The consensus distance from the surviving workers' sketches (`None` without sketches).
fn consensus_summary(run: &RunDir, alive: &[usize]) -> anyhow::Result<Option<ConsensusSummary>> {
    let workers = alive
        .iter()
        .map(|&r| sketches(run, r))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let series = consensus_series(&workers);
    let Some(last) = series.last() else {
        return Ok(None);
    };
    let half = last.tau / 2.0;
    let second: Vec<_> = series
        .iter()
        .filter(|p| p.tau >= half)
        .map(|p| p.estimate)
        .collect();
    Ok(mean_of(&second).map(|second_half| ConsensusSummary {
        points: series.len(),
        second_half,
        last: last.estimate,
    }))
}
