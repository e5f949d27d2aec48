//! Reading run directories: each worker's series from its metric events, the summary, the run's
//! label.
use std::path::{Path, PathBuf};

use a2cid_schema::sketch::GridSketch;
use a2cid_schema::{MetricEvent, MetricsLog, RunDir, Summary};

/// A worker's shard of the training set and its emulated speed (its metrics' `shard` event).
#[derive(Clone, Debug)]
pub(crate) struct Shard {
    pub partition: String,
    pub rows: usize,
    /// Rows of each class.
    pub histogram: Vec<u64>,
    pub speed: f64,
}

/// One worker's series.
#[derive(Default, Clone)]
pub(crate) struct WorkerSeries {
    /// (training wall, gradients, train loss)
    pub train: Vec<(f64, f64, f64)>,
    /// (training wall, gradients, test accuracy in %) of the worker's own model
    pub eval: Vec<(f64, f64, f64)>,
    /// (training wall, ‖s_i − s_j‖²)
    pub exchanges: Vec<(f64, f64)>,
    /// Sketches of the parameters at the common grid of the clock.
    pub sketches: Vec<GridSketch>,
    /// The first `shard` event (a fresh worker's first line; absent in older runs).
    pub shard: Option<Shard>,
}

pub(crate) struct RunData {
    pub label: String,
    pub dir: PathBuf,
    pub summary: Option<Summary>,
    pub workers: Vec<WorkerSeries>,
}

impl RunData {
    /// The run's partition: the summary's, else the workers' shards', else unknown.
    pub fn partition(&self) -> Option<String> {
        self.summary
            .as_ref()
            .map(|s| s.partition.clone())
            .or_else(|| {
                self.workers
                    .iter()
                    .find_map(|w| w.shard.as_ref().map(|s| s.partition.clone()))
            })
    }
}

fn read_series(path: &Path) -> anyhow::Result<WorkerSeries> {
    let mut s = WorkerSeries::default();
    for event in MetricsLog::read(path)? {
        // Training time: evaluation pauses excluded.
        let wall = event.at().train_wall;
        let step = event.at().step as f64;
        match event {
            MetricEvent::Train { train_loss, .. } => s.train.push((wall, step, train_loss)),
            // `eval` (every --eval-every steps, or every epoch of a single worker) and `end` (a
            // worker's last own evaluation).
            MetricEvent::Eval { test_accuracy, .. } | MetricEvent::End { test_accuracy, .. } => {
                if test_accuracy.is_finite() && s.eval.last().is_none_or(|p| p.1 < step) {
                    s.eval.push((wall, step, 100.0 * test_accuracy));
                }
            }
            MetricEvent::Exchange { dist2, .. } => s.exchanges.push((wall, dist2)),
            MetricEvent::Sketch { at, grid, values } => s.sketches.push(GridSketch {
                grid,
                tau: at.tau.unwrap_or(f64::NAN),
                values,
            }),
            MetricEvent::Shard {
                partition,
                rows,
                histogram,
                speed,
                ..
            } => {
                if s.shard.is_none() {
                    s.shard = Some(Shard {
                        partition,
                        rows,
                        histogram,
                        speed,
                    });
                }
            }
            MetricEvent::PeerLost { .. }
            | MetricEvent::Resume { .. }
            | MetricEvent::Rejoin { .. }
            | MetricEvent::PeerRejoined { .. }
            | MetricEvent::SnapshotRefused { .. } => {}
        }
    }
    Ok(s)
}

/// The run's name in legends: method, graph, workers and partition, the emulated speeds when
/// not homogeneous, the asked averaging rate of the pairwise methods; the folder's name without
/// a summary.
pub(crate) fn run_label(summary: Option<&Summary>, dir: &Path) -> String {
    let Some(s) = summary else {
        return dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
    };
    let mut label = format!(
        "{}, {}, n={}, {}",
        s.method, s.graph, s.workers, s.partition
    );
    if s.worker_speeds != "homogeneous" {
        label.push_str(&format!(", speeds {}", s.worker_speeds));
    }
    if let (Some(r), "acid" | "gossip") = (&s.rates, s.method.as_str()) {
        label.push_str(&format!(", rate {}", r.asked_rate));
    }
    label
}

pub(crate) fn load_run(dir: &Path) -> anyhow::Result<RunData> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a run directory", dir.display());
    }
    let run = RunDir::new(dir);
    let summary: Option<Summary> = a2cid_schema::read_json(&run.summary());
    let mut workers = Vec::new();
    if run.workers().is_dir() {
        for rank in 0.. {
            let p = run.metrics(rank);
            if !p.exists() {
                break;
            }
            workers.push(read_series(&p)?);
        }
    } else if run.single_metrics().exists() {
        workers.push(read_series(&run.single_metrics())?);
    }
    if workers.is_empty() {
        anyhow::bail!(
            "{} holds no metrics (workers/rank*.jsonl or metrics.jsonl): is it a run directory?",
            dir.display()
        );
    }
    Ok(RunData {
        label: run_label(summary.as_ref(), dir),
        dir: dir.to_path_buf(),
        summary,
        workers,
    })
}

/// Loads every run; labels that two runs share (seeds of one setting) get the folder's name.
pub(crate) fn load_runs(dirs: &[PathBuf]) -> anyhow::Result<Vec<RunData>> {
    let mut data: Vec<RunData> = dirs
        .iter()
        .map(|d| load_run(d))
        .collect::<anyhow::Result<_>>()?;
    let labels: Vec<String> = data.iter().map(|r| r.label.clone()).collect();
    for r in &mut data {
        if labels.iter().filter(|l| **l == r.label).count() > 1 {
            let name = r
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            r.label = format!("{} [{name}]", r.label);
        }
    }
    Ok(data)
}
