//! `a2cid simulate --problem mlp`: the engine's MLP with every worker's (x, x̃, momentum) on the GPU,
//! driven by the fused A²CiD² kernels. The workers must learn (the loss falls far below its
//! initial ln 10), communicate (averagings happen, the consensus distance stays bounded), and the
//! all-reduce baseline must keep every worker identical. The summary reports the test-split
//! accuracy of the average model and of the workers' own models.
use std::process::Command;

fn simulate(method: &str, extra: &[&str]) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_a2cid"))
        .args([
            "simulate",
            "--workers",
            "4",
            "--graph",
            "ring",
            "--problem",
            "mlp",
            "--method",
            method,
            "--rate-com",
            "1",
            "--time",
            "60",
            // A few metric samples suffice; each one evaluates every worker's model.
            "--sample-every",
            "5",
            "--lr",
            "0.05",
            "--momentum",
            "0.9",
            "--seed",
            "3",
            "--json",
        ])
        .args(extra)
        .output()
        .expect("running a2cid simulate");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&o.stderr)
    );
    let json_start = stdout.find('{').expect("a JSON summary");
    serde_json::from_str(stdout[json_start..].trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn gpu_mlp_workers_learn_and_communicate() {
    for method in ["acid", "gossip"] {
        let s = simulate(method, &[]);
        let final_loss = s["final_loss"].as_f64().unwrap();
        assert!(final_loss < 0.6, "{method}: loss {final_loss} after 60 gradients per worker (ln 10 = 2.30 at start)\n{s}");
        assert!(
            s["averagings"].as_u64().unwrap() > 60,
            "{method}: too few averagings\n{s}"
        );
        let gradients = s["gradients"].as_u64().unwrap();
        assert!(
            (160..=320).contains(&gradients),
            "{method}: {gradients} gradients for 4 workers × 60 time units\n{s}"
        );
        let cd = s["final_consensus_distance"].as_f64().unwrap();
        assert!(
            cd.is_finite() && cd > 0.0 && cd < 1.0,
            "{method}: consensus distance {cd}\n{s}"
        );
        // Ten classes: chance is 0.1; trained digits models are far above it.
        let average = s["test_accuracy"].as_f64().expect("test_accuracy");
        let own = s["mean_worker_test_accuracy"]
            .as_f64()
            .expect("mean_worker_test_accuracy");
        assert!(
            (0.8..=1.0).contains(&average) && (0.5..=1.0).contains(&own),
            "{method}: test accuracy of the average model {average}, of the workers' own {own}\n{s}"
        );
    }
}

#[test]
fn allreduce_keeps_gpu_workers_identical() {
    let s = simulate("allreduce", &[]);
    assert_eq!(s["final_consensus_distance"].as_f64().unwrap(), 0.0, "{s}");
    assert!(s["final_loss"].as_f64().unwrap() < 0.6, "{s}");
    // Identical workers: the average model is each worker's model.
    assert_eq!(s["test_accuracy"], s["mean_worker_test_accuracy"], "{s}");
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.8, "{s}");
}

/// `--compress`: the same clocks (same seed) give the same averagings; fp16 sends exactly half
/// the bytes, lowrank:2 a small fraction (the MLP's two weight matrices at rank 2, its biases in
/// full), and the GPU workers still learn.
#[test]
fn compressed_exchanges_send_fewer_bytes_and_gpu_workers_still_learn() {
    let plain = simulate("acid", &[]);
    assert_eq!(plain["compress"], "none", "{plain}");
    let plain_bytes = plain["bytes_per_worker"].as_f64().unwrap();
    for codec in ["fp16", "lowrank:2"] {
        let s = simulate("acid", &["--compress", codec]);
        assert_eq!(s["compress"], codec, "{s}");
        assert_eq!(s["averagings"], plain["averagings"], "{codec}: {s}");
        let ratio = s["bytes_per_worker"].as_f64().unwrap() / plain_bytes;
        if codec == "fp16" {
            assert!(
                (ratio - 0.5).abs() < 1e-9,
                "fp16 sends {ratio} of f32's bytes"
            );
        } else {
            assert!(ratio < 0.2, "lowrank:2 sends {ratio} of f32's bytes");
        }
        let final_loss = s["final_loss"].as_f64().unwrap();
        assert!(final_loss < 0.6, "{codec}: loss {final_loss}\n{s}");
        let average = s["test_accuracy"].as_f64().unwrap();
        assert!(
            average >= 0.8,
            "{codec}: average model's accuracy {average}\n{s}"
        );
        let cd = s["final_consensus_distance"].as_f64().unwrap();
        assert!(
            cd.is_finite() && cd > 0.0,
            "{codec}: consensus distance {cd}\n{s}"
        );
    }
}
