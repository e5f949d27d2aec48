//! The report's charts, built from the runs' data; run i takes palette colour i in every one.
use a2cid_schema::sketch::{consensus_series, GridSketch};
use a2cid_schema::WorkerSummary;

use crate::load::{RunData, WorkerSeries};
use crate::plot::{Band, BarChart, Chart, LegendPosition, Line, LineChart, YScale};
use crate::series::{envelope, median_window, rolling_median, thin, Interp};

/// Grid points of the mean-and-range curves.
pub(crate) const GRID_POINTS: usize = 120;
/// Points drawn of a rolling median at most.
const MEDIAN_POINTS: usize = 800;
/// A rolling median of the disagreement below this fraction of the run's largest is zero up to
/// rounding.
pub(crate) const ZERO_DISAGREEMENT: f64 = 1e-10;

pub(crate) const TIME: &str = "training wall time (s)";
pub(crate) const GRADS: &str = "gradients computed by the worker";

/// Per run, the mean over workers (line, with the run's label) and the minimum-to-maximum range
/// over workers (band) of `f` resampled onto one grid.
pub(crate) fn envelope_chart(
    data: &[RunData],
    (title, x_desc, y_desc): (&str, &str, &str),
    y_scale: YScale,
    legend: LegendPosition,
    interp: Interp,
    f: &dyn Fn(&WorkerSeries) -> Vec<(f64, f64)>,
) -> LineChart {
    let mut lines = Vec::new();
    let mut bands = Vec::new();
    for (i, r) in data.iter().enumerate() {
        let series: Vec<Vec<(f64, f64)>> = r.workers.iter().map(f).collect();
        let env = envelope(&series, GRID_POINTS, interp);
        if env.is_empty() {
            continue;
        }
        lines.push(Line::new(
            r.label.clone(),
            i,
            env.iter().map(|p| (p.x, p.mean)).collect(),
        ));
        if r.workers.len() > 1 {
            bands.push(Band {
                color: i,
                points: env.iter().map(|p| (p.x, p.min, p.max)).collect(),
            });
        }
    }
    LineChart {
        title: title.into(),
        x_desc: x_desc.into(),
        y_desc: y_desc.into(),
        y_scale,
        legend: Some(legend),
        lines,
        bands,
    }
}

/// The four mean-and-range charts: `(file name, chart)`.
pub(crate) fn training_charts(data: &[RunData]) -> Vec<(&'static str, LineChart)> {
    let loss = "train loss";
    let acc = "test accuracy (%)";
    let range = "line: mean over workers, band: min to max";
    vec![
        (
            "loss_vs_time",
            envelope_chart(
                data,
                (
                    &format!("train loss against wall time ({range})"),
                    TIME,
                    loss,
                ),
                YScale::Log,
                LegendPosition::UpperRight,
                Interp::Linear,
                &|w| w.train.iter().map(|p| (p.0, p.2)).collect(),
            ),
        ),
        (
            "loss_vs_grads",
            envelope_chart(
                data,
                (
                    &format!("train loss against gradients ({range})"),
                    GRADS,
                    loss,
                ),
                YScale::Log,
                LegendPosition::UpperRight,
                Interp::Linear,
                &|w| w.train.iter().map(|p| (p.1, p.2)).collect(),
            ),
        ),
        (
            "accuracy_vs_time",
            envelope_chart(
                data,
                (
                    &format!("test accuracy of the workers' own models ({range})"),
                    TIME,
                    acc,
                ),
                YScale::Fitted,
                LegendPosition::LowerRight,
                Interp::Step,
                &|w| w.eval.iter().map(|p| (p.0, p.2)).collect(),
            ),
        ),
        (
            "accuracy_vs_grads",
            envelope_chart(
                data,
                (
                    &format!("test accuracy of the workers' own models ({range})"),
                    GRADS,
                    acc,
                ),
                YScale::Fitted,
                LegendPosition::LowerRight,
                Interp::Step,
                &|w| w.eval.iter().map(|p| (p.1, p.2)).collect(),
            ),
        ),
    ]
}

/// The neighbour disagreement: every exchange of a run's workers in time order, as a rolling
/// median ([`median_window`]); one line per run. `None` when no run exchanged.
pub(crate) fn disagreement_chart(data: &[RunData]) -> Option<LineChart> {
    let mut lines = Vec::new();
    for (i, r) in data.iter().enumerate() {
        let mut points: Vec<(f64, f64)> = r
            .workers
            .iter()
            .flat_map(|w| w.exchanges.iter().copied())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        if points.is_empty() {
            continue;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let values: Vec<f64> = points.iter().map(|p| p.1).collect();
        let window = median_window(values.len());
        let median: Vec<(f64, f64)> = points
            .iter()
            .zip(rolling_median(&values, window))
            .map(|(p, m)| (p.0, m))
            .collect();
        // A log axis cannot show zero: medians that are zero up to rounding (two snapshots that
        // had not moved since they were averaged) are left out rather than stretching the axis.
        let top = median.iter().map(|p| p.1).fold(0.0, f64::max);
        let median: Vec<(f64, f64)> = median
            .into_iter()
            .filter(|p| p.1 > top * ZERO_DISAGREEMENT)
            .collect();
        lines.push(Line::new(
            format!("{} (window {window})", r.label),
            i,
            thin(&median, MEDIAN_POINTS),
        ));
    }
    (!lines.is_empty()).then(|| LineChart {
        title: "neighbour disagreement ||s_i - s_j||^2: rolling median over each run's exchanges"
            .into(),
        x_desc: TIME.into(),
        y_desc: "||s_i - s_j||^2".into(),
        y_scale: YScale::Log,
        legend: Some(LegendPosition::UpperRight),
        lines,
        bands: Vec::new(),
    })
}

/// The consensus distance over the clock, estimated from the workers' sketches, one line per run
/// with a band of ± 2 standard errors; `None` when no run logged sketches.
pub(crate) fn consensus_chart(data: &[RunData]) -> Option<LineChart> {
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

/// A target accuracy as a percentage label ("90%", "97.5%").
pub(crate) fn target_label(target: f64) -> String {
    let pct = 100.0 * target;
    if (pct - pct.round()).abs() < 1e-9 {
        format!("{pct:.0}%")
    } else {
        format!("{}%", (pct * 1e6).round() / 1e6)
    }
}

/// Every target of any run's summary, ascending.
pub(crate) fn targets(data: &[RunData]) -> Vec<f64> {
    let mut t: Vec<f64> = data
        .iter()
        .filter_map(|r| r.summary.as_ref())
        .flat_map(|s| s.time_to_accuracy.iter().map(|t| t.target))
        .collect();
    t.sort_by(f64::total_cmp);
    t.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    t
}

/// Time and gradients to each target accuracy, side by side: groups = targets, one series per
/// run that had targets; a target a run did not reach has no bar. `None` without targets.
pub(crate) fn time_to_accuracy_charts(data: &[RunData]) -> Option<[Chart; 2]> {
    let targets = targets(data);
    if targets.is_empty() {
        return None;
    }
    // The runs that had targets, each in its own colour.
    let runs: Vec<usize> = (0..data.len())
        .filter(|&i| {
            data[i]
                .summary
                .as_ref()
                .is_some_and(|s| !s.time_to_accuracy.is_empty())
        })
        .collect();
    let series = |value: &dyn Fn(&a2cid_schema::TargetTime) -> Option<f64>| {
        runs.iter()
            .map(|&i| {
                let r = &data[i];
                let per_target = targets
                    .iter()
                    .map(|&t| {
                        r.summary
                            .as_ref()
                            .and_then(|s| {
                                s.time_to_accuracy
                                    .iter()
                                    .find(|x| (x.target - t).abs() < 1e-12)
                            })
                            .and_then(value)
                            .unwrap_or(f64::NAN)
                    })
                    .collect();
                (r.label.clone(), per_target)
            })
            .collect::<Vec<_>>()
    };
    let groups: Vec<String> = targets.iter().map(|&t| target_label(t)).collect();
    let bars = |title: &str, y_desc: &str, series| {
        Chart::Bars(BarChart {
            title: title.into(),
            x_desc: "target test accuracy (mean of the workers' own models)".into(),
            y_desc: y_desc.into(),
            groups: groups.clone(),
            series,
            colors: runs.clone(),
            stacked: false,
        })
    };
    Some([
        bars(
            "training wall time to reach the target (no bar: not reached)",
            "seconds",
            series(&|t| t.train_wall),
        ),
        bars(
            "gradients to reach the target, all workers (no bar: not reached)",
            "gradients",
            series(&|t| t.grads.map(|g| g as f64)),
        ),
    ])
}

/// The runs whose shards are drawn: those with a non-iid partition, else the first; only runs
/// whose workers logged their shard.
pub(crate) fn shard_runs(data: &[RunData]) -> Vec<usize> {
    let logged = |r: &RunData| r.workers.iter().any(|w| w.shard.is_some());
    let skewed: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, r)| logged(r) && r.partition().is_some_and(|p| p != "iid"))
        .map(|(i, _)| i)
        .collect();
    if !skewed.is_empty() {
        return skewed;
    }
    data.iter().position(logged).into_iter().collect()
}

/// The classes of each worker's shard of one run, stacked: groups = ranks, series = classes.
pub(crate) fn shard_chart(r: &RunData) -> Chart {
    let classes = r
        .workers
        .iter()
        .filter_map(|w| w.shard.as_ref().map(|s| s.histogram.len()))
        .max()
        .unwrap_or(0);
    let series = (0..classes)
        .map(|c| {
            let rows = r
                .workers
                .iter()
                .map(|w| {
                    w.shard
                        .as_ref()
                        .and_then(|s| s.histogram.get(c))
                        .map_or(f64::NAN, |&n| n as f64)
                })
                .collect();
            (format!("class {c}"), rows)
        })
        .collect();
    let partition = r.partition().unwrap_or_else(|| "unknown partition".into());
    Chart::Bars(BarChart {
        title: format!("classes of each worker's shard ({partition}): {}", r.label),
        x_desc: "rank".into(),
        y_desc: "training rows".into(),
        groups: (0..r.workers.len()).map(|k| k.to_string()).collect(),
        series,
        colors: Vec::new(),
        stacked: true,
    })
}

/// Gradients and averagings per worker, from the summaries: one series per run.
pub(crate) fn count_charts(data: &[RunData]) -> [Chart; 2] {
    let ranks = data.iter().map(|r| r.workers.len()).max().unwrap_or(1);
    let counts = |f: fn(&WorkerSummary) -> u64| -> Vec<(String, Vec<f64>)> {
        data.iter()
            .map(|r| {
                let per = |k: usize| {
                    r.summary
                        .as_ref()
                        .and_then(|s| s.per_worker.get(k))
                        .map_or(f64::NAN, |w| f(w) as f64)
                };
                (r.label.clone(), (0..ranks).map(per).collect())
            })
            .collect()
    };
    let bars = |title: &str, y_desc: &str, series| {
        Chart::Bars(BarChart {
            title: title.into(),
            x_desc: "rank".into(),
            y_desc: y_desc.into(),
            groups: (0..ranks).map(|r| r.to_string()).collect(),
            series,
            colors: Vec::new(),
            stacked: false,
        })
    };
    [
        bars("gradients per worker", "gradients", counts(|w| w.grads)),
        bars("averagings per worker", "averagings", counts(|w| w.comms)),
    ]
}
