//! Multi-worker runs end to end: real worker processes of the `a2cid` binary over real loopback TCP
//! on the GPU adapter (lavapipe in CI). 4 workers on a ring train digits with acid; one worker is
//! killed mid-run (acid survives, allreduce stops naming it); a run killed mid-way resumes from its
//! checkpoints; a wrong secret and a different model are refused.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{a2cid, digits_run, free_port, json, text};

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn logs(dir: &Path) -> String {
    let mut s = String::new();
    for r in 0..8 {
        if let Ok(t) = std::fs::read_to_string(dir.join(format!("workers/rank{r}.log"))) {
            s.push_str(&format!("--- rank{r}.log\n{t}\n"));
        }
    }
    s
}

/// `--epochs E` of an asynchronous method is a budget of E epochs of every shard, all workers
/// together (`steps` per worker on average): faster workers do more, and the first to see the
/// budget spent ends the run for all. The total is the budget, up to the few steps taken while
/// the counts and the stop travel.
fn assert_ended_together(per: &[Value], steps: u64) {
    let grads: Vec<u64> = per.iter().map(|w| w["grads"].as_u64().unwrap()).collect();
    let budget = steps * 4;
    let total: u64 = grads.iter().sum();
    assert!(
        total >= budget && total <= budget + budget / 20,
        "{grads:?}: total {total} for a budget of {budget}"
    );
    assert!(grads.iter().all(|&g| g > 0), "{grads:?}");
}

/// Highest `step` in a worker's metrics.
fn last_step(dir: &Path, rank: usize) -> u64 {
    lines(&dir.join(format!("workers/rank{rank}.jsonl")))
        .iter()
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill9(pid: &str) {
    let ok = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -9 {pid}");
}

fn pid_of(dir: &Path, rank: usize) -> String {
    std::fs::read_to_string(dir.join(format!("workers/rank{rank}.pid"))).expect("pid file")
}

fn finish(child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    let pid = child.id();
    let handle = std::thread::spawn(move || child.wait_with_output().expect("waiting"));
    while !handle.is_finished() {
        if t.elapsed() > limit {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the run did not finish within {limit:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    handle.join().unwrap()
}

#[test]
fn four_workers_on_a_ring_train_digits_with_acid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = digits_run(&out, "acid", 25).output().unwrap();
    assert!(o.status.success(), "{}\n{}", text(&o), logs(&out));

    let s = json(&out.join("summary.json"));
    for key in [
        "method",
        "graph",
        "workers",
        "dataset",
        "model",
        "wall_seconds",
        "test_accuracy",
        "test_loss",
        "per_worker",
    ] {
        assert!(s.get(key).is_some(), "summary.json lacks {key}: {s}");
    }
    assert_eq!(
        (
            s["method"].as_str(),
            s["graph"].as_str(),
            s["workers"].as_u64()
        ),
        (Some("acid"), Some("ring"), Some(4))
    );
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(
        acc >= 0.90,
        "averaged model test accuracy {acc}\n{}",
        text(&o)
    );
    assert!(
        s["averaged"].as_str().unwrap().contains("all-reduce"),
        "{s}"
    );
    let per = s["per_worker"].as_array().unwrap();
    assert_eq!(per.len(), 4);
    // 1438 rows / 4 shards, batches of 32: 12 batches per epoch. The first worker to finish its
    // 25 epochs ends the run for all (no worker trains or averages alone in a tail).
    assert_ended_together(per, 12 * 25);
    for w in per {
        assert!(w["comms"].as_u64().unwrap() > 10, "too few averagings: {w}");
        assert_eq!(w["alive"], Value::Bool(true));
        assert!(w["test_accuracy"].as_f64().unwrap() > 0.85, "{w}");
        for k in ["rank", "final_train_loss"] {
            assert!(w.get(k).is_some(), "{w}");
        }
    }
    // The averagings happened at the asked Poisson rate (rate_com 1; 0.7 leaves CI noise a
    // margin, docs/results.md shows >= 0.9), with exponential-looking gaps on every edge.
    let rates = &s["rates"];
    let achieved = rates["achieved_rate"].as_f64().unwrap();
    assert!(
        achieved >= 0.7,
        "achieved averaging rate {achieved}: {rates}"
    );
    assert_eq!(rates["asked_rate"].as_f64(), Some(1.0));
    let edges = rates["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 4, "a ring of 4 has 4 edges: {rates}");
    for e in edges {
        let cv = e["gaps"]["cv"].as_f64().unwrap();
        assert!((0.5..1.6).contains(&cv), "edge {e}");
        assert!(e["exchanges"].as_u64().unwrap() > 20, "edge {e}");
    }
    for k in ["constants_in_use", "constants_implied"] {
        assert!(rates[k]["eta"].as_f64().unwrap() > 0.0, "{k}: {rates}");
    }
    // The consensus distance from the workers' sketches.
    let consensus = &s["consensus"];
    assert!(consensus["points"].as_u64().unwrap() > 10, "{consensus}");
    assert!(
        consensus["second_half"]["value"].as_f64().unwrap() > 0.0,
        "{consensus}"
    );
    // Per-worker metrics: train lines and exchanges with their disagreement and bytes.
    let m = lines(&out.join("workers/rank1.jsonl"));
    let train = m
        .iter()
        .find(|v| v["event"] == "train")
        .expect("train lines");
    for k in [
        "wall",
        "tau",
        "step",
        "averagings",
        "missed",
        "train_loss",
        "lr",
        "bytes_sent",
        "bytes_received",
    ] {
        assert!(train.get(k).is_some(), "train line lacks {k}: {train}");
    }
    // The worker's own model on the test set every 100 steps (the default --eval-every), the last
    // one being the accuracy the summary reports for it; evaluation pauses are off training time.
    let evals: Vec<&Value> = m.iter().filter(|v| v["event"] == "eval").collect();
    let steps: Vec<u64> = evals.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    // (about 300 steps per worker: a slower worker may stop before its third.) The last one is
    // the final evaluation at the step the worker stopped on, a multiple of 100 or not.
    let own_steps = per[1]["grads"].as_u64().unwrap();
    assert!(steps.len() >= 2, "{evals:?}");
    let (last, periodic) = steps.split_last().unwrap();
    assert!(
        periodic
            .iter()
            .enumerate()
            .all(|(i, &s)| s == 100 * (i as u64 + 1)),
        "{steps:?}"
    );
    assert!(
        *last == own_steps && *last <= 100 * (periodic.len() as u64 + 1),
        "{steps:?}: rank 1 stopped at step {own_steps}"
    );
    for e in &evals {
        let a = e["test_accuracy"].as_f64().unwrap();
        assert!(a > 0.3 && a <= 1.0, "{e}");
        assert!(e["seconds"].as_f64().unwrap() > 0.0, "{e}");
        assert!(
            e["train_wall"].as_f64().unwrap() < e["wall"].as_f64().unwrap(),
            "{e}"
        );
    }
    assert_eq!(
        evals.last().unwrap()["test_accuracy"].as_f64(),
        per[1]["test_accuracy"].as_f64(),
        "the summary's own-model accuracy is the last evaluation's"
    );
    let ex: Vec<&Value> = m.iter().filter(|v| v["event"] == "exchange").collect();
    assert!(!ex.is_empty());
    // Each exchange moves the whole model (64·64+64 + 64·10+10 = 4810 floats) plus the 8-float
    // gradient-count view: 4·4818 bytes of payload each way, and the frame header.
    let params = 64 * 64 + 64 + 64 * 10 + 10;
    for e in &ex {
        let sent = e["bytes_sent"].as_u64().unwrap();
        assert!(
            (4 * (params + 8) as u64..4 * (params + 8) as u64 + 64).contains(&sent),
            "{e}"
        );
        assert!(e["dist2"].as_f64().unwrap() >= 0.0);
        assert!(
            [0, 2].contains(&e["peer"].as_u64().unwrap()),
            "ring peers of 1: {e}"
        );
    }
    // The disagreement shrinks as the learning rate decays and averaging goes on.
    let d: Vec<f64> = ex.iter().map(|e| e["dist2"].as_f64().unwrap()).collect();
    let q = d.len() / 4;
    let (early, late) = (
        d[..q].iter().sum::<f64>() / q as f64,
        d[d.len() - q..].iter().sum::<f64>() / q as f64,
    );
    assert!(late < early, "disagreement early {early} late {late}");
    // The resolved config, checkpoints and the report.
    let cfg = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        cfg.contains("method = \"acid\"") && cfg.contains("workers = 4"),
        "{cfg}"
    );
    for r in 0..4 {
        assert!(out
            .join(format!("checkpoints/rank{r}.safetensors"))
            .exists());
    }
    for f in [
        "index.html",
        "loss_vs_time.svg",
        "loss_vs_grads.svg",
        "disagreement.svg",
        "accuracy_vs_time.svg",
        "accuracy_vs_grads.svg",
        "consensus.svg",
        "counts.svg",
    ] {
        assert!(out.join("report").join(f).exists(), "report/{f} missing");
    }
    // The workers' accuracy as one mean line with its min-max band (a filled polygon).
    let svg = std::fs::read_to_string(out.join("report/accuracy_vs_grads.svg")).unwrap();
    assert!(
        svg.contains("<polyline") && svg.contains("<polygon"),
        "{svg}"
    );
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(
        html.contains("acid, ring, n=4") && html.contains("loss_vs_time.svg"),
        "{html}"
    );
}

/// The other asynchronous methods run end to end too: `gossip` (the same exchanges, no x̃) averages
/// at the asked rate and reaches the accuracy; `local` never averages until the final all-reduce.
#[test]
fn gossip_and_local_runs_finish_with_their_own_dynamics() {
    let dir = tempfile::tempdir().unwrap();
    let mut consensus = Vec::new();
    for method in ["gossip", "local"] {
        let out = dir.path().join(method);
        let o = digits_run(&out, method, 10).output().unwrap();
        assert!(o.status.success(), "{method}: {}\n{}", text(&o), logs(&out));
        let s = json(&out.join("summary.json"));
        assert_eq!(s["method"].as_str(), Some(method));
        let per = s["per_worker"].as_array().unwrap();
        assert_ended_together(per, 10 * 12);
        let comms: Vec<u64> = per.iter().map(|w| w["comms"].as_u64().unwrap()).collect();
        match method {
            "gossip" => {
                let achieved = s["rates"]["achieved_rate"].as_f64().unwrap();
                assert!(achieved >= 0.7, "gossip achieved rate {achieved}");
                assert!(comms.iter().all(|&c| c > 0), "{comms:?}");
            }
            _ => assert!(comms.iter().all(|&c| c == 0), "local averaged: {comms:?}"),
        }
        let acc = s["test_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.85, "{method}: averaged model test accuracy {acc}");
        consensus.push(s["consensus"]["second_half"]["value"].as_f64().unwrap());
    }
    // Without averaging the workers drift apart: far more disagreement than with gossip.
    assert!(
        consensus[1] > 2.0 * consensus[0],
        "consensus distance gossip {} vs local {}",
        consensus[0],
        consensus[1]
    );
}

/// The bytes of tensor `name` of a safetensors file.
fn tensor_bytes(path: &Path, name: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let [a, b] = [0, 1].map(|i| header[name]["data_offsets"][i].as_u64().unwrap() as usize);
    bytes[8 + n + a..8 + n + b].to_vec()
}

#[test]
fn lasgd_and_diloco_models_are_equal_after_each_synchronisation() {
    let dir = tempfile::tempdir().unwrap();
    for (name, outer) in [("lasgd", None), ("diloco", Some("nesterov:0.7,0.9"))] {
        let out = dir.path().join(name);
        let mut c = digits_run(&out, "lasgd", 10);
        c.args(["--sync-every", "10"]);
        if let Some(o) = outer {
            c.args(["--outer", o]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{name}: {}\n{}", text(&o), logs(&out));
        let s = json(&out.join("summary.json"));
        let per = s["per_worker"].as_array().unwrap();
        // 10 epochs of the largest shard (12 batches of 32), a synchronisation every 10 steps.
        for w in per {
            assert_eq!(w["grads"], 120, "{name}: {w}");
            assert_eq!(
                w["comms"], 12,
                "{name}: one all-reduce per 10 local steps: {w}"
            );
        }
        // The bytes of the 12 ring all-reduces of the model and its stop vote (each rank sends
        // 2 (p - 1) / p of the buffer), plus at most one model of the initial broadcast.
        let d = s["parameters"].as_f64().unwrap();
        let all_reduces = 12.0 * 1.5 * 4.0 * (d + 1.0);
        for r in 0..4 {
            let sent = json(&out.join(format!("workers/rank{r}.json")))["bytes_sent"]
                .as_f64()
                .unwrap();
            assert!(
                sent >= 0.99 * all_reduces && sent <= 1.01 * all_reduces + 4.0 * d,
                "{name}: rank {r} sent {sent} bytes, the all-reduces {all_reduces}"
            );
        }
        // The run ends at a synchronisation: every worker holds the very same model.
        let x0 = tensor_bytes(&out.join("checkpoints/rank0.safetensors"), "x");
        for r in 1..4 {
            let x = tensor_bytes(&out.join(format!("checkpoints/rank{r}.safetensors")), "x");
            assert!(x == x0, "{name}: rank {r}'s model differs from rank 0's");
        }
        let own: Vec<f64> = per
            .iter()
            .map(|w| w["test_accuracy"].as_f64().unwrap())
            .collect();
        assert!(own.iter().all(|&a| a == own[0]), "{name}: {own:?}");
        let acc = s["test_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.85, "{name}: averaged model test accuracy {acc}");
    }
    // The outer step makes DiLoCo's model differ from plain lasgd's.
    let x = |name: &str| {
        tensor_bytes(
            &dir.path().join(name).join("checkpoints/rank0.safetensors"),
            "x",
        )
    };
    assert!(x("lasgd") != x("diloco"));
}

#[test]
fn compressed_exchanges_send_fewer_bytes_and_still_train() {
    let dir = tempfile::tempdir().unwrap();
    let mut per_exchange = Vec::new();
    let mut accuracy = Vec::new();
    for compress in ["none", "fp16", "lowrank:4"] {
        let out = dir.path().join(compress);
        let o = digits_run(&out, "gossip", 10)
            .args(["--compress", compress])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{compress}: {}\n{}",
            text(&o),
            logs(&out)
        );
        let s = json(&out.join("summary.json"));
        accuracy.push(s["test_accuracy"].as_f64().unwrap());
        let d = s["parameters"].as_u64().unwrap();
        // Every exchange of every worker carries the same number of bytes.
        let mut bytes: Vec<u64> = (0..4)
            .flat_map(|r| lines(&out.join(format!("workers/rank{r}.jsonl"))))
            .filter(|v| v["event"] == "exchange")
            .map(|v| v["bytes_sent"].as_u64().unwrap())
            .collect();
        bytes.dedup();
        assert_eq!(bytes.len(), 1, "{compress}: {bytes:?}");
        per_exchange.push((bytes[0], d));
    }
    let ((plain, d), (half, _), (low, _)) = (per_exchange[0], per_exchange[1], per_exchange[2]);
    // Two bytes per parameter instead of four; the frame and the gradient counts as before.
    assert_eq!(
        plain - half,
        4 * (d - d.div_ceil(2)),
        "{plain} vs {half} bytes, d = {d}"
    );
    // Rank 4 of the 64×64 and 10×64 weight matrices: a few hundred floats, not 4810.
    assert!(
        low < plain / 4,
        "lowrank:4 sent {low} bytes an exchange, f32 {plain}"
    );
    for (name, acc) in [("fp16", accuracy[1]), ("lowrank:4", accuracy[2])] {
        assert!(
            acc >= 0.85 && (acc - accuracy[0]).abs() < 0.03,
            "averaged model: f32 {} vs {name} {acc}",
            accuracy[0]
        );
    }
    // Only pairwise methods compress; the kernels hold ranks up to 8.
    for (method, compress, says) in [
        ("allreduce", "fp16", "needs --method acid or gossip"),
        ("acid", "lowrank:9", "the rank is at most 8"),
    ] {
        let o = digits_run(&dir.path().join("refused"), method, 1)
            .args(["--compress", compress])
            .output()
            .unwrap();
        assert!(
            !o.status.success() && text(&o).contains(says),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn relaysum_relays_every_model_along_the_spanning_tree_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("relaysum");
    let o = digits_run(&out, "relaysum", 10).output().unwrap();
    assert!(o.status.success(), "{}\n{}", text(&o), logs(&out));
    let s = json(&out.join("summary.json"));
    let d = s["parameters"].as_f64().unwrap();
    // The tree `a2cid topology` shows for this ring.
    let t = a2cid()
        .args(["topology", "--graph", "ring", "--workers", "4", "--json"])
        .output()
        .unwrap();
    let tree: Value = serde_json::from_slice(&t.stdout).unwrap();
    let edges: Vec<(u64, u64)> = tree["spanning_tree"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_u64().unwrap(), e[1].as_u64().unwrap()))
        .collect();
    for w in s["per_worker"].as_array().unwrap() {
        let rank = w["rank"].as_u64().unwrap();
        let grads = w["grads"].as_f64().unwrap();
        // One relay round per step.
        assert_eq!(w["comms"], w["grads"], "{w}");
        // Each round sends the model and its count to every tree neighbour (the stop vote's
        // all-reduce and the initial broadcast add a little).
        let degree = edges
            .iter()
            .filter(|(a, b)| *a == rank || *b == rank)
            .count() as f64;
        let relayed = grads * degree * 4.0 * (d + 1.0);
        let sent = json(&out.join(format!("workers/rank{rank}.json")))["bytes_sent"]
            .as_f64()
            .unwrap();
        assert!(
            sent >= relayed && sent <= relayed + 4.0 * d + 64.0 * grads,
            "rank {rank} (tree degree {degree}) sent {sent} bytes, the relay {relayed}"
        );
    }
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.85, "averaged model test accuracy {acc}");
}

#[test]
fn acid_survives_a_killed_worker_and_averages_the_survivors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let child = digits_run(&out, "acid", 40)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("rank 2 to train", Duration::from_secs(240), || {
        last_step(&out, 2) >= 60
    });
    kill9(&pid_of(&out, 2));
    let o = finish(child, Duration::from_secs(400));
    assert!(o.status.success(), "{}\n{}", text(&o), logs(&out));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("worker 2 was killed by signal 9") && err.contains("goes on"),
        "{}",
        text(&o)
    );
    let s = json(&out.join("summary.json"));
    let per = s["per_worker"].as_array().unwrap();
    assert_eq!(per[2]["alive"], Value::Bool(false), "{s}");
    for r in [0, 1, 3] {
        assert_eq!(per[r]["alive"], Value::Bool(true), "{s}");
    }
    // The budget of 40 epochs of every shard was spent by the survivors and what the killed
    // worker had done (its count as of its last checkpoint: a little less than what it did).
    let grads: Vec<u64> = per.iter().map(|w| w["grads"].as_u64().unwrap()).collect();
    let total: u64 = grads.iter().sum();
    let budget = 4 * 12 * 40;
    assert!(
        total * 10 >= budget * 9 && total <= budget + budget / 20,
        "{grads:?}: total {total} for a budget of {budget}"
    );
    let averaged = s["averaged"].as_str().unwrap();
    assert!(
        averaged.contains("3 survivors") && averaged.contains("[2]"),
        "{averaged}"
    );
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.88, "survivors' average test accuracy {acc}");
    // The neighbours of 2 noticed and carried on.
    let lost: Vec<Value> = [1, 3]
        .iter()
        .flat_map(|r| lines(&out.join(format!("workers/rank{r}.jsonl"))))
        .filter(|v| v["event"] == "peer_lost" && v["peer"] == 2)
        .collect();
    assert!(!lost.is_empty(), "{}", logs(&out));
}

#[test]
fn allreduce_stops_promptly_naming_the_killed_worker() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let child = digits_run(&out, "allreduce", 200)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("rank 2 to train", Duration::from_secs(240), || {
        last_step(&out, 2) >= 40
    });
    let killed = Instant::now();
    kill9(&pid_of(&out, 2));
    let o = finish(child, Duration::from_secs(120));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "took {:?}",
        killed.elapsed()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("worker 2 was killed by signal 9")
            && err.contains("`allreduce` run is synchronous"),
        "{}",
        text(&o)
    );
    // The other workers' own errors name the lost rank too.
    let l = logs(&out);
    assert!(l.contains("lost rank 2") || l.contains("rank 2"), "{l}");
    assert!(!out.join("summary.json").exists());
}

#[test]
fn a_run_killed_midway_resumes_from_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut c = digits_run(&out, "acid", 30);
    c.args(["--checkpoint-every", "20"]);
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "checkpoints of every worker",
        Duration::from_secs(240),
        || {
            (0..4).all(|r| {
                out.join(format!("checkpoints/rank{r}.safetensors"))
                    .exists()
                    && last_step(&out, r) >= 100
            })
        },
    );
    // Kill everything: the launcher and all its workers.
    kill9(&child.id().to_string());
    for r in 0..4 {
        let _ = Command::new("kill")
            .args(["-9", pid_of(&out, r).trim()])
            .status();
    }
    let _ = child.wait();
    let before: Vec<u64> = (0..4).map(|r| last_step(&out, r)).collect();
    assert!(!out.join("summary.json").exists());

    let o = a2cid()
        .args(["run", "--no-progress", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", text(&o), logs(&out));
    let s = json(&out.join("summary.json"));
    // The planned 30 epochs of 12 batches, counting the steps before the kill.
    assert_ended_together(s["per_worker"].as_array().unwrap(), 12 * 30);
    for (r, _) in s["per_worker"].as_array().unwrap().iter().enumerate() {
        let m = lines(&out.join(format!("workers/rank{r}.jsonl")));
        // The first session's metrics are kept; the resumed session starts from the checkpoint
        // (a multiple of 20 steps, or a final one if the worker stopped gracefully when its
        // launcher died before its own kill arrived; at most where the kill found it), not from
        // zero.
        let resumed = m
            .iter()
            .find(|v| v["event"] == "resume")
            .and_then(|v| v["step"].as_u64())
            .expect("a resume line in the metrics");
        assert!(
            resumed >= 20 && resumed <= before[r],
            "rank {r} resumed at {resumed}, killed after {}",
            before[r]
        );
        assert!(
            m.iter()
                .any(|v| v["event"] == "train" && v["step"].as_u64() <= Some(resumed)),
            "the first session's metrics are kept"
        );
    }
    assert!(logs(&out).contains("resuming from"), "{}", logs(&out));
    assert!(s["test_accuracy"].as_f64().unwrap() >= 0.90, "{s}");
}

fn worker(out: &Path, rank: usize, port: u16, secret: &str, hidden: &str) -> Child {
    a2cid()
        .args([
            "worker",
            "--workers",
            "2",
            "--graph",
            "complete",
            "--dataset",
            "digits",
        ])
        .args([
            "--hidden",
            hidden,
            "--epochs",
            "1",
            "--rank",
            &rank.to_string(),
        ])
        .args(["--world", "2", "--master", &format!("127.0.0.1:{port}")])
        .args(["--connect-timeout", "20", "--out"])
        .arg(out)
        .env("A2CID_SECRET", format!("{secret}-0123456789abcdef"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn wrong_secret_and_different_model_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out: PathBuf = dir.path().join("run");
    // A worker with another cluster secret.
    let port = free_port();
    let a = worker(&out, 0, port, "secret-one", "32");
    let b = worker(&out, 1, port, "secret-two", "32");
    let (oa, ob) = (
        finish(a, Duration::from_secs(90)),
        finish(b, Duration::from_secs(90)),
    );
    assert!(!oa.status.success() && !ob.status.success());
    let eb = String::from_utf8_lossy(&ob.stderr);
    assert!(
        eb.contains("cluster secret") && eb.contains("A2CID_SECRET"),
        "{}",
        text(&ob)
    );
    let ea = String::from_utf8_lossy(&oa.stderr);
    assert!(ea.contains("cluster secret"), "{}", text(&oa));

    // A worker with another model (hidden width 48 instead of 32).
    let port = free_port();
    let a = worker(&out, 0, port, "same", "32");
    let b = worker(&out, 1, port, "same", "48");
    let (oa, ob) = (
        finish(a, Duration::from_secs(90)),
        finish(b, Duration::from_secs(90)),
    );
    assert!(!oa.status.success() && !ob.status.success());
    for o in [&oa, &ob] {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains("different model"), "{}", text(o));
    }
}

#[test]
fn worker_without_a_launch_context_says_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let o = a2cid()
        .args(["worker", "--out"])
        .arg(dir.path())
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--master") && e.contains("SLURM"),
        "{}",
        text(&o)
    );
}

#[test]
fn workers_placed_by_the_torchrun_variables_train_together() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let port = free_port();
    let start = |rank: usize| {
        a2cid()
            .args(["worker", "--graph", "complete", "--dataset", "digits"])
            .args(["--hidden", "32", "--epochs", "2", "--out"])
            .arg(&out)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("A2CID_SECRET", "torchrun-style-secret-0123456789")
            .env_remove("SLURM_PROCID")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (start(0), start(1));
    for (r, c) in [(0, a), (1, b)] {
        let o = finish(c, Duration::from_secs(90));
        assert!(o.status.success(), "rank {r}: {}", text(&o));
    }
    for r in 0..2 {
        let res = json(&out.join(format!("workers/rank{r}.json")));
        assert!(res["grads"].as_u64().unwrap() > 0, "{res}");
        assert!(
            res["comms"].as_u64().unwrap() > 0,
            "the two averaged: {res}"
        );
    }
}
