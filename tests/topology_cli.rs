//! `a2cid topology` end to end: the JSON keys, the check values of docs/algorithm.md §5, and errors that say what to do.
use std::process::Command;

fn topology(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_a2cid"))
        .arg("topology")
        .args(args)
        .output()
        .expect("the a2cid binary runs")
}

#[test]
fn json_has_exactly_the_documented_keys_and_the_spec_values() {
    let out = topology(&["--graph", "ring", "--workers", "64", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let object = json.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "alpha",
            "alpha_tilde",
            "chi_1",
            "chi_2",
            "edges",
            "eta",
            "spanning_tree",
            "workers"
        ]
    );
    // The ring's breadth-first tree from 0 is the ring minus the edge opposite 0: a path of 64.
    let tree = json["spanning_tree"]["edges"].as_array().unwrap();
    assert_eq!(tree.len(), 63);
    assert_eq!(json["spanning_tree"]["diameter"], 63);
    assert_eq!(json["workers"], 64);
    assert_eq!(json["edges"], 64);
    let value = |key: &str| json[key].as_f64().unwrap();
    assert!((value("chi_1") - 207.7).abs() < 0.05);
    assert!((value("chi_2") - 0.984).abs() < 0.0005);
    assert!((value("eta") - 0.0350).abs() < 0.00005);
    assert!((value("alpha_tilde") - 7.26).abs() < 0.005);
}

#[test]
fn text_output_lists_degrees_and_averaging_rate() {
    let out = topology(&["--graph", "torus", "--workers", "12", "--rate-com", "2"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("edges        24"), "{text}");
    assert!(text.contains("degree       4 (regular"), "{text}");
    assert!(
        text.contains("averagings per worker per gradient  2.0000"),
        "{text}"
    );
    assert!(
        text.contains("spanning tree (relaysum; breadth-first from worker 0): diameter "),
        "{text}"
    );
}

#[test]
fn complete_graph_warns_that_acid_is_gossip() {
    let out = topology(&["--graph", "complete", "--workers", "8", "--json"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exactly `gossip`"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((json["alpha_tilde"].as_f64().unwrap() - 0.5).abs() < 1e-12);
}

#[test]
fn bad_inputs_fail_with_a_message_naming_the_fix() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--graph",
                "torus",
                "--workers",
                "16",
                "--torus-shape",
                "3x5",
            ],
            "R*C = 16",
        ),
        (&["--graph", "hypercube", "--workers", "12"], "power-of-two"),
        (&["--graph", "ring", "--workers", "2"], "at least 3 workers"),
        (
            &["--graph", "mesh", "--workers", "8"],
            "expected one of ring",
        ),
    ];
    for (args, needle) in cases {
        let out = topology(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_graph_too_large_for_the_dense_constants_is_refused_with_the_memory_it_would_need() {
    for graph in ["ring", "complete"] {
        let out = topology(&["--graph", graph, "--workers", "100000"]);
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains("100000 workers") && e.contains("74.5 GiB") && e.contains("at most 2048"),
            "{graph}: {e}"
        );
    }
}
