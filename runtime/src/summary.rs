//! `summary.json` of a multi-worker run, built from the workers' result files; when a worker was
//! lost (so the final all-reduce could not run) the averaged model is the mean of the survivors'
//! final checkpoints, evaluated here.

use a2cid_engine::GpuContext;
use anyhow::Context;
use tracing::info;

use a2cid_schema::{
    read_json, write_json_atomic, AverageResult, RunConfig, RunDir, Summary, WorkerResult,
    WorkerSummary,
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
    };
    write_json_atomic(&run.summary(), &summary).context("writing summary.json")?;
    Ok(summary)
}
