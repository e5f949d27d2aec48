//! The typed records a run writes: metric events (one JSON line each, the same schema from every
//! writer: the worker runtime, the single-worker loop), a worker's result, the averaged model's
//! evaluation, the launcher's progress lines and `summary.json`. The report reads these types.
use std::io::Write;
use std::path::Path;

use a2cid_datasets::DatasetName;
use anyhow::Context;
use serde::{Deserialize, Serialize};

use a2cid_engine::models::ModelKind;

/// Where and when a metric event happened: on which worker, at which wall time (seconds since the
/// run started, over all resumed sessions), training wall time (evaluation pauses excluded),
/// worker clock tau (units of one gradient; absent for a single worker) and after how many of this
/// worker's own gradient steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct At {
    pub rank: usize,
    pub wall: f64,
    pub train_wall: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tau: Option<f64>,
    /// Gradient steps this worker has computed.
    pub step: u64,
}

/// One line of a worker's metrics file (`workers/rank<R>.jsonl`, or `metrics.jsonl` for a single
/// worker), tagged by `"event"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MetricEvent {
    /// Training loss over the last logging window.
    Train {
        #[serde(flatten)]
        at: At,
        epoch: usize,
        train_loss: f64,
        train_accuracy: f64,
        lr: f32,
        /// Pairwise averagings (all-reduces for `allreduce`) completed so far.
        averagings: u64,
        /// Pairing opportunities missed so far (all edges, both directions).
        missed: u64,
        failed: u64,
        bytes_sent: u64,
        bytes_received: u64,
        /// Gradients of all workers together as this worker knows them.
        global_grads: u64,
        step_seconds: Option<f64>,
    },
    /// The worker's own model on the test set (off the clock).
    Eval {
        #[serde(flatten)]
        at: At,
        /// Set at the end of an epoch of a single-worker run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<usize>,
        test_loss: f64,
        test_accuracy: f64,
        averagings: u64,
        global_grads: u64,
        /// How long the evaluation took.
        seconds: f64,
    },
    /// A completed pairwise exchange.
    Exchange {
        #[serde(flatten)]
        at: At,
        peer: usize,
        /// ‖s_i − s_j‖²: the disagreement between the two snapshots.
        dist2: f64,
        bytes_sent: u64,
        bytes_received: u64,
        /// From agreement to both snapshots having crossed.
        seconds: f64,
        /// From agreement to this worker's snapshot being handed to the mesh.
        #[serde(default)]
        snapshot_seconds: f64,
        initiator: bool,
        /// Pairing opportunities missed since the previous exchange.
        missed_before: u64,
    },
    /// A neighbour left (gracefully or not).
    PeerLost {
        #[serde(flatten)]
        at: At,
        peer: usize,
        why: String,
        graceful: bool,
    },
    /// The worker's shard of the training set (first line of a fresh worker's metrics).
    Shard {
        #[serde(flatten)]
        at: At,
        /// `--partition`.
        partition: String,
        rows: usize,
        /// Rows of each class.
        histogram: Vec<u64>,
        /// The worker's emulated relative speed (`--worker-speeds`; 1: its hardware's).
        speed: f64,
    },
    /// The worker resumed from its checkpoint.
    Resume {
        #[serde(flatten)]
        at: At,
        epoch: usize,
        batch: usize,
    },
    /// The worker was restarted and rejoined the running mesh, continuing from neighbour
    /// `from`'s training state (parameters, x̃, clock and gradient counts).
    Rejoin {
        #[serde(flatten)]
        at: At,
        from: usize,
    },
    /// A lost neighbour came back (restarted) and pairs with this worker again.
    PeerRejoined {
        #[serde(flatten)]
        at: At,
        peer: usize,
    },
    /// Neighbour `by` refused this worker's snapshot (it held non-finite values): not averaged in.
    SnapshotRefused {
        #[serde(flatten)]
        at: At,
        by: usize,
        why: String,
    },
    /// A sketch of the worker's parameters at point `grid` of the common grid of the clock
    /// (`crate::sketch`): the consensus distance is estimated from the workers' sketches.
    Sketch {
        #[serde(flatten)]
        at: At,
        grid: u64,
        values: Vec<f32>,
    },
    /// The worker stopped training.
    End {
        #[serde(flatten)]
        at: At,
        averagings: u64,
        test_loss: f64,
        test_accuracy: f64,
        stop_reason: StopReason,
    },
}

impl MetricEvent {
    pub fn at(&self) -> &At {
        match self {
            MetricEvent::Train { at, .. }
            | MetricEvent::Eval { at, .. }
            | MetricEvent::Exchange { at, .. }
            | MetricEvent::PeerLost { at, .. }
            | MetricEvent::Resume { at, .. }
            | MetricEvent::Rejoin { at, .. }
            | MetricEvent::PeerRejoined { at, .. }
            | MetricEvent::SnapshotRefused { at, .. }
            | MetricEvent::Shard { at, .. }
            | MetricEvent::Sketch { at, .. }
            | MetricEvent::End { at, .. } => at,
        }
    }
}

/// The JSON-lines file of one worker's metric events.
pub struct MetricsLog {
    out: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

impl MetricsLog {
    /// Creates the file, or appends to it when `append` (a resumed worker). A last line cut by a
    /// crash is removed first, so the new records start on a line of their own.
    pub fn open(path: &Path, append: bool) -> anyhow::Result<Self> {
        if append {
            drop_partial_last_line(path)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(MetricsLog {
            out: std::io::BufWriter::new(f),
            path: path.to_path_buf(),
        })
    }

    pub fn record(&mut self, event: &MetricEvent) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, event)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Every event of a metrics file, in order; lines that do not parse (a line cut by a crash)
    /// are skipped.
    pub fn read(path: &Path) -> anyhow::Result<Vec<MetricEvent>> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

/// Truncates a file after its last newline (a record cut by a crash has none).
fn drop_partial_last_line(path: &Path) -> anyhow::Result<()> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(()); // no file yet
    };
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.set_len(keep as u64)
            .with_context(|| format!("truncating the cut last line of {}", path.display()))?;
    }
    Ok(())
}

/// Why a worker stopped training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    GradBudget,
    Epochs,
    MaxSeconds,
    Interrupted,
    /// Another worker reached its stop rule: the run ends for every worker together.
    Elsewhere,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::GradBudget => "the global gradient budget is spent",
            StopReason::Epochs => "the epochs are done",
            StopReason::MaxSeconds => "the wall-time limit is reached",
            StopReason::Interrupted => "interrupted",
            StopReason::Elsewhere => "another worker stopped the run",
        })
    }
}

/// What the gaps between a process's events say about it, asked to be Poisson at some rate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GapStats {
    /// Events.
    pub events: usize,
    /// Events per unit of time over the span observed.
    pub achieved_rate: f64,
    /// Mean gap.
    pub mean_gap: f64,
    /// Standard deviation / mean of the gaps (1 for a Poisson process).
    pub cv: f64,
    /// sup |F_empirical − F_exp(asked rate)| over the gaps (Kolmogorov–Smirnov).
    pub ks: f64,
    /// The KS distance above which exponential gaps of the asked rate are rejected at the 5%
    /// level (1.36 / sqrt(gaps)).
    pub ks_critical: f64,
}

/// One edge of the graph as its owner (the lower rank, which draws its Poisson clock) saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeReport {
    pub owner: usize,
    pub peer: usize,
    /// lambda_ij: exchanges asked per unit of the owner's clock.
    pub asked_rate: f64,
    /// Poisson events that fell due.
    pub fired: u64,
    /// Exchanges started.
    pub exchanges: u64,
    /// Events given up (the owner could not keep up, or had retired).
    pub dropped: u64,
    /// Events still owed at the end.
    pub owed: u64,
    /// The exchanges' start times, as a process (clock units of the owner).
    pub gaps: Option<GapStats>,
}

/// The A²CiD² constants a worker uses and those the achieved rates imply.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constants {
    pub eta: f64,
    pub alpha_tilde: f64,
}

/// What a worker writes at the end (`workers/rank<R>.json`); the launcher builds `summary.json`
/// from these.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerResult {
    pub rank: usize,
    pub grads: u64,
    pub comms: u64,
    pub missed: u64,
    pub failed_exchanges: u64,
    /// NaN (`null`) when no logging window finished.
    #[serde(deserialize_with = "f64_or_nan")]
    pub final_train_loss: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub wall_seconds: f64,
    pub stop_reason: StopReason,
    pub lost_peers: Vec<usize>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub step_seconds: Option<f64>,
    /// Gradients of all workers together as this worker knew them at the end.
    pub known_total_grads: u64,
    pub adapter: String,
    /// Seconds of `wall_seconds` spent evaluating on the test set (training paused).
    #[serde(default)]
    pub eval_seconds: f64,
    /// The worker clock at the end (units of its own gradients).
    #[serde(default)]
    pub tau: f64,
    /// The edges this worker owns.
    #[serde(default)]
    pub edges: Vec<EdgeReport>,
    /// The constants this worker's updates used.
    #[serde(default)]
    pub constants: Option<Constants>,
}

/// The averaged model's evaluation, written by rank 0 after a successful final all-reduce.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AverageResult {
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub workers: usize,
    pub via: String,
}

/// Progress line for the launcher's display (`@progress {json}` on a worker's stdout).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    pub rank: usize,
    pub grads: u64,
    pub target: Option<u64>,
    /// NaN (`null`) before the first logging window.
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    pub comms: u64,
    pub wall: f64,
    pub done: bool,
}

impl Progress {
    pub const PREFIX: &'static str = "@progress ";
}

/// One worker's line in `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSummary {
    pub rank: usize,
    /// Gradients this worker computed.
    pub grads: u64,
    /// Pairwise averagings it completed (all-reduces for `allreduce`).
    pub comms: u64,
    /// NaN (`null`) when unknown (a lost worker without a checkpoint).
    #[serde(deserialize_with = "f64_or_nan")]
    pub final_train_loss: f64,
    /// Test accuracy of this worker's own final model (before the final average); NaN (`null`)
    /// for a lost worker.
    #[serde(deserialize_with = "f64_or_nan")]
    pub test_accuracy: f64,
    pub alive: bool,
    /// Times this worker was restarted and rejoined the run from a neighbour's state.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rejoins: u32,
}

/// Reads a float that JSON wrote as `null` because it was not finite (serde_json writes NaN and
/// infinities as `null`): `null` reads back as NaN.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    /// Averagings asked and achieved (pairwise methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<RateSummary>,
    /// The consensus distance estimated from the workers' sketches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consensus: Option<ConsensusSummary>,
    /// `--partition` of the training set.
    #[serde(default = "iid")]
    pub partition: String,
    /// `--worker-speeds` (emulated).
    #[serde(default = "homogeneous")]
    pub worker_speeds: String,
    /// When the workers' own models first reached each `--target-accuracy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_to_accuracy: Vec<TargetTime>,
}

/// When a target accuracy was first reached (`None`s: never, within the run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetTime {
    /// The target test accuracy (fraction).
    pub target: f64,
    /// Training wall time (seconds, evaluation pauses excluded) when the workers' mean first
    /// reached it.
    pub train_wall: Option<f64>,
    /// Gradients of all workers together by then.
    pub grads: Option<u64>,
    /// The mean accuracy at that moment.
    pub accuracy: Option<f64>,
}

fn iid() -> String {
    "iid".into()
}

fn homogeneous() -> String {
    "homogeneous".into()
}

/// The consensus distance (1/n) Σ‖x_i − x̄‖² of a run, estimated from sketches
/// (`crate::sketch`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsensusSummary {
    /// Grid points every worker sketched.
    pub points: usize,
    /// Mean over the grid points in the second half of the run (by clock), with its standard
    /// error.
    pub second_half: crate::sketch::Estimate,
    /// The last grid point's estimate.
    pub last: crate::sketch::Estimate,
}

/// How much averaging a run asked for and how much happened (docs/algorithm.md §1: the constants
/// are only right if the exchanges happen at the asked rates).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateSummary {
    /// `rate_com`: averagings asked per worker per gradient.
    pub asked_rate: f64,
    /// Averagings per gradient, all workers together.
    pub achieved_rate: f64,
    /// Averagings per gradient of each worker, by rank.
    pub achieved_rate_per_worker: Vec<f64>,
    /// Every edge, as its owner saw it.
    pub edges: Vec<EdgeReport>,
    /// eta and alpha_tilde the workers used (from the asked rates) …
    pub constants_in_use: Option<Constants>,
    /// … and those the achieved per-edge rates imply (`None` if an edge saw no exchange and the
    /// rest of the graph fell apart).
    pub constants_implied: Option<Constants>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_float_that_was_not_finite_reads_back_as_nan() {
        // A worker's first progress line comes before any loss: serde_json writes NaN as null.
        let p = Progress {
            rank: 2,
            grads: 0,
            target: None,
            loss: f64::NAN,
            comms: 0,
            wall: 0.0,
            done: false,
        };
        let line = serde_json::to_string(&p).unwrap();
        assert!(line.contains("\"loss\":null"), "{line}");
        let back: Progress = serde_json::from_str(&line).unwrap();
        assert!(back.loss.is_nan() && back.rank == 2);
        let w = WorkerSummary {
            rank: 1,
            grads: 5,
            comms: 0,
            final_train_loss: f64::NAN,
            test_accuracy: f64::NAN,
            alive: false,
            rejoins: 0,
        };
        let back: WorkerSummary =
            serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert!(back.final_train_loss.is_nan() && back.test_accuracy.is_nan() && !back.alive);
    }

    fn event(step: u64) -> MetricEvent {
        MetricEvent::Resume {
            at: At {
                rank: 0,
                wall: 1.0,
                train_wall: 1.0,
                tau: None,
                step,
            },
            epoch: 0,
            batch: 0,
        }
    }

    #[test]
    fn appending_after_a_cut_line_keeps_every_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rank0.jsonl");
        let mut log = MetricsLog::open(&path, false).unwrap();
        log.record(&event(1)).unwrap();
        log.record(&event(2)).unwrap();
        log.flush().unwrap();
        drop(log);
        // A crash cut the next record half-way.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"event":"resume","rank":0,"wa"#).unwrap();
        drop(f);
        let mut log = MetricsLog::open(&path, true).unwrap();
        log.record(&event(3)).unwrap();
        log.flush().unwrap();
        let steps: Vec<u64> = MetricsLog::read(&path)
            .unwrap()
            .iter()
            .map(|e| e.at().step)
            .collect();
        assert_eq!(steps, [1, 2, 3]);
    }
}
