//! The sbatch example of docs/running.md ("On a SLURM cluster"), run unchanged on a real SLURM:
//! a single-node cluster on this machine (Debian's `slurm-wlm` and `munge`, started by
//! `scripts/slurm-local.sh start`, which needs root). The script is taken from the docs as it is,
//! submitted with `sbatch --wait`; it srun's 4 `a2cid worker` tasks and builds the summary with
//! `a2cid report`. The test fails, with the reason, when the cluster cannot be started.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The first fenced block of the docs' SLURM section: the sbatch script.
fn sbatch_example() -> String {
    let path = Path::new(ROOT).join("docs/running.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("On a SLURM cluster"))
        .expect("docs/running.md has a section \"On a SLURM cluster\"");
    let mut lines = section.lines().skip_while(|l| !l.starts_with("```"));
    lines.next().expect("the SLURM section has a fenced block");
    let block: Vec<&str> = lines.take_while(|l| !l.starts_with("```")).collect();
    let script = block.join("\n") + "\n";
    assert!(
        script.starts_with("#!/bin/bash") && script.contains("#SBATCH") && script.contains("srun"),
        "the SLURM section's first block is not an sbatch script that srun's workers:\n{script}"
    );
    script
}

fn start_cluster() {
    let script = Path::new(ROOT).join("scripts/slurm-local.sh");
    // The daemons need root: through `sudo -n` when the test runs as another user.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let mut c = if root {
        Command::new("bash")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "bash"]);
        c
    };
    let o = c
        .arg(&script)
        .arg("start")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        o.status.success(),
        "could not start the single-node SLURM cluster ({} start, {}):\n{}{}",
        script.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tail(path: &Path, max: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let cut = t.len().saturating_sub(max);
    let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(0);
    format!("--- {}\n{}", path.display(), &t[cut..])
}

#[test]
fn the_docs_sbatch_example_runs_four_workers_under_slurm() {
    start_cluster();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.sh");
    std::fs::write(&job, sbatch_example()).unwrap();

    // `a2cid` on PATH, as the docs ask; SCRATCH, where the run directory goes. sbatch passes the
    // environment on to the job and srun to its tasks.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_a2cid"));
    let path = std::env::join_paths(std::iter::once(bin.parent().unwrap().to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let output = dir.path().join("job.out");
    let started = Instant::now();
    let mut sbatch = Command::new("sbatch")
        .args(["--wait", "--parsable"])
        .arg(format!("--output={}", output.display()))
        .arg(&job)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("SCRATCH", dir.path())
        .env("RUST_LOG", "warn,a2cid=info")
        // Launch variables of the test's own environment would override SLURM's.
        .env_remove("A2CID_SECRET")
        .env_remove("A2CID_MASTER_PORT")
        .env_remove("A2CID_ADAPTER")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .env_remove("MASTER_ADDR")
        .env_remove("MASTER_PORT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running sbatch (apt-get install slurm-wlm)");

    // `--parsable` prints the job id at submission; `--wait` then holds until the job ends.
    let (tx, rx) = mpsc::channel();
    let stdout = sbatch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let limit = Duration::from_secs(240);
    let job_id = rx
        .recv_timeout(Duration::from_secs(30))
        .map(|l| l.split(';').next().unwrap_or("").trim().to_string());
    let status = loop {
        if let Some(s) = sbatch.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            if let Ok(id) = &job_id {
                let _ = Command::new("scancel").arg(id).status();
            }
            let _ = sbatch.kill();
            panic!(
                "the job (id {job_id:?}) did not finish within {limit:?}\n{}",
                tail(&output, 8000)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut err = String::new();
    if let Some(mut e) = sbatch.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let job_id = job_id.unwrap_or_else(|_| panic!("sbatch printed no job id: {err}"));
    eprintln!(
        "job {job_id}: {status} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "job {job_id}: sbatch {status}: {err}\n{}",
        tail(&output, 8000)
    );

    // The run directory the script made under $SCRATCH.
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap_or_else(|e| panic!("no runs/ under SCRATCH ({e})\n{}", tail(&output, 8000)))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert!(
        run.file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with(&job_id),
        "{run:?} is not the job's ({job_id}) run directory"
    );
    let summary = run.join("summary.json");
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(&summary)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", summary.display(), tail(&output, 8000))),
    )
    .expect("summary.json is JSON");
    assert_eq!(s["workers"].as_u64(), Some(4), "{s}");
    let per = s["per_worker"].as_array().expect("per_worker");
    assert_eq!(per.len(), 4, "{s}");
    for (rank, w) in per.iter().enumerate() {
        assert_eq!(w["rank"].as_u64(), Some(rank as u64), "{w}");
        assert_eq!(
            w["alive"],
            Value::Bool(true),
            "{w}\n{}",
            tail(&output, 8000)
        );
        assert!(w["grads"].as_u64().unwrap() > 0, "{w}");
    }
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.8, "averaged model test accuracy {acc}: {s}");
    assert!(
        s["averaged"].as_str().unwrap_or("").contains("all-reduce"),
        "the 4 srun tasks ended with the all-reduce: {s}"
    );
    assert!(run.join("report/index.html").exists(), "a2cid report ran");
}
