//! The report of synthetic run directories: every image of the page is there, the figures for
//! overlaid runs are drawn (one mean line and one band per run, time-to-accuracy bars, shard
//! histograms of the non-iid runs), and every image loads in headless Chromium.
use std::path::{Path, PathBuf};
use std::process::Command;

use a2cid_schema::{At, MetricEvent, MetricsLog, RunDir, StopReason, Summary};
use serde_json::json;

/// One synthetic run's setting.
struct Setting {
    method: &'static str,
    partition: &'static str,
    worker_speeds: &'static str,
    /// Emulated speed per rank.
    speeds: [f64; 4],
    /// `(target, Some((seconds, grads)) if reached)`.
    targets: Vec<(f64, Option<(f64, u64)>)>,
}

fn at(rank: usize, t: f64, step: u64) -> At {
    At {
        rank,
        wall: t,
        train_wall: t,
        tau: Some(step as f64),
        step,
    }
}

/// Writes a run directory of four workers: each logs its shard, then trains at its own pace
/// (loss every 10 of its steps, an evaluation every 50, an exchange every 20, a sketch at grid
/// points 0..4), then ends.
fn write_run(dir: &Path, s: &Setting) {
    let run = RunDir::new(dir);
    std::fs::create_dir_all(run.workers()).unwrap();
    let mut per_worker = Vec::new();
    for rank in 0..4usize {
        let mut log = MetricsLog::open(&run.metrics(rank), false).unwrap();
        let histogram: Vec<u64> = if s.partition == "iid" {
            vec![30; 10]
        } else {
            // Label skew: each worker holds mostly two classes.
            (0..10u64)
                .map(|c| if c / 2 == rank as u64 { 120 } else { c % 3 })
                .collect()
        };
        let rows = histogram.iter().sum::<u64>() as usize;
        log.record(&MetricEvent::Shard {
            at: at(rank, 0.0, 0),
            partition: s.partition.into(),
            rows,
            histogram,
            speed: s.speeds[rank],
        })
        .unwrap();
        // A slower worker takes longer per step; every worker's clock is offset a little so
        // the workers never log at the same times.
        let per_step = 0.01 / s.speeds[rank] * (1.0 + 0.05 * rank as f64);
        let steps = 400u64;
        for step in 1..=steps {
            let t = step as f64 * per_step;
            if step % 10 == 0 {
                log.record(&MetricEvent::Train {
                    at: at(rank, t, step),
                    epoch: (step / 100) as usize,
                    train_loss: 2.0 * (-(step as f64) / 150.0).exp() + 0.02 * rank as f64,
                    train_accuracy: 0.5,
                    lr: 0.05,
                    averagings: step / 20,
                    missed: 0,
                    failed: 0,
                    bytes_sent: 0,
                    bytes_received: 0,
                    global_grads: 4 * step,
                    step_seconds: Some(per_step),
                })
                .unwrap();
            }
            if step % 20 == 0 {
                // Disagreement shrinking over time, with a spike now and then.
                let spike = if step % 140 == 0 { 50.0 } else { 1.0 };
                log.record(&MetricEvent::Exchange {
                    at: at(rank, t, step),
                    peer: (rank + 1) % 4,
                    dist2: spike * 10.0 / step as f64,
                    bytes_sent: 8,
                    bytes_received: 8,
                    seconds: 0.001,
                    snapshot_seconds: 0.0005,
                    initiator: rank % 2 == 0,
                    missed_before: 0,
                })
                .unwrap();
            }
            if step % 80 == 0 {
                let grid = step / 80 - 1;
                log.record(&MetricEvent::Sketch {
                    at: at(rank, t, step),
                    grid,
                    values: (0..16)
                        .map(|j| ((j * 7 + rank * 3) % 5) as f32 / (grid + 1) as f32)
                        .collect(),
                })
                .unwrap();
            }
            if step % 50 == 0 {
                log.record(&MetricEvent::Eval {
                    at: at(rank, t, step),
                    epoch: None,
                    test_loss: 1.0 / step as f64,
                    test_accuracy: 1.0 - 40.0 / (step as f64 + 50.0),
                    averagings: step / 20,
                    global_grads: 4 * step,
                    seconds: 0.01,
                })
                .unwrap();
            }
        }
        log.record(&MetricEvent::End {
            at: at(rank, steps as f64 * per_step, steps),
            averagings: steps / 20,
            test_loss: 0.1,
            test_accuracy: 0.9,
            stop_reason: StopReason::Epochs,
        })
        .unwrap();
        log.flush().unwrap();
        per_worker.push(json!({
            "rank": rank, "grads": steps, "comms": steps / 20, "final_train_loss": 0.05,
            "test_accuracy": 0.9, "alive": true,
        }));
    }
    let summary = json!({
        "method": s.method, "graph": "ring", "dataset": "digits", "model": "mlp",
        "workers": 4, "wall_seconds": 8.0, "test_accuracy": 0.91, "test_loss": 0.3,
        "per_worker": per_worker, "parameters": 1000, "architecture": "64-10",
        "adapter": "none", "epochs": 4, "averaged": "all-reduce over the 4 workers",
        "total_grads": 1600,
        "rates": {
            "asked_rate": 1.0, "achieved_rate": 0.9, "achieved_rate_per_worker": [0.9, 0.9, 0.9, 0.9],
            "edges": [], "constants_in_use": null, "constants_implied": null,
        },
        "partition": s.partition, "worker_speeds": s.worker_speeds,
        "time_to_accuracy": s.targets.iter().map(|(target, reached)| json!({
            "target": target,
            "train_wall": reached.map(|r| r.0),
            "grads": reached.map(|r| r.1),
            "accuracy": reached.map(|_| target + 0.01),
        })).collect::<Vec<_>>(),
    });
    // The file is what the runtime writes: it reads back as the schema's summary.
    let typed: Summary = serde_json::from_value(summary.clone()).expect("a valid summary");
    assert_eq!(typed.partition, s.partition);
    std::fs::write(run.summary(), serde_json::to_vec_pretty(&summary).unwrap()).unwrap();
}

/// The `src` of every `<img>` of a page.
fn image_sources(html: &str) -> Vec<String> {
    html.split("<img ")
        .skip(1)
        .map(|tag| {
            let src = tag.split("src=\"").nth(1).expect("an img without src");
            src[..src.find('"').unwrap()].to_string()
        })
        .collect()
}

/// Checks every image of the page is a non-empty SVG file next to it; returns their names
/// (without `.svg`).
fn check_images(index: &Path) -> Vec<String> {
    let html = std::fs::read_to_string(index).unwrap();
    let dir = index.parent().unwrap();
    image_sources(&html)
        .into_iter()
        .map(|src| {
            let path = dir.join(&src);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{src} on the page but not readable: {e}"));
            assert!(text.starts_with("<svg"), "{src} is not an SVG");
            assert!(text.len() > 1000, "{src} is nearly empty");
            src.strip_suffix(".svg").unwrap().to_string()
        })
        .collect()
}

/// Opens the page in headless Chromium (`scripts/check-report-in-browser.sh`) and returns what the
/// check printed. Fails without Chromium: the page must be shown to load in a real browser.
fn browser_check(report: &Path) -> String {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "no /usr/bin/chromium: this test opens the report in a real browser; install Debian's \
         `chromium` package (as .ci/run does)"
    );
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/check-report-in-browser.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(report)
        .output()
        .expect("running the browser check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the browser check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn skewed() -> Setting {
    Setting {
        method: "acid",
        partition: "dirichlet:0.3",
        worker_speeds: "straggler:2",
        speeds: [1.0, 1.0, 1.0, 0.5],
        targets: vec![
            (0.8, Some((1.25, 1200))),
            (0.9, Some((3.5, 4200))),
            (0.99, None),
        ],
    }
}

fn iid(method: &'static str) -> Setting {
    Setting {
        method,
        partition: "iid",
        worker_speeds: "homogeneous",
        speeds: [1.0; 4],
        targets: vec![(0.8, Some((2.0, 1500))), (0.9, None)],
    }
}

#[test]
fn overlaid_runs_give_one_mean_line_and_band_per_run_and_every_figure_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (
        tmp.path().join("acid-skewed"),
        tmp.path().join("gossip-iid"),
    );
    write_run(&a, &skewed());
    write_run(&b, &iid("gossip"));
    let out = tmp.path().join("report");
    let index = a2cid_report::render(&[a, b], &out).unwrap();

    let figures = check_images(&index);
    for name in [
        "loss_vs_time",
        "loss_vs_grads",
        "accuracy_vs_time",
        "accuracy_vs_grads",
        "time_to_accuracy",
        "disagreement",
        "consensus",
        "shards_0",
        "counts",
    ] {
        assert!(
            figures.iter().any(|f| f == name),
            "{name} missing: {figures:?}"
        );
    }
    // Only the non-iid run's shards are drawn.
    assert!(!figures.iter().any(|f| f == "shards_1"), "{figures:?}");

    let label_a = "acid, ring, n=4, dirichlet:0.3, speeds straggler:2, rate 1";
    let label_b = "gossip, ring, n=4, iid, rate 1";
    let svg = |name: &str| std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
    for name in [
        "loss_vs_time",
        "loss_vs_grads",
        "accuracy_vs_time",
        "accuracy_vs_grads",
    ] {
        let s = svg(name);
        // Per run: one mean line and its legend mark (not one line per worker), one band.
        for hex in ["#D62728", "#1F77B4"] {
            let strokes = s.matches(&format!("stroke=\"{hex}\"")).count();
            assert_eq!(
                strokes, 2,
                "{name} {hex}: the mean line and its legend mark"
            );
        }
        assert_eq!(s.matches("<polygon").count(), 2, "{name}: one band per run");
        assert!(s.contains(label_a) && s.contains(label_b), "{name}: legend");
    }
    // The rolling median: one line per run, named with its window.
    let s = svg("disagreement");
    assert_eq!(s.matches("(window 9)").count(), 2, "{s}");

    // Time to accuracy: run a reached 80% and 90% (two bars per panel), run b 80% only; the
    // legend below each panel marks each run once more.
    let s = svg("time_to_accuracy");
    assert_eq!(rects(&s, "#D62728"), 2 * 2 + 2);
    assert_eq!(rects(&s, "#1F77B4"), 2 + 2);
    for group in ["80%", "90%", "99%"] {
        assert!(s.contains(group), "{group} on the axis");
    }

    // The shards: four ranks' classes stacked, a bar segment per non-empty class.
    let s = svg("shards_0");
    assert!(s.contains("dirichlet:0.3") && s.contains(label_a), "title");
    assert!(s.contains("class 9"), "every class in the legend");
    let segments: usize = (0..4u64)
        .map(|r| (0..10u64).filter(|&c| c / 2 == r || c % 3 != 0).count())
        .sum();
    let drawn: usize = plot_colors().iter().map(|hex| rects(&s, hex)).sum();
    assert_eq!(
        drawn,
        segments + 10,
        "bar segments and one legend mark per class"
    );

    let html = std::fs::read_to_string(&index).unwrap();
    for text in [
        "<th>partition</th>",
        "<th>speeds</th>",
        "<th>time to target</th>",
        "80%: 1.25 s / 1,200 grads",
        "90%: 3.50 s / 4,200 grads",
        "99%: not reached",
        "90%: not reached",
        "straggler:2",
        "rank 3: 0.5×",
    ] {
        assert!(html.contains(text), "{text} missing from the page");
    }

    let out = browser_check(&out);
    assert!(
        out.contains(&format!("all {} images loaded", figures.len())),
        "{out}"
    );
}

#[test]
fn with_only_iid_runs_the_first_runs_shards_are_drawn() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("one"), tmp.path().join("two"));
    write_run(&a, &iid("acid"));
    write_run(&b, &iid("acid"));
    let out = tmp.path().join("report");
    let index = a2cid_report::render(&[a, b], &out).unwrap();
    let figures = check_images(&index);
    assert!(figures.iter().any(|f| f == "shards_0"), "{figures:?}");
    assert!(!figures.iter().any(|f| f == "shards_1"), "{figures:?}");
    // Same setting twice: the folders tell the runs apart in the legends; no speeds listed.
    let html = std::fs::read_to_string(&index).unwrap();
    assert!(html.contains("acid, ring, n=4, iid, rate 1 [one]"));
    assert!(html.contains("acid, ring, n=4, iid, rate 1 [two]"));
    assert!(!html.contains("Emulated speeds"));
    browser_check(&out);
}

/// Filled rectangles (bars, legend marks) of one colour in an SVG.
fn rects(svg: &str, hex: &str) -> usize {
    svg.lines()
        .filter(|l| l.trim_start().starts_with("<rect") && l.contains(&format!("fill=\"{hex}\"")))
        .count()
}

/// The palette's colours as they are written in SVG.
fn plot_colors() -> Vec<String> {
    a2cid_report::plot::PALETTE
        .iter()
        .map(|c| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2))
        .collect()
}
