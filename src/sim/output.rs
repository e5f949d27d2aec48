//! What a simulation leaves behind: the per-run summary, the time series as CSV and JSON lines,
//! and SVG plots (one per run, and one comparing runs side by side).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use super::runner::{Sample, SimOutcome};

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

const COLORS: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws panels side by side into an SVG file (or a PNG if `path` ends in `.png`).
pub fn plot_panels(path: &Path, panels: &[Panel]) -> anyhow::Result<()> {
    let size = (420 * panels.len().max(1) as u32, 640);
    let png = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("png"));
    let result = if png {
        draw_panels(BitMapBackend::new(path, size).into_drawing_area(), panels)
    } else {
        draw_panels(SVGBackend::new(path, size).into_drawing_area(), panels)
    };
    result.with_context(|| format!("writing the plot {}", path.display()))
}

fn draw_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    panels: &[Panel],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    let cells = root.split_evenly((2, panels.len().max(1)));
    let (top, bottom) = cells.split_at(panels.len());
    for (col, panel) in panels.iter().enumerate() {
        let consensus = |s: &Sample, _: Option<f64>| s.consensus_distance;
        let excess = |s: &Sample, optimum: Option<f64>| s.mean_worker_loss - optimum.unwrap_or(0.0);
        let loss_name = if panel.curves.iter().all(|c| c.optimal_loss.is_some()) {
            "mean worker loss - f*"
        } else {
            "mean worker loss"
        };
        draw_chart(
            &top[col],
            &panel.title,
            "consensus distance",
            &panel.curves,
            &consensus,
            false,
        )?;
        draw_chart(&bottom[col], "", loss_name, &panel.curves, &excess, true)?;
    }
    root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    Ok(())
}

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_name: &str,
    curves: &[Curve],
    value: &dyn Fn(&Sample, Option<f64>) -> f64,
    legend: bool,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let points: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|c| {
            c.samples
                .iter()
                .map(|s| (s.time, value(s, c.optimal_loss)))
                .filter(|&(_, v)| v > 0.0 && v.is_finite())
                .collect()
        })
        .collect();
    let all = points.iter().flatten();
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let y_min = all.clone().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max);
    let (y_min, y_max) = if y_min.is_finite() && y_max > 0.0 {
        (y_min * 0.8, y_max * 1.25)
    } else {
        (1e-6, 1.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .margin_right(24)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale().base(2.0))
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("time (gradients per worker)")
        .y_desc(y_name)
        .x_labels(6)
        .y_labels(8)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if (0.01..1000.0).contains(v) {
                format!("{v:.2}")
            } else {
                format!("{v:.1e}")
            }
        })
        .max_light_lines(0)
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    for (k, (curve, points)) in curves.iter().zip(points).enumerate() {
        if points.is_empty() {
            continue;
        }
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?
            .label(curve.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    if !legend {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    Ok(())
}
