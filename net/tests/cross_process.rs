//! Real worker processes over loopback (the `a2cid-mesh-node` binary). Ports are picked by the OS
//! (rank 0 binds port 0 and prints it), every wait is bounded, and children are killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_a2cid-mesh-node");

struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn spawn(secret: &str, args: &[String]) -> Node {
        let mut child = Command::new(BIN)
            .args(args)
            .env("A2CID_SECRET", format!("{secret}-0123456789abcdef"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a2cid-mesh-node");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Wait (bounded) for a line starting with `prefix`.
    fn wait_for(&mut self, prefix: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
                return l.clone();
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no '{prefix}' line within {limit:?}; saw: {:#?}", self.seen),
            }
        }
    }

    /// Collect everything until the process exits (bounded), then return all lines.
    fn finish(&mut self, limit: Duration) -> Vec<String> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("process did not finish within {limit:?}: {:#?}", self.seen)
                }
            }
        }
        let _ = self.child.wait();
        self.seen.clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn args(rank: usize, world: usize, rdv: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--rank".into(),
        rank.to_string(),
        "--world".into(),
        world.to_string(),
        "--rendezvous".into(),
        rdv.into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn start_rank0(secret: &str, world: usize, extra: &[&str]) -> (Node, String) {
    let mut n0 = Node::spawn(secret, &args(0, world, "127.0.0.1:0", extra));
    let l = n0.wait_for("LISTEN ", Duration::from_secs(20));
    let addr = l.trim_start_matches("LISTEN ").trim().to_string();
    (n0, addr)
}

fn count(lines: &[String], prefix: &str) -> usize {
    lines.iter().filter(|l| l.starts_with(prefix)).count()
}

#[test]
fn three_processes_exchange_exact_bytes_and_allreduce() {
    let extra = [
        "--params",
        "200003",
        "--edges",
        "0-1,1-2,2-0",
        "--rate",
        "0.2",
        "--seconds",
        "2",
    ];
    let (mut n0, addr) = start_rank0("s3cret", 3, &extra);
    let mut n1 = Node::spawn("s3cret", &args(1, 3, &addr, &extra));
    let mut n2 = Node::spawn("s3cret", &args(2, 3, &addr, &extra));
    let mut hashes = Vec::new();
    for (r, n) in [&mut n0, &mut n1, &mut n2].into_iter().enumerate() {
        let lines = n.finish(Duration::from_secs(60));
        assert_eq!(count(&lines, "BROADCAST_OK"), 1, "rank {r}: {lines:#?}");
        assert!(
            count(&lines, "EXCHANGE_OK") >= 3,
            "rank {r} exchanged too little: {lines:#?}"
        );
        assert_eq!(count(&lines, "EXCHANGE_BAD"), 0, "rank {r}: {lines:#?}");
        let ar = lines
            .iter()
            .find(|l| l.starts_with("ALLREDUCE_OK"))
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert!(ar.contains("values_ok=true"), "{ar}");
        hashes.push(ar.split_whitespace().nth(1).map(str::to_string));
        assert_eq!(count(&lines, "BARRIER_OK"), 1);
        assert_eq!(count(&lines, "SHUTDOWN_OK"), 1);
        // 200003 floats + 9-byte header + 8-byte sequence number, each way.
        let ex = lines
            .iter()
            .find(|l| l.starts_with("EXCHANGE_OK"))
            .expect("one exchange");
        assert!(
            ex.contains("bytes_sent=800029") && ex.contains("bytes_received=800029"),
            "{ex}"
        );
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "all-reduce results differ: {hashes:?}"
    );
}

#[test]
fn killed_peer_is_survived_and_allreduce_names_it() {
    // Ring 0-1-2-3-0: killing 2 leaves the path 1-0-3, still connected.
    let extra = [
        "--params",
        "50000",
        "--edges",
        "0-1,1-2,2-3,3-0",
        "--rate",
        "0.3",
        "--seconds",
        "5",
    ];
    let (mut n0, addr) = start_rank0("k", 4, &extra);
    let mut n1 = Node::spawn("k", &args(1, 4, &addr, &extra));
    let mut n2 = Node::spawn("k", &args(2, 4, &addr, &extra));
    let mut n3 = Node::spawn("k", &args(3, 4, &addr, &extra));
    n2.wait_for("EXCHANGE_OK", Duration::from_secs(20));
    let killed_at = n0.wait_for("READY", Duration::from_secs(1)); // n0 is surely up
    drop(killed_at);
    n2.kill();
    let t_kill = Instant::now();
    for (r, n) in [(0, &mut n0), (1, &mut n1), (3, &mut n3)] {
        let lines = n.finish(Duration::from_secs(60));
        assert_eq!(count(&lines, "EXCHANGE_BAD"), 0, "rank {r}: {lines:#?}");
        if r != 0 {
            // Neighbours of 2 notice the death and drop it.
            let lost = lines
                .iter()
                .find(|l| l.starts_with("PEER_LOST peer=2"))
                .unwrap_or_else(|| panic!("{lines:#?}"));
            assert!(lost.contains("graceful=false"), "{lost}");
        }
        // Training went on: exchanges completed after the kill.
        let last_t = lines
            .iter()
            .filter(|l| l.starts_with("EXCHANGE_OK"))
            .filter_map(|l| {
                l.split("t=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .fold(0.0, f64::max);
        assert!(
            last_t > 4.0,
            "rank {r} stopped exchanging (last at t={last_t}): {lines:#?}"
        );
        // The final all-reduce fails at once, naming rank 2.
        let err = lines
            .iter()
            .find(|l| l.starts_with("ALLREDUCE_ERR"))
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert!(err.contains("rank=2"), "{err}");
        let ms: f64 = err
            .split("ms=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(1e9);
        assert!(ms < 3000.0, "all-reduce took {ms} ms to fail: {err}");
        assert!(err.contains("collective operation lost rank 2"), "{err}");
        assert_eq!(count(&lines, "SHUTDOWN_OK"), 1, "rank {r}: {lines:#?}");
    }
    assert!(t_kill.elapsed() < Duration::from_secs(60));
}

fn refused_pair(secret1: &str, extra0: &[&str], extra1: &[&str]) -> (String, String) {
    let (mut n0, addr) = start_rank0("right", 2, extra0);
    let mut n1 = Node::spawn(secret1, &args(1, 2, &addr, extra1));
    let l1 = n1.wait_for("CONNECT_ERR", Duration::from_secs(30));
    let l0 = n0.wait_for("CONNECT_ERR", Duration::from_secs(30));
    (l0, l1)
}

#[test]
fn wrong_secret_is_refused_on_both_sides() {
    let base = [
        "--params",
        "100",
        "--edges",
        "0-1",
        "--connect-timeout",
        "3",
    ];
    let (l0, l1) = refused_pair("wrong", &base, &base);
    for l in [&l0, &l1] {
        assert!(l.contains("different cluster secret"), "{l}");
        assert!(l.contains("A2CID_SECRET"), "{l}");
    }
}

#[test]
fn wrong_fingerprint_is_refused_on_both_sides() {
    let a = [
        "--params",
        "100",
        "--edges",
        "0-1",
        "--connect-timeout",
        "3",
    ];
    let b = [
        "--params",
        "101",
        "--edges",
        "0-1",
        "--connect-timeout",
        "3",
    ];
    let (l0, l1) = refused_pair("right", &a, &b);
    for l in [&l0, &l1] {
        assert!(l.contains("trains a different model"), "{l}");
    }
    let c = [
        "--params",
        "100",
        "--layout",
        "other",
        "--edges",
        "0-1",
        "--connect-timeout",
        "3",
    ];
    let (l0, l1) = refused_pair("right", &a, &c);
    for l in [&l0, &l1] {
        assert!(l.contains("trains a different model"), "{l}");
    }
}

#[test]
fn wrong_run_id_is_refused_on_both_sides() {
    let a = [
        "--params",
        "100",
        "--edges",
        "0-1",
        "--connect-timeout",
        "3",
    ];
    let b = [
        "--params",
        "100",
        "--edges",
        "0-1",
        "--connect-timeout",
        "3",
        "--run-id",
        "stale-run",
    ];
    let (l0, l1) = refused_pair("right", &a, &b);
    for l in [&l0, &l1] {
        assert!(l.contains("belongs to run"), "{l}");
    }
}

#[test]
fn wrong_version_and_garbage_are_refused() {
    let extra = [
        "--params",
        "100",
        "--edges",
        "0-1",
        "--connect-timeout",
        "3",
    ];
    let (mut n0, addr) = start_rank0("v", 2, &extra);
    // A client of a future protocol version.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut pre = b"A2CIDNET".to_vec();
    pre.extend_from_slice(&99u32.to_le_bytes());
    s.write_all(&pre).expect("write");
    let mut theirs = [0u8; 12];
    s.read_exact(&mut theirs)
        .expect("rank 0 sends its own prelude");
    assert_eq!(&theirs[..8], b"A2CIDNET");
    assert_eq!(
        u32::from_le_bytes([theirs[8], theirs[9], theirs[10], theirs[11]]),
        a2cid_net::PROTOCOL_VERSION
    );
    // And a client speaking garbage.
    let mut g = std::net::TcpStream::connect(&addr).expect("connect");
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let l0 = n0.wait_for("CONNECT_ERR", Duration::from_secs(30));
    assert!(l0.contains("speaks mesh protocol version 99"), "{l0}");
    assert!(l0.contains("same a2cid version"), "{l0}");
    assert!(l0.contains("not an a2cid worker"), "{l0}");
}

#[test]
fn frozen_peer_is_detected_and_dropped() {
    // Complete graph on 3; rank 2 is frozen (SIGSTOP): its sockets stay open but it answers nothing.
    // It is dropped once its failures span 2 s of silence (10 s by default).
    let extra = [
        "--params",
        "20000",
        "--edges",
        "0-1,1-2,2-0",
        "--rate",
        "0.3",
        "--seconds",
        "8",
        "--unresponsive-after",
        "2",
    ];
    let (mut n0, addr) = start_rank0("f", 3, &extra);
    let mut n1 = Node::spawn("f", &args(1, 3, &addr, &extra));
    let mut n2 = Node::spawn("f", &args(2, 3, &addr, &extra));
    n2.wait_for("EXCHANGE_OK", Duration::from_secs(20));
    let pid = n2.child.id().to_string();
    let st = Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .expect("kill -STOP");
    assert!(st.success());
    let outs = [
        (0, n0.finish(Duration::from_secs(60))),
        (1, n1.finish(Duration::from_secs(60))),
    ];
    for (r, lines) in &outs {
        eprintln!(
            "rank {r}: {:#?}",
            lines
                .iter()
                .filter(|l| !l.starts_with("EXCHANGE_OK"))
                .collect::<Vec<_>>()
        );
    }
    for (r, lines) in outs {
        let lost = lines
            .iter()
            .find(|l| l.starts_with("PEER_LOST peer=2"))
            .unwrap_or_else(|| panic!("rank {r}: {lines:#?}"));
        assert!(lost.contains("unresponsive"), "{lost}");
        assert!(lost.contains("graceful=false"), "{lost}");
        let last_t = lines
            .iter()
            .filter(|l| l.starts_with("EXCHANGE_OK peer="))
            .filter_map(|l| {
                l.split("t=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .fold(0.0, f64::max);
        assert!(
            last_t > 7.0,
            "rank {r} stopped exchanging (last at t={last_t}): {:#?}",
            lines
                .iter()
                .filter(|l| !l.starts_with("EXCHANGE_OK"))
                .collect::<Vec<_>>()
        );
        let err = lines
            .iter()
            .find(|l| l.starts_with("ALLREDUCE_ERR"))
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert!(err.contains("rank=2"), "{err}");
    }
    n2.kill();
}

#[test]
fn a_flood_of_silent_connections_from_one_host_does_not_keep_a_worker_out() {
    let extra = ["--params", "100", "--edges", "0-1", "--seconds", "1"];
    let (mut n0, addr) = start_rank0("flood", 2, &extra);
    // 200 connections that never speak, from another loopback address (another "host").
    let rt = tokio::runtime::Runtime::new().unwrap();
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let _silent: Vec<tokio::net::TcpStream> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..200 {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(c) = s.connect(target).await {
                v.push(c);
            }
        }
        v
    });
    let t0 = std::time::Instant::now();
    let mut n1 = Node::spawn("flood", &args(1, 2, &addr, &extra));
    n1.wait_for("READY", Duration::from_secs(60));
    let joined = t0.elapsed();
    assert!(
        joined < Duration::from_secs(8),
        "the worker joined only after {joined:?} (the handshake timeout is 10 s)"
    );
    n0.finish(Duration::from_secs(60));
    n1.finish(Duration::from_secs(60));
}
