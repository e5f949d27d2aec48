//! The pairing driver: one task per worker that owns the [`Pairing`] state machine, the exchange in
//! progress and the deadlines, feeds [`Health`] and [`Membership`] with what happens and carries out
//! what they and the state machine decide. It never waits on a peer or on the caller, so it answers
//! `Busy` at once whatever the compute side is doing: every send it makes is a `try_send`, and a
//! queue found full is a failure (of the peer, or of a caller not taking events), logged as such.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::MeshConfig;
use crate::connection::Connection;
use crate::events::{
    ClockSegment, Command, ExchangeRequest, ExchangeStats, Exchanged, MeshEvent, MeshStats,
    Participation,
};
use crate::frame::Limits;
use crate::frame::{Frame, Msg, PairMsg, HEADER_LEN, SNAPSHOT_SUB};
use crate::health::{Failure, Health, Membership, Verdict};
use crate::link::{self, LinkCaps, LinkEvent, LinkHandle, Outgoing, RingPort};
use crate::pairing::{Action, Pairing, Status};
use crate::pool::BufPool;

/// Frames the links may have queued for the driver. Link tasks wait for room (which pushes back on
/// their sockets); the driver never waits on anything, so it empties this queue as fast as it fills.
pub(crate) const LINK_EVENTS: usize = 256;

/// Why a peer is dropped: it decides how its link is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loss {
    /// It said goodbye.
    Graceful,
    /// Its connection broke.
    Broken,
    /// Connected but not answering: cut the link without waiting for it.
    Unresponsive,
}

/// A pending deadline.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: tokio::time::Instant,
    after: Duration,
}

impl Deadline {
    fn after(after: Duration) -> Deadline {
        Deadline {
            at: tokio::time::Instant::now() + after,
            after,
        }
    }
}

/// The exchange in progress (at most one: the state machine guarantees it).
#[derive(Debug)]
struct Active {
    peer: usize,
    seq: u64,
    initiator: bool,
    started: Instant,
    deadline: Deadline,
    supplied: Option<Instant>,
    sent: Option<Vec<f32>>,
    theirs: Option<Vec<f32>>,
}

/// Running totals for [`MeshStats`].
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    exchanges: u64,
    bytes_sent: u64,
    bytes_received: u64,
    missed_at_last: u64,
}

pub(crate) struct Driver {
    rank: usize,
    params: usize,
    pairing: Pairing,
    health: Health,
    members: Membership,
    links: BTreeMap<usize, LinkHandle>,
    /// Cancelled when the driver ends, however it ends: every link task stops with it.
    links_stop: CancellationToken,
    events: mpsc::Sender<MeshEvent>,
    /// Event slots kept free for everything but new exchange requests.
    event_reserve: usize,
    commands: mpsc::Sender<Command>,
    active: Option<Active>,
    /// The latest proposal's deadline; an older one could only be stale.
    proposal: Option<(Deadline, usize, u64)>,
    /// Peers whose queue was found full while handling the current input.
    stalled: Vec<usize>,
    stats: watch::Sender<MeshStats>,
    pool: BufPool,
    totals: Totals,
    /// The worker clock as last set; the edges' Poisson events are due on it.
    clock: ClockSegment,
    /// The latest clock value the state machine was polled at (it never goes back).
    polled: f64,
    /// The run's stop was announced or passed on already.
    stop_seen: bool,
    /// How to start a link for a restarted neighbour (absent in unit tests without sockets).
    relink: Option<Relink>,
}

/// What the driver needs to start the link of a restarted neighbour like the others.
pub(crate) struct Relink {
    pub(crate) limits: Limits,
    pub(crate) caps: LinkCaps,
    pub(crate) to_driver: mpsc::Sender<LinkEvent>,
    pub(crate) ring_ports: mpsc::UnboundedSender<(usize, RingPort)>,
}

/// The driver's inputs.
pub(crate) struct Inputs {
    pub(crate) links: mpsc::Receiver<LinkEvent>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) clock: watch::Receiver<ClockSegment>,
    pub(crate) participation: watch::Receiver<Participation>,
    pub(crate) shutdown: CancellationToken,
    /// Authenticated links re-opened by restarted neighbours.
    pub(crate) rejoins: mpsc::Receiver<(usize, Connection)>,
}

impl Driver {
    /// Event slots to keep for events other than exchange requests: at most one outcome of the
    /// exchange in progress, one loss per link, one split per rank, a few interrupts.
    pub(crate) fn event_reserve(links: usize, world: usize) -> usize {
        links + world + 8
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: &MeshConfig,
        params: usize,
        links: BTreeMap<usize, LinkHandle>,
        links_stop: CancellationToken,
        events: mpsc::Sender<MeshEvent>,
        commands: mpsc::Sender<Command>,
        stats: watch::Sender<MeshStats>,
        pool: BufPool,
    ) -> Driver {
        Driver {
            rank: cfg.rank,
            params,
            pairing: Pairing::new(cfg.rank, &cfg.edges, cfg.seed, cfg.clock_start),
            health: Health::new(
                cfg.max_exchange_failures,
                cfg.exchange_timeout,
                cfg.proposal_timeout,
            )
            .with_min_silence(cfg.unresponsive_after),
            members: Membership::new(cfg.rank, cfg.world, &cfg.edges),
            event_reserve: Driver::event_reserve(links.len(), cfg.world),
            links,
            links_stop,
            events,
            commands,
            active: None,
            proposal: None,
            stalled: Vec::new(),
            stats,
            pool,
            totals: Totals::default(),
            clock: ClockSegment::frozen(cfg.clock_start),
            polled: cfg.clock_start,
            stop_seen: false,
            relink: None,
        }
    }

    /// Let restarted neighbours re-open their links.
    pub(crate) fn with_relink(mut self, relink: Relink) -> Driver {
        self.relink = Some(relink);
        self
    }

    /// The worker clock now (never less than at the last poll).
    fn now(&mut self) -> f64 {
        self.polled = self
            .polled
            .max(self.clock.tau_at(tokio::time::Instant::now()));
        self.polled
    }

    /// Whatever the state machine has to do at the current clock value: owe the events that fell
    /// due, propose one if this worker is free.
    fn poll(&mut self) {
        let now = self.now();
        let acts = self.pairing.poll(now);
        self.apply(acts);
    }

    pub(crate) async fn run(mut self, mut inputs: Inputs) {
        let _stop_links = self.links_stop.clone().drop_guard();
        let (mut links_open, mut clock_open, mut participation_open) = (true, true, true);
        let mut rejoins_open = true;
        loop {
            let deadline = self.next_deadline();
            // Evaluated even when disabled: any instant will do then.
            let wake = deadline.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                _ = inputs.shutdown.cancelled() => {
                    self.close_all("mesh dropped").await;
                    break;
                }
                cmd = inputs.commands.recv() => match cmd {
                    Some(Command::Shutdown { reason, done }) => {
                        self.close_all(&reason).await;
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    // Unreachable while the driver holds a sender; stop rather than spin.
                    None => break,
                },
                ev = inputs.links.recv(), if links_open => match ev {
                    Some(ev) => self.on_link(ev),
                    None => links_open = false,
                },
                back = inputs.rejoins.recv(), if rejoins_open => match back {
                    Some((peer, conn)) => self.on_rejoin(peer, conn),
                    None => rejoins_open = false,
                },
                changed = inputs.clock.changed(), if clock_open => {
                    if changed.is_err() {
                        clock_open = false;
                        continue;
                    }
                    self.clock = *inputs.clock.borrow_and_update();
                }
                changed = inputs.participation.changed(), if participation_open => {
                    if changed.is_err() {
                        participation_open = false;
                        continue;
                    }
                    let p = *inputs.participation.borrow_and_update();
                    if p.retired {
                        self.pairing.retire();
                    }
                    self.pairing.set_paused(p.paused);
                }
                _ = tokio::time::sleep_until(wake), if deadline.is_some() => {
                    self.on_deadlines(tokio::time::Instant::now());
                }
            }
            self.settle();
            self.poll();
            self.publish();
        }
        self.publish();
    }

    // ----- inputs --------------------------------------------------------------------------

    fn on_link(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Pair { from, msg } => {
                self.health.heard(from, msg, Instant::now());
                let now = self.now();
                let acts = self.pairing.on_msg(from, msg, now);
                self.apply(acts);
            }
            LinkEvent::Snapshot { from, seq, data } => {
                match &mut self.active {
                    Some(a) if a.peer == from && a.seq == seq && a.theirs.is_none() => {
                        a.theirs = Some(data)
                    }
                    _ => self.pool.give(data),
                }
                self.maybe_complete();
            }
            LinkEvent::SnapshotSent {
                peer,
                seq,
                data,
                written,
            } => match written {
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
            LinkEvent::Down { peer, why } => self.peer_lost(peer, &why, Loss::Broken),
            LinkEvent::Goodbye { peer, reason } => self.peer_lost(peer, &reason, Loss::Graceful),
            LinkEvent::PeerDown { rank } => self.note_failed(rank),
            LinkEvent::Refused { peer, seq, why } => {
                self.emit(MeshEvent::SnapshotRefused { by: peer, seq, why })
            }
            LinkEvent::Stop { origin, reason } => {
                if !self.stop_seen {
                    self.stop_seen = true;
                    self.flood_stop(origin, &reason);
                    self.emit(MeshEvent::RunStopping { origin, reason });
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Supplied {
                peer,
                seq,
                data,
                at,
            } => {
                let Some(a) = self
                    .active
                    .as_mut()
                    .filter(|a| a.peer == peer && a.seq == seq)
                else {
                    self.pool.give(data);
                    return;
                };
                a.supplied = Some(at);
                if let Err(why) = self.send(peer, Frame::Snapshot { seq, data }) {
                    self.fail_exchange(peer, seq, why);
                }
            }
            Command::Refuse { peer, seq, why } => {
                let _ = self.send(peer, Frame::Msg(Msg::Refused { seq, why }));
            }
            Command::Declined { peer, seq } => {
                self.fail_exchange(peer, seq, "the caller declined to supply a snapshot")
            }
            Command::AnnounceStop { reason } => {
                if !self.stop_seen {
                    self.stop_seen = true;
                    self.flood_stop(self.rank, &reason);
                }
            }
            Command::Interrupt { reason } => {
                info!("rank {}: shutdown requested: {reason}", self.rank);
                for p in self.link_ranks() {
                    let bye = Msg::Goodbye {
                        reason: reason.clone(),
                    };
                    let _ = self.send(p, Frame::Msg(bye));
                }
                self.emit(MeshEvent::ShutdownRequested);
            }
            // Handled by the run loop, which must stop after it.
            Command::Shutdown { .. } => {}
        }
    }

    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let proposal = self.proposal.map(|(d, _, _)| d.at);
        let exchange = self.active.as_ref().map(|a| a.deadline.at);
        // The next edge event or retry, in wall time on the current clock.
        let pairing = self
            .pairing
            .next_due()
            .and_then(|tau| self.clock.instant_of(tau));
        proposal.into_iter().chain(exchange).chain(pairing).min()
    }

    fn on_deadlines(&mut self, now: tokio::time::Instant) {
        if let Some((_, peer, seq)) = self.proposal.take_if(|(d, _, _)| d.at <= now) {
            let unanswered = self.pairing.status() == (Status::Proposing { peer, seq });
            let tau = self.now();
            let acts = self.pairing.on_proposal_timeout(peer, seq, tau);
            self.apply(acts);
            let verdict = self
                .health
                .proposal_expired(peer, unanswered, now.into_std());
            if let Verdict::Drop { reason } = verdict {
                self.peer_lost(peer, &reason, Loss::Unresponsive);
            }
        }
        let expired = match &self.active {
            Some(a) if a.deadline.at <= now => Some((a.peer, a.seq, a.supplied, a.deadline)),
            _ => None,
        };
        if let Some((peer, seq, supplied, deadline)) = expired {
            let why = format!("timed out after {:.1}s", deadline.after.as_secs_f64());
            self.fail_exchange(peer, seq, &why);
            let verdict = self
                .health
                .exchange_expired(peer, supplied.is_some(), now.into_std());
            if let Verdict::Drop { reason } = verdict {
                self.peer_lost(peer, &reason, Loss::Unresponsive);
            }
        }
    }

    /// Peers found stalled while handling the last input: one failure each.
    fn settle(&mut self) {
        let mut stalled = std::mem::take(&mut self.stalled);
        stalled.sort_unstable();
        stalled.dedup();
        let now = tokio::time::Instant::now().into_std();
        for peer in stalled {
            if let Verdict::Drop { reason } = self.health.failed(peer, Failure::Stalled, now) {
                self.peer_lost(peer, &reason, Loss::Unresponsive);
            }
        }
    }

    // ----- the state machine's actions -----------------------------------------------------

    fn apply(&mut self, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Send { to, msg } => {
                    if let PairMsg::Propose { seq } = msg {
                        self.health.proposed(to, seq, Instant::now());
                    }
                    // A pairing message that cannot be queued is lost like one the network lost:
                    // every state it would end has a deadline.
                    let _ = self.send(to, Frame::Msg(Msg::Pair(msg)));
                }
                Action::ArmProposalTimer { peer, seq } => {
                    let after = self.health.proposal_timeout();
                    self.proposal = Some((Deadline::after(after), peer, seq));
                }
                Action::StartExchange {
                    peer,
                    seq,
                    initiator,
                } => self.start_exchange(peer, seq, initiator),
                Action::CancelExchange { peer, seq } => {
                    self.end_exchange(peer, seq, "the peer called the exchange off", true)
                }
            }
        }
    }

    fn start_exchange(&mut self, peer: usize, seq: u64, initiator: bool) {
        self.active = Some(Active {
            peer,
            seq,
            initiator,
            started: Instant::now(),
            deadline: Deadline::after(self.health.exchange_timeout()),
            supplied: None,
            sent: None,
            theirs: None,
        });
        let req = ExchangeRequest::new(
            peer,
            seq,
            initiator,
            self.params,
            self.commands.clone(),
            self.pool.clone(),
        );
        if self.events.capacity() > self.event_reserve {
            self.emit(MeshEvent::Exchange(req));
            return;
        }
        // The caller has not taken its events for a while: it could not supply in time anyway.
        req.disarm();
        warn!(
            "rank {}: the caller has not taken mesh events for a while ({} waiting); \
             calling exchange {seq} with rank {peer} off",
            self.rank,
            self.events.max_capacity() - self.events.capacity()
        );
        if self.is_active(peer, seq) {
            let acts = self.pairing.on_exchange_failed(peer, seq);
            self.apply(acts);
            self.end_exchange(peer, seq, "the caller is not taking events", false);
        }
    }

    fn is_active(&self, peer: usize, seq: u64) -> bool {
        matches!(&self.active, Some(a) if a.peer == peer && a.seq == seq)
    }

    /// This side gives up on the exchange: the state machine tells the peer, the caller is told.
    fn fail_exchange(&mut self, peer: usize, seq: u64, why: &str) {
        if !self.is_active(peer, seq) {
            return;
        }
        let acts = self.pairing.on_exchange_failed(peer, seq);
        self.apply(acts);
        self.end_exchange(peer, seq, why, true);
    }

    /// Forget the exchange in progress (if it is `(peer, seq)`), recycling its buffers.
    fn end_exchange(&mut self, peer: usize, seq: u64, why: &str, tell_caller: bool) {
        if !self.is_active(peer, seq) {
            return;
        }
        if let Some(a) = self.active.take() {
            for b in [a.sent, a.theirs].into_iter().flatten() {
                self.pool.give(b);
            }
        }
        debug!(
            "rank {}: exchange {seq} with rank {peer} failed: {why}",
            self.rank
        );
        if tell_caller {
            self.emit(MeshEvent::ExchangeFailed {
                peer,
                seq,
                why: why.to_string(),
            });
        }
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
        self.health.exchanged(a.peer, total);
        let missed = self.total_missed();
        let bytes = 4 * self.params as u64 + HEADER_LEN as u64 + SNAPSHOT_SUB;
        self.totals.exchanges += 1;
        self.totals.bytes_sent += bytes;
        self.totals.bytes_received += bytes;
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
            missed_since_previous: missed.saturating_sub(self.totals.missed_at_last),
        };
        self.totals.missed_at_last = missed;
        // Stats first, so a caller that sees the event also sees it counted.
        self.publish();
        self.emit(MeshEvent::Exchanged(Exchanged {
            peer: a.peer,
            seq: a.seq,
            theirs,
            mine,
            stats,
            commands: self.commands.clone(),
        }));
    }

    // ----- peers ---------------------------------------------------------------------------

    fn peer_lost(&mut self, peer: usize, why: &str, loss: Loss) {
        let Some(link) = self.links.remove(&peer) else {
            return;
        };
        match loss {
            Loss::Unresponsive => link.cut(),
            Loss::Graceful | Loss::Broken => link.hang_up(),
        }
        let acts = self.pairing.on_peer_down(peer);
        self.apply(acts);
        let graceful = loss == Loss::Graceful;
        if graceful {
            info!("rank {}: rank {peer} left the mesh: {why}", self.rank);
            self.members.departed(peer);
        } else {
            warn!(
                "rank {}: lost rank {peer} ({why}); dropping it from pairing, training goes on",
                self.rank
            );
            self.note_failed(peer);
        }
        self.emit(MeshEvent::PeerLost {
            peer,
            why: why.to_string(),
            graceful,
        });
        let alive = self.pairing.neighbours().filter(|n| n.2).count();
        if alive == 0 && self.pairing.neighbours().count() > 0 && !graceful {
            warn!(
                "rank {}: no live neighbour left: this worker now trains alone",
                self.rank
            );
        }
    }

    /// A restarted neighbour re-opened its link: start it like the others, hand a ring link's
    /// port to the collectives, and pair with it again.
    fn on_rejoin(&mut self, peer: usize, conn: Connection) {
        let Some(r) = &self.relink else {
            return;
        };
        if self.stop_seen || self.pairing.is_retired() {
            debug!(
                "rank {}: rank {peer} came back after this worker stopped training",
                self.rank
            );
        }
        // Every link has a port for the collectives (the ring's, and relay rounds on any link).
        let ring_cap = Some(r.caps.ring);
        let (link, port) = link::spawn(
            peer,
            conn,
            r.limits,
            r.caps.outbox,
            ring_cap,
            &self.pool,
            &r.to_driver,
            &self.links_stop,
        );
        if let Some(port) = port {
            let _ = r.ring_ports.send((peer, port));
        }
        if let Some(old) = self.links.insert(peer, link) {
            // The old process is gone even if its link has not noticed yet.
            old.cut();
            let acts = self.pairing.on_peer_down(peer);
            self.apply(acts);
        }
        let now = self.now();
        self.pairing.on_peer_up(peer, now);
        self.health.revived(peer);
        self.members.revived(peer);
        info!(
            "rank {}: rank {peer} rejoined the mesh; pairing with it resumes",
            self.rank
        );
        // A run that already ends tells the newcomer at once.
        if self.stop_seen {
            let stop = Msg::Stop {
                origin: self.rank as u32,
                reason: "the run was ending when this worker rejoined".into(),
            };
            let _ = self.send(peer, Frame::Msg(stop));
        }
        self.emit(MeshEvent::PeerRejoined { peer });
    }

    /// Passes the run's stop on to every neighbour (each worker passes it on once).
    fn flood_stop(&mut self, origin: usize, reason: &str) {
        for p in self.link_ranks() {
            let stop = Msg::Stop {
                origin: origin as u32,
                reason: reason.to_string(),
            };
            let _ = self.send(p, Frame::Msg(stop));
        }
    }

    /// A failure became known (here or by gossip): pass it on, and warn if the graph split.
    fn note_failed(&mut self, rank: usize) {
        let Some(news) = self.members.failed(rank) else {
            return;
        };
        for p in self.link_ranks() {
            let _ = self.send(p, Frame::Msg(Msg::PeerDown { rank: rank as u32 }));
        }
        if let Some(components) = news.split {
            warn!(
                "rank {}: the communication graph fell apart after losing ranks {:?}: components \
                 {components:?}; the groups will drift apart",
                self.rank,
                self.members.dead()
            );
            self.emit(MeshEvent::GraphSplit { components });
        }
    }

    async fn close_all(&mut self, reason: &str) {
        if let Some(a) = self.active.take() {
            self.emit(MeshEvent::ExchangeFailed {
                peer: a.peer,
                seq: a.seq,
                why: "shutting down".into(),
            });
        }
        let links = std::mem::take(&mut self.links);
        for l in links.values() {
            l.say_goodbye(reason);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        for (_, l) in links {
            l.finish(deadline).await;
        }
        debug!("rank {}: mesh closed ({reason})", self.rank);
    }

    // ----- output --------------------------------------------------------------------------

    fn link_ranks(&self) -> Vec<usize> {
        self.links.keys().copied().collect()
    }

    /// Queue a frame for `to` without waiting. A full queue means the peer stopped reading: the
    /// frame is dropped and the peer noted as stalled (one failure, see [`Failure::Stalled`]).
    fn send(&mut self, to: usize, frame: Frame) -> Result<(), &'static str> {
        let Some(link) = self.links.get(&to) else {
            self.recycle_frame(frame);
            return Err("the link to the peer is closed");
        };
        match link.try_send(frame) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(out)) => {
                warn!(
                    "rank {}: {} frames wait unsent to rank {to}: it has stopped reading; \
                     dropping a {} frame",
                    self.rank,
                    link.queued(),
                    outgoing_kind(&out)
                );
                self.stalled.push(to);
                self.recycle_outgoing(out);
                Err("the queue to the peer is full (it has stopped reading)")
            }
            // The writer ended: the link's own report of why is on its way.
            Err(TrySendError::Closed(out)) => {
                self.recycle_outgoing(out);
                Err("the link to the peer is closed")
            }
        }
    }

    fn recycle_outgoing(&self, out: Outgoing) {
        match out {
            Outgoing::Frame(f) | Outgoing::Chunk { frame: f, .. } => self.recycle_frame(f),
            Outgoing::Close => {}
        }
    }

    fn recycle_frame(&self, frame: Frame) {
        match frame {
            Frame::Snapshot { data, .. } | Frame::Coll { data, .. } => self.pool.give(data),
            Frame::Msg(_) => {}
        }
    }

    /// Hand an event to the caller without waiting. The queue keeps [`Driver::event_reserve`]
    /// slots for everything but exchange requests, so a full queue here means the caller stopped
    /// polling for good; the event is dropped with a warning.
    fn emit(&mut self, ev: MeshEvent) {
        match self.events.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                warn!(
                    "rank {}: the caller has not taken {} mesh events; dropping {ev:?}",
                    self.rank,
                    self.events.max_capacity()
                );
                match ev {
                    MeshEvent::Exchanged(x) => {
                        self.pool.give(x.theirs);
                        self.pool.give(x.mine);
                    }
                    MeshEvent::Exchange(req) => req.disarm(),
                    _ => {}
                }
            }
            // The caller dropped the mesh: nobody to tell.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    fn total_missed(&self) -> u64 {
        self.pairing
            .neighbours()
            .filter_map(|(p, _, _)| self.pairing.counters(p))
            .map(|c| c.missed())
            .sum()
    }

    fn publish(&self) {
        let stats = MeshStats {
            edges: self
                .pairing
                .neighbours()
                .filter_map(|(p, _, _)| self.pairing.counters(p).map(|c| (p, c)))
                .collect(),
            exchanges: self.totals.exchanges,
            bytes_sent: self.totals.bytes_sent,
            bytes_received: self.totals.bytes_received,
            lost_peers: self.members.lost(),
            exchange_timeout: self.health.exchange_timeout(),
            proposal_timeout: self.health.proposal_timeout(),
            typical_exchange: self.health.typical_exchange(),
            // Filled in by `Mesh::stats` from the collectives.
            collective_bytes_sent: 0,
            collective_bytes_received: 0,
        };
        self.stats.send_replace(stats);
    }
}

fn outgoing_kind(out: &Outgoing) -> &'static str {
    match out {
        Outgoing::Frame(f) | Outgoing::Chunk { frame: f, .. } => f.kind().name(),
        Outgoing::Close => "close",
    }
}

#[cfg(test)]
mod tests {
    //! The driver against in-memory links and a paused clock: no sockets, no real waiting.

    use super::*;
    use crate::auth::Secret;
    use crate::frame::Fingerprint;
    use crate::rendezvous::Rendezvous;
    use tokio::task::JoinHandle;

    const PARAMS: usize = 4;
    const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

    struct Rig {
        outboxes: BTreeMap<usize, mpsc::Receiver<Outgoing>>,
        events: mpsc::Receiver<MeshEvent>,
        links: mpsc::Sender<LinkEvent>,
        commands: mpsc::Sender<Command>,
        stats: watch::Receiver<MeshStats>,
        clock: watch::Sender<ClockSegment>,
        driver: JoinHandle<()>,
    }

    /// Rank `rank` of `world` with links to `peers`; its caller takes at most `event_room` events.
    fn rig(rank: usize, world: usize, peers: &[usize], event_room: usize) -> Rig {
        let edges: Vec<_> = peers.iter().map(|&p| (rank, p, 1.0)).collect();
        let mut cfg = MeshConfig::new(
            rank,
            world,
            Rendezvous::Explicit(Vec::new()),
            edges,
            "test",
            Fingerprint::new(PARAMS as u64, "flat"),
            Secret::new(b"a-test-secret-of-16+".to_vec()).expect("secret"),
        );
        cfg.exchange_timeout = (EXCHANGE_TIMEOUT, EXCHANGE_TIMEOUT, EXCHANGE_TIMEOUT);
        cfg.max_exchange_failures = 2;
        cfg.unresponsive_after = Duration::ZERO;
        let mut links = BTreeMap::new();
        let mut outboxes = BTreeMap::new();
        for &p in peers {
            let (tx, rx) = mpsc::channel(16);
            links.insert(p, LinkHandle::detached(tx));
            outboxes.insert(p, rx);
        }
        let (events_tx, events) = mpsc::channel(event_room);
        let (commands, commands_rx) = mpsc::channel(16);
        let (link_tx, link_rx) = mpsc::channel(16);
        let (stats_tx, stats) = watch::channel(MeshStats::default());
        let (clock_tx, clock) = watch::channel(ClockSegment::frozen(0.0));
        let (_part_tx, participation) = watch::channel(Participation::default());
        let driver = Driver::new(
            &cfg,
            PARAMS,
            links,
            CancellationToken::new(),
            events_tx,
            commands.clone(),
            stats_tx,
            BufPool::default(),
        );
        let driver = tokio::spawn(driver.run(Inputs {
            links: link_rx,
            commands: commands_rx,
            clock,
            participation,
            shutdown: CancellationToken::new(),
            rejoins: mpsc::channel(1).1,
        }));
        Rig {
            outboxes,
            events,
            links: link_tx,
            commands,
            stats,
            clock: clock_tx,
            driver,
        }
    }

    impl Rig {
        async fn propose(&self, from: usize, seq: u64) {
            let msg = PairMsg::Propose { seq };
            self.links
                .send(LinkEvent::Pair { from, msg })
                .await
                .expect("driver");
        }

        /// The next frame queued for `peer` (the clock runs on while waiting).
        async fn sent_to(&mut self, peer: usize) -> Outgoing {
            let rx = self.outboxes.get_mut(&peer).expect("a link to that peer");
            tokio::time::timeout(Duration::from_secs(3600), rx.recv())
                .await
                .expect("a frame within the hour")
                .expect("link open")
        }

        async fn pair_sent_to(&mut self, peer: usize) -> PairMsg {
            match self.sent_to(peer).await {
                Outgoing::Frame(Frame::Msg(Msg::Pair(m))) => m,
                other => panic!("expected a pairing message, got {other:?}"),
            }
        }

        async fn event(&mut self) -> MeshEvent {
            tokio::time::timeout(Duration::from_secs(3600), self.events.recv())
                .await
                .expect("an event within the hour")
                .expect("driver running")
        }

        /// Rank `from` proposes, this worker accepts: the caller's request.
        async fn agreed(&mut self, from: usize, seq: u64) -> ExchangeRequest {
            self.propose(from, seq).await;
            assert_eq!(self.pair_sent_to(from).await, PairMsg::Accept { seq });
            match self.event().await {
                MeshEvent::Exchange(req) => req,
                other => panic!("expected an exchange request, got {other:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_never_supplies_is_not_held_against_the_peer() {
        let mut rig = rig(1, 2, &[0], 64);
        for seq in 1..=5 {
            let held = rig.agreed(0, seq).await;
            match rig.event().await {
                MeshEvent::ExchangeFailed { why, .. } => {
                    assert!(why.contains("timed out"), "{why}")
                }
                other => panic!("expected the exchange to time out, got {other:?}"),
            }
            assert_eq!(rig.pair_sent_to(0).await, PairMsg::Abort { seq });
            drop(held);
        }
        assert!(rig.stats.borrow().lost_peers.is_empty());
        rig.driver.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_frozen_peer_is_dropped_after_consecutive_failures() {
        // Rank 0 owns the edge to 1 (and proposes when the clock says so).
        let mut rig = rig(0, 2, &[1], 64);
        // 1. Rank 1 proposes, this worker supplies, rank 1's snapshot never comes.
        let req = rig.agreed(1, 1).await;
        req.supply(vec![1.0; PARAMS]).expect("supply");
        assert!(matches!(
            rig.sent_to(1).await,
            Outgoing::Frame(Frame::Snapshot { seq: 1, .. })
        ));
        assert!(matches!(
            rig.event().await,
            MeshEvent::ExchangeFailed { seq: 1, .. }
        ));
        assert_eq!(rig.pair_sent_to(1).await, PairMsg::Abort { seq: 1 });
        // 2. This worker's next proposal goes unanswered: the second failure in a row.
        rig.clock.send_replace(ClockSegment::frozen(1e6));
        let seq = match rig.pair_sent_to(1).await {
            PairMsg::Propose { seq } => seq,
            other => panic!("expected a proposal, got {other:?}"),
        };
        match rig.event().await {
            MeshEvent::PeerLost {
                peer: 1,
                why,
                graceful: false,
            } => assert_eq!(
                why, "unresponsive: 2 times in a row (proposal went unanswered, the last)",
                "proposal {seq}"
            ),
            other => panic!("expected rank 1 to be dropped, got {other:?}"),
        }
        assert_eq!(rig.stats.borrow().lost_peers, vec![1]);
        rig.driver.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_worker_answers_busy_at_once() {
        let mut rig = rig(1, 3, &[0, 2], 64);
        let _req = rig.agreed(0, 1).await;
        rig.propose(2, 7).await;
        assert_eq!(rig.pair_sent_to(2).await, PairMsg::Busy { seq: 7 });
        rig.driver.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn exchanges_are_called_off_while_the_caller_takes_no_events() {
        // Room for the reserve (1 link + world 2 + 8) and exactly one request.
        let mut rig = rig(1, 2, &[0], Driver::event_reserve(1, 2) + 1);
        rig.propose(0, 1).await;
        assert_eq!(rig.pair_sent_to(0).await, PairMsg::Accept { seq: 1 });
        assert_eq!(
            rig.pair_sent_to(0).await,
            PairMsg::Abort { seq: 1 },
            "timed out"
        );
        // The caller has not taken the first request (nor its failure): the next one is called
        // off at once, without an event.
        rig.propose(0, 2).await;
        assert_eq!(rig.pair_sent_to(0).await, PairMsg::Accept { seq: 2 });
        assert_eq!(rig.pair_sent_to(0).await, PairMsg::Abort { seq: 2 });
        assert!(matches!(rig.events.try_recv(), Ok(MeshEvent::Exchange(_))));
        assert!(matches!(
            rig.events.try_recv(),
            Ok(MeshEvent::ExchangeFailed { seq: 1, .. })
        ));
        assert!(rig.events.try_recv().is_err());
        rig.driver.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_says_goodbye_on_every_link_then_stops() {
        let mut rig = rig(1, 3, &[0, 2], 64);
        let (done, finished) = tokio::sync::oneshot::channel();
        let reason = "test over".to_string();
        rig.commands
            .send(Command::Shutdown { reason, done })
            .await
            .expect("driver");
        finished.await.expect("the driver reports it is done");
        for p in [0, 2] {
            match rig.sent_to(p).await {
                Outgoing::Frame(Frame::Msg(Msg::Goodbye { reason })) => {
                    assert_eq!(reason, "test over")
                }
                other => panic!("expected a goodbye, got {other:?}"),
            }
            assert!(matches!(rig.sent_to(p).await, Outgoing::Close));
        }
        rig.driver.await.expect("the driver ends");
    }
}
