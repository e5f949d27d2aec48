//! The handle the runtime drives: [`MeshConfig`], [`Mesh`] and the types it hands out
//! ([`MeshEvent`], [`ExchangeRequest`], [`Exchanged`], statistics). The work happens elsewhere:
//! start-up in [`crate::connect`], the links in [`crate::link`], pairing in [`crate::driver`],
//! all-reduce / broadcast / barrier in [`crate::collectives`].
//!
//! Shutdown: the mesh's token stops the acceptor, the Ctrl-C watcher and the driver; the driver
//! says goodbye on every link, waits (briefly) for the goodbyes to be written, then stops the links.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Secret;
use crate::collectives::{CollStats, Ring};
use crate::connect::{Acceptor, Plan};
use crate::connection::Connection;
use crate::driver::{Command, Driver, Inputs, Participation, LINK_EVENTS};
use crate::error::NetError;
use crate::frame::{Fingerprint, Limits};
use crate::link::{self, LinkCaps};
use crate::pairing::EdgeCounters;
use crate::pool::BufPool;
use crate::rendezvous::{self, Rendezvous};

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

/// The worker clock from one instant on: `tau` at `at`, then one unit every `seconds_per_unit`
/// (standing still when `None`). The runtime sets a new segment whenever its estimate of the step
/// time changes; the mesh extrapolates it to know when an edge event falls due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockSegment {
    pub tau: f64,
    pub at: tokio::time::Instant,
    pub seconds_per_unit: Option<f64>,
}

impl ClockSegment {
    /// A clock standing at `tau`.
    pub fn frozen(tau: f64) -> ClockSegment {
        ClockSegment {
            tau,
            at: tokio::time::Instant::now(),
            seconds_per_unit: None,
        }
    }

    /// A clock at `tau` at the std instant `at`, one unit every `seconds_per_unit`.
    pub fn running(tau: f64, at: std::time::Instant, seconds_per_unit: f64) -> ClockSegment {
        ClockSegment {
            tau,
            at: tokio::time::Instant::from_std(at),
            seconds_per_unit: Some(seconds_per_unit).filter(|s| s.is_finite() && *s > 0.0),
        }
    }

    /// The clock's value at `t` (never less than `tau`).
    pub fn tau_at(&self, t: tokio::time::Instant) -> f64 {
        match self.seconds_per_unit {
            Some(s) => self.tau + t.saturating_duration_since(self.at).as_secs_f64() / s,
            None => self.tau,
        }
    }

    /// When the clock reaches `tau`: `None` if it stands still below it (or `tau` is not finite).
    pub fn instant_of(&self, tau: f64) -> Option<tokio::time::Instant> {
        if !tau.is_finite() {
            return None;
        }
        if tau <= self.tau {
            return Some(self.at);
        }
        let s = self.seconds_per_unit?;
        Some(self.at + Duration::from_secs_f64(((tau - self.tau) * s).min(1e9)))
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
    commands: mpsc::Sender<Command>,
    pool: BufPool,
    done: bool,
}

impl ExchangeRequest {
    pub(crate) fn new(
        peer: usize,
        seq: u64,
        initiator: bool,
        params: usize,
        commands: mpsc::Sender<Command>,
        pool: BufPool,
    ) -> ExchangeRequest {
        ExchangeRequest {
            peer,
            seq,
            initiator,
            params,
            commands,
            pool,
            done: false,
        }
    }

    /// Drop it without telling the driver (the driver already called the exchange off).
    pub(crate) fn disarm(mut self) {
        self.done = true;
    }

    /// Send `snapshot` (exactly the model's parameter count) to the peer. Returns at once; the
    /// result arrives as [`MeshEvent::Exchanged`] or [`MeshEvent::ExchangeFailed`].
    pub fn supply(mut self, snapshot: Vec<f32>) -> Result<(), NetError> {
        self.check_len(snapshot.len())?;
        self.done = true;
        let supplied = Command::Supplied {
            peer: self.peer,
            seq: self.seq,
            data: snapshot,
            at: Instant::now(),
        };
        // Never waits: this is called from the compute loop. The queue holds one command per
        // request the caller took, so it is full only if the driver stopped.
        match self.commands.try_send(supplied) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(NetError::ShutDown),
            Err(TrySendError::Full(cmd)) => {
                if let Command::Supplied { data, .. } = cmd {
                    self.pool.give(data);
                }
                Err(NetError::Exchange {
                    peer: self.peer,
                    why: format!(
                        "the mesh's command queue is full ({} commands): its driver is not keeping up",
                        self.commands.max_capacity()
                    ),
                })
            }
        }
    }

    /// Like [`supply`](Self::supply) from a borrowed slice (one memcpy into a pooled buffer).
    pub fn supply_slice(self, snapshot: &[f32]) -> Result<(), NetError> {
        self.check_len(snapshot.len())?;
        let buf = self.pool.copy_of(snapshot);
        self.supply(buf)
    }

    fn check_len(&self, got: usize) -> Result<(), NetError> {
        if got == self.params {
            Ok(())
        } else {
            Err(NetError::SnapshotLen {
                got,
                want: self.params,
            })
        }
    }
}

impl Drop for ExchangeRequest {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: if it cannot be queued the exchange times out instead, which is not
            // held against the peer (this worker never supplied).
            let _ = self.commands.try_send(Command::Declined {
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
    commands: mpsc::Sender<Command>,
}

impl ShutdownHandle {
    pub fn shutdown(&self, reason: &str) {
        let interrupt = Command::Interrupt {
            reason: reason.to_string(),
        };
        if let Err(TrySendError::Full(_)) = self.commands.try_send(interrupt) {
            warn!("shutdown request '{reason}' not delivered: the mesh's command queue is full");
        }
    }
}

/// Events waiting for the caller. Only exchange requests are unbounded in number over time (a
/// caller that stops polling keeps being offered exchanges that then time out): the driver calls an
/// exchange off instead of offering it once the queue is this full, and keeps the room beyond it
/// for the few other events (see [`Driver`]).
const EVENT_QUEUE: usize = 256;

/// A worker's handle on the mesh. Owned by the runtime; see the crate docs for the loop.
pub struct Mesh {
    rank: usize,
    world: usize,
    params: usize,
    local_addr: SocketAddr,
    neighbours: Vec<usize>,
    clock: watch::Sender<ClockSegment>,
    participation: watch::Sender<Participation>,
    events: mpsc::Receiver<MeshEvent>,
    stash: VecDeque<MeshEvent>,
    commands: mpsc::Sender<Command>,
    driver: Option<JoinHandle<()>>,
    shutdown: CancellationToken,
    stats: watch::Receiver<MeshStats>,
    pool: BufPool,
    ring: Ring,
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

impl Mesh {
    /// Join the mesh: listen, rendezvous, connect and authenticate every link, start the tasks.
    pub async fn connect(mut cfg: MeshConfig) -> Result<Mesh, NetError> {
        let plan = Plan::new(&cfg)?;
        let deadline = Instant::now() + cfg.connect_timeout;
        let listener = crate::connect::bind(&mut cfg).await?;
        let local_addr = listener.local_addr()?;
        let me = crate::connect::identity(&cfg);
        let shutdown = CancellationToken::new();
        // A failed start-up stops the acceptor too.
        let stop_on_error = shutdown.clone().drop_guard();
        let pool = BufPool::default();
        let mut acceptor = Acceptor::spawn(listener, &me, &plan, &cfg, &pool, &shutdown);
        let table =
            rendezvous::address_table(&cfg, &me, local_addr, &mut acceptor, deadline).await?;
        let conns =
            crate::connect::open_links(&cfg, &me, &plan, &table, acceptor, &pool, deadline).await?;
        stop_on_error.disarm();
        Ok(Mesh::start(cfg, plan, local_addr, conns, shutdown, pool))
    }

    /// Start the link tasks and the driver over the authenticated connections.
    fn start(
        cfg: MeshConfig,
        plan: Plan,
        local_addr: SocketAddr,
        conns: BTreeMap<usize, Connection>,
        shutdown: CancellationToken,
        pool: BufPool,
    ) -> Mesh {
        let chunk_floats = cfg.chunk_floats.max(1);
        let event_room = EVENT_QUEUE + Driver::event_reserve(conns.len(), cfg.world);
        let (events_tx, events) = mpsc::channel(event_room);
        // One command per request the caller holds, plus the rare interrupt and shutdown.
        let (commands, commands_rx) = mpsc::channel(event_room);
        let (link_events_tx, link_events) = mpsc::channel(LINK_EVENTS);
        let (clock, clock_rx) = watch::channel(ClockSegment::frozen(cfg.clock_start));
        let (participation, participation_rx) = watch::channel(Participation::default());
        let (stats_tx, stats) = watch::channel(MeshStats::default());
        // Not a child of `shutdown`: the driver cancels it only after its goodbyes are written.
        let links_stop = CancellationToken::new();
        let limits = Limits {
            params: plan.params as u64,
        };
        let caps = LinkCaps::new(cfg.world, plan.params, chunk_floats);
        let (links, ports) = link::spawn_all(
            conns,
            |p| plan.is_ring(p),
            limits,
            caps,
            &pool,
            &link_events_tx,
            &links_stop,
        );
        let driver = Driver::new(
            &cfg,
            plan.params,
            links,
            links_stop,
            events_tx,
            commands.clone(),
            stats_tx,
            pool.clone(),
        );
        let driver = tokio::spawn(driver.run(Inputs {
            links: link_events,
            commands: commands_rx,
            clock: clock_rx,
            participation: participation_rx,
            shutdown: shutdown.clone(),
        }));
        let ring = Ring::new(
            cfg.rank,
            cfg.world,
            ports,
            pool.clone(),
            chunk_floats,
            cfg.collective_timeout,
        );
        info!(
            "rank {}: mesh up on {local_addr}, neighbours {:?}, ring (left, right) {:?}",
            cfg.rank, plan.neighbours, plan.ring
        );
        Mesh {
            rank: cfg.rank,
            world: cfg.world,
            params: plan.params,
            local_addr,
            neighbours: plan.neighbours,
            clock,
            participation,
            events,
            stash: VecDeque::new(),
            commands,
            driver: Some(driver),
            shutdown,
            stats,
            pool,
            ring,
        }
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

    /// Set the worker clock (units of one gradient step) to `now`, standing still until the next
    /// call. Edges owned by this worker whose Poisson events fall at or before `now` are due.
    pub fn advance_clock(&self, now: f64) {
        self.set_clock(ClockSegment::frozen(now));
    }

    /// Set the worker clock to run from `segment.tau` at `segment.at`, one unit every
    /// `segment.seconds_per_unit`: the mesh then proposes each edge event when it falls due on
    /// that clock, between the caller's calls (not only when the caller polls).
    pub fn set_clock(&self, segment: ClockSegment) {
        self.clock.send_replace(segment);
    }

    /// Stop pairing (this worker has finished training) but stay connected for the collectives:
    /// owned edges no longer propose and peers' proposals are answered `Busy` at once, so nobody
    /// waits on a worker that will not supply a snapshot. An exchange already agreed still completes
    /// (its events still arrive).
    pub fn retire(&self) {
        self.participation.send_modify(|p| p.retired = true);
    }

    /// Pause pairing for a while (`true`) or take it up again (`false`): while paused, as when
    /// retired, owned edges do not propose and peers get `Busy` at once, so a worker that stops
    /// stepping (to evaluate, say) does not leave a peer waiting on its snapshot.
    pub fn pause(&self, paused: bool) {
        self.participation.send_modify(|p| p.paused = paused);
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
        self.stats.borrow().clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            commands: self.commands.clone(),
        }
    }

    /// On Ctrl-C: tell the neighbours goodbye and emit [`MeshEvent::ShutdownRequested`].
    pub fn shutdown_on_ctrl_c(&self) {
        let h = self.shutdown_handle();
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                signal = tokio::signal::ctrl_c() => {
                    if signal.is_ok() {
                        h.shutdown("interrupted (Ctrl-C)");
                    }
                }
            }
        });
    }

    /// Leave the mesh: neighbours are told goodbye (they drop this worker without alarm), queued
    /// frames are flushed, every task stops.
    pub async fn shutdown(mut self, reason: &str) -> Result<(), NetError> {
        let (done_tx, done_rx) = oneshot::channel();
        let asked = Command::Shutdown {
            reason: reason.to_string(),
            done: done_tx,
        };
        let wait = Duration::from_secs(10);
        if let Ok(Ok(())) = tokio::time::timeout(wait, self.commands.send(asked)).await {
            let _ = tokio::time::timeout(wait, done_rx).await;
        }
        if let Some(d) = self.driver.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), d).await;
        }
        self.shutdown.cancel();
        Ok(())
    }

    /// Ring all-reduce (reduce-scatter, then all-gather; chunked and pipelined) leaving the mean in
    /// `buf`, bit-identical on every rank. Every rank must call it with the same length. Losing a
    /// member fails at once with [`NetError::MemberLost`] naming it.
    pub async fn allreduce_mean(&mut self, buf: &mut [f32]) -> Result<CollStats, NetError> {
        self.ring.allreduce_mean(buf).await
    }

    /// Copy `root`'s `buf` into every rank's `buf` (pipelined along the ring). Used for identical
    /// initial parameters.
    pub async fn broadcast(&mut self, root: usize, buf: &mut [f32]) -> Result<(), NetError> {
        self.ring.broadcast(root, buf).await
    }

    /// Returns once every rank has entered the barrier (a token goes `world - 1` hops round the ring).
    pub async fn barrier(&mut self) -> Result<(), NetError> {
        self.ring.barrier().await
    }
}

impl Drop for Mesh {
    /// Dropped without [`Mesh::shutdown`]: the driver still says goodbye (reason "mesh dropped")
    /// before the links stop.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
