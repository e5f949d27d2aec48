//! The handle the runtime drives: [`Mesh`]. It is built from a [`crate::MeshConfig`] and hands out
//! the types of [`crate::events`]. The work happens elsewhere: start-up in [`crate::connect`] and
//! [`crate::address_book`], the links in [`crate::link`], pairing in [`crate::driver`], all-reduce /
//! broadcast / barrier in [`crate::collectives`].
//!
//! Shutdown: the mesh's token stops the acceptor, the Ctrl-C watcher and the driver; the driver
//! says goodbye on every link, waits (briefly) for the goodbyes to be written, then stops the links.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::address_book;
use crate::collectives::{CollStats, Ring};
use crate::config::MeshConfig;
use crate::connect::PeerState;
use crate::connect::{Acceptor, Plan};
use crate::connection::Connection;
use crate::driver::{Driver, Inputs, Relink, LINK_EVENTS};
use crate::error::NetError;
use crate::events::StateRequest;
use crate::events::{
    ClockSegment, Command, ExchangeRequest, Exchanged, MeshEvent, MeshStats, Participation,
    ShutdownHandle,
};
use crate::frame::Limits;
use crate::frame::Purpose;
use crate::link::{self, LinkCaps};
use crate::pool::BufPool;
use crate::rendezvous::Rendezvous;

/// Events waiting for the caller. Only exchange requests are unbounded in number over time (a
/// caller that stops polling keeps being offered exchanges that then time out): the driver calls an
/// exchange off instead of offering it once the queue is this full, and keeps the room beyond it
/// for the few other events (see [`Driver`]).
const EVENT_QUEUE: usize = 256;

/// The mesh's events, taken out of it with [`Mesh::take_events`].
#[derive(Debug)]
pub struct MeshEvents {
    events: mpsc::Receiver<MeshEvent>,
    stash: VecDeque<MeshEvent>,
    pool: BufPool,
}

impl MeshEvents {
    /// The next event, waiting for one. `None` once the mesh has shut down.
    pub async fn recv(&mut self) -> Option<MeshEvent> {
        if let Some(e) = self.stash.pop_front() {
            return Some(e);
        }
        self.events.recv().await
    }

    /// Give a buffer (e.g. [`Exchanged::theirs`]) back to the receive pool.
    pub fn recycle(&self, buf: Vec<f32>) {
        self.pool.give(buf);
    }
}

/// A worker's handle on the mesh. Owned by the runtime; see the crate docs for the loop.
pub struct Mesh {
    rank: usize,
    world: usize,
    params: usize,
    local_addr: SocketAddr,
    addresses: Vec<String>,
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
            address_book::address_table(&cfg, &me, local_addr, &mut acceptor, deadline).await?;
        let conns =
            crate::connect::open_links(&cfg, &me, &plan, &table, &mut acceptor, &pool, deadline)
                .await?;
        stop_on_error.disarm();
        Ok(Mesh::start(
            cfg, plan, local_addr, table, conns, acceptor, 0, shutdown, pool,
        ))
    }

    /// Join a mesh that is already running, as a restarted worker of rank `cfg.rank`: listen
    /// where the address table says, re-open the link to every neighbour still alive (each is
    /// told, and pairs with this worker again), and take the training state of the first graph
    /// neighbour that answers — no checkpoint needed. The rendezvous must be the explicit address
    /// table of the running mesh (the runtime keeps it in the run directory). The mesh's clock
    /// starts at that neighbour's clock, and the collectives continue where the others are.
    pub async fn rejoin(mut cfg: MeshConfig) -> Result<(Mesh, PeerState), NetError> {
        let plan = Plan::new(&cfg)?;
        let Rendezvous::Explicit(table) = &cfg.rendezvous else {
            return Err(NetError::Config(
                "a rejoining worker needs the running mesh's address table (an explicit list)"
                    .into(),
            ));
        };
        if table.len() != cfg.world {
            return Err(NetError::Config(format!(
                "the address table has {} entries for a world of {}",
                table.len(),
                cfg.world
            )));
        }
        let table = table.clone();
        let deadline = Instant::now() + cfg.connect_timeout;
        let listener = crate::connect::bind(&mut cfg).await?;
        let local_addr = listener.local_addr()?;
        let me = crate::connect::identity(&cfg);
        let shutdown = CancellationToken::new();
        let stop_on_error = shutdown.clone().drop_guard();
        let pool = BufPool::default();
        let acceptor = Acceptor::spawn(listener, &me, &plan, &cfg, &pool, &shutdown);
        let (conns, missing) =
            crate::connect::reopen_links(&cfg, &me, &plan, &table, &pool, deadline).await;
        for (p, why) in &missing {
            tracing::warn!(
                "rank {}: could not re-open the link to rank {p} ({why}); going on without it",
                cfg.rank
            );
        }
        let mut state = None;
        let mut tried = Vec::new();
        for &p in plan.neighbours.iter().filter(|p| conns.contains_key(p)) {
            match crate::connect::fetch_state(&cfg, &me, p, &table[p], &pool, deadline).await {
                Ok(s) => {
                    state = Some(s);
                    break;
                }
                Err(e) => tried.push(format!("rank {p}: {e}")),
            }
        }
        let Some(state) = state else {
            let why = if tried.is_empty() {
                format!(
                    "no neighbour answered ({})",
                    missing
                        .iter()
                        .map(|(p, w)| format!("rank {p}: {w}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            } else {
                tried.join("; ")
            };
            return Err(NetError::Config(format!(
                "rank {} could not rejoin the run: no live neighbour gave it the training state \
                 ({why}); the run may have ended, or start the whole run again with --resume",
                cfg.rank
            )));
        };
        cfg.clock_start = state.clock;
        stop_on_error.disarm();
        let ring_op = state.ring_op;
        let mesh = Mesh::start(
            cfg, plan, local_addr, table, conns, acceptor, ring_op, shutdown, pool,
        );
        Ok((mesh, state))
    }

    /// Start the link tasks and the driver over the authenticated connections; `ring_op`
    /// collectives were run before (0 for a new mesh).
    #[allow(clippy::too_many_arguments)]
    fn start(
        cfg: MeshConfig,
        plan: Plan,
        local_addr: SocketAddr,
        addresses: Vec<String>,
        conns: BTreeMap<usize, Connection>,
        acceptor: Acceptor,
        ring_op: u64,
        shutdown: CancellationToken,
        pool: BufPool,
    ) -> Mesh {
        // A chunk never exceeds a payload frame's cap (a snapshot's length), whatever the size of
        // the buffer a collective moves (it may be longer than a compressed snapshot).
        let chunk_floats = cfg.chunk_floats.clamp(1, plan.params.max(1));
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
            // Every link gets a port: the ring collectives use two, relay rounds any.
            |_| true,
            limits,
            caps,
            &pool,
            &link_events_tx,
            &links_stop,
        );
        let (ring_ports, replaced) = mpsc::unbounded_channel();
        let ops_started = Arc::new(AtomicU64::new(ring_op));
        let (rejoins_tx, rejoins) = mpsc::channel(8);
        tokio::spawn(serve_late(
            cfg.rank,
            plan.params,
            acceptor,
            rejoins_tx,
            events_tx.clone(),
            ops_started.clone(),
            shutdown.clone(),
        ));
        let driver = Driver::new(
            &cfg,
            plan.params,
            links,
            links_stop,
            events_tx,
            commands.clone(),
            stats_tx,
            pool.clone(),
        )
        .with_relink(Relink {
            limits,
            caps,
            to_driver: link_events_tx.clone(),
            ring_ports,
        });
        let driver = tokio::spawn(driver.run(Inputs {
            links: link_events,
            commands: commands_rx,
            clock: clock_rx,
            participation: participation_rx,
            shutdown: shutdown.clone(),
            rejoins,
        }));
        let ring = Ring::new(
            cfg.rank,
            cfg.world,
            ports,
            replaced,
            ops_started,
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
            addresses,
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
    /// Every rank's `HOST:PORT` (the address table of the rendezvous), for a restarted worker to
    /// find its neighbours with [`Mesh::rejoin`].
    pub fn addresses(&self) -> &[String] {
        &self.addresses
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

    /// Tell every worker of the run that this one stops training (`reason` says why): each gets
    /// [`MeshEvent::RunStopping`] once, passed on along the links.
    pub fn announce_stop(&self, reason: &str) {
        let _ = self.commands.try_send(Command::AnnounceStop {
            reason: reason.to_string(),
        });
    }

    /// Hand the stream of events to another task (say, one that answers exchanges while the
    /// compute loop is busy): from then on [`Mesh::next_event`] and [`Mesh::try_next_event`] see
    /// none. Collectives and the clock stay with the mesh.
    pub fn take_events(&mut self) -> MeshEvents {
        let (_, closed) = mpsc::channel(1);
        MeshEvents {
            events: std::mem::replace(&mut self.events, closed),
            stash: std::mem::take(&mut self.stash),
            pool: self.pool.clone(),
        }
    }

    /// Give a buffer (e.g. [`Exchanged::theirs`]) back to the receive pool.
    pub fn recycle(&self, buf: Vec<f32>) {
        self.pool.give(buf);
    }

    /// Cumulative statistics.
    pub fn stats(&self) -> MeshStats {
        let mut s = self.stats.borrow().clone();
        (s.collective_bytes_sent, s.collective_bytes_received) = self.ring.totals;
        s
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            commands: self.commands.clone(),
        }
    }

    /// On Ctrl-C (SIGINT) or SIGTERM: tell the neighbours goodbye and emit
    /// [`MeshEvent::ShutdownRequested`].
    pub fn shutdown_on_signals(&self) {
        let h = self.shutdown_handle();
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                name = interrupt_signal() => h.shutdown(&format!("interrupted ({name})")),
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

    /// One relay round of RelaySum: sends `outgoing[k]` to `peers[k]` (linked peers: the
    /// spanning tree's edges are graph edges) and returns what each sent this round (`lens[k]`
    /// floats). A collective: every worker takes part in every round, in the same order.
    pub async fn relay(
        &mut self,
        peers: &[usize],
        outgoing: &[Vec<f32>],
        lens: &[usize],
    ) -> Result<Vec<Vec<f32>>, NetError> {
        self.ring.relay(peers, outgoing, lens).await
    }

    /// Returns once every rank has entered the barrier (a token goes `world - 1` hops round the ring).
    pub async fn barrier(&mut self) -> Result<(), NetError> {
        self.ring.barrier().await
    }
}

/// After start-up: hands restarted neighbours' links to the driver and their requests for the
/// training state to the caller (as [`MeshEvent::StateRequested`]); anything else is closed.
async fn serve_late(
    rank: usize,
    params: usize,
    acceptor: Acceptor,
    rejoins: mpsc::Sender<(usize, Connection)>,
    events: mpsc::Sender<MeshEvent>,
    ops_started: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let (early, mut rx) = acceptor.into_late();
    let route = |(hello, conn): crate::connect::Accepted| {
        let peer = hello.rank as usize;
        match hello.purpose {
            Purpose::Rejoin => {
                info!("rank {rank}: rank {peer} is back and re-opens its link");
                if rejoins.try_send((peer, conn)).is_err() {
                    tracing::warn!("rank {rank}: too many links re-opened at once; closed one");
                }
            }
            Purpose::State => {
                let req =
                    StateRequest::new(peer, conn, ops_started.load(Ordering::Relaxed), params);
                if let Err(e) = events.try_send(MeshEvent::StateRequested(req)) {
                    tracing::warn!(
                        "rank {rank}: could not pass on rank {peer}'s request for the training \
                 state: {e}"
                    );
                }
            }
            // Late or duplicate start-up connections: closed.
            Purpose::Link | Purpose::Register => {}
        }
    };
    for a in early {
        route(a);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            got = rx.recv() => match got {
                Some(Ok(a)) => route(a),
                Some(Err(_)) => {}
                None => return,
            },
        }
    }
}

impl Drop for Mesh {
    /// Dropped without [`Mesh::shutdown`]: the driver still says goodbye (reason "mesh dropped")
    /// before the links stop.
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM, and says which came. Never returns if no
/// handler could be installed.
pub async fn interrupt_signal() -> &'static str {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        },
        _ = term => "SIGTERM",
    }
}
