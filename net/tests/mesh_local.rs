//! Several meshes in one process over loopback. Every test is bounded by a timeout.

use std::time::Duration;

use a2cid_net::{Fingerprint, Mesh, MeshConfig, MeshEvent, NetError, Rendezvous, Secret};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn cfg(
    rank: usize,
    world: usize,
    rdv: Rendezvous,
    edges: &[(usize, usize, f64)],
    params: usize,
) -> MeshConfig {
    let mut c = MeshConfig::new(
        rank,
        world,
        rdv,
        edges.to_vec(),
        "local-test",
        Fingerprint::new(params as u64, "flat"),
        Secret::new(b"local-test-secret-0123".to_vec()).expect("secret"),
    );
    c.bind_host = "127.0.0.1".into();
    c.connect_timeout = Duration::from_secs(20);
    c
}

/// Start `world` meshes with a rank-0 rendezvous on a free port.
async fn cluster(
    world: usize,
    edges: &[(usize, usize, f64)],
    params: usize,
    chunk: usize,
) -> Vec<Mesh> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let mut handles = Vec::new();
    for r in 0..world {
        let mut c = cfg(
            r,
            world,
            Rendezvous::Rank0 { addr: addr.clone() },
            edges,
            params,
        );
        c.chunk_floats = chunk;
        if r == 0 {
            c.listener = Some(l.try_clone().expect("clone"));
        }
        handles.push(tokio::spawn(Mesh::connect(c)));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("join").expect("connect"));
    }
    out
}

fn ring(n: usize, rate: f64) -> Vec<(usize, usize, f64)> {
    if n == 2 {
        return vec![(0, 1, rate)];
    }
    (0..n).map(|i| (i, (i + 1) % n, rate)).collect()
}

fn pattern(r: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            f32::from_bits(
                (r as u32).wrapping_mul(0x9E37_79B9) ^ (i as u32).wrapping_mul(0x85EB_CA6B),
            )
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairwise_exchanges_deliver_exact_bytes() {
    timeout(LIMIT, async {
        let n = 100_003;
        let meshes = cluster(2, &[(0, 1, 50.0)], n, 1 << 12).await;
        let mut tasks = Vec::new();
        for mut m in meshes {
            tasks.push(tokio::spawn(async move {
                let me = m.rank();
                let mine = pattern(me, n);
                let mut done = 0;
                let mut tau = 0.0;
                while done < 10 {
                    tau += 0.05;
                    m.advance_clock(tau);
                    match timeout(Duration::from_millis(5), m.next_event()).await {
                        Ok(Some(MeshEvent::Exchange(req))) => {
                            let x = m.exchange(req, mine.clone()).await.expect("exchange");
                            assert_eq!(
                                bits(&x.theirs),
                                bits(&pattern(1 - me, n)),
                                "rank {me} got wrong bytes"
                            );
                            assert_eq!(bits(&x.mine), bits(&mine));
                            assert_eq!(x.stats.bytes_received, 4 * n as u64 + 17);
                            m.recycle(x.theirs);
                            done += 1;
                        }
                        Ok(Some(MeshEvent::ExchangeFailed { why, .. })) => {
                            panic!("exchange failed: {why}")
                        }
                        Ok(Some(_)) | Err(_) => {}
                        Ok(None) => panic!("mesh closed"),
                    }
                }
                let s = m.stats();
                assert!(s.exchanges >= 10);
                m
            }));
        }
        // Shut both down only once both reached 10 exchanges.
        let mut ms = Vec::new();
        for t in tasks {
            ms.push(t.await.expect("task"));
        }
        for m in ms {
            m.shutdown("test over").await.expect("shutdown");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectives_are_exact_for_many_world_sizes() {
    timeout(LIMIT, async {
        for world in [1usize, 2, 3, 5] {
            for n in [0usize, 1, 7, 1000] {
                let meshes = cluster(world, &ring(world, 0.0), n.max(1), 3).await;
                let mut tasks = Vec::new();
                for mut m in meshes {
                    tasks.push(tokio::spawn(async move {
                        let r = m.rank();
                        let mut v: Vec<f32> = (0..n).map(|i| (r * 1000 + i) as f32).collect();
                        m.allreduce_mean(&mut v).await.expect("allreduce");
                        let mut b: Vec<f32> = if r == world - 1 {
                            pattern(9, n)
                        } else {
                            vec![0.0; n]
                        };
                        m.broadcast(world - 1, &mut b).await.expect("broadcast");
                        m.barrier().await.expect("barrier");
                        (m, v, b)
                    }));
                }
                let mut results = Vec::new();
                for t in tasks {
                    results.push(t.await.expect("task"));
                }
                let first = bits(&results[0].1);
                for (m, v, b) in results {
                    assert_eq!(
                        bits(&v),
                        first,
                        "world {world}: ranks disagree after all-reduce"
                    );
                    for (i, x) in v.iter().enumerate() {
                        let want =
                            (0..world).map(|r| (r * 1000 + i) as f64).sum::<f64>() / world as f64;
                        assert!(
                            (*x as f64 - want).abs() < 1e-3,
                            "world {world} n {n} i {i}: {x} vs {want}"
                        );
                    }
                    assert_eq!(bits(&b), bits(&pattern(9, n)), "broadcast differs");
                    m.shutdown("done").await.expect("shutdown");
                }
            }
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_tells_neighbours() {
    timeout(LIMIT, async {
        let mut meshes = cluster(3, &ring(3, 1.0), 10, 16).await;
        let m2 = meshes.pop().expect("rank 2");
        m2.shutdown_handle().shutdown("operator asked");
        let mut m2 = m2;
        loop {
            match m2.next_event().await {
                Some(MeshEvent::ShutdownRequested) => break,
                Some(_) => {}
                None => panic!("closed before the shutdown event"),
            }
        }
        m2.shutdown("bye").await.expect("shutdown");
        for mut m in meshes {
            let lost = loop {
                match m.next_event().await {
                    // Rank 0 leaving (it shuts down first) may be seen before rank 2 by rank 1.
                    Some(MeshEvent::PeerLost {
                        peer: 2,
                        graceful,
                        why,
                    }) => break (2, graceful, why),
                    Some(_) => {}
                    None => panic!("mesh closed"),
                }
            };
            assert_eq!(lost.0, 2);
            assert!(lost.1, "a goodbye must be graceful: {}", lost.2);
            // A collective now fails at once, naming rank 2.
            let mut v = vec![1.0f32; 10];
            let e = m.allreduce_mean(&mut v).await.unwrap_err();
            assert!(matches!(e, NetError::MemberLost { rank: 2, .. }), "{e}");
            m.shutdown("done").await.expect("shutdown");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declining_an_exchange_calls_it_off_on_both_sides() {
    timeout(LIMIT, async {
        let meshes = cluster(2, &[(0, 1, 20.0)], 10, 16).await;
        let mut tasks = Vec::new();
        for mut m in meshes {
            tasks.push(tokio::spawn(async move {
                let mut tau = 0.0;
                loop {
                    tau += 0.05;
                    m.advance_clock(tau);
                    match timeout(Duration::from_millis(5), m.next_event()).await {
                        // Rank 1 declines by dropping the request.
                        Ok(Some(MeshEvent::Exchange(req))) if m.rank() == 1 => drop(req),
                        Ok(Some(MeshEvent::Exchange(req))) => {
                            req.supply(vec![0.0; 10]).expect("supply")
                        }
                        Ok(Some(MeshEvent::ExchangeFailed { peer, why, .. })) => {
                            return (m, peer, why)
                        }
                        Ok(Some(MeshEvent::Exchanged(_))) => panic!("declined exchange completed"),
                        _ => {}
                    }
                }
            }));
        }
        for t in tasks {
            let (m, peer, why) = t.await.expect("task");
            assert_eq!(peer, 1 - m.rank());
            assert!(
                why.contains("declined") || why.contains("called the exchange off"),
                "{why}"
            );
            m.shutdown("done").await.expect("shutdown");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_snapshot_is_reported_to_its_sender() {
    timeout(LIMIT, async {
        let meshes = cluster(2, &[(0, 1, 20.0)], 10, 16).await;
        let mut tasks = Vec::new();
        for mut m in meshes {
            tasks.push(tokio::spawn(async move {
                let me = m.rank();
                // Rank 0 has diverged: its snapshot holds a NaN.
                let mine = if me == 0 {
                    vec![f32::NAN; 10]
                } else {
                    vec![1.0; 10]
                };
                let mut tau = 0.0;
                loop {
                    tau += 0.05;
                    m.advance_clock(tau);
                    match timeout(Duration::from_millis(5), m.next_event()).await {
                        Ok(Some(MeshEvent::Exchange(req))) => {
                            req.supply(mine.clone()).expect("supply")
                        }
                        Ok(Some(MeshEvent::Exchanged(x))) if me == 1 => {
                            assert!(x.theirs[0].is_nan());
                            x.refuse("value 0 is NaN");
                            return (m, x.seq, String::new());
                        }
                        // (The refusal may overtake rank 0's own completion of the exchange.)
                        Ok(Some(MeshEvent::Exchanged(x))) => m.recycle(x.theirs),
                        Ok(Some(MeshEvent::SnapshotRefused { by, seq, why })) => {
                            assert_eq!((me, by), (0, 1), "only rank 0's snapshot is refused");
                            return (m, seq, why);
                        }
                        Ok(None) => panic!("mesh closed"),
                        _ => {}
                    }
                }
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("task"));
        }
        let (refused_seq, told_seq, why) = (results[1].1, results[0].1, results[0].2.clone());
        assert_eq!(told_seq, refused_seq, "the sender is told which exchange");
        assert_eq!(why, "value 0 is NaN");
        for (m, _, _) in results {
            m.shutdown("done").await.expect("shutdown");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_address_list_and_garbage_connections() {
    timeout(LIMIT, async {
        let ls: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let addrs: Vec<String> = ls
            .iter()
            .map(|l| l.local_addr().expect("addr").to_string())
            .collect();
        // Garbage thrown at rank 0 before and during start-up must not disturb it.
        let target = addrs[0].clone();
        let junk = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for i in 0..5u8 {
                if let Ok(mut s) = tokio::net::TcpStream::connect(&target).await {
                    let _ = s.write_all(&[i; 37]).await;
                }
            }
        });
        let mut hs = Vec::new();
        for (r, l) in ls.into_iter().enumerate() {
            let mut c = cfg(r, 3, Rendezvous::Explicit(addrs.clone()), &ring(3, 0.0), 8);
            c.listener = Some(l);
            hs.push(tokio::spawn(Mesh::connect(c)));
        }
        let _ = junk.await;
        let mut ms = Vec::new();
        for h in hs {
            ms.push(h.await.expect("join").expect("connect"));
        }
        let mut tasks = Vec::new();
        for mut m in ms {
            tasks.push(tokio::spawn(async move {
                let mut v = vec![m.rank() as f32; 8];
                m.allreduce_mean(&mut v).await.expect("allreduce");
                assert_eq!(v, vec![1.0; 8]);
                m
            }));
        }
        for t in tasks {
            t.await
                .expect("task")
                .shutdown("done")
                .await
                .expect("shutdown");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_local_caller_times_out_without_dropping_the_peer() {
    timeout(LIMIT, async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let mut hs = Vec::new();
        for r in 0..2 {
            let mut c = cfg(
                r,
                2,
                Rendezvous::Rank0 { addr: addr.clone() },
                &[(0, 1, 20.0)],
                10,
            );
            c.exchange_timeout = (
                Duration::from_millis(300),
                Duration::from_millis(100),
                Duration::from_secs(1),
            );
            c.max_exchange_failures = 2;
            if r == 0 {
                c.listener = Some(l.try_clone().expect("clone"));
            }
            hs.push(tokio::spawn(Mesh::connect(c)));
        }
        let mut ms = Vec::new();
        for h in hs {
            ms.push(h.await.expect("join").expect("connect"));
        }
        let mut m1 = ms.pop().expect("1");
        let mut m0 = ms.pop().expect("0");
        // Rank 1's caller sits on the requests and never supplies: its own exchanges time out and
        // it calls them off; that is its fault, so neither side drops the other.
        let hog = tokio::spawn(async move {
            let mut held = Vec::new();
            let mut own_timeouts = 0;
            while own_timeouts < 4 {
                match m1.next_event().await {
                    Some(MeshEvent::Exchange(req)) => held.push(req),
                    Some(MeshEvent::ExchangeFailed { why, .. }) if why.contains("timed out") => {
                        own_timeouts += 1
                    }
                    Some(MeshEvent::PeerLost { why, .. }) => panic!("rank 1 dropped rank 0: {why}"),
                    Some(_) => {}
                    None => panic!("closed"),
                }
            }
            drop(held);
            m1
        });
        let (mut called_off, mut tau) = (0, 0.0);
        while !hog.is_finished() {
            tau += 0.05;
            m0.advance_clock(tau);
            match timeout(Duration::from_millis(5), m0.next_event()).await {
                Ok(Some(MeshEvent::Exchange(req))) => req.supply(vec![1.0; 10]).expect("supply"),
                Ok(Some(MeshEvent::ExchangeFailed { .. })) => called_off += 1,
                Ok(Some(MeshEvent::PeerLost { why, .. })) => panic!("rank 0 dropped rank 1: {why}"),
                Ok(Some(MeshEvent::Exchanged(_))) => {
                    panic!("an exchange without rank 1's snapshot completed")
                }
                Ok(None) => panic!("mesh closed"),
                _ => {}
            }
        }
        let m1 = hog.await.expect("hog");
        assert!(
            called_off >= 3,
            "rank 0 saw {called_off} exchanges called off"
        );
        assert!(m0.stats().lost_peers.is_empty());
        assert!(m1.stats().lost_peers.is_empty());
        m0.shutdown("done").await.expect("shutdown");
        m1.shutdown("done").await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_mesh_still_says_goodbye() {
    timeout(LIMIT, async {
        let mut meshes = cluster(2, &[(0, 1, 1.0)], 10, 16).await;
        drop(meshes.pop().expect("rank 1"));
        let mut m0 = meshes.pop().expect("rank 0");
        loop {
            match m0.next_event().await {
                Some(MeshEvent::PeerLost {
                    peer: 1,
                    graceful,
                    why,
                }) => {
                    assert!(graceful, "{why}");
                    assert!(why.contains("mesh dropped"), "{why}");
                    break;
                }
                Some(_) => {}
                None => panic!("mesh closed"),
            }
        }
        m0.shutdown("done").await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_every_task_including_the_acceptor() {
    timeout(LIMIT, async {
        let meshes = cluster(2, &[(0, 1, 1.0)], 10, 16).await;
        let addrs: Vec<_> = meshes.iter().map(|m| m.local_addr()).collect();
        for m in meshes {
            m.shutdown("done").await.expect("shutdown");
        }
        for addr in addrs {
            // The listener closes once the acceptor has seen the shutdown signal.
            let mut refused = false;
            for _ in 0..200 {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    refused = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(refused, "{addr} still accepts connections after shutdown");
        }
    })
    .await
    .expect("test timed out");
}

/// One worker's stop reaches every other worker once, across the ring, however many paths lead
/// to it; the one that announced it hears nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reaches_every_worker_once() {
    timeout(LIMIT, async {
        let world = 5;
        let mut meshes = cluster(world, &ring(world, 0.0), 8, 1 << 12).await;
        meshes[2].announce_stop("the epochs are done");
        for m in meshes.iter_mut() {
            let me = m.rank();
            let mut heard = Vec::new();
            while let Ok(Some(ev)) = timeout(Duration::from_millis(1500), m.next_event()).await {
                if let MeshEvent::RunStopping { origin, reason } = ev {
                    heard.push((origin, reason));
                }
            }
            if me == 2 {
                assert!(heard.is_empty(), "rank 2 heard its own stop: {heard:?}");
            } else {
                assert_eq!(
                    heard,
                    vec![(2, "the epochs are done".to_string())],
                    "rank {me}"
                );
            }
        }
        for m in meshes {
            m.shutdown("test done").await.expect("shutdown");
        }
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_rejoins_takes_a_neighbours_state_and_the_collectives_go_on() {
    timeout(LIMIT, async {
        let ls: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let addrs: Vec<String> = ls
            .iter()
            .map(|l| l.local_addr().expect("addr").to_string())
            .collect();
        let mut hs = Vec::new();
        for (r, l) in ls.into_iter().enumerate() {
            let mut c = cfg(r, 3, Rendezvous::Explicit(addrs.clone()), &ring(3, 0.0), 8);
            c.listener = Some(l);
            hs.push(tokio::spawn(Mesh::connect(c)));
        }
        let mut ms = Vec::new();
        for h in hs {
            ms.push(h.await.expect("join").expect("connect"));
        }
        // One collective before the failure: the newcomer must continue the count.
        let mut tasks = Vec::new();
        for mut m in ms {
            tasks.push(tokio::spawn(async move {
                m.barrier().await.expect("barrier");
                m
            }));
        }
        let mut ms = Vec::new();
        for t in tasks {
            ms.push(t.await.expect("task"));
        }
        // Rank 2 goes away; the survivors see it lost.
        let gone = ms.pop().expect("rank 2");
        drop(gone);
        let mut survivors = Vec::new();
        for mut m in ms {
            survivors.push(tokio::spawn(async move {
                let me = m.rank();
                loop {
                    match m.next_event().await {
                        Some(MeshEvent::PeerLost { peer: 2, .. }) => break,
                        Some(_) => {}
                        None => panic!("mesh closed"),
                    }
                }
                // Then it comes back: answer its request for the state (rank 0, its first
                // neighbour, is asked) and see it rejoin.
                let (mut rejoined, mut asked) = (false, me != 0);
                while !(rejoined && asked) {
                    match m.next_event().await {
                        Some(MeshEvent::PeerRejoined { peer }) => {
                            assert_eq!(peer, 2);
                            rejoined = true;
                        }
                        Some(MeshEvent::StateRequested(req)) => {
                            assert_eq!((me, req.peer), (0, 2));
                            req.supply(
                                41.5,
                                vec![vec![1.5; 8], vec![-2.0; 8]],
                                "{\"grads\":[7,8,9]}".into(),
                            );
                            asked = true;
                        }
                        Some(_) => {}
                        None => panic!("mesh closed"),
                    }
                }
                let mut v = vec![me as f32; 8];
                m.allreduce_mean(&mut v)
                    .await
                    .expect("allreduce after the rejoin");
                assert_eq!(v, vec![1.0; 8]);
                m
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = cfg(2, 3, Rendezvous::Explicit(addrs.clone()), &ring(3, 0.0), 8);
        let (mut back, state) = Mesh::rejoin(c).await.expect("rejoin");
        assert_eq!(state.from, 0);
        assert_eq!(state.clock, 41.5);
        assert_eq!(state.meta, "{\"grads\":[7,8,9]}");
        assert_eq!(state.buffers, vec![vec![1.5f32; 8], vec![-2.0f32; 8]]);
        let mut v = vec![2.0f32; 8];
        back.allreduce_mean(&mut v)
            .await
            .expect("the rejoined worker's all-reduce");
        assert_eq!(v, vec![1.0; 8]);
        for s in survivors {
            s.await
                .expect("task")
                .shutdown("done")
                .await
                .expect("shutdown");
        }
        back.shutdown("done").await.expect("shutdown");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_with_no_live_neighbour_says_why() {
    timeout(LIMIT, async {
        let addrs: Vec<String> = (0..3)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").to_string()
            })
            .collect();
        let mut c = cfg(1, 3, Rendezvous::Explicit(addrs), &ring(3, 0.0), 8);
        c.connect_timeout = Duration::from_secs(2);
        let e = Mesh::rejoin(c).await.unwrap_err().to_string();
        assert!(
            e.contains("rank 1 could not rejoin the run") && e.contains("--resume"),
            "{e}"
        );
    })
    .await
    .expect("test timed out");
}
