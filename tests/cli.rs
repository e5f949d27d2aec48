//! End-to-end tests of the `a2cid` binary: adapters, single-worker training on real data to the
//! accuracy targets, the run directory's contents, and clear errors for bad input.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn a2cid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_a2cid"))
        .args(args)
        .env("RUST_LOG", "warn,a2cid=info")
        .output()
        .expect("running the a2cid binary")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn repo_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The fetched datasets must be present: a missing one fails the test (run the fetch script).
fn require_dataset(dir: &str) {
    let d = repo_data().join(dir);
    assert!(
        d.join("train-images-idx3-ubyte").exists() || d.join("train-images-idx3-ubyte.gz").exists(),
        "{} is missing: run scripts/fetch-datasets.sh first",
        d.display()
    );
}

fn summary(out: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(out.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&s).expect("summary.json is JSON")
}

#[test]
fn devices_lists_adapters_and_the_chosen_one() {
    let o = a2cid(&["devices"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("<- would be used"), "{}", text(&o));
    assert!(
        out.contains("Vulkan")
            || out.contains("Metal")
            || out.contains("Dx12")
            || out.contains("Gl"),
        "{}",
        text(&o)
    );
    let o = a2cid(&["devices", "--adapter", "no-such-gpu-xyz"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("no adapter matches --adapter \"no-such-gpu-xyz\""),
        "{}",
        text(&o)
    );
}

/// `--grad-budget` and `--max-seconds` stop a single-worker run inside an epoch; the stopped
/// model is evaluated there and the summary counts exactly the gradients taken.
#[test]
fn a_single_worker_stops_on_the_gradient_budget_and_on_max_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "run",
            "--workers",
            "1",
            "--dataset",
            "digits",
            "--batch-size",
            "32",
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        let o = a2cid(&args);
        assert!(o.status.success(), "{}", text(&o));
        (summary(&out), o)
    };
    // 30 gradients: inside the first epoch (45 batches of 32 of the 1438 rows).
    let (s, o) = run("budget", &["--epochs", "5", "--grad-budget", "30"]);
    assert_eq!(s["per_worker"][0]["grads"].as_u64(), Some(30), "{s}");
    assert_eq!(s["total_grads"].as_u64(), Some(30), "{s}");
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.5,
        "30 steps of the MLP on digits give {acc}\n{}",
        text(&o)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("epoch   1/5 (partial)"), "{}", text(&o));
    // 2 s of a 1000-epoch budget: stops long before, and still evaluates.
    let (s, o) = run("seconds", &["--epochs", "1000", "--max-seconds", "2"]);
    let grads = s["per_worker"][0]["grads"].as_u64().unwrap();
    assert!(
        grads > 0 && grads < 1000 * 45,
        "{grads} gradients\n{}",
        text(&o)
    );
    assert!(s["test_accuracy"].as_f64().unwrap().is_finite(), "{s}");
    assert!(
        s["wall_seconds"].as_f64().unwrap() < 60.0,
        "a 2 s limit ran {s}"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(partial)"),
        "{}",
        text(&o)
    );
}

#[test]
fn digits_single_worker_reaches_95_percent() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = a2cid(&[
        "run",
        "--workers",
        "1",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "15",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&out);
    for key in [
        "dataset",
        "model",
        "workers",
        "wall_seconds",
        "test_accuracy",
        "test_loss",
        "per_worker",
    ] {
        assert!(s.get(key).is_some(), "summary.json lacks {key}: {s}");
    }
    assert_eq!(s["dataset"], "digits");
    assert_eq!(s["model"], "mlp");
    assert_eq!(s["workers"], 1);
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(
        acc >= 0.95,
        "digits test accuracy {acc} < 0.95\n{}",
        text(&o)
    );
    let w = &s["per_worker"][0];
    assert_eq!(w["rank"], 0);
    assert_eq!(
        w["grads"].as_u64().unwrap(),
        15 * 1438u64.div_ceil(32),
        "one gradient per batch"
    );
    assert!(w["final_train_loss"].as_f64().unwrap() < 0.2, "{w}");
    // The resolved config and per-epoch metrics are there and parse.
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(out.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg["epochs"].as_integer(), Some(15));
    // One schema for every writer: train lines every log window, an eval line per epoch.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect();
    let epochs: Vec<&serde_json::Value> = events
        .iter()
        .filter(|v| v["event"] == "eval" && v["epoch"].is_u64())
        .collect();
    assert_eq!(epochs.len(), 15);
    assert_eq!(epochs[14]["test_accuracy"].as_f64(), Some(acc));
    let train: Vec<f64> = events
        .iter()
        .filter(|v| v["event"] == "train")
        .map(|v| v["train_loss"].as_f64().unwrap())
        .collect();
    let (first, last) = (train[0], train[train.len() - 1]);
    assert!(last < 0.5 * first, "train loss {first} -> {last}");
}

/// The convolutional models through the CLI: `cnn` learns digits, the summary names the model and
/// its architecture, and a model that does not fit the input is refused naming both.
#[test]
fn cnn_learns_digits_and_a_model_too_big_for_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = a2cid(&[
        "run",
        "--workers",
        "1",
        "--dataset",
        "digits",
        "--model",
        "cnn",
        "--width",
        "8",
        "--epochs",
        "4",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&out);
    assert_eq!(s["model"], "cnn");
    let arch = s["architecture"].as_str().unwrap();
    assert!(
        arch.contains("conv 8-16") && arch.contains("8×8×1"),
        "{arch}"
    );
    let acc = s["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "cnn digits test accuracy {acc}\n{}", text(&o));

    let o = a2cid(&[
        "run",
        "--workers",
        "1",
        "--dataset",
        "digits",
        "--model",
        "resnet:9",
        "--out",
        dir.path().join("bad").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("6n + 2"), "{}", text(&o));
}

#[test]
fn mnist_single_worker_reaches_97_5_percent_in_3_epochs() {
    require_dataset("mnist");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = a2cid(&[
        "run",
        "--workers",
        "1",
        "--dataset",
        "mnist",
        "--model",
        "mlp",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--lr",
        "0.05",
        "--seed",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        repo_data().to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = summary(&out);
    let acc = s["test_accuracy"].as_f64().unwrap();
    println!(
        "mnist 3 epochs: test accuracy {acc}, wall {}s",
        s["wall_seconds"]
    );
    assert!(
        acc >= 0.975,
        "mnist test accuracy {acc} < 0.975\n{}",
        text(&o)
    );
}

#[test]
fn fashion_mnist_loads_and_learns() {
    require_dataset("fashion-mnist");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = a2cid(&[
        "run",
        "--workers",
        "1",
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "1",
        "--hidden",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--data-dir",
        repo_data().to_str().unwrap(),
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let acc = summary(&out)["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.80, "fashion-mnist 1 epoch test accuracy {acc}");
}

#[test]
fn missing_dataset_names_the_fetch_script() {
    let dir = tempfile::tempdir().unwrap();
    let o = a2cid(&[
        "run",
        "--dataset",
        "mnist",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("scripts/fetch-datasets.sh") && err.contains("train-images-idx3-ubyte"),
        "{}",
        text(&o)
    );
}

#[test]
fn corrupt_dataset_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("mnist");
    std::fs::create_dir(&m).unwrap();
    // A header that promises 2 images of 28×28 but only 100 bytes of pixels.
    let mut images = vec![0, 0, 8, 3];
    for d in [2u32, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    images.extend([0u8; 100]);
    std::fs::write(m.join("train-images-idx3-ubyte"), &images).unwrap();
    std::fs::write(
        m.join("train-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 2, 3, 4],
    )
    .unwrap();
    let o = a2cid(&[
        "run",
        "--dataset",
        "mnist",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("train-images-idx3-ubyte is truncated") && err.contains("1568 bytes"),
        "{}",
        text(&o)
    );
}

#[test]
fn malformed_config_and_bad_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "epochs = \"three\"\n").unwrap();
    let o = a2cid(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml is not valid") && err.contains("epochs"),
        "{}",
        text(&o)
    );
    let o = a2cid(&["run", "--dataset", "cifar"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid value 'cifar'"),
        "{}",
        text(&o)
    );
    let o = a2cid(&["run", "--lr", "-1"]);
    assert!(!o.status.success());
}
