//! # a2cid-report — plots and the HTML report of run directories
//!
//! **Owns:** the project's one plotting stack and palette ([`plot`], also used by the simulator),
//! reading run directories (their typed metric events and summary), the plots of one or several
//! runs (overlaid, so methods can be compared) and one HTML page that shows them.
//!
//! **Must not touch:** training, the network, GPUs; it builds no summary (the runtime does).
//!
//! Every run takes one palette colour in every figure; its label names the method, graph, worker
//! count and partition (plus the emulated speeds when not homogeneous and the asked rate of the
//! pairwise methods). The page holds, after a table of the runs (with each one's time to every
//! target accuracy):
//! - train loss, and test accuracy of the workers' own models (every `eval_every` steps), against
//!   training wall time and against each worker's gradients: per run the mean over workers as a
//!   line and their minimum-to-maximum range as a band. The workers log at different x values, so
//!   each worker's series is first resampled onto one grid ([`series::envelope`]: linear for the
//!   loss, the last value held for the accuracy, only the workers covering a grid point enter it);
//! - time (and gradients) to each target accuracy, as bars: one group per target, one bar per run,
//!   no bar where a run did not reach it;
//! - the neighbour disagreement ‖s_i − s_j‖² of the exchanges, as a rolling median over all of a
//!   run's exchanges in time order ([`series::rolling_median`]), one line per run;
//! - the consensus distance over the clock, estimated from the workers' sketches;
//! - the classes in each worker's shard (stacked bars per rank) of every run with a non-iid
//!   partition, or of the first run when all are iid, with the workers' emulated speeds;
//! - gradients and averagings per worker.
//!
//! Wall time excludes the evaluation pauses. Each figure is written as SVG (which the page shows)
//! and, where a font is available for the bitmap backend, as PNG.
mod figures;
mod load;
pub mod plot;
pub mod series;

use std::path::{Path, PathBuf};

use a2cid_schema::Summary;
use anyhow::Context;

use crate::load::RunData;
use crate::plot::Chart;

/// One figure of the page: its file name (without `.svg`), heading and the notes under it.
struct Figure {
    name: String,
    title: String,
    notes: Vec<String>,
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `4200` → `4,200`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// "90%: 12.3 s / 4,200 grads" per target, or "not reached".
fn time_to_target(s: &Summary) -> String {
    if s.time_to_accuracy.is_empty() {
        return "no target".into();
    }
    s.time_to_accuracy
        .iter()
        .map(|t| {
            let when = match (t.train_wall, t.grads) {
                (Some(w), Some(g)) => format!("{} / {} grads", seconds(w), thousands(g)),
                (Some(w), None) => seconds(w),
                _ => "not reached".into(),
            };
            format!("{}: {when}", figures::target_label(t.target))
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

fn swatch(i: usize) -> String {
    let c = plot::color(i);
    format!(
        "<span class=\"swatch\" style=\"background:#{:02X}{:02X}{:02X}\"></span>",
        c.0, c.1, c.2
    )
}

fn run_table(data: &[RunData]) -> String {
    let mut html = String::from(
        "<table><tr><th>run</th><th>directory</th><th>method</th><th>graph</th><th>workers</th>\
         <th>partition</th><th>speeds</th><th>dataset</th><th>wall s</th><th>test accuracy</th>\
         <th>test loss</th><th>gradients</th><th>time to target</th><th>lost workers</th>\
         <th>averaged</th></tr>",
    );
    for (i, r) in data.iter().enumerate() {
        let row = match &r.summary {
            Some(s) => {
                let lost: Vec<String> = s
                    .per_worker
                    .iter()
                    .filter(|w| !w.alive)
                    .map(|w| w.rank.to_string())
                    .collect();
                let rejoined: Vec<String> = s
                    .per_worker
                    .iter()
                    .filter(|w| w.alive && w.rejoins > 0)
                    .map(|w| w.rank.to_string())
                    .collect();
                let rejoined = if rejoined.is_empty() {
                    String::new()
                } else {
                    format!(" (restarted and rejoined: {})", rejoined.join(", "))
                };
                format!(
                    "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{:.1}</td><td>{:.2}%</td><td>{:.4}</td><td>{}</td><td class=\"nowrap\">{}</td>\
                     <td>{}</td><td>{}</td>",
                    html_escape(&s.method),
                    html_escape(&s.graph),
                    s.workers,
                    html_escape(&s.partition),
                    html_escape(&s.worker_speeds),
                    s.dataset,
                    s.wall_seconds,
                    100.0 * s.test_accuracy,
                    s.test_loss,
                    thousands(s.total_grads),
                    time_to_target(s),
                    if lost.is_empty() {
                        format!("none{rejoined}")
                    } else {
                        format!("{}{rejoined}", lost.join(", "))
                    },
                    html_escape(&s.averaged),
                )
            }
            None => "<td colspan=\"13\">no summary.json</td>".into(),
        };
        html.push_str(&format!(
            "<tr><td class=\"label\">{}{}</td><td>{}</td>{row}</tr>",
            swatch(i),
            html_escape(&r.label),
            html_escape(&r.dir.display().to_string()),
        ));
    }
    html.push_str("</table>");
    html
}

/// The workers' emulated speeds of each run where one differs from 1.
fn speed_notes(data: &[RunData]) -> Vec<String> {
    data.iter()
        .filter_map(|r| {
            let speeds: Vec<(usize, f64)> = r
                .workers
                .iter()
                .enumerate()
                .filter_map(|(k, w)| w.shard.as_ref().map(|s| (k, s.speed)))
                .collect();
            speeds.iter().any(|s| s.1 != 1.0).then(|| {
                let list: Vec<String> = speeds
                    .iter()
                    .map(|(k, s)| format!("rank {k}: {s}×"))
                    .collect();
                format!(
                    "Emulated speeds of {}: {}.",
                    html_escape(&r.label),
                    list.join(", ")
                )
            })
        })
        .collect()
}

/// Renders the plots of `runs` into `out` and writes `out/index.html`. Returns the page's path.
pub fn render(runs: &[PathBuf], out: &Path) -> anyhow::Result<PathBuf> {
    let data = load::load_runs(runs)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut figures = Vec::new();
    let mut write = |name: &str,
                     size: (u32, u32),
                     grid: (usize, usize),
                     charts: &[Chart],
                     title: String,
                     notes: Vec<String>|
     -> anyhow::Result<()> {
        plot::write_svg_and_png(out, name, size, grid, charts)?;
        figures.push(Figure {
            name: name.into(),
            title,
            notes,
        });
        Ok(())
    };

    for (name, chart) in figures::training_charts(&data) {
        let title = chart.title.clone();
        write(
            name,
            (900, 520),
            (1, 1),
            &[Chart::Lines(chart)],
            title,
            Vec::new(),
        )?;
    }
    if let Some(charts) = figures::time_to_accuracy_charts(&data) {
        write(
            "time_to_accuracy",
            (1100, 440),
            (1, 2),
            &charts,
            "time to target accuracy".into(),
            vec![
                "The mean over workers of their own models' test accuracy, first at or above \
                 the target; a run without a bar did not reach it (see the table)."
                    .into(),
            ],
        )?;
    }
    if let Some(chart) = figures::disagreement_chart(&data) {
        let title = chart.title.clone();
        write(
            "disagreement",
            (900, 520),
            (1, 1),
            &[Chart::Lines(chart)],
            title,
            vec![
                "Every exchange of the run's workers, merged in time order; the window (in the \
                 legend) is a fortieth of the exchanges, at least 9. Medians that are zero up to \
                 rounding (below 1e-10 of the run's largest) are left out of the log axis."
                    .into(),
            ],
        )?;
    }
    if let Some(chart) = figures::consensus_chart(&data) {
        write(
            "consensus",
            (900, 520),
            (1, 1),
            &[Chart::Lines(chart)],
            "consensus distance (1/n) Σ‖x_i − x̄‖² from the workers' sketches".into(),
            Vec::new(),
        )?;
    }
    let shard_runs = figures::shard_runs(&data);
    let mut speeds = speed_notes(&data);
    for (k, &i) in shard_runs.iter().enumerate() {
        let r = &data[i];
        let rows: Vec<String> = r
            .workers
            .iter()
            .enumerate()
            .filter_map(|(k, w)| w.shard.as_ref().map(|s| format!("rank {k}: {}", s.rows)))
            .collect();
        let mut notes = vec![format!("Training rows per worker: {}.", rows.join(", "))];
        // The speeds go under the last shard figure.
        if k + 1 == shard_runs.len() {
            notes.append(&mut speeds);
        }
        write(
            &format!("shards_{i}"),
            (1000, 480),
            (1, 1),
            &[figures::shard_chart(r)],
            format!(
                "classes of each worker's shard: {} ({})",
                r.label,
                r.partition().unwrap_or_default()
            ),
            notes,
        )?;
    }
    write(
        "counts",
        (1100, 440),
        (1, 2),
        &figures::count_charts(&data),
        "gradients and averagings per worker".into(),
        speeds,
    )?;

    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>a2cid report</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td.label{text-align:left}\
         td.nowrap{white-space:nowrap}table{font-size:0.9em}\
         .swatch{display:inline-block;width:12px;height:12px;margin-right:6px}\
         img{max-width:100%}p.note{color:#444;max-width:60em}</style>\
         </head><body><h1>a2cid report</h1>",
    );
    html.push_str(&run_table(&data));
    for f in &figures {
        html.push_str(&format!(
            "<h2>{}</h2><img src=\"{}.svg\" alt=\"{}\">",
            html_escape(&f.title),
            f.name,
            html_escape(&f.title)
        ));
        for note in &f.notes {
            html.push_str(&format!("<p class=\"note\">{note}</p>"));
        }
    }
    html.push_str("</body></html>\n");
    let index = out.join("index.html");
    a2cid_schema::write_atomic(&index, html.as_bytes())?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_in_the_table() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(4200), "4,200");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(figures::target_label(0.9), "90%");
        assert_eq!(figures::target_label(0.975), "97.5%");
        assert_eq!(seconds(12.34), "12.3 s");
        assert_eq!(seconds(3.626), "3.63 s");
    }
}
