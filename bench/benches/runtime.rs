//! What communication costs the compute loop: gradient steps per second of the same 2-worker run
//! (2 workers on the complete graph, digits, the default MLP) with pairwise averaging at
//! `rate_com` 2 versus averaging switched off (`local`), all measured in this process on the same
//! adapter. Two pairs, each the same run with and without the averagings: `gossip` at rate 2
//! against `local` (neither keeps x̃), and `acid` at rate 2 against `acid` at rate 10⁻⁶ (x̃, its
//! larger step kernel and read-back, and no exchange in the run).
//!
//! Each sample is one whole run of two in-process workers (real TCP on loopback, the real mesh);
//! the time per step comes from the workers' own metrics (steps over training wall time between
//! their first and last `train` records), so start-up, evaluation and the final average are not
//! counted. The bench ends by printing the medians, the two ratios (target ≥ 0.9) and the
//! achieved averaging rates.
use std::path::{Path, PathBuf};
use std::time::Duration;

use a2cid_net::{Rendezvous, Secret};
use a2cid_runtime::{run_worker, Placement, WorkerOptions};
use a2cid_schema::{Method, MetricEvent, RunConfig, RunDir};
use criterion::{criterion_group, criterion_main, Criterion};

/// Gradients of both workers together in one sample run.
const BUDGET: u64 = 400;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn config(method: Method, rate_com: f64, out: &Path) -> RunConfig {
    RunConfig {
        workers: 2,
        method,
        graph: "complete".into(),
        rate_com,
        grad_budget: Some(BUDGET),
        epochs: 0,
        checkpoint_every: 0,
        eval_every: 0,
        sketch_every: 0.0,
        log_every: 10,
        out: Some(out.to_path_buf()),
        ..RunConfig::default()
    }
}

/// One 2-worker run; returns (seconds per step, averagings per gradient), both over the workers.
fn run_pair(method: Method, rate_com: f64, out: &Path) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(out);
    let addrs: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let secret = Secret::new(b"bench-runtime-secret-0123".to_vec()).expect("secret");
    let workers: Vec<_> = (0..2)
        .map(|rank| {
            let cfg = config(method, rate_com, out);
            let place = Placement {
                rank,
                world: 2,
                rendezvous: Rendezvous::Explicit(addrs.clone()),
            };
            let options = WorkerOptions {
                secret: secret.clone(),
                connect_timeout: Duration::from_secs(30),
                progress_lines: false,
                resume: false,
                rejoin: false,
                stop_with_launcher: false,
                bind: None,
            };
            std::thread::spawn(move || run_worker(cfg, place, options))
        })
        .collect();
    for w in workers {
        w.join()
            .expect("a worker thread panicked")
            .expect("a worker failed");
    }
    let run = RunDir::new(out.to_path_buf());
    let (mut per_step, mut rate) = (Vec::new(), Vec::new());
    for rank in 0..2 {
        let text = std::fs::read_to_string(run.metrics(rank)).expect("the worker's metrics");
        let trains: Vec<(u64, f64, u64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<MetricEvent>(l).ok())
            .filter_map(|e| match e {
                MetricEvent::Train { at, averagings, .. } => {
                    Some((at.step, at.train_wall, averagings))
                }
                _ => None,
            })
            .collect();
        let (first, last) = (trains.first().unwrap(), trains.last().unwrap());
        assert!(last.0 > first.0, "rank {rank}: too few train records");
        let steps = (last.0 - first.0) as f64;
        per_step.push((last.1 - first.1) / steps);
        rate.push((last.2 - first.2) as f64 / steps);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (mean(&per_step), mean(&rate))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn communication_cost(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let out = |name: &str| -> PathBuf { dir.path().join(name) };
    let adapter = a2cid_engine::GpuContext::open("auto")
        .map(|ctx| ctx.adapter.name.clone())
        .expect("a GPU adapter (lavapipe will do: apt-get install mesa-vulkan-drivers)");
    let mut group = c.benchmark_group(format!("runtime 2 workers, digits MLP, {adapter}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    let mut seen = std::collections::BTreeMap::<&str, Vec<(f64, f64)>>::new();
    let runs = [
        ("local", Method::Local, 2.0),
        ("gossip rate_com 2", Method::Gossip, 2.0),
        ("acid without averaging", Method::Acid, 1e-6),
        ("acid rate_com 2", Method::Acid, 2.0),
    ];
    for (name, method, rate_com) in runs {
        let record = &mut seen;
        group.bench_function(format!("step, {name}"), |b| {
            b.iter_custom(|iters| {
                let (per_step, rate) = run_pair(method, rate_com, &out(name));
                record.entry(name).or_default().push((per_step, rate));
                Duration::from_secs_f64(per_step * iters as f64)
            })
        });
    }
    group.finish();
    let step = |name: &str| median(seen[name].iter().map(|s| s.0).collect());
    let rate = |name: &str| median(seen[name].iter().map(|s| s.1).collect());
    println!("\n{adapter}, 2 workers, digits MLP (median steps/s of each worker, averagings per gradient):");
    for (name, _, _) in &runs {
        println!(
            "  {name:<24} {:>7.2} steps/s  {:.2} averagings/gradient",
            1.0 / step(name),
            rate(name)
        );
    }
    for (on, off) in [
        ("gossip rate_com 2", "local"),
        ("acid rate_com 2", "acid without averaging"),
    ] {
        println!(
            "  {on} / {off}: steps/s ratio {:.3} (target >= 0.9)",
            step(off) / step(on)
        );
    }
}

criterion_group!(benches, communication_cost);
criterion_main!(benches);
