//! # a2cid-report — plots and the HTML report of run directories
//!
//! **Owns:** the project's one plotting stack and palette ([`plot`], also used by the simulator),
//! reading run directories (their typed metric events and summary), the plots of one or several
//! runs (overlaid, so methods can be compared) and one HTML page that shows them.
//!
//! **Must not touch:** training, the network, GPUs; it builds no summary (the runtime does).
//!
//! Plots: train loss and test accuracy (each worker's own model, every `eval_every` steps) against
//! training wall time and against each worker's gradients, the neighbour disagreement ‖s_i − s_j‖²
//! of every exchange, gradients and averagings per worker. Wall time excludes the evaluation
//! pauses. Each is written as SVG and, where a font is available for the bitmap backend, as PNG.
pub mod plot;

use std::path::{Path, PathBuf};

use a2cid_schema::sketch::{consensus_series, GridSketch};
use a2cid_schema::{MetricEvent, MetricsLog, RunDir, Summary};
use anyhow::Context;

use crate::plot::{Band, BarChart, Chart, LegendPosition, Line, LineChart, YScale};

/// One worker's series.
#[derive(Default, Clone)]
struct WorkerSeries {
    /// (training wall, gradients, train loss)
    train: Vec<(f64, f64, f64)>,
    /// (training wall, gradients, test accuracy in %) of the worker's own model
    eval: Vec<(f64, f64, f64)>,
    /// (training wall, ‖s_i − s_j‖²)
    exchanges: Vec<(f64, f64)>,
    /// Sketches of the parameters at the common grid of the clock.
    sketches: Vec<GridSketch>,
}

struct RunData {
    label: String,
    dir: PathBuf,
    summary: Option<Summary>,
    workers: Vec<WorkerSeries>,
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
            MetricEvent::PeerLost { .. }
            | MetricEvent::Resume { .. }
            | MetricEvent::Shard { .. } => {}
        }
    }
    Ok(s)
}

fn load_run(dir: &Path) -> anyhow::Result<RunData> {
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
    let label = match &summary {
        // Runs of the pairwise methods are told apart by their asked rate too.
        Some(s) => match (&s.rates, s.method.as_str()) {
            (Some(r), "acid" | "gossip") => format!(
                "{} n={} {}, rate {}",
                s.method, s.workers, s.graph, r.asked_rate
            ),
            _ => format!("{} n={} {}", s.method, s.workers, s.graph),
        },
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    Ok(RunData {
        label,
        dir: dir.to_path_buf(),
        summary,
        workers,
    })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One line per worker, coloured by run; the first worker of each run carries the run's label.
fn worker_lines(data: &[RunData], f: &dyn Fn(&WorkerSeries) -> Vec<(f64, f64)>) -> Vec<Line> {
    data.iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.workers.iter().enumerate().map(move |(k, w)| Line {
                label: (k == 0).then(|| r.label.clone()),
                color: i,
                width: 1,
                points: f(w),
            })
        })
        .collect()
}

/// The consensus distance over the clock, estimated from the workers' sketches, one line per run
/// with a band of ± 2 standard errors; `None` when no run logged sketches.
fn consensus_chart(data: &[RunData]) -> Option<LineChart> {
    let mut lines = Vec::new();
    let mut bands = Vec::new();
    for (i, r) in data.iter().enumerate() {
        let sketches: Vec<Vec<GridSketch>> = r.workers.iter().map(|w| w.sketches.clone()).collect();
        let series = consensus_series(&sketches);
        if series.is_empty() {
            continue;
        }
        lines.push(Line::new(
            r.label.clone(),
            i,
            series.iter().map(|p| (p.tau, p.estimate.value)).collect(),
        ));
        bands.push(Band {
            color: i,
            points: series
                .iter()
                .map(|p| {
                    let e = p.estimate;
                    (
                        p.tau,
                        e.value - 2.0 * e.std_error,
                        e.value + 2.0 * e.std_error,
                    )
                })
                .collect(),
        });
    }
    (!lines.is_empty()).then(|| LineChart {
        title: "consensus distance from the workers' sketches (band: ± 2 standard errors)".into(),
        x_desc: "worker clock (gradients per worker)".into(),
        y_desc: "(1/n) Σ ||x_i - x̄||²".into(),
        y_scale: YScale::Log,
        legend: Some(LegendPosition::UpperRight),
        lines,
        bands,
    })
}

/// Renders the plots of `runs` into `out` and writes `out/index.html`. Returns the page's path.
pub fn render(runs: &[PathBuf], out: &Path) -> anyhow::Result<PathBuf> {
    let data: Vec<RunData> = runs
        .iter()
        .map(|d| load_run(d))
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let chart = |title: &str, x: &str, y: &str, y_scale, legend, lines| LineChart {
        title: title.into(),
        x_desc: x.into(),
        y_desc: y.into(),
        y_scale,
        legend: Some(legend),
        lines,
        bands: Vec::new(),
    };
    let (time, grads) = ("training wall time (s)", "gradients computed by the worker");
    let charts = [
        (
            "loss_vs_time",
            chart(
                "train loss against wall time (one line per worker)",
                time,
                "train loss",
                YScale::Log,
                LegendPosition::UpperRight,
                worker_lines(&data, &|w| w.train.iter().map(|p| (p.0, p.2)).collect()),
            ),
        ),
        (
            "loss_vs_grads",
            chart(
                "train loss against gradients (one line per worker)",
                grads,
                "train loss",
                YScale::Log,
                LegendPosition::UpperRight,
                worker_lines(&data, &|w| w.train.iter().map(|p| (p.1, p.2)).collect()),
            ),
        ),
        (
            "accuracy_vs_time",
            chart(
                "test accuracy of each worker's own model against wall time",
                time,
                "test accuracy (%)",
                YScale::Fitted,
                LegendPosition::LowerRight,
                worker_lines(&data, &|w| w.eval.iter().map(|p| (p.0, p.2)).collect()),
            ),
        ),
        (
            "accuracy_vs_grads",
            chart(
                "test accuracy of each worker's own model against gradients",
                grads,
                "test accuracy (%)",
                YScale::Fitted,
                LegendPosition::LowerRight,
                worker_lines(&data, &|w| w.eval.iter().map(|p| (p.1, p.2)).collect()),
            ),
        ),
        (
            "disagreement",
            chart(
                "neighbour disagreement ||s_i - s_j||^2 at each exchange",
                time,
                "||s_i - s_j||^2",
                YScale::Log,
                LegendPosition::UpperRight,
                worker_lines(&data, &|w| w.exchanges.clone()),
            ),
        ),
    ];
    let mut figures = Vec::new();
    if let Some(consensus) = consensus_chart(&data) {
        plot::write_svg_and_png(
            out,
            "consensus",
            (900, 520),
            (1, 1),
            &[Chart::Lines(consensus)],
        )?;
        figures.push((
            "consensus".to_string(),
            "consensus distance (1/n) Σ‖x_i − x̄‖² from the workers' sketches".to_string(),
        ));
    }
    for (name, chart) in charts {
        let title = chart.title.clone();
        plot::write_svg_and_png(out, name, (900, 520), (1, 1), &[Chart::Lines(chart)])?;
        figures.push((name.to_string(), title));
    }
    let ranks = data.iter().map(|r| r.workers.len()).max().unwrap_or(1);
    let counts = |f: fn(&a2cid_schema::WorkerSummary) -> u64| -> Vec<(String, Vec<f64>)> {
        data.iter()
            .map(|r| {
                let per = |k: usize| {
                    r.summary
                        .as_ref()
                        .and_then(|s| s.per_worker.get(k))
                        .map_or(0.0, |w| f(w) as f64)
                };
                (r.label.clone(), (0..ranks).map(per).collect())
            })
            .collect()
    };
    let bars = |title: &str, series| {
        Chart::Bars(BarChart {
            title: title.into(),
            x_desc: "rank".into(),
            groups: (0..ranks).map(|r| r.to_string()).collect(),
            series,
        })
    };
    plot::write_svg_and_png(
        out,
        "counts",
        (1100, 420),
        (1, 2),
        &[
            bars("gradients per worker", counts(|w| w.grads)),
            bars("averagings per worker", counts(|w| w.comms)),
        ],
    )?;
    figures.push((
        "counts".into(),
        "gradients and averagings per worker".into(),
    ));

    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>a2cid report</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style>\
         </head><body><h1>a2cid report</h1><table><tr><th>run</th><th>directory</th><th>method</th>\
         <th>graph</th><th>workers</th><th>dataset</th><th>wall s</th><th>test accuracy</th>\
         <th>test loss</th><th>gradients</th><th>lost workers</th><th>averaged</th></tr>",
    );
    for r in &data {
        let row = match &r.summary {
            Some(s) => {
                let lost: Vec<String> = s
                    .per_worker
                    .iter()
                    .filter(|w| !w.alive)
                    .map(|w| w.rank.to_string())
                    .collect();
                format!(
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.2}%</td>\
                     <td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td>",
                    html_escape(&s.method),
                    html_escape(&s.graph),
                    s.workers,
                    s.dataset,
                    s.wall_seconds,
                    100.0 * s.test_accuracy,
                    s.test_loss,
                    s.total_grads,
                    if lost.is_empty() {
                        "none".into()
                    } else {
                        lost.join(", ")
                    },
                    html_escape(&s.averaged),
                )
            }
            None => "<td colspan=\"10\">no summary.json</td>".into(),
        };
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td>{row}</tr>",
            html_escape(&r.label),
            html_escape(&r.dir.display().to_string()),
        ));
    }
    html.push_str("</table>");
    for (name, title) in &figures {
        html.push_str(&format!(
            "<h2>{}</h2><img src=\"{name}.svg\" alt=\"{}\">",
            html_escape(title),
            html_escape(title)
        ));
    }
    html.push_str("</body></html>\n");
    let index = out.join("index.html");
    a2cid_schema::write_atomic(&index, html.as_bytes())?;
    Ok(index)
}
