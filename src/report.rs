//! `a2cid report RUN_DIR [RUN_DIR...]`: plots of one or several runs (overlaid, so methods can be
//! compared) and one HTML page that shows them.
//!
//! Plots: train loss and test accuracy (each worker's own model, every `eval_every` steps) against
//! training wall time and against each worker's gradients, the neighbour disagreement ‖s_i − s_j‖²
//! of every exchange, gradients and averagings per worker. Wall time excludes the evaluation
//! pauses. Each is written
//! as SVG and, where a font is available for the bitmap backend, as PNG.
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Run directories (of `a2cid run` or `a2cid worker`); several are overlaid.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Output folder [default: RUN_DIR/report for one run, else report-<unix time>].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One worker's series.
#[derive(Default, Clone)]
struct WorkerSeries {
    /// (wall, gradients, train loss)
    train: Vec<(f64, f64, f64)>,
    /// (wall, gradients, test accuracy in %) of the worker's own model
    eval: Vec<(f64, f64, f64)>,
    /// (wall, ‖s_i − s_j‖²)
    exchanges: Vec<(f64, f64)>,
}

struct RunData {
    label: String,
    dir: PathBuf,
    summary: Option<Value>,
    workers: Vec<WorkerSeries>,
}

fn read_series(path: &Path) -> anyhow::Result<WorkerSeries> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut s = WorkerSeries::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue; // a line cut by a crash
        };
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        // Training time: evaluation pauses excluded where the worker logged them.
        let wall = f("train_wall").or(f("wall"));
        match v.get("event").and_then(Value::as_str) {
            Some("train") => {
                if let (Some(w), Some(g), Some(l)) =
                    (wall, f("step").or(f("grads")), f("train_loss"))
                {
                    s.train.push((w, g, l));
                }
            }
            // `eval` (workers), `end` (a worker's last own evaluation), `epoch` (single worker).
            Some("eval" | "end" | "epoch") => {
                if let (Some(w), Some(g), Some(a)) = (wall, f("step"), f("test_accuracy")) {
                    if s.eval.last().is_none_or(|p| p.1 < g) {
                        s.eval.push((w, g, 100.0 * a));
                    }
                }
            }
            Some("exchange") => {
                if let (Some(w), Some(d)) = (wall, f("dist2")) {
                    s.exchanges.push((w, d));
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

fn load_run(dir: &Path) -> anyhow::Result<RunData> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a run directory", dir.display());
    }
    let summary: Option<Value> = std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let mut workers = Vec::new();
    let wdir = dir.join("workers");
    if wdir.is_dir() {
        let mut rank = 0;
        loop {
            let p = wdir.join(format!("rank{rank}.jsonl"));
            if !p.exists() {
                break;
            }
            workers.push(read_series(&p)?);
            rank += 1;
        }
    } else if dir.join("metrics.jsonl").exists() {
        workers.push(read_series(&dir.join("metrics.jsonl"))?);
    }
    if workers.is_empty() {
        anyhow::bail!(
            "{} holds no metrics (workers/rank*.jsonl or metrics.jsonl): is it a run directory?",
            dir.display()
        );
    }
    let label = match &summary {
        Some(s) => format!(
            "{} n={} {}",
            s["method"].as_str().unwrap_or("?"),
            s["workers"],
            s["graph"].as_str().unwrap_or("")
        ),
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

const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(0, 0, 0),
];

struct Line {
    run: usize,
    first_of_run: bool,
    points: Vec<(f64, f64)>,
}

struct LineChart<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    log_y: bool,
    /// Linear y axis fitted to the data (not from 0).
    tight_y: bool,
    legend: SeriesLabelPosition,
    lines: Vec<Line>,
    labels: Vec<String>,
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e:?}")
}

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    c: &LineChart,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let pts = c.lines.iter().flat_map(|l| l.points.iter());
    let x_max = pts.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let ys: Vec<f64> = pts
        .map(|p| p.1)
        .filter(|v| v.is_finite() && (!c.log_y || *v > 0.0))
        .collect();
    let y_min = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let y_max = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (y_min, y_max) = if ys.is_empty() {
        (1e-3, 1.0)
    } else if c.log_y {
        (y_min * 0.8, y_max * 1.25)
    } else if c.tight_y {
        let pad = 0.05 * (y_max - y_min).max(1e-6);
        (y_min - pad, y_max + pad)
    } else {
        (y_min.min(0.0), y_max * 1.1 + 1e-9)
    };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(c.title, ("sans-serif", 18))
        .margin(10)
        .margin_right(24)
        .x_label_area_size(36)
        .y_label_area_size(70);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(c.x_desc)
                .y_desc(c.y_desc)
                .max_light_lines(0)
                .y_label_formatter(&|v| {
                    if (0.01..1000.0).contains(&v.abs()) {
                        format!("{v:.2}")
                    } else {
                        format!("{v:.1e}")
                    }
                })
                .draw()
                .map_err(plot_err)?;
            for l in &c.lines {
                let color = COLORS[l.run % COLORS.len()];
                let pts: Vec<(f64, f64)> = l
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.1.is_finite() && (!c.log_y || p.1 > 0.0))
                    .collect();
                let series = chart
                    .draw_series(LineSeries::new(pts, color.mix(0.8).stroke_width(1)))
                    .map_err(plot_err)?;
                if l.first_of_run {
                    let label = c.labels[l.run].clone();
                    series.label(label).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                }
            }
            chart
                .configure_series_labels()
                .position(c.legend.clone())
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }};
    }
    if c.log_y {
        finish!(builder
            .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
            .map_err(plot_err)?);
    } else {
        finish!(builder
            .build_cartesian_2d(0.0..x_max, y_min..y_max)
            .map_err(plot_err)?);
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Bars: for each rank, one bar per run (gradients, or averagings).
fn draw_bars<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    runs: &[RunData],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let panels = root.split_evenly((1, 2));
    let ranks = runs.iter().map(|r| r.workers.len()).max().unwrap_or(1);
    for (panel, (key, title)) in panels.iter().zip([
        ("grads", "gradients per worker"),
        ("comms", "averagings per worker"),
    ]) {
        let values: Vec<Vec<f64>> = runs
            .iter()
            .map(|r| {
                (0..ranks)
                    .map(|k| {
                        r.summary
                            .as_ref()
                            .and_then(|s| s["per_worker"].get(k))
                            .and_then(|w| w[key].as_f64())
                            .unwrap_or(0.0)
                    })
                    .collect()
            })
            .collect();
        let y_max = values.iter().flatten().copied().fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(ranks as f64 - 0.5), 0.0..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("rank")
            .x_labels(ranks.min(16))
            .x_label_formatter(&|v| format!("{}", v.round() as i64))
            .max_light_lines(0)
            .draw()
            .map_err(plot_err)?;
        let width = 0.8 / runs.len() as f64;
        for (i, (run, vals)) in runs.iter().zip(&values).enumerate() {
            let color = COLORS[i % COLORS.len()];
            let series = chart
                .draw_series(vals.iter().enumerate().map(|(k, &v)| {
                    let x0 = k as f64 - 0.4 + i as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled())
                }))
                .map_err(plot_err)?;
            series.label(run.label.clone()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
            });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Writes `name.svg`, and `name.png` when the bitmap backend can render text here (it needs a
/// system font; without one the PNG is skipped and the page shows the SVG).
fn write_both(
    out: &Path,
    name: &str,
    size: (u32, u32),
    draw_svg: &dyn Fn(DrawingArea<SVGBackend, plotters::coord::Shift>) -> anyhow::Result<()>,
    draw_png: &dyn Fn(DrawingArea<BitMapBackend, plotters::coord::Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let svg = out.join(format!("{name}.svg"));
    draw_svg(SVGBackend::new(&svg, size).into_drawing_area())
        .with_context(|| format!("writing {}", svg.display()))?;
    let png = out.join(format!("{name}.png"));
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        draw_png(BitMapBackend::new(&png, size).into_drawing_area())
    }));
    match ok {
        Ok(Ok(())) => Ok(true),
        _ => {
            let _ = std::fs::remove_file(&png);
            tracing::debug!("{name}.png skipped (no font for the bitmap backend)");
            Ok(false)
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the plots of `runs` into `out` and writes `out/index.html`. Returns the page's path.
pub fn render(runs: &[PathBuf], out: &Path) -> anyhow::Result<PathBuf> {
    let data: Vec<RunData> = runs
        .iter()
        .map(|d| load_run(d))
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let labels: Vec<String> = data.iter().map(|r| r.label.clone()).collect();
    let lines = |f: &dyn Fn(&WorkerSeries) -> Vec<(f64, f64)>| -> Vec<Line> {
        data.iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.workers.iter().enumerate().map(move |(k, w)| Line {
                    run: i,
                    first_of_run: k == 0,
                    points: f(w),
                })
            })
            .collect()
    };
    let charts = [
        (
            "loss_vs_time",
            LineChart {
                title: "train loss against wall time (one line per worker)",
                x_desc: "training wall time (s)",
                y_desc: "train loss",
                log_y: true,
                tight_y: false,
                legend: SeriesLabelPosition::UpperRight,
                lines: lines(&|w| w.train.iter().map(|p| (p.0, p.2)).collect()),
                labels: labels.clone(),
            },
        ),
        (
            "loss_vs_grads",
            LineChart {
                title: "train loss against gradients (one line per worker)",
                x_desc: "gradients computed by the worker",
                y_desc: "train loss",
                log_y: true,
                tight_y: false,
                legend: SeriesLabelPosition::UpperRight,
                lines: lines(&|w| w.train.iter().map(|p| (p.1, p.2)).collect()),
                labels: labels.clone(),
            },
        ),
        (
            "accuracy_vs_time",
            LineChart {
                title: "test accuracy of each worker's own model against wall time",
                x_desc: "training wall time (s)",
                y_desc: "test accuracy (%)",
                log_y: false,
                tight_y: true,
                legend: SeriesLabelPosition::LowerRight,
                lines: lines(&|w| w.eval.iter().map(|p| (p.0, p.2)).collect()),
                labels: labels.clone(),
            },
        ),
        (
            "accuracy_vs_grads",
            LineChart {
                title: "test accuracy of each worker's own model against gradients",
                x_desc: "gradients computed by the worker",
                y_desc: "test accuracy (%)",
                log_y: false,
                tight_y: true,
                legend: SeriesLabelPosition::LowerRight,
                lines: lines(&|w| w.eval.iter().map(|p| (p.1, p.2)).collect()),
                labels: labels.clone(),
            },
        ),
        (
            "disagreement",
            LineChart {
                title: "neighbour disagreement ||s_i - s_j||^2 at each exchange",
                x_desc: "training wall time (s)",
                y_desc: "||s_i - s_j||^2",
                log_y: true,
                tight_y: false,
                legend: SeriesLabelPosition::UpperRight,
                lines: lines(&|w| w.exchanges.clone()),
                labels: labels.clone(),
            },
        ),
    ];
    let mut figures = Vec::new();
    for (name, chart) in &charts {
        let png = write_both(out, name, (900, 520), &|a| draw_lines(a, chart), &|a| {
            draw_lines(a, chart)
        })?;
        figures.push((name.to_string(), chart.title.to_string(), png));
    }
    let png = write_both(out, "counts", (1100, 420), &|a| draw_bars(a, &data), &|a| {
        draw_bars(a, &data)
    })?;
    figures.push((
        "counts".into(),
        "gradients and averagings per worker".into(),
        png,
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
        let s = r.summary.clone().unwrap_or(Value::Null);
        let lost: Vec<String> = s["per_worker"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|w| w["alive"] == Value::Bool(false))
                    .map(|w| w["rank"].to_string())
                    .collect()
            })
            .unwrap_or_default();
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td>\
             <td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&r.label),
            html_escape(&r.dir.display().to_string()),
            s["method"].as_str().unwrap_or("-"),
            s["graph"].as_str().unwrap_or("-"),
            s["workers"],
            s["dataset"].as_str().unwrap_or("-"),
            s["wall_seconds"].as_f64().unwrap_or(f64::NAN),
            s["test_accuracy"]
                .as_f64()
                .map(|a| format!("{:.2}%", 100.0 * a))
                .unwrap_or("-".into()),
            s["test_loss"].as_f64().unwrap_or(f64::NAN),
            s["total_grads"],
            if lost.is_empty() {
                "none".into()
            } else {
                lost.join(", ")
            },
            html_escape(s["averaged"].as_str().unwrap_or("-")),
        ));
    }
    html.push_str("</table>");
    for (name, title, _) in &figures {
        html.push_str(&format!(
            "<h2>{}</h2><img src=\"{name}.svg\" alt=\"{}\">",
            html_escape(title),
            html_escape(title)
        ));
    }
    html.push_str("</body></html>\n");
    let index = out.join("index.html");
    crate::train::write_atomic(&index, html.as_bytes())?;
    Ok(index)
}

/// `a2cid report`: builds the summary of a worker-only run directory if it has none (e.g. after
/// `srun a2cid worker ...`), then renders.
pub fn run_report(args: &ReportArgs) -> anyhow::Result<()> {
    for dir in &args.runs {
        if !dir.join("summary.json").exists() && dir.join("workers").is_dir() {
            let cfg_path = dir.join("config.toml");
            let text = std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("reading {}", cfg_path.display()))?;
            let cfg: crate::train::RunConfig = toml::from_str(&text)
                .with_context(|| format!("{} is not valid", cfg_path.display()))?;
            crate::runtime::gather(dir, &cfg, None)?;
            println!("wrote {}", dir.join("summary.json").display());
        }
    }
    let out = match &args.out {
        Some(o) => o.clone(),
        None if args.runs.len() == 1 => args.runs[0].join("report"),
        None => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(format!("report-{t}"))
        }
    };
    let index = render(&args.runs, &out)?;
    println!("report: {}", index.display());
    Ok(())
}
