//! Property tests of the pure pairing state machine: whole simulated clusters in virtual time, with
//! adversarial message orders, timeouts firing at arbitrary moments and peers dying.

use std::collections::VecDeque;

use a2cid_net::frame::PairMsg;
use a2cid_net::pairing::{Action, Pairing, Status};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Net {
    Pair(PairMsg),
    Snap(u64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Timer {
    Proposal { w: usize, peer: usize, seq: u64 },
    Exchange { w: usize, peer: usize, seq: u64 },
}

struct Sim {
    n: usize,
    sms: Vec<Pairing>,
    queues: Vec<VecDeque<Net>>, // index from * n + to
    timers: Vec<Timer>,
    active: Vec<Option<(usize, u64)>>,
    dead: Vec<bool>,
    clock: f64,
    /// Clock values at which each edge's owner started an exchange, per (owner, peer).
    starts: std::collections::BTreeMap<(usize, usize), Vec<f64>>,
}

impl Sim {
    fn new(n: usize, edges: &[(usize, usize, f64)], seed: u64) -> Sim {
        Sim {
            n,
            sms: (0..n).map(|r| Pairing::new(r, edges, seed, 0.0)).collect(),
            queues: vec![VecDeque::new(); n * n],
            timers: Vec::new(),
            active: vec![None; n],
            dead: vec![false; n],
            clock: 0.0,
            starts: Default::default(),
        }
    }

    fn apply(&mut self, w: usize, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Send { to, msg } => {
                    if !self.dead[to] {
                        self.queues[w * self.n + to].push_back(Net::Pair(msg))
                    }
                }
                Action::ArmProposalTimer { peer, seq } => {
                    self.timers.push(Timer::Proposal { w, peer, seq })
                }
                Action::StartExchange {
                    peer,
                    seq,
                    initiator,
                } => {
                    if initiator {
                        self.starts.entry((w, peer)).or_default().push(self.clock);
                    }
                    assert_eq!(self.active[w], None, "worker {w} entered a second exchange");
                    self.active[w] = Some((peer, seq));
                    if !self.dead[peer] {
                        self.queues[w * self.n + peer].push_back(Net::Snap(seq));
                    }
                    self.timers.push(Timer::Exchange { w, peer, seq });
                }
                Action::CancelExchange { peer, seq } => {
                    assert_eq!(
                        self.active[w],
                        Some((peer, seq)),
                        "cancel of an exchange not in progress"
                    );
                    self.active[w] = None;
                }
            }
        }
    }

    fn advance(&mut self, dt: f64) {
        self.clock += dt;
        for w in 0..self.n {
            if !self.dead[w] {
                let acts = self.sms[w].poll(self.clock);
                self.apply(w, acts);
            }
        }
    }

    fn deliver(&mut self, q: usize) -> bool {
        let (from, to) = (q / self.n, q % self.n);
        let Some(m) = self.queues[q].pop_front() else {
            return false;
        };
        if self.dead[to] {
            return true;
        }
        match m {
            Net::Pair(msg) => {
                let acts = self.sms[to].on_msg(from, msg, self.clock);
                self.apply(to, acts);
            }
            Net::Snap(seq) => {
                if self.active[to] == Some((from, seq)) {
                    self.active[to] = None;
                    let acts = self.sms[to].on_exchange_done(from, seq);
                    self.apply(to, acts);
                }
            }
        }
        true
    }

    fn fire(&mut self, i: usize) {
        let t = self.timers.swap_remove(i);
        match t {
            Timer::Proposal { w, peer, seq } => {
                let acts = self.sms[w].on_proposal_timeout(peer, seq, self.clock);
                self.apply(w, acts);
            }
            Timer::Exchange { w, peer, seq } => {
                if self.active[w] == Some((peer, seq)) {
                    self.active[w] = None;
                    let acts = self.sms[w].on_exchange_failed(peer, seq);
                    self.apply(w, acts);
                }
            }
        }
    }

    fn kill(&mut self, v: usize) {
        if self.dead[v] {
            return;
        }
        self.dead[v] = true;
        for w in 0..self.n {
            self.queues[w * self.n + v].clear();
            self.queues[v * self.n + w].clear();
            if w != v && !self.dead[w] {
                let acts = self.sms[w].on_peer_down(v);
                self.apply(w, acts);
            }
        }
        self.active[v] = None;
        self.timers.retain(
            |t| !matches!(t, Timer::Proposal { w, .. } | Timer::Exchange { w, .. } if *w == v),
        );
    }

    /// Every non-idle worker has something pending that will move it on: no stall is possible.
    fn check_invariants(&self) {
        for w in (0..self.n).filter(|&w| !self.dead[w]) {
            match self.sms[w].status() {
                Status::Idle => assert_eq!(self.active[w], None),
                Status::Proposing { peer, seq } => {
                    assert_eq!(self.active[w], None);
                    assert!(
                        self.timers.contains(&Timer::Proposal { w, peer, seq }),
                        "worker {w} proposing to {peer} with no timeout armed"
                    );
                }
                Status::Exchanging { peer, seq, .. } => {
                    assert_eq!(
                        self.active[w],
                        Some((peer, seq)),
                        "state machine and exchange disagree"
                    );
                    assert!(
                        self.timers.contains(&Timer::Exchange { w, peer, seq }),
                        "exchange with no timeout armed"
                    );
                }
            }
        }
    }

    /// Deliver everything and fire every timer until nothing is left; then all must be idle.
    fn drain(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for q in 0..self.queues.len() {
                while self.deliver(q) {
                    moved = true;
                }
            }
            if !self.timers.is_empty() {
                self.fire(0);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        for w in (0..self.n).filter(|&w| !self.dead[w]) {
            assert_eq!(self.sms[w].status(), Status::Idle, "worker {w} stalled");
            assert_eq!(self.active[w], None);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Advance(f64),
    Deliver(usize),
    Fire(usize),
    Kill(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0.001f64..0.5).prop_map(Op::Advance),
        8 => any::<usize>().prop_map(Op::Deliver),
        2 => any::<usize>().prop_map(Op::Fire),
        1 => any::<usize>().prop_map(Op::Kill),
    ]
}

fn graph(n: usize, chords: &[(usize, usize)], rates: &[f64]) -> Vec<(usize, usize, f64)> {
    let mut e: Vec<(usize, usize, f64)> = (0..n).map(|i| (i, (i + 1) % n, 0.0)).collect();
    for &(a, b) in chords {
        let (a, b) = (a % n, b % n);
        if a != b
            && !e
                .iter()
                .any(|&(x, y, _)| (x, y) == (a, b) || (x, y) == (b, a))
        {
            e.push((a, b, 0.0));
        }
    }
    for (i, x) in e.iter_mut().enumerate() {
        x.2 = rates[i % rates.len()];
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Long adversarial schedules: no worker is ever in two exchanges, state machine and exchange
    /// bookkeeping always agree, every busy state has a pending timeout, and nothing stalls.
    #[test]
    fn random_schedules_never_deadlock(
        n in 2usize..7,
        chords in proptest::collection::vec((0usize..7, 0usize..7), 0..6),
        rates in proptest::collection::vec(0.1f64..4.0, 1..8),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 200..1500),
        allow_kill in any::<bool>(),
    ) {
        let edges = graph(n, &chords, &rates);
        let mut sim = Sim::new(n, &edges, seed);
        for op in ops {
            match op {
                Op::Advance(dt) => sim.advance(dt),
                Op::Deliver(k) => {
                    let busy: Vec<usize> = (0..sim.queues.len()).filter(|&q| !sim.queues[q].is_empty()).collect();
                    if !busy.is_empty() {
                        sim.deliver(busy[k % busy.len()]);
                    }
                }
                Op::Fire(k) => {
                    if !sim.timers.is_empty() {
                        let i = k % sim.timers.len();
                        sim.fire(i);
                    }
                }
                Op::Kill(k) => {
                    if allow_kill && sim.dead.iter().filter(|d| !**d).count() > 2 {
                        sim.kill(k % n);
                    }
                }
            }
            sim.check_invariants();
        }
        sim.drain();
        // Owner-side accounting always balances.
        for w in 0..n {
            for (p, _, _) in sim.sms[w].neighbours().collect::<Vec<_>>() {
                if let Some(c) = sim.sms[w].counters(p) {
                    if w < p {
                        // The owner: every event that fell due is still owed, was dropped, or
                        // became an exchange.
                        prop_assert_eq!(c.fired, c.owed + c.dropped + c.started);
                    } else {
                        prop_assert_eq!(c.fired, 0);
                    }
                    prop_assert!(c.completed + c.failed <= c.started);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// With prompt delivery, each edge fires as a Poisson process of its own rate, and (exchanges
    /// being short) nearly every event becomes a completed exchange.
    #[test]
    fn per_edge_rates_match_lambda(
        n in 3usize..6,
        rates in proptest::collection::vec(0.2f64..2.0, 6),
        seed in any::<u64>(),
    ) {
        let edges = graph(n, &[], &rates);
        let mut sim = Sim::new(n, &edges, seed);
        let horizon = 1500.0;
        let dt = 0.01;
        let steps = (horizon / dt) as usize;
        for _ in 0..steps {
            sim.advance(dt);
            for q in 0..sim.queues.len() {
                while sim.deliver(q) {}
            }
            // Timers never need to fire: answers arrive within the step.
        }
        for &(a, b, lambda) in &edges {
            let owner = a.min(b);
            let c = sim.sms[owner].counters(a.max(b)).expect("edge");
            let mean = lambda * horizon;
            let tol = 5.0 * mean.sqrt() + 1.0;
            prop_assert!((c.fired as f64 - mean).abs() <= tol,
                "edge ({a},{b}) lambda {lambda}: fired {} vs expected {mean:.0} ± {tol:.0}", c.fired);
            prop_assert!(c.completed as f64 >= 0.9 * mean - tol,
                "edge ({a},{b}): only {} of ~{mean:.0} exchanges completed ({c:?})", c.completed);
            // The exchanges themselves are a Poisson process: exponential gaps, whose coefficient
            // of variation is 1.
            let t = &sim.starts[&(owner, a.max(b))];
            let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
            let m = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let sd = (gaps.iter().map(|g| (g - m).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
            prop_assert!((0.8..1.2).contains(&(sd / m)), "edge ({a},{b}): CV {}", sd / m);
        }
    }
}
