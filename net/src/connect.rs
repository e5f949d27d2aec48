//! Start-up: which links this worker has ([`Plan`]), the listener, the [`Acceptor`] that
//! authenticates incoming connections, and opening every link (the higher rank of a link connects
//! to the lower, with backoff and jitter, until the start-up deadline). The address table comes
//! from [`crate::rendezvous`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::admission::{Admission, Warn, WarnLimiter};
use crate::auth::{handshake, Identity, Role};
use crate::config::MeshConfig;
use crate::connection::Connection;
use crate::error::NetError;
use crate::frame::{Frame, Hello, Msg, Purpose};
use crate::pool::BufPool;
use crate::rendezvous::Rendezvous;

/// Handshakes run at once at most: a flood of bogus connections cannot exhaust this worker.
const HANDSHAKE_SLOTS: usize = 64;

/// Which links this worker has, from its configuration. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Floats in one snapshot.
    pub(crate) params: usize,
    /// Graph neighbours (the pairing partners).
    pub(crate) neighbours: Vec<usize>,
    /// `(left, right)` ring neighbours, the collectives' path.
    pub(crate) ring: (usize, usize),
    /// Every rank this worker links to: graph and ring neighbours.
    pub(crate) links: BTreeSet<usize>,
}

impl Plan {
    pub(crate) fn new(cfg: &MeshConfig) -> Result<Plan, NetError> {
        if cfg.world == 0 || cfg.rank >= cfg.world {
            return Err(NetError::Config(format!(
                "rank {} is not below world {}",
                cfg.rank, cfg.world
            )));
        }
        for &(a, b, r) in &cfg.edges {
            if a >= cfg.world || b >= cfg.world {
                return Err(NetError::Config(format!(
                    "edge ({a}, {b}) names a rank outside world {}",
                    cfg.world
                )));
            }
            if !r.is_finite() || r < 0.0 {
                return Err(NetError::Config(format!(
                    "edge ({a}, {b}) has rate {r}: rates must be finite and >= 0"
                )));
            }
        }
        let params = usize::try_from(cfg.fingerprint.params)
            .map_err(|_| NetError::Config("parameter count does not fit in memory".into()))?;
        let neighbours =
            a2cid_topology::neighbours_of(cfg.rank, cfg.edges.iter().map(|&(a, b, _)| (a, b)));
        let ring = a2cid_topology::ring_neighbours(cfg.rank, cfg.world);
        let links = neighbours
            .iter()
            .copied()
            .chain([ring.0, ring.1])
            .filter(|&p| p != cfg.rank)
            .collect();
        Ok(Plan {
            params,
            neighbours,
            ring,
            links,
        })
    }
}

/// Who this worker is, as told to peers.
pub(crate) fn identity(cfg: &MeshConfig) -> Identity {
    Identity {
        rank: cfg.rank as u32,
        world: cfg.world as u32,
        run_id: cfg.run_id.clone(),
        fingerprint: cfg.fingerprint,
        secret: cfg.secret.clone(),
    }
}

/// Listen where the configuration says: a caller's listener, the own entry of an explicit list,
/// the rendezvous port on rank 0, else any free port.
pub(crate) async fn bind(cfg: &mut MeshConfig) -> Result<TcpListener, NetError> {
    if let Some(l) = cfg.listener.take() {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        l.set_nonblocking(true).map_err(|source| NetError::Bind {
            addr: addr.clone(),
            source,
        })?;
        return TcpListener::from_std(l).map_err(|source| NetError::Bind { addr, source });
    }
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .map(|(_, p)| p)
            .unwrap_or("0")
            .to_string()
    };
    let port = match &cfg.rendezvous {
        Rendezvous::Explicit(list) => {
            let own = list.get(cfg.rank).ok_or_else(|| {
                NetError::Config(format!(
                    "the explicit address list has {} entries, rank is {}",
                    list.len(),
                    cfg.rank
                ))
            })?;
            port_of(own)
        }
        Rendezvous::Rank0 { addr } if cfg.rank == 0 => port_of(addr),
        Rendezvous::Rank0 { .. } => "0".into(),
    };
    let addr = format!("{}:{port}", cfg.bind_host);
    TcpListener::bind(&addr)
        .await
        .map_err(|source| NetError::Bind { addr, source })
}

/// An authenticated incoming connection.
pub(crate) type Accepted = (Hello, Connection);

/// Handshakes every incoming connection in the background and queues the authenticated ones.
/// Runs until the mesh's shutdown token is cancelled; once start-up is over nobody takes from the
/// queue, so late or duplicate connections are closed right after their handshake.
pub(crate) struct Acceptor {
    rx: mpsc::Receiver<Result<Accepted, String>>,
    /// Connections for the other purpose, kept until asked for (links that arrive while rank 0
    /// still serves the rendezvous).
    early: Vec<Accepted>,
    refused: Vec<String>,
}

impl Acceptor {
    pub(crate) fn spawn(
        listener: TcpListener,
        me: &Identity,
        plan: &Plan,
        cfg: &MeshConfig,
        pool: &BufPool,
        shutdown: &CancellationToken,
    ) -> Acceptor {
        // As many as can be in handshake at once: each waits for room rather than being dropped.
        let (tx, rx) = mpsc::channel(HANDSHAKE_SLOTS);
        let task = AcceptTask {
            me: me.clone(),
            links: Arc::new(plan.links.clone()),
            rank: cfg.rank,
            handshake_timeout: cfg.handshake_timeout,
            pool: pool.clone(),
            tx,
            stop: shutdown.clone(),
        };
        tokio::spawn(task.run(listener));
        Acceptor {
            rx,
            early: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// The next authenticated connection for `purpose`, waiting until `deadline`. Refusals are
    /// recorded for the error message; connections for the other purpose are kept for later.
    pub(crate) async fn next(&mut self, purpose: Purpose, deadline: Instant) -> Option<Accepted> {
        if let Some(i) = self.early.iter().position(|(h, _)| h.purpose == purpose) {
            return Some(self.early.swap_remove(i));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(Ok((h, c)))) if h.purpose == purpose => return Some((h, c)),
                Ok(Some(Ok(other))) => self.early.push(other),
                Ok(Some(Err(why))) => self.refused.push(why),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// After start-up: every authenticated connection still to come (and those kept early), for
    /// the mesh to hand restarted neighbours' links to the driver.
    pub(crate) fn into_late(self) -> (Vec<Accepted>, mpsc::Receiver<Result<Accepted, String>>) {
        (self.early, self.rx)
    }

    /// "; refused connections: ..." for error messages, or nothing.
    pub(crate) fn refusals(&self) -> String {
        if self.refused.is_empty() {
            String::new()
        } else {
            format!("; refused connections: {}", self.refused.join("; "))
        }
    }
}

struct AcceptTask {
    me: Identity,
    links: Arc<BTreeSet<usize>>,
    rank: usize,
    handshake_timeout: Duration,
    pool: BufPool,
    tx: mpsc::Sender<Result<Accepted, String>>,
    stop: CancellationToken,
}

impl AcceptTask {
    async fn run(self, listener: TcpListener) {
        let slots = Arc::new(Semaphore::new(HANDSHAKE_SLOTS));
        let admission = Arc::new(std::sync::Mutex::new(Admission::default()));
        let warnings = Arc::new(std::sync::Mutex::new(WarnLimiter::default()));
        let this = Arc::new(self);
        loop {
            let accepted = tokio::select! {
                _ = this.stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, addr) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    warn!("rank {}: accept failed: {e}", this.rank);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let ip = addr.ip();
            if !lock(&admission).admit(ip) {
                // Too many handshakes in progress from this host: close it at once.
                drop(stream);
                this.warn_refused(
                    &warnings,
                    &format!(
                        "refused a connection from {addr}: {} handshakes from that host are \
                         already in progress",
                        crate::admission::PER_SOURCE
                    ),
                );
                continue;
            }
            let permit = tokio::select! {
                _ = this.stop.cancelled() => return,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let this = this.clone();
            let (admission, warnings) = (admission.clone(), warnings.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let label = format!("connection from {addr}");
                let result = this.authenticate(stream, &label).await;
                lock(&admission).release(ip);
                if let Err(why) = &result {
                    this.warn_refused(&warnings, &format!("refused {label}: {why}"));
                }
                tokio::select! {
                    _ = this.stop.cancelled() => {}
                    _ = this.tx.send(result) => {}
                }
            });
        }
    }

    /// Logs a refusal, a few per window; the rest are counted and reported with the next one.
    fn warn_refused(&self, limiter: &std::sync::Mutex<WarnLimiter>, what: &str) {
        match lock(limiter).on_warning(Instant::now()) {
            Warn::Log { suppressed: 0 } => warn!("rank {}: {what}", self.rank),
            Warn::Log { suppressed } => warn!(
                "rank {}: {what} ({suppressed} more refusals were not logged)",
                self.rank
            ),
            Warn::Quiet => {}
        }
    }

    async fn authenticate(&self, stream: TcpStream, label: &str) -> Result<Accepted, String> {
        let (rank, links) = (self.rank, &self.links);
        let check = |h: &Hello| match h.purpose {
            Purpose::Register if rank == 0 => Ok(()),
            Purpose::Register => Err("only rank 0 serves the rendezvous".to_string()),
            Purpose::Link if (h.rank as usize) < rank => {
                Err("the higher rank of a link connects to the lower, not the other way".into())
            }
            Purpose::Link if links.contains(&(h.rank as usize)) => Ok(()),
            Purpose::Link => Err("it is not a neighbour of this worker in the graph".into()),
            Purpose::Rejoin | Purpose::State if links.contains(&(h.rank as usize)) => Ok(()),
            Purpose::Rejoin | Purpose::State => {
                Err("it is not a neighbour of this worker in the graph".into())
            }
        };
        let mut conn = Connection::from_tcp(stream, self.pool.clone());
        let hello = tokio::select! {
            _ = self.stop.cancelled() => return Err("shutting down".into()),
            hello = handshake(
                &mut conn,
                &self.me,
                Role::Acceptor,
                Purpose::Link,
                label,
                &check,
                self.handshake_timeout,
            ) => hello,
        };
        hello.map(|h| (h, conn)).map_err(|e| e.to_string())
    }
}

/// Connect with exponential backoff and jitter until `deadline`.
pub(crate) async fn connect_retry(addr: &str, deadline: Instant) -> Result<TcpStream, String> {
    let mut delay = Duration::from_millis(20);
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(e.to_string());
                }
                let jitter = 0.5 + rand::random::<f64>();
                let wait = delay.mul_f64(jitter).min(deadline - now);
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Open every link: dial the lower-ranked neighbours, take the higher-ranked ones from the
/// acceptor. Later connections (restarted neighbours) stay queued in the acceptor.
pub(crate) async fn open_links(
    cfg: &MeshConfig,
    me: &Identity,
    plan: &Plan,
    table: &[String],
    acceptor: &mut Acceptor,
    pool: &BufPool,
    deadline: Instant,
) -> Result<BTreeMap<usize, Connection>, NetError> {
    let mut conns = BTreeMap::new();
    for &p in plan.links.iter().filter(|&&p| p < cfg.rank) {
        let conn = dial(cfg, me, Purpose::Link, p, &table[p], pool, deadline).await?;
        conns.insert(p, conn);
    }
    let expected: BTreeSet<usize> = plan
        .links
        .iter()
        .copied()
        .filter(|&p| p > cfg.rank)
        .collect();
    while !expected.iter().all(|p| conns.contains_key(p)) {
        match acceptor.next(Purpose::Link, deadline).await {
            // A second connection from the same rank replaces the first.
            Some((h, c)) => {
                conns.insert(h.rank as usize, c);
            }
            None => {
                let missing: Vec<usize> = expected
                    .iter()
                    .copied()
                    .filter(|p| !conns.contains_key(p))
                    .collect();
                let rank = missing.first().copied().unwrap_or(0);
                return Err(NetError::Connect {
                    rank,
                    addr: table.get(rank).cloned().unwrap_or_default(),
                    secs: cfg.connect_timeout.as_secs_f64(),
                    last: format!(
                        "ranks {missing:?} never connected to this worker{}",
                        acceptor.refusals()
                    ),
                });
            }
        }
    }
    Ok(conns)
}

/// A restarted worker re-opens every link it has: it dials each neighbour (whatever the ranks'
/// order), giving each until `deadline`. Neighbours that do not answer (dead, or finished) are
/// returned with the reason, not an error: the caller decides whether enough are left.
pub(crate) async fn reopen_links(
    cfg: &MeshConfig,
    me: &Identity,
    plan: &Plan,
    table: &[String],
    pool: &BufPool,
    deadline: Instant,
) -> (BTreeMap<usize, Connection>, Vec<(usize, String)>) {
    let tries = plan.links.iter().map(|&p| async move {
        let addr = &table[p];
        (
            p,
            dial(cfg, me, Purpose::Rejoin, p, addr, pool, deadline).await,
        )
    });
    let mut conns = BTreeMap::new();
    let mut missing = Vec::new();
    for (p, r) in futures::future::join_all(tries).await {
        match r {
            Ok(c) => {
                conns.insert(p, c);
            }
            Err(e) => missing.push((p, e.to_string())),
        }
    }
    (conns, missing)
}

/// A training state received from a neighbour (see [`crate::frame::Msg::State`]).
#[derive(Debug)]
pub struct PeerState {
    /// The neighbour it came from.
    pub from: usize,
    /// The neighbour's worker clock when it took the state.
    pub clock: f64,
    /// The runtime's description of the state (opaque to the mesh).
    pub meta: String,
    /// The buffers, in the order they were supplied.
    pub buffers: Vec<Vec<f32>>,
    /// Collectives the neighbour had completed (all ranks run the same ones, in order).
    pub(crate) ring_op: u64,
}

/// Ask `peer` for its current training state over a connection of its own.
pub(crate) async fn fetch_state(
    cfg: &MeshConfig,
    me: &Identity,
    peer: usize,
    addr: &str,
    pool: &BufPool,
    deadline: Instant,
) -> Result<PeerState, NetError> {
    let mut conn = dial(cfg, me, Purpose::State, peer, addr, pool, deadline).await?;
    conn.set_limits(crate::frame::Limits {
        params: cfg.fingerprint.params,
    });
    let left = deadline.saturating_duration_since(Instant::now());
    let failed =
        |why: String| NetError::Config(format!("rank {peer} did not send its state: {why}"));
    let read = async {
        let (clock, ring_op, buffers, meta) = match conn.read_frame().await {
            Ok(Frame::Msg(Msg::State {
                clock,
                ring_op,
                buffers,
                meta,
            })) => (clock, ring_op, buffers, meta),
            Ok(Frame::Msg(Msg::Verdict { reason, .. })) => return Err(failed(reason)),
            Ok(other) => return Err(failed(format!("it sent a {} frame", other.kind().name()))),
            Err(e) => return Err(failed(e.to_string())),
        };
        if !clock.is_finite() || buffers > 16 {
            return Err(failed(format!(
                "malformed state header (clock {clock}, {buffers} buffers)"
            )));
        }
        let mut out = Vec::with_capacity(buffers as usize);
        for i in 0..u64::from(buffers) {
            match conn.read_frame().await {
                Ok(Frame::Snapshot { seq, data }) if seq == i => out.push(data),
                Ok(other) => {
                    return Err(failed(format!(
                        "buffer {i} came as a {} frame",
                        other.kind().name()
                    )))
                }
                Err(e) => return Err(failed(e.to_string())),
            }
        }
        Ok(PeerState {
            from: peer,
            clock,
            meta,
            buffers: out,
            ring_op,
        })
    };
    match tokio::time::timeout(left, read).await {
        Ok(r) => r,
        Err(_) => Err(failed("timed out".into())),
    }
}

/// Connect to rank `peer` at `addr` and authenticate it.
async fn dial(
    cfg: &MeshConfig,
    me: &Identity,
    purpose: Purpose,
    peer: usize,
    addr: &str,
    pool: &BufPool,
    deadline: Instant,
) -> Result<Connection, NetError> {
    let stream = connect_retry(addr, deadline)
        .await
        .map_err(|last| NetError::Connect {
            rank: peer,
            addr: addr.to_string(),
            secs: cfg.connect_timeout.as_secs_f64(),
            last,
        })?;
    let want = peer as u32;
    let check = move |h: &Hello| {
        if h.rank == want {
            Ok(())
        } else {
            Err(format!("rank {want} was expected at that address"))
        }
    };
    let mut conn = Connection::from_tcp(stream, pool.clone());
    let label = format!("rank {peer} at {addr}");
    handshake(
        &mut conn,
        me,
        Role::Connector,
        purpose,
        &label,
        &check,
        cfg.handshake_timeout,
    )
    .await?;
    Ok(conn)
}

/// Locks `m`, also after a panic elsewhere (the counters stay usable).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;
    use crate::frame::Fingerprint;

    fn cfg(rank: usize, world: usize, edges: &[(usize, usize, f64)]) -> MeshConfig {
        MeshConfig::new(
            rank,
            world,
            Rendezvous::Rank0 {
                addr: "127.0.0.1:0".into(),
            },
            edges.to_vec(),
            "run",
            Fingerprint::new(10, "flat"),
            Secret::new(b"a-test-secret-of-16+".to_vec()).expect("secret"),
        )
    }

    #[test]
    fn links_are_graph_and_ring_neighbours() {
        // A star on 5: rank 2 pairs with 0 only, but links to 1 and 3 for the ring too.
        let star: Vec<_> = (1..5).map(|i| (0, i, 1.0)).collect();
        let p = Plan::new(&cfg(2, 5, &star)).expect("plan");
        assert_eq!(p.neighbours, vec![0]);
        assert_eq!(p.ring, (1, 3));
        assert_eq!(p.links, BTreeSet::from([0, 1, 3]));
        // Two workers: one link, both ring neighbours; one worker: none.
        let two = Plan::new(&cfg(0, 2, &[(0, 1, 1.0)])).expect("plan");
        assert_eq!(two.links, BTreeSet::from([1]));
        let one = Plan::new(&cfg(0, 1, &[])).expect("plan");
        assert!(one.links.is_empty() && one.neighbours.is_empty());
    }

    #[test]
    fn bad_configurations_are_refused_with_the_cause() {
        let e = Plan::new(&cfg(3, 3, &[])).unwrap_err().to_string();
        assert!(e.contains("rank 3 is not below world 3"), "{e}");
        let e = Plan::new(&cfg(0, 3, &[(0, 5, 1.0)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside world 3"), "{e}");
        let e = Plan::new(&cfg(0, 3, &[(0, 1, f64::NAN)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("finite"), "{e}");
    }
}
