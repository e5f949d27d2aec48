//! Master-less Poisson pairing: a pure state machine (no I/O, no tokio, no locks). Time is an argument.
//!
//! Every edge `(i, j)` of the graph has a Poisson rate `lambda_ij` (events per unit of the worker
//! clock). The *owner* of an edge, its lower rank, draws exponential inter-arrival times from a seeded
//! per-edge RNG. An event that falls due is *owed* until it becomes an exchange: the owner proposes
//! it as soon as it is free; a peer that is busy answers `Busy` at once and the owner retries a
//! little later (a proposal that times out is retried too). So the exchanges happen at the
//! Poisson times, shifted by at most the time a worker is busy, and none is silently lost: only
//! events beyond [`MAX_OWED`] per edge (a worker that cannot keep up) or falling due after the
//! worker retired are *dropped*, and counted. Nobody ever waits for anybody, so there is no
//! deadlock: the only states are `Idle`, `Proposing` (ended by Accept, Busy or a timeout) and
//! `Exchanging` (ended by completion, failure, or the peer's Abort), and the I/O layer guarantees a
//! timeout on each.
//!
//! The I/O layer feeds inputs (`poll(now)`, `on_msg`, timeouts, exchange results, peer deaths) and
//! carries out the returned [`Action`]s; after any input it calls `poll` again, which proposes an
//! owed event if the worker has become free, and it wakes at [`Pairing::next_due`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The messages are the wire's own type: the link layer hands them over as decoded.
pub use crate::frame::PairMsg;

/// What the I/O layer must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a pairing message to a neighbour.
    Send { to: usize, msg: PairMsg },
    /// Arm a proposal timeout; call [`Pairing::on_proposal_timeout`] when it expires.
    ArmProposalTimer { peer: usize, seq: u64 },
    /// Both sides agreed: run the full-duplex exchange (and arm its timeout).
    StartExchange {
        peer: usize,
        seq: u64,
        initiator: bool,
    },
    /// The exchange in progress was called off (peer aborted or died): stop waiting for it.
    CancelExchange { peer: usize, seq: u64 },
}

/// Where this worker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Idle,
    Proposing {
        peer: usize,
        seq: u64,
    },
    Exchanging {
        peer: usize,
        seq: u64,
        initiator: bool,
    },
}

/// Events one edge may owe before further ones are dropped: a worker that is busy that long is
/// not keeping up with the asked rate, and proposing a backlog in a burst would distort the process.
pub const MAX_OWED: u32 = 4;

/// Clock units (gradients) an owner waits before proposing again after a `Busy` answer or a
/// timeout, times the number of attempts so far (capped at [`RETRY_MAX`]).
pub const RETRY_AFTER: f64 = 0.02;
/// The longest wait between two attempts, in clock units.
pub const RETRY_MAX: f64 = 0.5;

/// Per-edge counters, as seen from this worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EdgeCounters {
    /// Poisson events of this edge that fell due (owner side only).
    pub fired: u64,
    /// Proposals sent, retries included (owner side).
    pub proposed: u64,
    /// Events dropped: beyond [`MAX_OWED`] owed, or after this worker retired (owner side).
    pub dropped: u64,
    /// Proposals answered `Busy` by the peer, each retried (owner side).
    pub peer_busy: u64,
    /// Proposals that timed out unanswered, each retried (owner side).
    pub timeouts: u64,
    /// Peer proposals this worker answered `Busy` (non-owner side; the owner retries).
    pub refused: u64,
    /// Events still owed: fallen due, not yet an exchange (owner side).
    pub owed: u64,
    /// Exchanges started (both sides).
    pub started: u64,
    /// Exchanges completed (both sides).
    pub completed: u64,
    /// Exchanges that failed or were aborted (both sides).
    pub failed: u64,
}

impl EdgeCounters {
    /// Events that will never become an exchange.
    pub fn missed(&self) -> u64 {
        self.dropped
    }
}

#[derive(Clone, Debug)]
struct Edge {
    peer: usize,
    rate: f64,
    owner: bool,
    alive: bool,
    next_fire: f64,
    rng: ChaCha8Rng,
    /// Clock value of the oldest owed event (the order in which owed edges are proposed).
    owed_since: f64,
    /// No proposal on this edge before this clock value (after a `Busy` or a timeout).
    retry_at: f64,
    /// Attempts at the oldest owed event so far.
    attempts: u32,
    counters: EdgeCounters,
}

impl Edge {
    fn owes(&self) -> bool {
        self.counters.owed > 0
    }

    /// A proposal of this edge's oldest owed event failed (`Busy`, timeout): try again later.
    fn retry_later(&mut self, now: f64) {
        self.attempts += 1;
        self.retry_at = now + (RETRY_AFTER * f64::from(self.attempts)).min(RETRY_MAX);
    }
}

/// The pairing state machine of one worker.
#[derive(Clone, Debug)]
pub struct Pairing {
    rank: usize,
    edges: Vec<Edge>,
    status: Status,
    next_seq: u64,
    /// Retired workers neither propose nor accept (they have finished training).
    retired: bool,
    /// Paused workers neither propose nor accept until resumed (e.g. while evaluating).
    paused: bool,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Exponential inter-arrival time with the given rate, from a uniform in (0, 1].
fn exp_draw(rng: &mut ChaCha8Rng, rate: f64) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    -u.ln() / rate
}

impl Pairing {
    /// `edges` is the whole graph (or just this worker's edges) as `(i, j, lambda_ij)`; edges not
    /// touching `rank` are ignored. Rates `<= 0` or non-finite never fire. `start` is the clock at
    /// which the Poisson processes start; `seed` is shared by the run so the schedule is reproducible.
    pub fn new(rank: usize, edges: &[(usize, usize, f64)], seed: u64, start: f64) -> Pairing {
        let mut out: Vec<Edge> = Vec::new();
        for &(a, b, rate) in edges {
            if a == b || (a != rank && b != rank) {
                continue;
            }
            let peer = if a == rank { b } else { a };
            if out.iter().any(|e| e.peer == peer) {
                continue;
            }
            let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
            let mut rng = ChaCha8Rng::seed_from_u64(splitmix(seed ^ splitmix(lo << 32 | hi)));
            let usable = rate.is_finite() && rate > 0.0;
            let owner = rank < peer;
            let next_fire = if owner && usable {
                start + exp_draw(&mut rng, rate)
            } else {
                f64::INFINITY
            };
            out.push(Edge {
                peer,
                rate: if usable { rate } else { 0.0 },
                owner,
                alive: true,
                next_fire,
                rng,
                owed_since: f64::INFINITY,
                retry_at: f64::NEG_INFINITY,
                attempts: 0,
                counters: EdgeCounters::default(),
            });
        }
        out.sort_by_key(|e| e.peer);
        Pairing {
            rank,
            edges: out,
            status: Status::Idle,
            next_seq: 1,
            retired: false,
            paused: false,
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn status(&self) -> Status {
        self.status
    }
    /// Neighbours, with their rates and whether they are still alive.
    pub fn neighbours(&self) -> impl Iterator<Item = (usize, f64, bool)> + '_ {
        self.edges.iter().map(|e| (e.peer, e.rate, e.alive))
    }
    /// Counters of the edge to `peer`.
    pub fn counters(&self, peer: usize) -> Option<EdgeCounters> {
        self.edge(peer).map(|e| e.counters)
    }
    /// Stop taking part in exchanges: from now on owned edge events are not proposed and every
    /// proposal is answered `Busy` at once. An exchange already agreed runs to its end. Used by a
    /// worker that has finished training but stays in the mesh for the final collectives.
    pub fn retire(&mut self) {
        self.retired = true;
    }
    pub fn is_retired(&self) -> bool {
        self.retired
    }
    /// Pause (or resume) taking part in exchanges, as `retire` does but for a while: a worker that
    /// stops stepping for a moment (an evaluation) must not leave a peer waiting on its snapshot.
    /// An exchange already agreed runs to its end.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }
    pub fn is_paused(&self) -> bool {
        self.paused
    }
    /// Whether this worker can start an exchange now (idle, neither retired nor paused).
    fn available(&self) -> bool {
        self.status == Status::Idle && !self.retired && !self.paused
    }
    /// Clock value at which [`Pairing::poll`] next has something to do: an owned edge's next
    /// event, or the retry of an owed one (so the I/O layer can sleep until then).
    pub fn next_due(&self) -> Option<f64> {
        self.edges
            .iter()
            .filter(|e| e.owner && e.alive)
            .flat_map(|e| [Some(e.next_fire), e.owes().then_some(e.retry_at)])
            .flatten()
            .filter(|t| t.is_finite())
            .min_by(|a, b| a.total_cmp(b))
    }

    fn edge(&self, peer: usize) -> Option<&Edge> {
        self.edges.iter().find(|e| e.peer == peer)
    }
    fn edge_mut(&mut self, peer: usize) -> Option<&mut Edge> {
        self.edges.iter_mut().find(|e| e.peer == peer)
    }

    /// Advance the clock to `now`: every owned edge whose events fell due owes them (in time
    /// order); then, if this worker is free, it proposes the oldest owed event whose retry time
    /// has come. Call it after every input: an exchange that ends frees the worker.
    pub fn poll(&mut self, now: f64) -> Vec<Action> {
        let retired = self.retired;
        for e in self.edges.iter_mut().filter(|e| e.owner && e.alive) {
            while e.next_fire <= now {
                let at = e.next_fire;
                e.next_fire += exp_draw(&mut e.rng, e.rate);
                e.counters.fired += 1;
                if retired || e.counters.owed >= u64::from(MAX_OWED) {
                    e.counters.dropped += 1;
                } else {
                    if !e.owes() {
                        e.owed_since = at;
                        e.attempts = 0;
                        e.retry_at = f64::NEG_INFINITY;
                    }
                    e.counters.owed += 1;
                }
            }
        }
        if !self.available() {
            return Vec::new();
        }
        let Some(i) = self
            .edges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.owner && e.alive && e.owes() && e.retry_at <= now)
            .min_by(|a, b| a.1.owed_since.total_cmp(&b.1.owed_since))
            .map(|(i, _)| i)
        else {
            return Vec::new();
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let e = &mut self.edges[i];
        e.counters.proposed += 1;
        let peer = e.peer;
        self.status = Status::Proposing { peer, seq };
        vec![
            Action::Send {
                to: peer,
                msg: PairMsg::Propose { seq },
            },
            Action::ArmProposalTimer { peer, seq },
        ]
    }

    /// A pairing message arrived from `from` at clock value `now`.
    pub fn on_msg(&mut self, from: usize, msg: PairMsg, now: f64) -> Vec<Action> {
        let status = self.status;
        let available = self.available();
        let Some(e) = self.edge_mut(from) else {
            return Vec::new();
        };
        if !e.alive {
            return Vec::new();
        }
        match msg {
            PairMsg::Propose { seq } => {
                if available {
                    e.counters.started += 1;
                    self.status = Status::Exchanging {
                        peer: from,
                        seq,
                        initiator: false,
                    };
                    vec![
                        Action::Send {
                            to: from,
                            msg: PairMsg::Accept { seq },
                        },
                        Action::StartExchange {
                            peer: from,
                            seq,
                            initiator: false,
                        },
                    ]
                } else {
                    e.counters.refused += 1;
                    vec![Action::Send {
                        to: from,
                        msg: PairMsg::Busy { seq },
                    }]
                }
            }
            PairMsg::Accept { seq } => {
                if status == (Status::Proposing { peer: from, seq }) {
                    // The oldest owed event becomes this exchange.
                    e.counters.owed = e.counters.owed.saturating_sub(1);
                    e.owed_since = if e.owes() { now } else { f64::INFINITY };
                    e.attempts = 0;
                    e.retry_at = f64::NEG_INFINITY;
                    e.counters.started += 1;
                    self.status = Status::Exchanging {
                        peer: from,
                        seq,
                        initiator: true,
                    };
                    vec![Action::StartExchange {
                        peer: from,
                        seq,
                        initiator: true,
                    }]
                } else {
                    // Too late (we timed out): the peer thinks it is exchanging with us; call it off.
                    vec![Action::Send {
                        to: from,
                        msg: PairMsg::Abort { seq },
                    }]
                }
            }
            PairMsg::Busy { seq } => {
                if status == (Status::Proposing { peer: from, seq }) {
                    e.counters.peer_busy += 1;
                    e.retry_later(now);
                    self.status = Status::Idle;
                }
                Vec::new()
            }
            PairMsg::Abort { seq } => match status {
                Status::Exchanging { peer, seq: s, .. } if peer == from && s == seq => {
                    e.counters.failed += 1;
                    self.status = Status::Idle;
                    vec![Action::CancelExchange { peer, seq }]
                }
                _ => Vec::new(),
            },
        }
    }

    /// The proposal `(peer, seq)` got no answer in time (clock value `now`): tried again later.
    pub fn on_proposal_timeout(&mut self, peer: usize, seq: u64, now: f64) -> Vec<Action> {
        if self.status == (Status::Proposing { peer, seq }) {
            self.status = Status::Idle;
            if let Some(e) = self.edge_mut(peer) {
                e.counters.timeouts += 1;
                e.retry_later(now);
            }
        }
        Vec::new()
    }

    /// The exchange `(peer, seq)` completed on this side (sent ours, received theirs).
    pub fn on_exchange_done(&mut self, peer: usize, seq: u64) -> Vec<Action> {
        if let Status::Exchanging {
            peer: p, seq: s, ..
        } = self.status
        {
            if p == peer && s == seq {
                self.status = Status::Idle;
                if let Some(e) = self.edge_mut(peer) {
                    e.counters.completed += 1;
                }
            }
        }
        Vec::new()
    }

    /// The exchange `(peer, seq)` failed on this side (timeout, I/O error, caller gave no snapshot).
    /// Tells the peer so it stops waiting.
    pub fn on_exchange_failed(&mut self, peer: usize, seq: u64) -> Vec<Action> {
        if let Status::Exchanging {
            peer: p, seq: s, ..
        } = self.status
        {
            if p == peer && s == seq {
                self.status = Status::Idle;
                let alive = match self.edge_mut(peer) {
                    Some(e) => {
                        e.counters.failed += 1;
                        e.alive
                    }
                    None => false,
                };
                if alive {
                    return vec![Action::Send {
                        to: peer,
                        msg: PairMsg::Abort { seq },
                    }];
                }
            }
        }
        Vec::new()
    }

    /// `peer` came back (a restarted worker re-opened its link): pairing with it resumes, its
    /// Poisson process (if this worker owns the edge) restarting at `now` — events that fell
    /// while it was down are not owed.
    pub fn on_peer_up(&mut self, peer: usize, now: f64) {
        let Some(e) = self.edge_mut(peer) else {
            return;
        };
        e.alive = true;
        e.counters.owed = 0;
        e.attempts = 0;
        e.owed_since = f64::INFINITY;
        e.retry_at = f64::NEG_INFINITY;
        if e.owner && e.rate > 0.0 {
            e.next_fire = now + exp_draw(&mut e.rng, e.rate);
        }
    }

    /// `peer` is gone (connection lost, timed out repeatedly, or said goodbye): no pairing with it
    /// until it comes back ([`Pairing::on_peer_up`]); the events its edge owed are dropped.
    pub fn on_peer_down(&mut self, peer: usize) -> Vec<Action> {
        let Some(e) = self.edge_mut(peer) else {
            return Vec::new();
        };
        e.alive = false;
        e.counters.dropped += e.counters.owed;
        e.counters.owed = 0;
        match self.status {
            Status::Proposing { peer: p, .. } if p == peer => {
                self.status = Status::Idle;
                Vec::new()
            }
            Status::Exchanging { peer: p, seq, .. } if p == peer => {
                self.status = Status::Idle;
                if let Some(e) = self.edge_mut(peer) {
                    e.counters.failed += 1;
                }
                vec![Action::CancelExchange { peer, seq }]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize, rate: f64) -> Vec<(usize, usize, f64)> {
        (0..n).map(|i| (i, (i + 1) % n, rate)).collect()
    }

    #[test]
    fn a_retired_worker_neither_proposes_nor_accepts() {
        let g = ring(3, 1.0);
        let mut a = Pairing::new(0, &g, 7, 0.0);
        a.retire();
        assert!(a.is_retired());
        // Its owned edges keep firing (the clock still runs) but nothing is proposed: the events
        // are dropped, and counted.
        assert!(a.poll(50.0).is_empty());
        assert_eq!(a.status(), Status::Idle);
        let fired: u64 = [1, 2].iter().map(|&p| a.counters(p).unwrap().fired).sum();
        assert!(fired > 10, "edges fired {fired} times in 50 time units");
        let dropped: u64 = [1, 2].iter().map(|&p| a.counters(p).unwrap().dropped).sum();
        assert_eq!(dropped, fired);
        // A proposal is answered Busy at once.
        assert_eq!(
            a.on_msg(1, PairMsg::Propose { seq: 9 }, 0.0),
            vec![Action::Send {
                to: 1,
                msg: PairMsg::Busy { seq: 9 }
            }]
        );
        assert_eq!(a.status(), Status::Idle);
    }

    #[test]
    fn a_paused_worker_refuses_until_resumed() {
        let g = ring(3, 1.0);
        let mut a = Pairing::new(0, &g, 7, 0.0);
        a.set_paused(true);
        assert!(a.poll(50.0).is_empty(), "paused: nothing proposed");
        assert_eq!(
            a.on_msg(2, PairMsg::Propose { seq: 4 }, 0.0),
            vec![Action::Send {
                to: 2,
                msg: PairMsg::Busy { seq: 4 }
            }]
        );
        assert_eq!(a.counters(2).map(|c| c.refused), Some(1));
        a.set_paused(false);
        assert!(!a.is_paused());
        // Resumed: the next proposal is accepted and the next owned event is proposed again.
        let acts = a.on_msg(2, PairMsg::Propose { seq: 5 }, 0.0);
        assert!(acts.contains(&Action::Send {
            to: 2,
            msg: PairMsg::Accept { seq: 5 }
        }));
        assert!(a.on_exchange_done(2, 5).is_empty());
        assert_eq!(a.status(), Status::Idle);
        let acts = a.poll(100.0);
        assert!(
            acts.iter().any(|x| matches!(
                x,
                Action::Send {
                    msg: PairMsg::Propose { .. },
                    ..
                }
            )),
            "{acts:?}"
        );
    }

    #[test]
    fn events_that_fall_due_while_busy_are_owed_then_proposed() {
        let g = vec![(0, 1, 1.0)];
        let mut w0 = Pairing::new(0, &g, 11, 0.0);
        // Busy with a proposal that the peer answers Busy: the event stays owed.
        let t = w0.next_due().unwrap();
        let Action::Send {
            msg: PairMsg::Propose { seq },
            ..
        } = w0.poll(t)[0]
        else {
            panic!("a proposal")
        };
        assert!(w0.on_msg(1, PairMsg::Busy { seq }, t).is_empty());
        let c = w0.counters(1).unwrap();
        assert_eq!((c.fired, c.peer_busy, c.owed, c.missed()), (1, 1, 1, 0));
        // More events fall due while it waits to retry: owed too, up to MAX_OWED; beyond, dropped.
        let later = t + 200.0;
        let mut acts = w0.poll(later);
        let c = w0.counters(1).unwrap();
        assert_eq!(c.owed, u64::from(MAX_OWED));
        assert_eq!(c.dropped, c.fired - u64::from(MAX_OWED));
        // Each accepted proposal pays one owed event; the next is proposed as soon as it is free.
        let mut paid = 0;
        let mut now = later;
        while w0.counters(1).unwrap().owed > 0 {
            let Some(&Action::Send {
                msg: PairMsg::Propose { seq },
                ..
            }) = acts.first()
            else {
                panic!("an owed event is proposed at once: {acts:?}")
            };
            w0.on_msg(1, PairMsg::Accept { seq }, now);
            w0.on_exchange_done(1, seq);
            paid += 1;
            now += 1e-3;
            acts = w0.poll(now);
        }
        assert_eq!(paid, MAX_OWED);
        assert_eq!(w0.counters(1).unwrap().completed, u64::from(MAX_OWED));
    }

    #[test]
    fn owner_proposes_and_peer_accepts() {
        let g = ring(3, 1.0);
        let mut a = Pairing::new(0, &g, 7, 0.0);
        let mut b = Pairing::new(1, &g, 7, 0.0);
        // Only the lower rank owns the edge.
        assert!(b.next_due().is_some()); // edge 1-2 is owned by 1
        let t = a.next_due().expect("0 owns edges");
        let acts = a.poll(t);
        let (peer, seq) = match acts[0] {
            Action::Send {
                to,
                msg: PairMsg::Propose { seq },
            } => (to, seq),
            other => panic!("{other:?}"),
        };
        assert!(matches!(a.status(), Status::Proposing { .. }));
        if peer == 1 {
            let r = b.on_msg(0, PairMsg::Propose { seq }, 0.0);
            assert_eq!(
                r[0],
                Action::Send {
                    to: 0,
                    msg: PairMsg::Accept { seq }
                }
            );
            let r = a.on_msg(1, PairMsg::Accept { seq }, 0.0);
            assert_eq!(
                r,
                vec![Action::StartExchange {
                    peer: 1,
                    seq,
                    initiator: true
                }]
            );
            a.on_exchange_done(1, seq);
            b.on_exchange_done(0, seq);
            assert_eq!(a.status(), Status::Idle);
            assert_eq!(b.status(), Status::Idle);
            assert_eq!(a.counters(1).map(|c| c.completed), Some(1));
        }
    }

    #[test]
    fn busy_worker_answers_busy_at_once() {
        let g = vec![(0, 1, 1.0), (1, 2, 1.0)];
        let mut w1 = Pairing::new(1, &g, 1, 0.0);
        // 1 owns 1-2; make it propose.
        let t = w1.next_due().expect("due");
        let acts = w1.poll(t);
        assert!(matches!(acts[0], Action::Send { to: 2, .. }));
        // 0 proposes to 1 meanwhile: refused immediately.
        let r = w1.on_msg(0, PairMsg::Propose { seq: 99 }, 0.0);
        assert_eq!(
            r,
            vec![Action::Send {
                to: 0,
                msg: PairMsg::Busy { seq: 99 }
            }]
        );
        assert_eq!(w1.counters(0).map(|c| c.refused), Some(1));
    }

    #[test]
    fn late_accept_after_timeout_is_aborted() {
        let g = vec![(0, 1, 1.0)];
        let mut w0 = Pairing::new(0, &g, 3, 0.0);
        let t = w0.next_due().expect("due");
        let _ = w0.poll(t);
        let Status::Proposing { seq, .. } = w0.status() else {
            panic!()
        };
        w0.on_proposal_timeout(1, seq, t);
        assert_eq!(w0.status(), Status::Idle);
        let r = w0.on_msg(1, PairMsg::Accept { seq }, t);
        assert_eq!(
            r,
            vec![Action::Send {
                to: 1,
                msg: PairMsg::Abort { seq }
            }]
        );
        assert_eq!(w0.counters(1).map(|c| c.timeouts), Some(1));
        // The event is still owed: proposed again once its retry time has come.
        assert_eq!(w0.counters(1).map(|c| c.owed), Some(1));
        assert!(w0.poll(t).is_empty(), "not before the retry time");
        let retry = w0.next_due().expect("a retry is due");
        assert!(retry > t && retry <= t + RETRY_MAX);
        assert!(matches!(w0.poll(retry)[0], Action::Send { to: 1, .. }));
    }

    #[test]
    fn dead_peer_cancels_exchange_and_stops_pairing() {
        let g = vec![(0, 1, 5.0)];
        let mut w1 = Pairing::new(1, &g, 3, 0.0);
        let _ = w1.on_msg(0, PairMsg::Propose { seq: 4 }, 0.0);
        let r = w1.on_peer_down(0);
        assert_eq!(r, vec![Action::CancelExchange { peer: 0, seq: 4 }]);
        assert!(w1.on_msg(0, PairMsg::Propose { seq: 5 }, 0.0).is_empty());
        let mut w0 = Pairing::new(0, &g, 3, 0.0);
        w0.on_peer_down(1);
        assert!(w0.poll(1e9).is_empty());
        assert_eq!(w0.next_due(), None);
    }
}
