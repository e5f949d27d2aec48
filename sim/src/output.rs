//! What a simulation leaves behind: the per-run summary, the time series as CSV and JSON lines,
//! and SVG plots (one per run, and one comparing runs side by side).

use std::io::Write;
use std::path::Path;

use a2cid_report::plot::{self, Chart, LegendPosition, Line, LineChart, YScale};
use anyhow::Context;
use serde::Serialize;

use crate::runner::{Sample, SimOutcome};

/// The final summary of one run (`--json` prints it; `summary.json` holds it).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub label: String,
    pub problem: String,
    pub graph: String,
    pub method: String,
    pub workers: usize,
    pub rate_com: f64,
    pub seed: u64,
    pub time: f64,
    /// Consensus distance (1/n) Σ ||x_i - x̄||², time-averaged over the second half of the run.
    pub consensus_distance: f64,
    /// Mean over workers of the global loss f(x_i), time-averaged over the second half.
    pub loss: f64,
    /// f(x̄) at the average model, time-averaged over the second half.
    pub loss_of_average_model: f64,
    /// `loss` minus the optimal value f*, when f* is known.
    pub excess_loss: Option<f64>,
    pub optimal_loss: Option<f64>,
    pub final_consensus_distance: f64,
    pub final_loss: f64,
    pub gradients: u64,
    pub averagings: u64,
    pub allreduce_steps: u64,
    pub min_gradients_per_worker: u64,
    pub max_gradients_per_worker: u64,
    /// Mean ||s_i - s_j||² over all pairwise averagings.
    pub mean_pair_distance: f64,
    pub eta: f64,
    pub alpha: f64,
    pub alpha_tilde: f64,
    pub wall_seconds: f64,
    /// lasgd: local steps between two synchronisations.
    pub sync_every: Option<usize>,
    /// lasgd: the outer optimizer (`nesterov:LR,MOMENTUM`; with it the run is DiLoCo).
    pub outer: Option<String>,
    /// lasgd: all-reduce synchronisations; relaysum: relay rounds.
    pub syncs: u64,
    /// gossip, acid: how the exchanges travelled (`none`, `fp16`, `lowrank:R`).
    pub compress: String,
    /// Messages and bytes each worker sent (mean over workers; f32 models unless compressed).
    pub messages_per_worker: f64,
    pub bytes_per_worker: f64,
    /// Model problem: test-split accuracy of the average model x̄ at the end of the run.
    pub test_accuracy: Option<f64>,
    /// Model problem: test-split accuracy of each worker's own model at the end, averaged.
    pub mean_worker_test_accuracy: Option<f64>,
}

/// Mean of a quantity over the samples in the second half of the run, [T/2, T].
pub fn second_half_mean(samples: &[Sample], horizon: f64, value: impl Fn(&Sample) -> f64) -> f64 {
    let tail: Vec<f64> = samples
        .iter()
        .filter(|s| s.time >= horizon / 2.0)
        .map(value)
        .collect();
    if tail.is_empty() {
        f64::NAN
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    }
}

/// Writes `series.csv`, `series.jsonl`, `summary.json` and `plot.svg` into `dir`.
pub fn write_run(dir: &Path, summary: &RunSummary, outcome: &SimOutcome) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let csv_path = dir.join("series.csv");
    let mut csv = std::io::BufWriter::new(
        std::fs::File::create(&csv_path)
            .with_context(|| format!("creating {}", csv_path.display()))?,
    );
    writeln!(
        csv,
        "time,mean_worker_loss,average_model_loss,consensus_distance,gradients,averagings"
    )?;
    for s in &outcome.samples {
        writeln!(
            csv,
            "{},{},{},{},{},{}",
            s.time,
            s.mean_worker_loss,
            s.average_model_loss,
            s.consensus_distance,
            s.gradients,
            s.averagings
        )?;
    }
    csv.flush()?;
    let jsonl_path = dir.join("series.jsonl");
    let mut jsonl = std::io::BufWriter::new(
        std::fs::File::create(&jsonl_path)
            .with_context(|| format!("creating {}", jsonl_path.display()))?,
    );
    for s in &outcome.samples {
        writeln!(jsonl, "{}", serde_json::to_string(s)?)?;
    }
    jsonl.flush()?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(summary)? + "\n",
    )?;
    let curve = Curve {
        label: summary.label.clone(),
        samples: outcome.samples.clone(),
        optimal_loss: outcome.optimal_loss,
    };
    plot_panels(
        &dir.join("plot.svg"),
        &[Panel {
            title: summary.label.clone(),
            curves: vec![curve],
        }],
    )
}

/// One line in a plot.
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    pub samples: Vec<Sample>,
    pub optimal_loss: Option<f64>,
}

/// One column of a plot: consensus distance on top, (excess) loss below, log scales.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub curves: Vec<Curve>,
}

/// Draws panels side by side into an SVG file (or a PNG if `path` ends in `.png`), with the
/// project's plotting stack: consensus distance on top, (excess) loss below, log scales.
pub fn plot_panels(path: &Path, panels: &[Panel]) -> anyhow::Result<()> {
    let cols = panels.len().max(1);
    let line = |k: usize, c: &Curve, value: &dyn Fn(&Sample, Option<f64>) -> f64| Line {
        label: Some(c.label.clone()),
        color: k,
        width: 2,
        points: c
            .samples
            .iter()
            .map(|s| (s.time, value(s, c.optimal_loss)))
            .collect(),
    };
    let consensus = |s: &Sample, _: Option<f64>| s.consensus_distance;
    let excess = |s: &Sample, optimum: Option<f64>| s.mean_worker_loss - optimum.unwrap_or(0.0);
    let mut top = Vec::new();
    let mut bottom = Vec::new();
    for panel in panels {
        let loss_name = if panel.curves.iter().all(|c| c.optimal_loss.is_some()) {
            "mean worker loss - f*"
        } else {
            "mean worker loss"
        };
        let chart = |title: &str, y: &str, f: &dyn Fn(&Sample, Option<f64>) -> f64, legend| {
            Chart::Lines(LineChart {
                title: title.into(),
                x_desc: "time (gradients per worker)".into(),
                y_desc: y.into(),
                y_scale: YScale::Log,
                legend,
                bands: Vec::new(),
                lines: panel
                    .curves
                    .iter()
                    .enumerate()
                    .map(|(k, c)| line(k, c, f))
                    .collect(),
            })
        };
        top.push(chart(&panel.title, "consensus distance", &consensus, None));
        bottom.push(chart(
            "",
            loss_name,
            &excess,
            Some(LegendPosition::UpperRight),
        ));
    }
    top.extend(bottom);
    plot::write_figure(path, (420 * cols as u32, 640), (2, cols), &top)
}
