//! Mesh benchmarks on loopback.
//!
//! - `exchange/mesh`: one full-duplex pairwise exchange of an 11.2 M-float snapshot (ResNet-18,
//!   45 MB each way) between two meshes, proposal round trip included;
//! - `exchange/raw_tcp`: the same bytes both ways on a bare pair of loopback TCP sockets (the floor);
//!   the ratio of the two throughputs is printed;
//! - `allreduce/ring4`: ring all-reduce of 11.2 M floats over 4 ranks; throughput is bus bandwidth
//!   (2 (p-1)/p x bytes per second).
//!
//! `A2CID_BENCH_FLOATS` overrides the payload size.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use a2cid_net::{Fingerprint, Mesh, MeshConfig, MeshEvent, Rendezvous, Secret};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn floats() -> usize {
    std::env::var("A2CID_BENCH_FLOATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11_200_000)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn cluster(world: usize, edges: Vec<(usize, usize, f64)>, n: usize) -> Vec<Mesh> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let secret = Secret::new(b"bench-mesh-secret-0123".to_vec()).expect("secret");
    let mut hs = Vec::new();
    for r in 0..world {
        let mut c = MeshConfig::new(
            r,
            world,
            Rendezvous::Rank0 { addr: addr.clone() },
            edges.clone(),
            "bench",
            Fingerprint::new(n as u64, "flat"),
            secret.clone(),
        );
        c.bind_host = "127.0.0.1".into();
        if r == 0 {
            c.listener = Some(l.try_clone().expect("clone listener"));
        }
        hs.push(tokio::spawn(Mesh::connect(c)));
    }
    let mut out = Vec::new();
    for h in hs {
        out.push(h.await.expect("join").expect("connect"));
    }
    out
}

/// Wait for the agreed exchange, supply `snap`, return the snapshot buffer for reuse.
async fn drive(m: &mut Mesh, snap: Vec<f32>) -> Vec<f32> {
    loop {
        match m.next_event().await {
            Some(MeshEvent::Exchange(req)) => {
                let x = m.exchange(req, snap).await.expect("exchange");
                m.recycle(x.theirs);
                return x.mine;
            }
            Some(_) => continue,
            None => panic!("mesh closed"),
        }
    }
}

static MEAN_S: Mutex<[(f64, u64); 2]> = Mutex::new([(0.0, 0); 2]);

fn record(slot: usize, d: Duration, iters: u64) {
    if let Ok(mut m) = MEAN_S.lock() {
        m[slot].0 += d.as_secs_f64();
        m[slot].1 += iters;
    }
}

fn bench_exchange(c: &mut Criterion) {
    let n = floats();
    let rt = runtime();
    let bytes_both_ways = 2 * 4 * n as u64;
    let mut g = c.benchmark_group("exchange");
    g.throughput(Throughput::Bytes(bytes_both_ways));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));

    // Two meshes, edge 0-1 owned by rank 0; the clock is pushed far ahead so an exchange is due now.
    let mut meshes = rt.block_on(cluster(2, vec![(0, 1, 1.0)], n));
    let mut m1 = meshes.pop().expect("rank 1");
    let mut m0 = meshes.pop().expect("rank 0");
    let mut s0: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut s1: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
    let mut tau = 0.0;
    g.bench_function("mesh", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    tau += 1000.0;
                    m0.advance_clock(tau);
                    let (a, b) = tokio::join!(
                        drive(&mut m0, std::mem::take(&mut s0)),
                        drive(&mut m1, std::mem::take(&mut s1))
                    );
                    s0 = a;
                    s1 = b;
                }
                let d = t.elapsed();
                record(0, d, iters);
                d
            })
        })
    });

    // Raw loopback TCP: the same bytes, both directions at once, straight from/to preallocated buffers.
    let (mut a, mut b) = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        let (c, (s, _)) = (c.expect("connect"), s.expect("accept"));
        c.set_nodelay(true).expect("nodelay");
        s.set_nodelay(true).expect("nodelay");
        (c, s)
    });
    let src_a = vec![1u8; 4 * n];
    let src_b = vec![2u8; 4 * n];
    let mut dst_a = vec![0u8; 4 * n];
    let mut dst_b = vec![0u8; 4 * n];
    g.bench_function("raw_tcp", |bch| {
        bch.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    let (ar, aw) = a.split();
                    let (br, bw) = b.split();
                    let (mut ar, mut aw, mut br, mut bw) = (ar, aw, br, bw);
                    let (x, y, z, w) = tokio::join!(
                        aw.write_all(&src_a),
                        br.read_exact(&mut dst_b),
                        bw.write_all(&src_b),
                        ar.read_exact(&mut dst_a)
                    );
                    x.expect("write");
                    y.expect("read");
                    z.expect("write");
                    w.expect("read");
                }
                let d = t.elapsed();
                record(1, d, iters);
                d
            })
        })
    });
    g.finish();
    if let Ok(m) = MEAN_S.lock() {
        let mesh = m[0].0 / m[0].1.max(1) as f64;
        let raw = m[1].0 / m[1].1.max(1) as f64;
        let gb = bytes_both_ways as f64 / 1e9;
        println!(
            "exchange of {n} floats ({:.1} MB each way): mesh {:.2} ms ({:.2} GB/s), raw TCP {:.2} ms ({:.2} GB/s), \
             mesh/raw throughput ratio = {:.3}",
            4.0 * n as f64 / 1e6,
            mesh * 1e3,
            gb / mesh,
            raw * 1e3,
            gb / raw,
            raw / mesh
        );
    }
    rt.block_on(async {
        let _ = m0.shutdown("bench over").await;
        let _ = m1.shutdown("bench over").await;
    });
}

fn bench_allreduce(c: &mut Criterion) {
    let n = floats();
    let p = 4usize;
    let rt = runtime();
    let bus_bytes = (2 * (p - 1) * 4 * n / p) as u64;
    let mut g = c.benchmark_group("allreduce");
    g.throughput(Throughput::Bytes(bus_bytes));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(10));
    let ring: Vec<(usize, usize, f64)> = (0..p).map(|i| (i, (i + 1) % p, 0.0)).collect();
    let mut meshes = rt.block_on(cluster(p, ring, n));
    let mut bufs: Vec<Vec<f32>> = (0..p).map(|r| vec![r as f32; n]).collect();
    let mut total = (0.0f64, 0u64);
    g.bench_function("ring4", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    let futs = meshes
                        .iter_mut()
                        .zip(bufs.iter_mut())
                        .map(|(m, v)| m.allreduce_mean(v));
                    for r in futures_join_all(futs).await {
                        r.expect("allreduce");
                    }
                }
                let d = t.elapsed();
                total.0 += d.as_secs_f64();
                total.1 += iters;
                d
            })
        })
    });
    g.finish();
    let mean = total.0 / total.1.max(1) as f64;
    println!(
        "ring all-reduce of {n} floats over {p} ranks: {:.1} ms, bus bandwidth {:.2} GB/s, algorithm bandwidth {:.2} GB/s",
        mean * 1e3,
        bus_bytes as f64 / mean / 1e9,
        (4 * n) as f64 / mean / 1e9
    );
    rt.block_on(async {
        for m in meshes {
            let _ = m.shutdown("bench over").await;
        }
    });
}

/// Run the futures concurrently on this task (they borrow, so they cannot be spawned).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

criterion_group!(benches, bench_exchange, bench_allreduce);
criterion_main!(benches);
