//! The mesh: sockets, tasks and the handle the runtime drives.
//!
//! Layout (mini-redis style): each link to a neighbour has a *reader* task (decodes whole frames,
//! forwards them) and a *writer* task (owns the write half, writes queued frames in order). One
//! *driver* task owns the pure [`Pairing`] state machine, the timers and the exchange in progress; it
//! answers `Busy` at once whatever the compute side is doing. Collectives run in the caller's task,
//! on the links to the two ring neighbours.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::auth::{handshake, Identity, Role, Secret};
use crate::error::{FrameError, NetError};
use crate::frame::{
    read_frame, write_coll, write_msg, write_snapshot, BufPool, CollHeader, Fingerprint, Hello,
    Incoming, Limits, Msg, Purpose,
};
use crate::pairing::{live_components, Action, EdgeCounters, PairMsg, Pairing, Status};
use crate::rendezvous::Rendezvous;
use crate::timeouts::AdaptiveTimeout;

/// Everything needed to join the mesh.
#[derive(Debug)]
pub struct MeshConfig {
    pub rank: usize,
    pub world: usize,
    pub rendezvous: Rendezvous,
    /// Interface to listen on when the port is not fixed by the rendezvous (`0.0.0.0` by default).
    pub bind_host: String,
    /// A listener bound by the caller (tests, launchers); overrides the address the rendezvous implies.
    pub listener: Option<std::net::TcpListener>,
    /// The communication graph: `(i, j, lambda_ij)`, rates per unit of the worker clock.
    pub edges: Vec<(usize, usize, f64)>,
    /// Seed of the Poisson clocks (the same on every worker).
    pub seed: u64,
    /// Clock value at which the Poisson processes start.
    pub clock_start: f64,
    pub run_id: String,
    pub fingerprint: Fingerprint,
    pub secret: Secret,
    /// Deadline for the whole start-up: rendezvous plus every link.
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Initial / min / max of the adaptive exchange timeout (agreement to both snapshots crossed).
    pub exchange_timeout: (Duration, Duration, Duration),
    /// Initial / min / max of the adaptive proposal timeout (propose to answer).
    pub proposal_timeout: (Duration, Duration, Duration),
    /// Consecutive unanswered proposals or timed-out exchanges (waiting on the peer) after which a
    /// connected but unresponsive peer is dropped.
    pub max_exchange_failures: u32,
    /// Floats per collective chunk (pipelining grain).
    pub chunk_floats: usize,
    /// Longest a collective waits for a neighbour before failing.
    pub collective_timeout: Duration,
}

impl MeshConfig {
    /// A configuration with sensible defaults for everything but the essentials.
    pub fn new(
        rank: usize,
        world: usize,
        rendezvous: Rendezvous,
        edges: Vec<(usize, usize, f64)>,
        run_id: impl Into<String>,
        fingerprint: Fingerprint,
        secret: Secret,
    ) -> MeshConfig {
        MeshConfig {
            rank,
            world,
            rendezvous,
            bind_host: "0.0.0.0".into(),
            listener: None,
            edges,
            seed: 0x5EED,
            clock_start: 0.0,
            run_id: run_id.into(),
            fingerprint,
            secret,
            connect_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            exchange_timeout: (
                Duration::from_secs(60),
                Duration::from_secs(2),
                Duration::from_secs(300),
            ),
            proposal_timeout: (
                Duration::from_secs(1),
                Duration::from_millis(200),
                Duration::from_secs(30),
            ),
            max_exchange_failures: 3,
            chunk_floats: 1 << 18,
            collective_timeout: Duration::from_secs(600),
        }
    }
}

/// Per-exchange statistics.
#[derive(Clone, Debug)]
pub struct ExchangeStats {
    pub peer: usize,
    pub seq: u64,
    /// This worker owned the edge and proposed.
    pub initiator: bool,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// From agreement to the caller supplying its snapshot.
    pub wait_for_snapshot: Duration,
    /// From agreement to both snapshots having crossed.
    pub total: Duration,
    /// Missed proposals (all edges, both directions) since the previous completed exchange.
    pub missed_since_previous: u64,
}

/// A completed exchange: the peer's snapshot, and the caller's own buffer handed back for reuse.
#[derive(Debug)]
pub struct Exchanged {
    pub peer: usize,
    pub seq: u64,
    /// The peer's parameters at the moment it supplied them.
    pub theirs: Vec<f32>,
    /// The snapshot this worker sent (the `s_i` of the update rule), returned for reuse.
    pub mine: Vec<f32>,
    pub stats: ExchangeStats,
}

/// "Exchange with `peer` now": hand over this worker's snapshot with [`ExchangeRequest::supply`].
/// Dropping it without supplying calls the exchange off (the peer is told at once).
#[derive(Debug)]
pub struct ExchangeRequest {
    pub peer: usize,
    pub seq: u64,
    pub initiator: bool,
    params: usize,
    tx: mpsc::UnboundedSender<DriverIn>,
    pool: BufPool,
    done: bool,
}

impl ExchangeRequest {
    /// Send `snapshot` (exactly the model's parameter count) to the peer. Returns at once; the
    /// result arrives as [`MeshEvent::Exchanged`] or [`MeshEvent::ExchangeFailed`].
    pub fn supply(mut self, snapshot: Vec<f32>) -> Result<(), NetError> {
        if snapshot.len() != self.params {
            return Err(NetError::SnapshotLen {
                got: snapshot.len(),
                want: self.params,
            });
        }
        self.done = true;
        self.tx
            .send(DriverIn::Supplied {
                peer: self.peer,
                seq: self.seq,
                data: snapshot,
                at: Instant::now(),
            })
            .map_err(|_| NetError::ShutDown)
    }
    /// Like [`supply`](Self::supply) from a borrowed slice (one memcpy into a pooled buffer).
    pub fn supply_slice(self, snapshot: &[f32]) -> Result<(), NetError> {
        if snapshot.len() != self.params {
            return Err(NetError::SnapshotLen {
                got: snapshot.len(),
                want: self.params,
            });
        }
        let mut buf = self.pool.take(snapshot.len());
        buf.copy_from_slice(snapshot);
        self.supply(buf)
    }
}

impl Drop for ExchangeRequest {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.tx.send(DriverIn::Declined {
                peer: self.peer,
                seq: self.seq,
            });
        }
    }
}

/// What the mesh tells the runtime.
#[derive(Debug)]
pub enum MeshEvent {
    /// A pairing was agreed: supply this worker's snapshot now.
    Exchange(ExchangeRequest),
    /// Both snapshots crossed.
    Exchanged(Exchanged),
    /// The exchange was called off or failed; the parameters must not be updated.
    ExchangeFailed { peer: usize, seq: u64, why: String },
    /// A neighbour is gone: dropped from pairing. `graceful` when it said goodbye.
    PeerLost {
        peer: usize,
        why: String,
        graceful: bool,
    },
    /// The live graph fell apart into these components (warned once per change).
    GraphSplit { components: Vec<Vec<usize>> },
    /// Ctrl-C or a [`ShutdownHandle`] asked to stop; neighbours have been told.
    ShutdownRequested,
}

/// Cumulative statistics of the mesh.
#[derive(Clone, Debug, Default)]
pub struct MeshStats {
    pub edges: BTreeMap<usize, EdgeCounters>,
    pub exchanges: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub lost_peers: Vec<usize>,
    pub exchange_timeout: Duration,
    pub proposal_timeout: Duration,
    pub typical_exchange: Option<Duration>,
}

/// Asks the mesh to shut down from anywhere (another task, a signal handler).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    tx: mpsc::UnboundedSender<DriverIn>,
}

impl ShutdownHandle {
    pub fn shutdown(&self, reason: &str) {
        let _ = self.tx.send(DriverIn::Interrupt {
            reason: reason.to_string(),
        });
    }
}

/// Statistics of one collective.
#[derive(Clone, Copy, Debug)]
pub struct CollStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub elapsed: Duration,
}

#[derive(Debug)]
enum Out {
    Msg(Msg),
    Snapshot { seq: u64, data: Vec<f32> },
    Coll { hdr: CollHeader, data: Vec<f32> },
    Close,
}

#[derive(Debug)]
enum CollIn {
    Chunk(CollHeader, Vec<f32>),
    Abort { op: u64, rank: usize, why: String },
    Lost(String),
}

#[derive(Debug)]
enum DriverIn {
    Pair {
        from: usize,
        msg: PairMsg,
    },
    Snapshot {
        from: usize,
        seq: u64,
        data: Vec<f32>,
    },
    SnapshotSent {
        peer: usize,
        seq: u64,
        data: Vec<f32>,
        ok: Result<(), String>,
    },
    Supplied {
        peer: usize,
        seq: u64,
        data: Vec<f32>,
        at: Instant,
    },
    Declined {
        peer: usize,
        seq: u64,
    },
    ProposalTimeout {
        peer: usize,
        seq: u64,
    },
    ExchangeTimeout {
        peer: usize,
        seq: u64,
    },
    LinkDown {
        peer: usize,
        why: String,
    },
    Goodbye {
        peer: usize,
        reason: String,
    },
    PeerDownNote {
        rank: usize,
    },
    Interrupt {
        reason: String,
    },
    Retire,
    Pause(bool),
    Shutdown {
        reason: String,
        done: oneshot::Sender<()>,
    },
}

struct LinkIo {
    tx: mpsc::UnboundedSender<Out>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// Phases of collective frames.
const PH_REDUCE_SCATTER: u32 = 1;
const PH_ALL_GATHER: u32 = 2;
const PH_BROADCAST: u32 = 3;
const PH_BARRIER: u32 = 4;

/// A worker's handle on the mesh. Owned by the runtime; see the crate docs for the loop.
pub struct Mesh {
    rank: usize,
    world: usize,
    params: usize,
    local_addr: SocketAddr,
    neighbours: Vec<usize>,
    clock: watch::Sender<f64>,
    events: mpsc::UnboundedReceiver<MeshEvent>,
    stash: VecDeque<MeshEvent>,
    driver_tx: mpsc::UnboundedSender<DriverIn>,
    driver: Option<JoinHandle<()>>,
    acceptor: JoinHandle<()>,
    stats: Arc<Mutex<MeshStats>>,
    pool: BufPool,
    ring_tx: HashMap<usize, mpsc::UnboundedSender<Out>>,
    ring_rx: HashMap<usize, mpsc::UnboundedReceiver<CollIn>>,
    coll_op: u64,
    chunk_floats: usize,
    collective_timeout: Duration,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("params", &self.params)
            .field("local_addr", &self.local_addr)
            .field("neighbours", &self.neighbours)
            .finish()
    }
}

type Accepted = (Hello, TcpStream);
/// What the acceptor hands over: an authenticated connection, or why one was refused.
type AcceptResult = Result<Accepted, String>;

async fn bind(cfg: &mut MeshConfig) -> Result<TcpListener, NetError> {
    if let Some(l) = cfg.listener.take() {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        l.set_nonblocking(true).map_err(|source| NetError::Bind {
            addr: addr.clone(),
            source,
        })?;
        return TcpListener::from_std(l).map_err(|source| NetError::Bind { addr, source });
    }
    let addr = match &cfg.rendezvous {
        Rendezvous::Explicit(list) => {
            let own = list.get(cfg.rank).ok_or_else(|| {
                NetError::Config(format!(
                    "the explicit address list has {} entries, rank is {}",
                    list.len(),
                    cfg.rank
                ))
            })?;
            let port = own.rsplit_once(':').map(|(_, p)| p).unwrap_or("0");
            format!("{}:{port}", cfg.bind_host)
        }
        Rendezvous::Rank0 { addr } if cfg.rank == 0 => {
            let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or("0");
            format!("{}:{port}", cfg.bind_host)
        }
        Rendezvous::Rank0 { .. } => format!("{}:0", cfg.bind_host),
    };
    TcpListener::bind(&addr)
        .await
        .map_err(|source| NetError::Bind { addr, source })
}

/// Connect with exponential backoff and jitter until `deadline`.
async fn connect_retry(addr: &str, deadline: Instant) -> Result<TcpStream, String> {
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

fn ring_neighbours(rank: usize, world: usize) -> Vec<usize> {
    if world < 2 {
        return Vec::new();
    }
    let mut v = vec![(rank + 1) % world, (rank + world - 1) % world];
    v.dedup();
    v
}

impl Mesh {
    /// Join the mesh: listen, rendezvous, connect and authenticate every link, start the tasks.
    pub async fn connect(mut cfg: MeshConfig) -> Result<Mesh, NetError> {
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
        let deadline = Instant::now() + cfg.connect_timeout;
        let listener = bind(&mut cfg).await?;
        let local_addr = listener.local_addr()?;
        let me = Identity {
            rank: cfg.rank as u32,
            world: cfg.world as u32,
            run_id: cfg.run_id.clone(),
            fingerprint: cfg.fingerprint,
            secret: cfg.secret.clone(),
        };

        let mut neighbours: BTreeSet<usize> = BTreeSet::new();
        for &(a, b, _) in &cfg.edges {
            if a != b && (a == cfg.rank || b == cfg.rank) {
                neighbours.insert(if a == cfg.rank { b } else { a });
            }
        }
        let ring = ring_neighbours(cfg.rank, cfg.world);
        let links: BTreeSet<usize> = neighbours
            .iter()
            .copied()
            .chain(ring.iter().copied())
            .collect();

        // Acceptor: handshake every incoming connection, hand authenticated ones over.
        let (acc_tx, mut acc_rx) = mpsc::unbounded_channel::<AcceptResult>();
        let acceptor = {
            let me = me.clone();
            let links = links.clone();
            let hs = cfg.handshake_timeout;
            let rank = cfg.rank;
            // At most this many handshakes at once: a flood of bogus connections cannot exhaust us.
            let slots = Arc::new(tokio::sync::Semaphore::new(64));
            tokio::spawn(async move {
                loop {
                    let (mut stream, addr) = match listener.accept().await {
                        Ok(x) => x,
                        Err(e) => {
                            warn!("rank {rank}: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    let me = me.clone();
                    let links = links.clone();
                    let acc_tx = acc_tx.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let check = |h: &Hello| {
                            match h.purpose {
                            Purpose::Register if rank == 0 => Ok(()),
                            Purpose::Register => Err("only rank 0 serves the rendezvous".to_string()),
                            Purpose::Link if (h.rank as usize) < rank => {
                                Err("the higher rank of a link connects to the lower, not the other way".into())
                            }
                            Purpose::Link if links.contains(&(h.rank as usize)) => Ok(()),
                            Purpose::Link => Err("it is not a neighbour of this worker in the graph".into()),
                        }
                        };
                        let label = format!("connection from {addr}");
                        match handshake(
                            &mut stream,
                            &me,
                            Role::Acceptor,
                            Purpose::Link,
                            &label,
                            &check,
                            hs,
                        )
                        .await
                        {
                            Ok(h) => {
                                let _ = acc_tx.send(Ok((h, stream)));
                            }
                            Err(e) => {
                                warn!("rank {rank}: refused {label}: {e}");
                                let _ = acc_tx.send(Err(e.to_string()));
                            }
                        }
                    });
                }
            })
        };

        // Address table.
        let mut early: Vec<Accepted> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        let table: Vec<String> = match &cfg.rendezvous {
            Rendezvous::Explicit(list) => {
                if list.len() != cfg.world {
                    return Err(NetError::Config(format!(
                        "the explicit address list has {} entries for a world of {}",
                        list.len(),
                        cfg.world
                    )));
                }
                list.clone()
            }
            Rendezvous::Rank0 { addr } if cfg.rank == 0 => {
                serve_rendezvous(
                    &cfg,
                    addr,
                    local_addr,
                    &mut acc_rx,
                    &mut early,
                    &mut refused,
                    deadline,
                )
                .await?
            }
            Rendezvous::Rank0 { addr } => register(&cfg, &me, addr, local_addr, deadline).await?,
        };

        // Links: the higher rank connects to the lower.
        let mut streams: BTreeMap<usize, TcpStream> = BTreeMap::new();
        for &p in links.iter().filter(|&&p| p < cfg.rank) {
            let addr = &table[p];
            let mut s = connect_retry(addr, deadline)
                .await
                .map_err(|last| NetError::Connect {
                    rank: p,
                    addr: addr.clone(),
                    secs: cfg.connect_timeout.as_secs_f64(),
                    last,
                })?;
            let want = p as u32;
            let check = move |h: &Hello| {
                if h.rank == want {
                    Ok(())
                } else {
                    Err(format!("rank {want} was expected at that address"))
                }
            };
            let label = format!("rank {p} at {addr}");
            handshake(
                &mut s,
                &me,
                Role::Connector,
                Purpose::Link,
                &label,
                &check,
                cfg.handshake_timeout,
            )
            .await?;
            streams.insert(p, s);
        }
        let expect_in: BTreeSet<usize> = links.iter().copied().filter(|&p| p > cfg.rank).collect();
        for (h, s) in early.drain(..) {
            if h.purpose == Purpose::Link && expect_in.contains(&(h.rank as usize)) {
                streams.insert(h.rank as usize, s);
            }
        }
        while !expect_in.iter().all(|p| streams.contains_key(p)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, acc_rx.recv()).await {
                Ok(Some(Ok((h, s)))) if h.purpose == Purpose::Link => {
                    streams.insert(h.rank as usize, s);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(why))) => refused.push(why),
                _ => {
                    let missing: Vec<usize> = expect_in
                        .iter()
                        .copied()
                        .filter(|p| !streams.contains_key(p))
                        .collect();
                    let rank = missing.first().copied().unwrap_or(0);
                    return Err(NetError::Connect {
                        rank,
                        addr: table.get(rank).cloned().unwrap_or_default(),
                        secs: cfg.connect_timeout.as_secs_f64(),
                        last: format!(
                            "ranks {missing:?} never connected to this worker{}",
                            refusals(&refused)
                        ),
                    });
                }
            }
        }
        // Late duplicate or stray connections are refused from now on by dropping them.
        tokio::spawn(async move { while acc_rx.recv().await.is_some() {} });

        // Tasks.
        let pool = BufPool::default();
        let limits = Limits {
            params: params as u64,
        };
        let (driver_tx, driver_rx) = mpsc::unbounded_channel::<DriverIn>();
        let mut link_io: BTreeMap<usize, LinkIo> = BTreeMap::new();
        let mut ring_tx = HashMap::new();
        let mut ring_rx = HashMap::new();
        for (p, s) in streams {
            let _ = s.set_nodelay(true);
            let (r, w) = s.into_split();
            let (out_tx, out_rx) = mpsc::unbounded_channel::<Out>();
            let (coll_tx, coll_rx) = mpsc::unbounded_channel::<CollIn>();
            let reader = tokio::spawn(reader_task(
                p,
                r,
                limits,
                pool.clone(),
                driver_tx.clone(),
                coll_tx,
            ));
            let writer = tokio::spawn(writer_task(p, w, out_rx, driver_tx.clone(), pool.clone()));
            if ring.contains(&p) {
                ring_tx.insert(p, out_tx.clone());
                ring_rx.insert(p, coll_rx);
            }
            link_io.insert(
                p,
                LinkIo {
                    tx: out_tx,
                    reader,
                    writer,
                },
            );
        }

        let (clock_tx, clock_rx) = watch::channel(cfg.clock_start);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(MeshStats::default()));
        let pairing = Pairing::new(cfg.rank, &cfg.edges, cfg.seed, cfg.clock_start);
        let (ei, emin, emax) = cfg.exchange_timeout;
        let (pi, pmin, pmax) = cfg.proposal_timeout;
        let driver = Driver {
            rank: cfg.rank,
            world: cfg.world,
            params,
            graph: cfg.edges.clone(),
            pairing,
            links: link_io,
            events: ev_tx,
            self_tx: driver_tx.clone(),
            active: None,
            ex_timeout: AdaptiveTimeout::new(ei, emin, emax),
            prop_timeout: AdaptiveTimeout::new(pi, pmin, pmax),
            proposal_sent: None,
            failures: HashMap::new(),
            failed: BTreeSet::new(),
            departed: BTreeSet::new(),
            components: 1,
            max_failures: cfg.max_exchange_failures.max(1),
            stats: stats.clone(),
            pool: pool.clone(),
            missed_at_last: 0,
            exchanges: 0,
            bytes_sent: 0,
            bytes_received: 0,
        };
        let driver = tokio::spawn(driver.run(driver_rx, clock_rx));
        info!(
            "rank {}: mesh up on {local_addr}, neighbours {:?}, ring {:?}",
            cfg.rank,
            neighbours.iter().collect::<Vec<_>>(),
            ring
        );
        Ok(Mesh {
            rank: cfg.rank,
            world: cfg.world,
            params,
            local_addr,
            neighbours: neighbours.into_iter().collect(),
            clock: clock_tx,
            events: ev_rx,
            stash: VecDeque::new(),
            driver_tx,
            driver: Some(driver),
            acceptor,
            stats,
            pool,
            ring_tx,
            ring_rx,
            coll_op: 0,
            chunk_floats: cfg.chunk_floats.max(1),
            collective_timeout: cfg.collective_timeout,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn world(&self) -> usize {
        self.world
    }
    /// Floats in one snapshot.
    pub fn params(&self) -> usize {
        self.params
    }
    /// The address this worker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
    /// Graph neighbours (ring neighbours used only by collectives are not listed).
    pub fn neighbours(&self) -> &[usize] {
        &self.neighbours
    }

    /// Feed the worker clock (units of one gradient step). Edges owned by this worker whose Poisson
    /// events fall at or before `now` propose exchanges.
    pub fn advance_clock(&self, now: f64) {
        self.clock.send_if_modified(|c| {
            if now > *c {
                *c = now;
                true
            } else {
                false
            }
        });
    }

    /// Stop pairing (this worker has finished training) but stay connected for the collectives:
    /// owned edges no longer propose and peers' proposals are answered `Busy` at once, so nobody
    /// waits on a worker that will not supply a snapshot. An exchange already agreed still completes
    /// (its events still arrive).
    pub fn retire(&self) {
        let _ = self.driver_tx.send(DriverIn::Retire);
    }

    /// Pause pairing for a while (`true`) or take it up again (`false`): while paused, as when
    /// retired, owned edges do not propose and peers get `Busy` at once, so a worker that stops
    /// stepping (to evaluate, say) does not leave a peer waiting on its snapshot.
    pub fn pause(&self, paused: bool) {
        let _ = self.driver_tx.send(DriverIn::Pause(paused));
    }

    /// The next event, waiting for one. `None` once the mesh has shut down.
    pub async fn next_event(&mut self) -> Option<MeshEvent> {
        if let Some(e) = self.stash.pop_front() {
            return Some(e);
        }
        self.events.recv().await
    }

    /// The next event if one is ready, without waiting (for a compute loop that polls between steps).
    pub fn try_next_event(&mut self) -> Option<MeshEvent> {
        if let Some(e) = self.stash.pop_front() {
            return Some(e);
        }
        self.events.try_recv().ok()
    }

    /// Supply `snapshot` for `req` and wait until the exchange completes: returns the peer's
    /// snapshot. Other events that arrive meanwhile are kept for [`next_event`](Self::next_event).
    pub async fn exchange(
        &mut self,
        req: ExchangeRequest,
        snapshot: Vec<f32>,
    ) -> Result<Exchanged, NetError> {
        let (peer, seq) = (req.peer, req.seq);
        req.supply(snapshot)?;
        loop {
            match self.events.recv().await {
                Some(MeshEvent::Exchanged(x)) if x.peer == peer && x.seq == seq => return Ok(x),
                Some(MeshEvent::ExchangeFailed {
                    peer: p,
                    seq: s,
                    why,
                }) if p == peer && s == seq => return Err(NetError::Exchange { peer, why }),
                Some(other) => self.stash.push_back(other),
                None => return Err(NetError::ShutDown),
            }
        }
    }

    /// Give a buffer (e.g. [`Exchanged::theirs`]) back to the receive pool.
    pub fn recycle(&self, buf: Vec<f32>) {
        self.pool.give(buf);
    }

    /// Cumulative statistics.
    pub fn stats(&self) -> MeshStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            tx: self.driver_tx.clone(),
        }
    }

    /// On Ctrl-C: tell the neighbours goodbye and emit [`MeshEvent::ShutdownRequested`].
    pub fn shutdown_on_ctrl_c(&self) {
        let h = self.shutdown_handle();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                h.shutdown("interrupted (Ctrl-C)");
            }
        });
    }

    /// Leave the mesh: neighbours are told goodbye (they drop this worker without alarm), queued
    /// frames are flushed, every task stops.
    pub async fn shutdown(mut self, reason: &str) -> Result<(), NetError> {
        let (done_tx, done_rx) = oneshot::channel();
        let _ = self.driver_tx.send(DriverIn::Shutdown {
            reason: reason.to_string(),
            done: done_tx,
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), done_rx).await;
        if let Some(d) = self.driver.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), d).await;
        }
        self.acceptor.abort();
        Ok(())
    }

    // ----- collectives -----------------------------------------------------------------------

    fn right(&self) -> usize {
        (self.rank + 1) % self.world
    }
    fn left(&self) -> usize {
        (self.rank + self.world - 1) % self.world
    }

    async fn coll_send(
        &mut self,
        to: usize,
        hdr: CollHeader,
        data: &[f32],
    ) -> Result<(), NetError> {
        let mut buf = self.pool.take(data.len());
        buf.copy_from_slice(data);
        let sent = match self.ring_tx.get(&to) {
            Some(tx) => tx.send(Out::Coll { hdr, data: buf }).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self
                .explain_loss(to, hdr.op, "its connection is closed")
                .await)
        }
    }

    /// The link to `to` is gone. If `to` relayed the real cause before leaving (a collective abort
    /// naming the lost rank), report that; else report `to` itself. Tells the other ring neighbour.
    /// The link's reader may still hold frames the peer sent before closing: wait (briefly, bounded)
    /// until it has delivered everything.
    async fn explain_loss(&mut self, to: usize, op: u64, default_why: &str) -> NetError {
        let mut culprit = (to, default_why.to_string());
        let end = tokio::time::Instant::now() + Duration::from_secs(2);
        if let Some(rx) = self.ring_rx.get_mut(&to) {
            while let Ok(Some(m)) = tokio::time::timeout_at(end, rx.recv()).await {
                match m {
                    CollIn::Abort { op: o, rank, why } if o >= op => {
                        culprit = (rank, format!("reported by rank {to}: {why}"));
                        break;
                    }
                    CollIn::Chunk(_, d) => self.pool.give(d),
                    CollIn::Lost(_) => break,
                    CollIn::Abort { .. } => {}
                }
            }
        }
        self.coll_abort_others(to, op, culprit.0, &culprit.1);
        NetError::MemberLost {
            rank: culprit.0,
            why: culprit.1,
        }
    }

    fn coll_abort_others(&self, except: usize, op: u64, rank: usize, why: &str) {
        for (&p, tx) in &self.ring_tx {
            if p != except {
                let _ = tx.send(Out::Msg(Msg::CollAbort {
                    op,
                    rank: rank as u32,
                    why: why.to_string(),
                }));
            }
        }
    }

    async fn coll_recv(&mut self, from: usize, want: CollHeader) -> Result<Vec<f32>, NetError> {
        let limit = self.collective_timeout;
        loop {
            let rx = self.ring_rx.get_mut(&from).ok_or(NetError::MemberLost {
                rank: from,
                why: "no link".into(),
            })?;
            let got = match tokio::time::timeout(limit, rx.recv()).await {
                Ok(g) => g,
                Err(_) => {
                    let why = format!("no data for {:.0}s", limit.as_secs_f64());
                    self.coll_abort_others(from, want.op, from, &why);
                    return Err(NetError::MemberLost { rank: from, why });
                }
            };
            match got {
                Some(CollIn::Chunk(h, data)) if h == want => return Ok(data),
                Some(CollIn::Chunk(h, data)) if h.op < want.op => self.pool.give(data),
                Some(CollIn::Chunk(h, data)) => {
                    self.pool.give(data);
                    return Err(NetError::Collective {
                        rank: from,
                        why: format!(
                            "expected op {} phase {} step {} chunk {}, got op {} phase {} step {} chunk {}: \
                             every worker must call the same collectives in the same order with the same sizes",
                            want.op, want.phase, want.step, want.chunk, h.op, h.phase, h.step, h.chunk
                        ),
                    });
                }
                Some(CollIn::Abort { op, .. }) if op < want.op => {}
                Some(CollIn::Abort { op, rank, why }) => {
                    self.coll_abort_others(from, op, rank, &why);
                    return Err(NetError::MemberLost {
                        rank,
                        why: format!("reported by rank {from}: {why}"),
                    });
                }
                Some(CollIn::Lost(why)) => {
                    self.coll_abort_others(from, want.op, from, &why);
                    return Err(NetError::MemberLost { rank: from, why });
                }
                None => {
                    let why = "its connection was lost earlier".to_string();
                    self.coll_abort_others(from, want.op, from, &why);
                    return Err(NetError::MemberLost { rank: from, why });
                }
            }
        }
    }

    fn segment(&self, n: usize, i: usize) -> (usize, usize) {
        let p = self.world;
        (i * n / p, (i + 1) * n / p)
    }

    fn chunks(&self, (a, b): (usize, usize)) -> Vec<(usize, usize)> {
        let c = self.chunk_floats;
        (a..b).step_by(c).map(|s| (s, (s + c).min(b))).collect()
    }

    /// Ring all-reduce (reduce-scatter, then all-gather; chunked and pipelined) leaving the mean in
    /// `buf`, bit-identical on every rank. Every rank must call it with the same length. Losing a
    /// member fails at once with [`NetError::MemberLost`] naming it.
    pub async fn allreduce_mean(&mut self, buf: &mut [f32]) -> Result<CollStats, NetError> {
        let t0 = Instant::now();
        self.coll_op += 1;
        let op = self.coll_op;
        let p = self.world;
        let (mut sent, mut recvd) = (0u64, 0u64);
        if p == 1 {
            return Ok(CollStats {
                bytes_sent: 0,
                bytes_received: 0,
                elapsed: t0.elapsed(),
            });
        }
        let n = buf.len();
        let (r, left, right) = (self.rank, self.left(), self.right());
        let hdr = |phase, step: usize, chunk: usize| CollHeader {
            op,
            phase,
            step: step as u32,
            chunk: chunk as u32,
        };
        // Reduce-scatter step 0 sends our own segment r.
        for (c, (a, b)) in self.chunks(self.segment(n, r)).into_iter().enumerate() {
            self.coll_send(right, hdr(PH_REDUCE_SCATTER, 0, c), &buf[a..b])
                .await?;
            sent += 4 * (b - a) as u64;
        }
        for k in 0..p - 1 {
            let seg = (r + 2 * p - k - 1) % p;
            for (c, (a, b)) in self.chunks(self.segment(n, seg)).into_iter().enumerate() {
                let data = self.coll_recv(left, hdr(PH_REDUCE_SCATTER, k, c)).await?;
                if data.len() != b - a {
                    return Err(NetError::Collective {
                        rank: left,
                        why: "chunk of the wrong length".into(),
                    });
                }
                recvd += 4 * data.len() as u64;
                for (x, y) in buf[a..b].iter_mut().zip(&data) {
                    *x += *y;
                }
                self.pool.give(data);
                if k + 1 < p - 1 {
                    self.coll_send(right, hdr(PH_REDUCE_SCATTER, k + 1, c), &buf[a..b])
                        .await?;
                } else {
                    // Segment r+1 is now fully reduced here: scale it once, so every rank ends with
                    // exactly these bits, and start the all-gather with it.
                    let inv = p as f32;
                    for x in &mut buf[a..b] {
                        *x /= inv;
                    }
                    self.coll_send(right, hdr(PH_ALL_GATHER, 0, c), &buf[a..b])
                        .await?;
                }
                sent += 4 * (b - a) as u64;
            }
        }
        for k in 0..p - 1 {
            let seg = (r + p - k) % p;
            for (c, (a, b)) in self.chunks(self.segment(n, seg)).into_iter().enumerate() {
                let data = self.coll_recv(left, hdr(PH_ALL_GATHER, k, c)).await?;
                if data.len() != b - a {
                    return Err(NetError::Collective {
                        rank: left,
                        why: "chunk of the wrong length".into(),
                    });
                }
                recvd += 4 * data.len() as u64;
                buf[a..b].copy_from_slice(&data);
                self.pool.give(data);
                if k + 1 < p - 1 {
                    self.coll_send(right, hdr(PH_ALL_GATHER, k + 1, c), &buf[a..b])
                        .await?;
                    sent += 4 * (b - a) as u64;
                }
            }
        }
        Ok(CollStats {
            bytes_sent: sent,
            bytes_received: recvd,
            elapsed: t0.elapsed(),
        })
    }

    /// Copy `root`'s `buf` into every rank's `buf` (pipelined along the ring). Used for identical
    /// initial parameters.
    pub async fn broadcast(&mut self, root: usize, buf: &mut [f32]) -> Result<(), NetError> {
        if root >= self.world {
            return Err(NetError::Config(format!(
                "broadcast root {root} is outside world {}",
                self.world
            )));
        }
        self.coll_op += 1;
        let op = self.coll_op;
        if self.world == 1 {
            return Ok(());
        }
        let (left, right) = (self.left(), self.right());
        let chunks = self.chunks((0, buf.len()));
        for (c, (a, b)) in chunks.into_iter().enumerate() {
            let h = CollHeader {
                op,
                phase: PH_BROADCAST,
                step: 0,
                chunk: c as u32,
            };
            if self.rank != root {
                let data = self.coll_recv(left, h).await?;
                if data.len() != b - a {
                    return Err(NetError::Collective {
                        rank: left,
                        why: "broadcast chunk of the wrong length".into(),
                    });
                }
                buf[a..b].copy_from_slice(&data);
                self.pool.give(data);
            }
            if right != root {
                self.coll_send(right, h, &buf[a..b]).await?;
            }
        }
        Ok(())
    }

    /// Returns once every rank has entered the barrier (a token goes `world - 1` hops round the ring).
    pub async fn barrier(&mut self) -> Result<(), NetError> {
        self.coll_op += 1;
        let op = self.coll_op;
        let p = self.world;
        if p == 1 {
            return Ok(());
        }
        let (left, right) = (self.left(), self.right());
        self.coll_send(
            right,
            CollHeader {
                op,
                phase: PH_BARRIER,
                step: 0,
                chunk: 0,
            },
            &[],
        )
        .await?;
        for k in 0..p - 1 {
            let d = self
                .coll_recv(
                    left,
                    CollHeader {
                        op,
                        phase: PH_BARRIER,
                        step: k as u32,
                        chunk: 0,
                    },
                )
                .await?;
            self.pool.give(d);
            if k + 1 < p - 1 {
                self.coll_send(
                    right,
                    CollHeader {
                        op,
                        phase: PH_BARRIER,
                        step: (k + 1) as u32,
                        chunk: 0,
                    },
                    &[],
                )
                .await?;
            }
        }
        Ok(())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.acceptor.abort();
        if self.driver.is_some() {
            let (done, _) = oneshot::channel();
            let _ = self.driver_tx.send(DriverIn::Shutdown {
                reason: "mesh dropped".into(),
                done,
            });
        }
    }
}

fn refusals(r: &[String]) -> String {
    if r.is_empty() {
        String::new()
    } else {
        format!("; refused connections: {}", r.join("; "))
    }
}

async fn serve_rendezvous(
    cfg: &MeshConfig,
    addr: &str,
    local: SocketAddr,
    acc_rx: &mut mpsc::UnboundedReceiver<AcceptResult>,
    early: &mut Vec<Accepted>,
    refused: &mut Vec<String>,
    deadline: Instant,
) -> Result<Vec<String>, NetError> {
    let mut table: Vec<Option<String>> = vec![None; cfg.world];
    table[0] = Some(if local.port() != 0 && addr.ends_with(":0") {
        format!("{}:{}", addr.trim_end_matches(":0"), local.port())
    } else {
        addr.to_string()
    });
    let mut waiting: Vec<TcpStream> = Vec::new();
    let limits = Limits { params: 0 };
    let pool = BufPool::default();
    while table.iter().any(|t| t.is_none()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (h, mut s) = match tokio::time::timeout(left, acc_rx.recv()).await {
            Ok(Some(Ok(x))) => x,
            Ok(Some(Err(why))) => {
                refused.push(why);
                continue;
            }
            _ => {
                return Err(NetError::RendezvousIncomplete {
                    secs: cfg.connect_timeout.as_secs_f64(),
                    joined: table.iter().filter(|t| t.is_some()).count(),
                    world: cfg.world,
                    refused: refusals(refused),
                })
            }
        };
        if h.purpose != Purpose::Register {
            early.push((h, s));
            continue;
        }
        let port =
            match tokio::time::timeout(cfg.handshake_timeout, read_frame(&mut s, &limits, &pool))
                .await
            {
                Ok(Ok(Incoming::Msg(Msg::Register { port }))) => port,
                _ => {
                    warn!(
                        "rank 0: rank {} opened a rendezvous connection but did not register",
                        h.rank
                    );
                    continue;
                }
            };
        let ip = s
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "127.0.0.1".into());
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        let rank = h.rank as usize;
        if table[rank].is_some() {
            warn!("rank 0: rank {rank} registered twice; keeping the newest registration");
        }
        table[rank] = Some(format!("{host}:{port}"));
        waiting.push(s);
    }
    let addrs: Vec<String> = table.into_iter().map(|t| t.unwrap_or_default()).collect();
    for mut s in waiting {
        let _ = write_msg(
            &mut s,
            &Msg::Table {
                addrs: addrs.clone(),
            },
        )
        .await;
        let _ = s.shutdown().await;
    }
    info!("rank 0: rendezvous complete, {} workers", cfg.world);
    Ok(addrs)
}

async fn register(
    cfg: &MeshConfig,
    me: &Identity,
    addr: &str,
    local: SocketAddr,
    deadline: Instant,
) -> Result<Vec<String>, NetError> {
    let secs = cfg.connect_timeout.as_secs_f64();
    let mut s = connect_retry(addr, deadline)
        .await
        .map_err(|last| NetError::Rendezvous {
            addr: addr.to_string(),
            secs,
            last,
        })?;
    let check = |h: &Hello| -> Result<(), String> {
        if h.rank == 0 {
            Ok(())
        } else {
            Err("the rendezvous must be served by rank 0".into())
        }
    };
    let label = format!("rendezvous {addr}");
    handshake(
        &mut s,
        me,
        Role::Connector,
        Purpose::Register,
        &label,
        &check,
        cfg.handshake_timeout,
    )
    .await?;
    write_msg(&mut s, &Msg::Register { port: local.port() }).await?;
    let left = deadline.saturating_duration_since(Instant::now());
    let limits = Limits { params: 0 };
    match tokio::time::timeout(left, read_frame(&mut s, &limits, &BufPool::default())).await {
        Ok(Ok(Incoming::Msg(Msg::Table { mut addrs }))) if addrs.len() == cfg.world => {
            // Reach rank 0 the way we reached the rendezvous.
            addrs[0] = addr.to_string();
            Ok(addrs)
        }
        Ok(Ok(_)) => Err(NetError::Rendezvous {
            addr: addr.into(),
            secs,
            last: "malformed address table".into(),
        }),
        Ok(Err(e)) => Err(NetError::Rendezvous {
            addr: addr.into(),
            secs,
            last: e.to_string(),
        }),
        Err(_) => Err(NetError::RendezvousIncomplete {
            secs,
            joined: 0,
            world: cfg.world,
            refused: String::new(),
        }),
    }
}

async fn reader_task(
    peer: usize,
    r: OwnedReadHalf,
    limits: Limits,
    pool: BufPool,
    driver: mpsc::UnboundedSender<DriverIn>,
    coll: mpsc::UnboundedSender<CollIn>,
) {
    let mut r = BufReader::with_capacity(1 << 16, r);
    let why = loop {
        let frame = match read_frame(&mut r, &limits, &pool).await {
            Ok(f) => f,
            Err(FrameError::Closed) => break "connection closed".to_string(),
            Err(e) => break e.to_string(),
        };
        let sent = match frame {
            Incoming::Snapshot { seq, data } => driver
                .send(DriverIn::Snapshot {
                    from: peer,
                    seq,
                    data,
                })
                .is_ok(),
            Incoming::Coll { hdr, data } => {
                let _ = coll.send(CollIn::Chunk(hdr, data));
                true
            }
            Incoming::Msg(m) => match m {
                Msg::Propose { seq } => driver
                    .send(DriverIn::Pair {
                        from: peer,
                        msg: PairMsg::Propose { seq },
                    })
                    .is_ok(),
                Msg::Accept { seq } => driver
                    .send(DriverIn::Pair {
                        from: peer,
                        msg: PairMsg::Accept { seq },
                    })
                    .is_ok(),
                Msg::Busy { seq } => driver
                    .send(DriverIn::Pair {
                        from: peer,
                        msg: PairMsg::Busy { seq },
                    })
                    .is_ok(),
                Msg::Abort { seq } => driver
                    .send(DriverIn::Pair {
                        from: peer,
                        msg: PairMsg::Abort { seq },
                    })
                    .is_ok(),
                Msg::CollAbort { op, rank, why } => {
                    let _ = coll.send(CollIn::Abort {
                        op,
                        rank: rank as usize,
                        why,
                    });
                    true
                }
                Msg::PeerDown { rank } => driver
                    .send(DriverIn::PeerDownNote {
                        rank: rank as usize,
                    })
                    .is_ok(),
                Msg::Goodbye { reason } => {
                    let _ = coll.send(CollIn::Lost(format!("it left the mesh ({reason})")));
                    let _ = driver.send(DriverIn::Goodbye { peer, reason });
                    return;
                }
                other => {
                    break format!(
                        "unexpected {} frame after the handshake",
                        other.kind().name()
                    )
                }
            },
        };
        if !sent {
            return; // the driver is gone: shutting down
        }
    };
    let _ = coll.send(CollIn::Lost(why.clone()));
    let _ = driver.send(DriverIn::LinkDown { peer, why });
}

async fn writer_task(
    peer: usize,
    mut w: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    driver: mpsc::UnboundedSender<DriverIn>,
    pool: BufPool,
) {
    while let Some(o) = rx.recv().await {
        let res = match o {
            Out::Msg(m) => write_msg(&mut w, &m).await,
            Out::Snapshot { seq, data } => {
                let r = write_snapshot(&mut w, seq, &data).await;
                let ok = r.as_ref().map(|_| ()).map_err(|e| e.to_string());
                let _ = driver.send(DriverIn::SnapshotSent {
                    peer,
                    seq,
                    data,
                    ok,
                });
                r
            }
            Out::Coll { hdr, data } => {
                let r = write_coll(&mut w, hdr, &data).await;
                pool.give(data);
                r
            }
            Out::Close => {
                let _ = w.shutdown().await;
                return;
            }
        };
        if let Err(e) = res {
            let _ = driver.send(DriverIn::LinkDown {
                peer,
                why: format!("write failed: {e}"),
            });
            return;
        }
    }
}

struct Active {
    peer: usize,
    seq: u64,
    initiator: bool,
    started: Instant,
    supplied: Option<Instant>,
    sent: Option<Vec<f32>>,
    theirs: Option<Vec<f32>>,
}

struct Driver {
    rank: usize,
    world: usize,
    params: usize,
    graph: Vec<(usize, usize, f64)>,
    pairing: Pairing,
    links: BTreeMap<usize, LinkIo>,
    events: mpsc::UnboundedSender<MeshEvent>,
    self_tx: mpsc::UnboundedSender<DriverIn>,
    active: Option<Active>,
    ex_timeout: AdaptiveTimeout,
    prop_timeout: AdaptiveTimeout,
    proposal_sent: Option<(usize, u64, Instant)>,
    failures: HashMap<usize, u32>,
    failed: BTreeSet<usize>,
    departed: BTreeSet<usize>,
    components: usize,
    max_failures: u32,
    stats: Arc<Mutex<MeshStats>>,
    pool: BufPool,
    missed_at_last: u64,
    exchanges: u64,
    bytes_sent: u64,
    bytes_received: u64,
}

impl Driver {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<DriverIn>,
        mut clock: watch::Receiver<f64>,
    ) {
        let mut clock_open = true;
        loop {
            tokio::select! {
                changed = clock.changed(), if clock_open => {
                    if changed.is_err() {
                        clock_open = false;
                        continue;
                    }
                    let now = *clock.borrow_and_update();
                    let acts = self.pairing.poll(now);
                    self.apply(acts);
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    if let DriverIn::Shutdown { reason, done } = msg {
                        self.close_all(&reason).await;
                        let _ = done.send(());
                        break;
                    }
                    self.handle(msg);
                }
            }
            self.publish();
        }
        self.publish();
    }

    fn publish(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.edges = self
                .pairing
                .neighbours()
                .filter_map(|(p, _, _)| self.pairing.counters(p).map(|c| (p, c)))
                .collect();
            s.exchanges = self.exchanges;
            s.bytes_sent = self.bytes_sent;
            s.bytes_received = self.bytes_received;
            s.lost_peers = self
                .failed
                .iter()
                .chain(self.departed.iter())
                .copied()
                .collect();
            s.exchange_timeout = self.ex_timeout.timeout();
            s.proposal_timeout = self.prop_timeout.timeout();
            s.typical_exchange = self.ex_timeout.typical();
        }
    }

    fn total_missed(&self) -> u64 {
        self.pairing
            .neighbours()
            .filter_map(|(p, _, _)| self.pairing.counters(p))
            .map(|c| c.missed())
            .sum()
    }

    fn send(&mut self, to: usize, msg: Msg) {
        if let Some(l) = self.links.get(&to) {
            let _ = l.tx.send(Out::Msg(msg));
        }
    }

    fn timer(&self, after: Duration, msg: DriverIn) {
        let tx = self.self_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(msg);
        });
    }

    fn apply(&mut self, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Send { to, msg } => {
                    let m = match msg {
                        PairMsg::Propose { seq } => {
                            self.proposal_sent = Some((to, seq, Instant::now()));
                            Msg::Propose { seq }
                        }
                        PairMsg::Accept { seq } => Msg::Accept { seq },
                        PairMsg::Busy { seq } => Msg::Busy { seq },
                        PairMsg::Abort { seq } => Msg::Abort { seq },
                    };
                    self.send(to, m);
                }
                Action::ArmProposalTimer { peer, seq } => self.timer(
                    self.prop_timeout.timeout(),
                    DriverIn::ProposalTimeout { peer, seq },
                ),
                Action::StartExchange {
                    peer,
                    seq,
                    initiator,
                } => {
                    self.active = Some(Active {
                        peer,
                        seq,
                        initiator,
                        started: Instant::now(),
                        supplied: None,
                        sent: None,
                        theirs: None,
                    });
                    self.timer(
                        self.ex_timeout.timeout(),
                        DriverIn::ExchangeTimeout { peer, seq },
                    );
                    let req = ExchangeRequest {
                        peer,
                        seq,
                        initiator,
                        params: self.params,
                        tx: self.self_tx.clone(),
                        pool: self.pool.clone(),
                        done: false,
                    };
                    let _ = self.events.send(MeshEvent::Exchange(req));
                }
                Action::CancelExchange { peer, seq } => {
                    self.drop_active(peer, seq, "the peer called the exchange off")
                }
            }
        }
    }

    fn is_active(&self, peer: usize, seq: u64) -> bool {
        matches!(&self.active, Some(a) if a.peer == peer && a.seq == seq)
    }

    fn drop_active(&mut self, peer: usize, seq: u64, why: &str) {
        if !self.is_active(peer, seq) {
            return;
        }
        if let Some(a) = self.active.take() {
            if let Some(b) = a.sent {
                self.pool.give(b);
            }
            if let Some(b) = a.theirs {
                self.pool.give(b);
            }
        }
        debug!(
            "rank {}: exchange {seq} with rank {peer} failed: {why}",
            self.rank
        );
        let _ = self.events.send(MeshEvent::ExchangeFailed {
            peer,
            seq,
            why: why.to_string(),
        });
    }

    fn fail_exchange(&mut self, peer: usize, seq: u64, why: &str) {
        if !self.is_active(peer, seq) {
            return;
        }
        let acts = self.pairing.on_exchange_failed(peer, seq);
        self.apply(acts);
        self.drop_active(peer, seq, why);
    }

    fn maybe_complete(&mut self) {
        let ready = matches!(&self.active, Some(a) if a.sent.is_some() && a.theirs.is_some());
        if !ready {
            return;
        }
        let Some(a) = self.active.take() else { return };
        let (Some(mine), Some(theirs)) = (a.sent, a.theirs) else {
            return;
        };
        let acts = self.pairing.on_exchange_done(a.peer, a.seq);
        self.apply(acts);
        let total = a.started.elapsed();
        self.ex_timeout.observe(total);
        self.failures.insert(a.peer, 0);
        let missed = self.total_missed();
        let bytes =
            4 * self.params as u64 + crate::frame::HEADER_LEN as u64 + crate::frame::SNAPSHOT_SUB;
        self.exchanges += 1;
        self.bytes_sent += bytes;
        self.bytes_received += bytes;
        let stats = ExchangeStats {
            peer: a.peer,
            seq: a.seq,
            initiator: a.initiator,
            bytes_sent: bytes,
            bytes_received: bytes,
            wait_for_snapshot: a
                .supplied
                .map(|s| s.saturating_duration_since(a.started))
                .unwrap_or_default(),
            total,
            missed_since_previous: missed.saturating_sub(self.missed_at_last),
        };
        self.missed_at_last = missed;
        // Stats first, so a caller that sees the event also sees it counted.
        self.publish();
        let _ = self.events.send(MeshEvent::Exchanged(Exchanged {
            peer: a.peer,
            seq: a.seq,
            theirs,
            mine,
            stats,
        }));
    }

    fn handle(&mut self, msg: DriverIn) {
        match msg {
            DriverIn::Pair { from, msg } => {
                if let (PairMsg::Accept { seq } | PairMsg::Busy { seq }, Some((p, s, t))) =
                    (msg, self.proposal_sent)
                {
                    if p == from && s == seq {
                        self.prop_timeout.observe(t.elapsed());
                        self.proposal_sent = None;
                    }
                }
                if !matches!(msg, PairMsg::Abort { .. }) {
                    self.failures.insert(from, 0); // it answers: alive
                }
                let acts = self.pairing.on_msg(from, msg);
                self.apply(acts);
            }
            DriverIn::Snapshot { from, seq, data } => {
                match &mut self.active {
                    Some(a) if a.peer == from && a.seq == seq && a.theirs.is_none() => {
                        a.theirs = Some(data)
                    }
                    _ => self.pool.give(data),
                }
                self.maybe_complete();
            }
            DriverIn::SnapshotSent {
                peer,
                seq,
                data,
                ok,
            } => match ok {
                Ok(()) => {
                    match &mut self.active {
                        Some(a) if a.peer == peer && a.seq == seq => a.sent = Some(data),
                        _ => self.pool.give(data),
                    }
                    self.maybe_complete();
                }
                Err(e) => {
                    self.pool.give(data);
                    self.fail_exchange(peer, seq, &format!("sending the snapshot failed: {e}"));
                }
            },
            DriverIn::Supplied {
                peer,
                seq,
                data,
                at,
            } => {
                if self.is_active(peer, seq) {
                    if let Some(a) = &mut self.active {
                        a.supplied = Some(at);
                    }
                    match self.links.get(&peer) {
                        Some(l) if l.tx.send(Out::Snapshot { seq, data }).is_ok() => {}
                        _ => self.fail_exchange(peer, seq, "the link to the peer is closed"),
                    }
                } else {
                    self.pool.give(data);
                }
            }
            DriverIn::Declined { peer, seq } => {
                self.fail_exchange(peer, seq, "the caller declined to supply a snapshot")
            }
            DriverIn::ProposalTimeout { peer, seq } => {
                let live = self.pairing.status() == (Status::Proposing { peer, seq });
                let acts = self.pairing.on_proposal_timeout(peer, seq);
                self.apply(acts);
                if live {
                    self.count_failure(peer, "proposal went unanswered");
                }
            }
            DriverIn::ExchangeTimeout { peer, seq } => {
                if self.is_active(peer, seq) {
                    // Only the peer's silence counts against it, not our own caller being slow.
                    let waited_on_peer = matches!(&self.active, Some(a) if a.supplied.is_some());
                    let t = self.ex_timeout.timeout();
                    self.fail_exchange(
                        peer,
                        seq,
                        &format!("timed out after {:.1}s", t.as_secs_f64()),
                    );
                    if waited_on_peer {
                        self.count_failure(peer, "exchange timed out");
                    }
                }
            }
            DriverIn::LinkDown { peer, why } => self.peer_lost(peer, &why, false, false),
            DriverIn::Goodbye { peer, reason } => self.peer_lost(peer, &reason, true, false),
            DriverIn::PeerDownNote { rank } => self.note_failed(rank),
            DriverIn::Retire => self.pairing.retire(),
            DriverIn::Pause(p) => self.pairing.set_paused(p),
            DriverIn::Interrupt { reason } => {
                info!("rank {}: shutdown requested: {reason}", self.rank);
                for p in self.links.keys().copied().collect::<Vec<_>>() {
                    self.send(
                        p,
                        Msg::Goodbye {
                            reason: reason.clone(),
                        },
                    );
                }
                let _ = self.events.send(MeshEvent::ShutdownRequested);
            }
            DriverIn::Shutdown { .. } => {}
        }
    }

    /// One more consecutive sign of an unresponsive peer; past the limit it is dropped.
    fn count_failure(&mut self, peer: usize, what: &str) {
        let n = self.failures.entry(peer).or_insert(0);
        *n += 1;
        if *n >= self.max_failures {
            let why = format!("unresponsive: {n} times in a row ({what}, the last)");
            self.peer_lost(peer, &why, false, true);
        }
    }

    fn peer_lost(&mut self, peer: usize, why: &str, graceful: bool, abort_reader: bool) {
        let Some(link) = self.links.remove(&peer) else {
            return;
        };
        let _ = link.tx.send(Out::Close);
        if abort_reader {
            link.reader.abort();
        }
        let acts = self.pairing.on_peer_down(peer);
        self.apply(acts);
        if graceful {
            info!("rank {}: rank {peer} left the mesh: {why}", self.rank);
            self.departed.insert(peer);
        } else {
            warn!(
                "rank {}: lost rank {peer} ({why}); dropping it from pairing, training goes on",
                self.rank
            );
            self.note_failed(peer);
        }
        let _ = self.events.send(MeshEvent::PeerLost {
            peer,
            why: why.to_string(),
            graceful,
        });
        let alive = self
            .pairing
            .neighbours()
            .filter(|(_, _, alive)| *alive)
            .count();
        if alive == 0 && self.pairing.neighbours().count() > 0 && !graceful {
            warn!(
                "rank {}: no live neighbour left: this worker now trains alone",
                self.rank
            );
        }
    }

    /// A failure became known (here or by gossip): spread it, and warn if the graph split.
    fn note_failed(&mut self, rank: usize) {
        if rank == self.rank || rank >= self.world || !self.failed.insert(rank) {
            return;
        }
        for p in self.links.keys().copied().collect::<Vec<_>>() {
            self.send(p, Msg::PeerDown { rank: rank as u32 });
        }
        let dead: Vec<usize> = self.failed.iter().copied().collect();
        let comps = live_components(self.world, &self.graph, &dead);
        if comps.len() > self.components {
            warn!(
                "rank {}: the communication graph fell apart after losing ranks {dead:?}: components {comps:?}; \
                 the groups will drift apart",
                self.rank
            );
            let _ = self.events.send(MeshEvent::GraphSplit {
                components: comps.clone(),
            });
        }
        self.components = comps.len();
    }

    async fn close_all(&mut self, reason: &str) {
        if let Some(a) = self.active.take() {
            let _ = self.events.send(MeshEvent::ExchangeFailed {
                peer: a.peer,
                seq: a.seq,
                why: "shutting down".into(),
            });
        }
        let links = std::mem::take(&mut self.links);
        for l in links.values() {
            let _ = l.tx.send(Out::Msg(Msg::Goodbye {
                reason: reason.to_string(),
            }));
            let _ = l.tx.send(Out::Close);
        }
        for (_, l) in links {
            let _ = tokio::time::timeout(Duration::from_secs(2), l.writer).await;
            l.reader.abort();
        }
        debug!("rank {}: mesh closed ({reason})", self.rank);
    }
}
