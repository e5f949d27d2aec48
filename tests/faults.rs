//! Faults that used to lose data or hang, each reproduced with real worker processes: a diverging
//! run, a non-finite checkpoint, a refused resume, two runs on one run directory, a duplicate
//! rank, a worker lost before the mesh forms, a killed or interrupted launcher, a worker
//! signalled twice, an early worker's
//! clock, a local run's listening address, and a killed worker that is restarted and rejoins.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{a2cid, digits_run, free_port, json, text};

fn digits(out: &Path, extra: &[&str]) -> Command {
    let mut c = a2cid();
    c.args([
        "run",
        "--workers",
        "4",
        "--graph",
        "ring",
        "--method",
        "gossip",
    ])
    .args([
        "--dataset",
        "digits",
        "--hidden",
        "32",
        "--batch-size",
        "32",
    ])
    .args(["--lr", "0.1", "--seed", "3", "--checkpoint-every", "5"])
    .args(extra)
    .args(["--no-progress", "--out"])
    .arg(out);
    c
}

/// Writes NaN over the first value of tensor `name` of a safetensors file.
fn poison(path: &Path, name: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_diverging_run_names_the_divergence_and_loses_neither_checkpoints_nor_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = digits(&out, &["--epochs", "3"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let summary = std::fs::read(out.join("summary.json")).unwrap();

    // The same run continued at an absurd learning rate: it diverges.
    let o = a2cid()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--epochs", "8", "--lr", "1e6", "--no-progress"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("every worker failed")
            && t.contains("the training diverged by step")
            && t.to_lowercase().contains("lower --lr"),
        "{t}"
    );
    assert_eq!(
        std::fs::read(out.join("summary.json")).unwrap(),
        summary,
        "the last good summary stays"
    );
    // Every checkpoint is still finite: resuming at a sane rate finishes the run.
    let o = a2cid()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--epochs", "6", "--lr", "0.1", "--no-progress"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("test accuracy"), "{}", text(&o));
}

#[test]
fn a_single_worker_that_diverges_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let o = a2cid()
        .args([
            "run",
            "--workers",
            "1",
            "--epochs",
            "1",
            "--lr",
            "1e6",
            "--no-progress",
        ])
        .arg("--out")
        .arg(dir.path().join("one"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("the training diverged by step"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_unusable_checkpoint_falls_back_to_its_previous_generation_then_a_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = digits(&out, &["--epochs", "3"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let ckpt = out.join("checkpoints/rank1.safetensors");
    assert!(out.join("checkpoints/rank1.prev.safetensors").exists());
    poison(&ckpt, "x");
    let o = a2cid()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--epochs", "5", "--no-progress"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let log = std::fs::read_to_string(out.join("workers/rank1.log")).unwrap();
    assert!(
        log.contains("values of x are not finite") && log.contains("using the previous generation"),
        "{log}"
    );
    // Both generations poisoned: in a pairwise run the worker starts from a neighbour's
    // checkpoint instead, and says so.
    poison(&ckpt, "x");
    poison(&out.join("checkpoints/rank1.prev.safetensors"), "x");
    let o = a2cid()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--epochs", "7", "--no-progress"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("worker 1 has no usable checkpoint; it starts from its neighbour"),
        "{}",
        text(&o)
    );
    let log = std::fs::read_to_string(out.join("workers/rank1.log")).unwrap();
    assert!(
        log.contains("rank 1: no usable checkpoint of its own; it starts from neighbour 0's"),
        "{log}"
    );
    assert!(
        json(&out.join("summary.json"))["test_accuracy"]
            .as_f64()
            .unwrap()
            > 0.8
    );
    // Missing altogether (deleted, as an old message advised): the same.
    for f in ["rank1.safetensors", "rank1.prev.safetensors"] {
        std::fs::remove_file(out.join("checkpoints").join(f)).unwrap();
    }
    let o = a2cid()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--epochs", "8", "--no-progress"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    // No usable checkpoint for rank 1 nor for its neighbours 0 and 2: refused before any worker
    // starts, naming the files, and nothing is changed.
    for r in [0, 1, 2] {
        for f in [
            format!("rank{r}.safetensors"),
            format!("rank{r}.prev.safetensors"),
        ] {
            let path = out.join("checkpoints").join(f);
            if r == 1 {
                let _ = std::fs::remove_file(path);
            } else {
                poison(&path, "x");
            }
        }
    }
    let config = std::fs::read(out.join("config.toml")).unwrap();
    let o = a2cid()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--epochs", "9", "--no-progress"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("worker 1's checkpoint")
            && t.contains("no neighbour's checkpoint can stand in")
            && t.contains("neighbour 0:")
            && t.contains("neighbour 2:")
            && t.contains("previous generation"),
        "{t}"
    );
    assert_eq!(std::fs::read(out.join("config.toml")).unwrap(), config);
}

#[test]
fn a_refused_resume_leaves_the_run_directory_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = digits(&out, &["--epochs", "2"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let config = std::fs::read(out.join("config.toml")).unwrap();
    let summary = std::fs::read(out.join("summary.json")).unwrap();
    let o = a2cid()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--hidden", "64", "--epochs", "4", "--no-progress"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("another model") && t.contains("nothing was changed"),
        "{t}"
    );
    assert_eq!(std::fs::read(out.join("config.toml")).unwrap(), config);
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), summary);
    // The plain resume still works.
    let o = a2cid()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--epochs", "4", "--no-progress"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_second_run_on_the_same_directory_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut first = digits(&out, &["--epochs", "150"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !out.join("config.toml").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = digits(&out, &["--epochs", "1"]).output().unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("is in use by another a2cid run")
            && t.contains(&format!("process {}", first.id())),
        "{t}"
    );
    assert!(first.wait().unwrap().success(), "the first run is unharmed");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["epochs"], 150);
}

fn timed_worker(out: &Path, rank: usize, port: u16) -> std::process::Child {
    worker_of(out, rank, 2, port)
}

fn worker_of(out: &Path, rank: usize, world: usize, port: u16) -> std::process::Child {
    worker_for(out, rank, world, port, 3)
}

/// A standalone worker of a `world`-worker run on a complete graph, training `seconds` seconds.
fn worker_for(
    out: &Path,
    rank: usize,
    world: usize,
    port: u16,
    seconds: u32,
) -> std::process::Child {
    a2cid()
        .args([
            "worker",
            "--workers",
            &world.to_string(),
            "--graph",
            "complete",
        ])
        .args(["--dataset", "digits", "--hidden", "32", "--epochs", "0"])
        .args(["--max-seconds", &seconds.to_string()])
        .args(["--eval-every", "0", "--rank"])
        .arg(rank.to_string())
        .args(["--world", &world.to_string()])
        .args(["--master", &format!("127.0.0.1:{port}")])
        .args(["--connect-timeout", "120", "--out"])
        .arg(out)
        .env("A2CID_SECRET", "a-secret-of-enough-length")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_training_clock_starts_when_the_mesh_has_formed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let port = free_port();
    let early = timed_worker(&out, 0, port);
    // Rank 0 waits 4 s for rank 1, longer than the whole --max-seconds 3.
    std::thread::sleep(Duration::from_secs(4));
    let late = timed_worker(&out, 1, port);
    let (a, b) = (
        early.wait_with_output().unwrap(),
        late.wait_with_output().unwrap(),
    );
    assert!(a.status.success(), "{}", text(&a));
    assert!(b.status.success(), "{}", text(&b));
    let result = |r: usize| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(format!("workers/rank{r}.json"))).unwrap())
            .unwrap()
    };
    let (r0, r1) = (result(0), result(1));
    let (g0, g1) = (r0["grads"].as_f64().unwrap(), r1["grads"].as_f64().unwrap());
    assert!(
        g0 > 0.5 * g1 && g1 > 0.5 * g0,
        "both train about 3 s: rank 0 {g0} steps, rank 1 {g1}\n--- rank 0:\n{}\n--- rank 1:\n{}",
        text(&a),
        text(&b)
    );
    for r in [&r0, &r1] {
        let wall = r["wall_seconds"].as_f64().unwrap();
        assert!(
            wall < 3.9,
            "a worker's training time excludes the wait: {wall}"
        );
    }
}

fn alive(pid: &str) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn a_worker_lost_before_the_mesh_forms_stops_the_launch_at_once_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let launcher = digits(&out, &["--epochs", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = out.join("workers/rank2.pid");
    let t0 = Instant::now();
    while std::fs::read_to_string(&pid_file).map_or(true, |p| p.is_empty()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "worker 2 never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    let killed_at = Instant::now();
    let o = launcher.wait_with_output().unwrap();
    let took = killed_at.elapsed();
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("worker 2") && t.contains("before every worker had joined the mesh"),
        "{t}"
    );
    assert!(
        took < Duration::from_secs(15),
        "the launch stopped after {took:?}"
    );
    for r in [0, 1, 3] {
        if let Ok(pid) = std::fs::read_to_string(out.join(format!("workers/rank{r}.pid"))) {
            assert!(!alive(&pid), "worker {r} (pid {pid}) was left running");
        }
    }
}

/// The metrics file of rank `r` so far (empty before it exists).
fn metrics_of(out: &Path, r: usize) -> String {
    std::fs::read_to_string(out.join(format!("workers/rank{r}.jsonl"))).unwrap_or_default()
}

/// Waits (up to 90 s) until ranks `0..world` have each logged a training window.
fn wait_until_trained(out: &Path, world: usize) {
    let t0 = Instant::now();
    while !(0..world).all(|r| metrics_of(out, r).contains("\"event\":\"train\"")) {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the run never got going"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a long run and waits until every worker has taken a few steps.
fn long_run_under_way(out: &Path) -> std::process::Child {
    let launcher = digits(out, &["--epochs", "400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_trained(out, 4);
    launcher
}

fn worker_pids(out: &Path) -> Vec<String> {
    (0..4)
        .map(|r| std::fs::read_to_string(out.join(format!("workers/rank{r}.pid"))).unwrap())
        .collect()
}

#[test]
fn workers_stop_gracefully_when_their_launcher_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut launcher = long_run_under_way(&out);
    let pids = worker_pids(&out);
    launcher.kill().unwrap(); // SIGKILL: no chance to clean up
    launcher.wait().unwrap();
    let t0 = Instant::now();
    while pids.iter().any(|p| alive(p)) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "workers outlived their launcher by 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // They stopped gracefully: each wrote its result, stopped as interrupted.
    for r in 0..4 {
        let res: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("workers/rank{r}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(res["stop_reason"], "interrupted", "rank {r}: {res}");
    }
}

#[test]
fn sigterm_to_the_launcher_stops_the_run_with_checkpoints_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let launcher = long_run_under_way(&out);
    Command::new("kill")
        .args(["-TERM", &launcher.id().to_string()])
        .status()
        .unwrap();
    let t0 = Instant::now();
    let o = launcher.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("interrupted") && t.contains("--resume"), "{t}");
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.5, "{s}");
    for r in 0..4 {
        assert!(out
            .join(format!("checkpoints/rank{r}.safetensors"))
            .exists());
    }
}

fn signal(name: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

#[test]
fn a_second_signal_ends_a_stopping_worker_at_once_and_keeps_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let port = free_port();
    let mut r0 = worker_for(&out, 0, 2, port, 600);
    let mut r1 = worker_for(&out, 1, 2, port, 600);
    wait_until_trained(&out, 2);
    let log = |r: usize| metrics_of(&out, r);
    // Rank 1 freezes, so rank 0's graceful stop waits on it in the final average (for as long as
    // the collective timeout, ten minutes).
    signal("STOP", r1.id());
    signal("TERM", r0.id());
    let t0 = Instant::now();
    while !log(0).contains("\"event\":\"end\"") {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "rank 0 did not stop gracefully on the first SIGTERM:\n{}",
            log(0)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        r0.try_wait().unwrap().is_none(),
        "rank 0 should still be waiting on its frozen peer for the final average"
    );
    signal("TERM", r0.id());
    let t0 = Instant::now();
    while r0.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(15) {
            r0.kill().unwrap();
            r1.kill().unwrap();
            panic!("a second SIGTERM left rank 0 running for 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    r1.kill().unwrap(); // SIGKILL ends a stopped process too
    r1.wait().unwrap();
    let o = r0.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("SIGTERM again: leaving now"), "{t}");
    // Its final checkpoint, written before the final average, is whole and the newest.
    let c = a2cid_runtime::checkpoint::Checkpoint::load(&out.join("checkpoints/rank0.safetensors"))
        .unwrap();
    assert!(c.state.finished && c.state.grads > 0, "{:?}", c.state);
}

#[test]
fn a_local_run_listens_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = digits(&out, &["--epochs", "1"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for r in 0..4 {
        let log = std::fs::read_to_string(out.join(format!("workers/rank{r}.log"))).unwrap();
        assert!(log.contains("mesh up on 127.0.0.1:"), "rank {r}: {log}");
    }
}

#[test]
fn a_second_worker_with_a_taken_rank_is_refused_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let port = free_port();
    let r0 = worker_of(&out, 0, 3, port);
    let r1 = worker_of(&out, 1, 3, port);
    // The first rank 1 has opened its metrics (it waits for rank 2 to form the mesh), so there is
    // something for the duplicate to clobber. A fixed sleep raced with a slow start-up.
    let metrics = out.join("workers/rank1.jsonl");
    let t0 = Instant::now();
    while !metrics.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the first rank 1 never opened its metrics"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dup = worker_of(&out, 1, 3, port).wait_with_output().unwrap();
    assert!(!dup.status.success(), "{}", text(&dup));
    let t = text(&dup);
    // Refused by the rank's lock in the run directory before it touches the first worker's
    // files (on hosts that do not share the directory, rank 0's rendezvous refuses it too).
    assert!(
        t.contains("another worker with rank 1") && t.contains("same rank"),
        "{t}"
    );
    let metrics = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        !metrics.contains('\0'),
        "the first rank 1's metrics were not clobbered"
    );
    let r2 = worker_of(&out, 2, 3, port);
    for (r, c) in [(0, r0), (1, r1), (2, r2)] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "rank {r}: {}", text(&o));
    }
}

#[test]
fn a_killed_worker_is_restarted_and_rejoins_from_a_neighbour_and_the_run_finishes_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // Long enough in epochs to be stopped by the clock: 30 s, the kill at about 10 s.
    let launcher = digits_run(&out, "acid", 100_000)
        .args(["--max-restarts", "1", "--max-seconds", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = |r: usize| metrics_of(&out, r);
    // Metrics reach the file at every 10 s logging window.
    wait_until_trained(&out, 4);
    let pid = std::fs::read_to_string(out.join("workers/rank2.pid")).unwrap();
    Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    let killed_at = Instant::now();
    let mut launcher = launcher;
    while !metrics(2).contains("\"event\":\"rejoin\"") {
        if killed_at.elapsed() > Duration::from_secs(20) {
            launcher.kill().unwrap();
            panic!(
                "rank 2 did not rejoin within 20 s:\n{}\n--- rank 2's log\n{}",
                text(&launcher.wait_with_output().unwrap()),
                std::fs::read_to_string(out.join("workers/rank2.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rejoined_after = killed_at.elapsed();
    let o = launcher.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("worker 2 was killed by signal 9; restarting it")
            && t.contains("rejoins from a live neighbour's state"),
        "{t}"
    );
    assert!(
        rejoined_after < Duration::from_secs(10),
        "rejoined {rejoined_after:?} after the kill"
    );
    // The neighbours saw it come back; it took one of them's state and went on training.
    let events: Vec<serde_json::Value> = metrics(2)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rejoin = events.iter().find(|e| e["event"] == "rejoin").unwrap();
    let from = rejoin["from"].as_u64().unwrap();
    assert!(
        from == 1 || from == 3,
        "rank 2's ring neighbours are 1 and 3: {rejoin}"
    );
    assert!(
        rejoin["step"].as_u64().unwrap() > 0,
        "it took its neighbour's progress: {rejoin}"
    );
    assert!(metrics(from as usize).contains("\"event\":\"peer_rejoined\""));
    let at_rejoin = rejoin["step"].as_u64().unwrap();
    let final_grads = json(&out.join("workers/rank2.json"))["grads"]
        .as_u64()
        .unwrap();
    assert!(
        final_grads > at_rejoin + 100,
        "rank 2 trained on after rejoining: {at_rejoin} gradients then, {final_grads} at the end"
    );
    // All four finished, so the final model is the all-reduce over the four.
    let s = json(&out.join("summary.json"));
    assert_eq!(s["averaged"], "all-reduce over the 4 workers", "{s}");
    for w in s["per_worker"].as_array().unwrap() {
        assert_eq!(w["alive"], true, "{w}");
        let expected = if w["rank"] == 2 { 1 } else { 0 };
        assert_eq!(w["rejoins"].as_u64().unwrap_or(0), expected, "{w}");
    }
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "the averaged model learned: {acc}");
    assert!(t.contains("restarted; rejoined 1x from a neighbour"), "{t}");
}

#[test]
fn a_worker_asked_to_rejoin_a_run_that_is_not_running_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = a2cid()
        .args([
            "worker",
            "--workers",
            "4",
            "--graph",
            "ring",
            "--method",
            "acid",
        ])
        .args(["--dataset", "digits", "--rank", "2", "--world", "4"])
        .args(["--master", "127.0.0.1:9", "--rejoin", "--out"])
        .arg(&out)
        .env("A2CID_SECRET", "a-secret-of-enough-length")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("--rejoin") && t.contains("address table") && t.contains("addresses.json"),
        "{t}"
    );
}
