//! A scripted mesh worker for cross-process tests and demos. Prints one line per outcome on stdout
//! (`LISTEN`, `READY`, `EXCHANGE_OK`, `PEER_LOST`, `ALLREDUCE_OK`, `ALLREDUCE_ERR`, ...); logs on stderr.
//!
//! ```text
//! A2CID_SECRET=s a2cid-mesh-node --rank 0 --world 3 --rendezvous 127.0.0.1:0 --params 100000 \
//!     --edges 0-1,1-2,2-0 --rate 2 --seconds 3
//! ```
//! Every worker sends a fixed bit pattern derived from its rank (NaN payloads included), so the
//! receiver checks the exact bits it got.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use a2cid_net::{Fingerprint, Mesh, MeshConfig, MeshEvent, NetError, Rendezvous, Secret};

struct Args {
    rank: usize,
    world: usize,
    rendezvous: String,
    params: usize,
    edges: Vec<(usize, usize)>,
    rate: f64,
    seconds: f64,
    steps_per_sec: f64,
    run_id: String,
    layout: String,
    secret_file: Option<PathBuf>,
    connect_timeout: f64,
    final_allreduce: bool,
    /// Seconds a failing peer must stay silent before it is dropped (the mesh's default if None).
    unresponsive_after: Option<f64>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        rank: 0,
        world: 1,
        rendezvous: "127.0.0.1:0".into(),
        params: 1000,
        edges: Vec::new(),
        rate: 1.0,
        seconds: 2.0,
        steps_per_sec: 50.0,
        run_id: "test-run".into(),
        layout: "flat".into(),
        secret_file: None,
        connect_timeout: 30.0,
        final_allreduce: true,
        unresponsive_after: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let key = argv[i].as_str();
        let val = argv
            .get(i + 1)
            .cloned()
            .ok_or_else(|| format!("{key} needs a value"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{key}: '{v}' is not a number"))
        };
        match key {
            "--rank" => a.rank = num(&val)? as usize,
            "--world" => a.world = num(&val)? as usize,
            "--rendezvous" => a.rendezvous = val,
            "--params" => a.params = num(&val)? as usize,
            "--rate" => a.rate = num(&val)?,
            "--seconds" => a.seconds = num(&val)?,
            "--steps-per-sec" => a.steps_per_sec = num(&val)?,
            "--run-id" => a.run_id = val,
            "--layout" => a.layout = val,
            "--secret-file" => a.secret_file = Some(PathBuf::from(val)),
            "--connect-timeout" => a.connect_timeout = num(&val)?,
            "--final" => a.final_allreduce = val == "allreduce",
            "--unresponsive-after" => a.unresponsive_after = Some(num(&val)?),
            "--edges" => {
                for e in val.split(',').filter(|e| !e.is_empty()) {
                    let (x, y) = e.split_once('-').ok_or_else(|| format!("bad edge '{e}'"))?;
                    a.edges.push((num(x)? as usize, num(y)? as usize));
                }
            }
            _ => return Err(format!("unknown flag {key}")),
        }
        i += 2;
    }
    Ok(a)
}

/// The bits rank `r` sends at index `i`.
fn pattern(r: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let mut x = ((r as u64) << 40) ^ i as u64;
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            f32::from_bits((x ^ (x >> 31)) as u32)
        })
        .collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    bytemuck::cast_slice::<f32, u32>(a) == bytemuck::cast_slice::<f32, u32>(b)
}

/// FNV-1a over the little-endian bytes: equal on every rank exactly when the bits are.
fn fnv(data: &[f32]) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    for x in data {
        h.write(&x.to_le_bytes());
    }
    h.finish()
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let code = match run().await {
        Ok(()) => 0,
        Err(e) => {
            say(format!("ERROR {e}"));
            2
        }
    };
    std::process::exit(code);
}

async fn run() -> Result<(), String> {
    let a = parse()?;
    let secret = Secret::resolve(a.secret_file.as_deref()).map_err(|e| e.to_string())?;
    let edges: Vec<(usize, usize, f64)> = a.edges.iter().map(|&(x, y)| (x, y, a.rate)).collect();
    let fp = Fingerprint::new(a.params as u64, &a.layout);
    let mut rendezvous = Rendezvous::Rank0 {
        addr: a.rendezvous.clone(),
    };
    let mut listener = None;
    if a.rank == 0 {
        let l = std::net::TcpListener::bind(&a.rendezvous)
            .map_err(|e| format!("bind {}: {e}", a.rendezvous))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        say(format!("LISTEN {addr}"));
        rendezvous = Rendezvous::Rank0 {
            addr: addr.to_string(),
        };
        listener = Some(l);
    }
    let mut cfg = MeshConfig::new(
        a.rank,
        a.world,
        rendezvous,
        edges,
        a.run_id.clone(),
        fp,
        secret,
    );
    cfg.listener = listener;
    cfg.bind_host = "127.0.0.1".into();
    cfg.connect_timeout = Duration::from_secs_f64(a.connect_timeout);
    cfg.chunk_floats = 1 << 14;
    if let Some(s) = a.unresponsive_after {
        cfg.unresponsive_after = Duration::from_secs_f64(s);
    }
    let mut mesh = match Mesh::connect(cfg).await {
        Ok(m) => m,
        Err(e) => {
            say(format!("CONNECT_ERR {e}"));
            return Ok(());
        }
    };
    mesh.shutdown_on_signals();
    say(format!("READY rank={} addr={}", a.rank, mesh.local_addr()));

    let mine = pattern(a.rank, a.params);
    let mut init = if a.rank == 0 {
        pattern(0, a.params)
    } else {
        vec![0.0; a.params]
    };
    match mesh.broadcast(0, &mut init).await {
        Ok(()) if same_bits(&init, &pattern(0, a.params)) => say("BROADCAST_OK".into()),
        Ok(()) => say("BROADCAST_BAD".into()),
        Err(e) => say(format!("BROADCAST_ERR {e}")),
    }

    let t0 = Instant::now();
    let mut interrupted = false;
    while t0.elapsed().as_secs_f64() < a.seconds && !interrupted {
        tokio::time::sleep(Duration::from_millis(5)).await; // stands for one gradient step
        mesh.advance_clock(t0.elapsed().as_secs_f64() * a.steps_per_sec);
        while let Some(ev) = mesh.try_next_event() {
            match ev {
                MeshEvent::Exchange(req) => {
                    let _ = req.supply_slice(&mine);
                }
                MeshEvent::Exchanged(x) => {
                    let ok = same_bits(&x.theirs, &pattern(x.peer, a.params))
                        && same_bits(&x.mine, &mine);
                    say(format!(
                        "{} peer={} t={:.3} bytes_sent={} bytes_received={} ms={:.2} missed={}",
                        if ok { "EXCHANGE_OK" } else { "EXCHANGE_BAD" },
                        x.peer,
                        t0.elapsed().as_secs_f64(),
                        x.stats.bytes_sent,
                        x.stats.bytes_received,
                        x.stats.total.as_secs_f64() * 1e3,
                        x.stats.missed_since_previous
                    ));
                    mesh.recycle(x.theirs);
                    mesh.recycle(x.mine);
                }
                MeshEvent::ExchangeFailed { peer, why, .. } => {
                    say(format!("EXCHANGE_FAILED peer={peer} why={why}"))
                }
                MeshEvent::PeerLost {
                    peer,
                    why,
                    graceful,
                } => say(format!(
                    "PEER_LOST peer={peer} graceful={graceful} t={:.3} why={why}",
                    t0.elapsed().as_secs_f64()
                )),
                MeshEvent::GraphSplit { components } => say(format!("GRAPH_SPLIT {components:?}")),
                MeshEvent::PeerRejoined { peer } => say(format!("PEER_REJOINED peer={peer}")),
                MeshEvent::StateRequested(req) => req.refuse("this node keeps no training state"),
                MeshEvent::SnapshotRefused { by, seq, why } => {
                    say(format!("SNAPSHOT_REFUSED by={by} seq={seq} why={why}"))
                }
                MeshEvent::ShutdownRequested => interrupted = true,
                MeshEvent::RunStopping { origin, reason } => {
                    say(format!("RUN_STOPPING origin={origin} reason={reason}"))
                }
            }
        }
    }
    let s = mesh.stats();
    for (peer, c) in &s.edges {
        say(format!(
            "EDGE peer={peer} fired={} completed={} missed={} failed={}",
            c.fired,
            c.completed,
            c.missed(),
            c.failed
        ));
    }

    if a.final_allreduce && !interrupted {
        let mut v: Vec<f32> = (0..a.params)
            .map(|i| ((a.rank + 1) * (i % 7)) as f32)
            .collect();
        let t = Instant::now();
        match mesh.allreduce_mean(&mut v).await {
            Ok(_) => {
                let w = a.world as f32;
                let sum_r: f32 = (1..=a.world).map(|r| r as f32).sum();
                let ok = v
                    .iter()
                    .enumerate()
                    .all(|(i, x)| (x - sum_r * (i % 7) as f32 / w).abs() < 1e-4);
                say(format!("ALLREDUCE_OK hash={:016x} values_ok={ok}", fnv(&v)));
                match mesh.barrier().await {
                    Ok(()) => say("BARRIER_OK".into()),
                    Err(e) => say(format!("BARRIER_ERR {e}")),
                }
            }
            Err(e) => {
                let rank = match &e {
                    NetError::MemberLost { rank, .. } => rank.to_string(),
                    _ => "?".into(),
                };
                say(format!(
                    "ALLREDUCE_ERR rank={rank} ms={:.1} msg={e}",
                    t.elapsed().as_secs_f64() * 1e3
                ));
            }
        }
    }
    mesh.shutdown("scenario finished")
        .await
        .map_err(|e| e.to_string())?;
    say("SHUTDOWN_OK".into());
    Ok(())
}
