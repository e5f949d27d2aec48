//! Decisions about peers, as pure code (torchft lighthouse style): given what happened and when,
//! say what to do and why. No I/O, no tokio; time is an argument, so every case is a fast unit test.
//! The driver ([`crate::driver`]) feeds it and carries the verdicts out.
//!
//! - [`Health`]: who a timed-out exchange counts against (the peer only if this worker had already
//!   supplied its snapshot), consecutive failures per peer and when an unresponsive peer is dropped
//!   (enough failures in a row, spread over a least time of silence; the reason names the count,
//!   the time and the last cause), and the adaptive proposal and exchange timeouts learned from
//!   round trips.
//! - [`Membership`]: which ranks failed or left, and whether the live graph fell apart.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use crate::frame::PairMsg;
use crate::timeouts::AdaptiveTimeout;

/// A sign that a connected peer does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A proposal got no answer in time.
    ProposalUnanswered,
    /// An exchange timed out while this worker waited on the peer's snapshot.
    ExchangeTimedOut,
    /// Frames to the peer piled up unsent: it has stopped reading its socket.
    Stalled,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::ProposalUnanswered => "proposal went unanswered",
            Failure::ExchangeTimedOut => "exchange timed out",
            Failure::Stalled => "its outgoing queue is full",
        })
    }
}

/// Who a timed-out exchange is blamed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// This worker had handed over its snapshot and waited on the peer's.
    Peer,
    /// This worker's own caller never supplied its snapshot: not the peer's fault.
    OwnCaller,
}

/// What to do about a peer after a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Drop it from pairing; `reason` is for logs and [`crate::MeshEvent::PeerLost`].
    Drop {
        reason: String,
    },
}

/// Bounds of one adaptive timeout: used until the first observation, then never below / above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutBounds {
    pub initial: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl From<(Duration, Duration, Duration)> for TimeoutBounds {
    fn from((initial, min, max): (Duration, Duration, Duration)) -> TimeoutBounds {
        TimeoutBounds { initial, min, max }
    }
}

impl TimeoutBounds {
    fn estimator(self) -> AdaptiveTimeout {
        AdaptiveTimeout::new(self.initial, self.min, self.max)
    }
}

/// Health of this worker's peers, as seen from the pairing protocol.
#[derive(Clone, Debug)]
pub struct Health {
    max_failures: u32,
    /// The least time a failing peer must have gone unheard before it is dropped.
    min_silence: Duration,
    failures: HashMap<usize, u32>,
    /// When each peer's current run of failures began.
    failing_since: HashMap<usize, Instant>,
    exchange: AdaptiveTimeout,
    proposal: AdaptiveTimeout,
    /// The last proposal sent, and when, to time its answer.
    in_flight: Option<(usize, u64, Instant)>,
}

impl Health {
    /// `max_failures` consecutive failures drop a peer (at least 1), as soon as they span
    /// [`Health::with_min_silence`] (none unless set).
    pub fn new(
        max_failures: u32,
        exchange: impl Into<TimeoutBounds>,
        proposal: impl Into<TimeoutBounds>,
    ) -> Health {
        Health {
            max_failures: max_failures.max(1),
            min_silence: Duration::ZERO,
            failures: HashMap::new(),
            failing_since: HashMap::new(),
            exchange: exchange.into().estimator(),
            proposal: proposal.into().estimator(),
            in_flight: None,
        }
    }

    /// A peer is dropped only once its failures in a row span `d` (from the first of them): a
    /// worker starved of CPU for a second or two, many processes sharing few cores, answers late
    /// but answers; a frozen or partitioned one stays silent.
    pub fn with_min_silence(mut self, d: Duration) -> Health {
        self.min_silence = d;
        self
    }

    /// `peer` answered or completed an exchange: its run of failures ends.
    fn alive(&mut self, peer: usize) {
        self.failures.insert(peer, 0);
        self.failing_since.remove(&peer);
    }

    /// How long an exchange may take, from agreement to both snapshots crossed.
    pub fn exchange_timeout(&self) -> Duration {
        self.exchange.timeout()
    }
    /// How long a proposal waits for its answer.
    pub fn proposal_timeout(&self) -> Duration {
        self.proposal.timeout()
    }
    /// The smoothed duration of completed exchanges, once one completed.
    pub fn typical_exchange(&self) -> Option<Duration> {
        self.exchange.typical()
    }
    /// `peer` came back: its failures are forgotten.
    pub fn revived(&mut self, peer: usize) {
        self.failures.remove(&peer);
        self.failing_since.remove(&peer);
    }

    /// Consecutive failures of `peer` so far.
    pub fn failures(&self, peer: usize) -> u32 {
        self.failures.get(&peer).copied().unwrap_or(0)
    }

    /// A proposal to `peer` left at `now`.
    pub fn proposed(&mut self, peer: usize, seq: u64, now: Instant) {
        self.in_flight = Some((peer, seq, now));
    }

    /// A pairing message from `peer` arrived at `now`. An answer (Accept or Busy) to the proposal in
    /// flight times its round trip, even a late one, so the timeout grows with a slow peer. Propose,
    /// Accept and Busy show that the peer's pairing loop runs and reset its failures; an Abort does
    /// not: the peer sends it on its own timers, not in answer to anything of ours.
    pub fn heard(&mut self, peer: usize, msg: PairMsg, now: Instant) {
        if let (PairMsg::Accept { seq } | PairMsg::Busy { seq }, Some((p, s, sent))) =
            (msg, self.in_flight)
        {
            if p == peer && s == seq {
                self.proposal.observe(now.saturating_duration_since(sent));
                self.in_flight = None;
            }
        }
        if !matches!(msg, PairMsg::Abort { .. }) {
            self.alive(peer);
        }
    }

    /// Both snapshots crossed, `took` after the agreement: learn from it; the peer is alive.
    pub fn exchanged(&mut self, peer: usize, took: Duration) {
        self.exchange.observe(took);
        self.alive(peer);
    }

    /// The proposal to `peer` timed out at `now`. `unanswered` is false when the timer is stale
    /// (answered, or the proposal is no longer the one in progress): only an unanswered proposal
    /// counts.
    pub fn proposal_expired(&mut self, peer: usize, unanswered: bool, now: Instant) -> Verdict {
        if unanswered {
            self.failed(peer, Failure::ProposalUnanswered, now)
        } else {
            Verdict::Keep
        }
    }

    /// Who a timed-out exchange counts against: only the peer's silence is the peer's fault.
    pub fn blame(supplied: bool) -> Blame {
        if supplied {
            Blame::Peer
        } else {
            Blame::OwnCaller
        }
    }

    /// The exchange with `peer` timed out at `now`; `supplied` says whether this worker had handed
    /// over its snapshot by then.
    pub fn exchange_expired(&mut self, peer: usize, supplied: bool, now: Instant) -> Verdict {
        match Health::blame(supplied) {
            Blame::Peer => self.failed(peer, Failure::ExchangeTimedOut, now),
            Blame::OwnCaller => Verdict::Keep,
        }
    }

    /// One more consecutive sign, at `now`, that `peer` does not answer; at the limit, once the
    /// run of failures spans the least silence, it is dropped.
    pub fn failed(&mut self, peer: usize, what: Failure, now: Instant) -> Verdict {
        let n = self.failures.entry(peer).or_insert(0);
        *n += 1;
        let since = *self.failing_since.entry(peer).or_insert(now);
        let silent = now.saturating_duration_since(since);
        if *n >= self.max_failures && silent >= self.min_silence {
            let reason = if self.min_silence.is_zero() {
                format!("unresponsive: {n} times in a row ({what}, the last)")
            } else {
                format!(
                    "unresponsive: {n} times in a row over {:.1} s ({what}, the last)",
                    silent.as_secs_f64()
                )
            };
            Verdict::Drop { reason }
        } else {
            Verdict::Keep
        }
    }
}

/// Which ranks are gone, and the shape of the live graph.
#[derive(Clone, Debug)]
pub struct Membership {
    rank: usize,
    world: usize,
    edges: Vec<(usize, usize)>,
    failed: BTreeSet<usize>,
    departed: BTreeSet<usize>,
    /// Live components at the last failure; the graph is taken as connected at start (the
    /// topology crate refuses disconnected graphs).
    components: usize,
}

/// A failure this worker did not know about yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureNews {
    /// The live components, when the graph just fell into more pieces than before.
    pub split: Option<Vec<Vec<usize>>>,
}

impl Membership {
    pub fn new(rank: usize, world: usize, edges: &[(usize, usize, f64)]) -> Membership {
        Membership {
            rank,
            world,
            edges: edges.iter().map(|&(a, b, _)| (a, b)).collect(),
            failed: BTreeSet::new(),
            departed: BTreeSet::new(),
            components: 1,
        }
    }

    /// `peer` came back (restarted and re-linked): neither failed nor departed any more.
    pub fn revived(&mut self, peer: usize) {
        self.failed.remove(&peer);
        self.departed.remove(&peer);
        self.components = a2cid_topology::components(self.world, self.edges.iter().copied(), |v| {
            !self.failed.contains(&v)
        })
        .len();
    }

    /// `peer` said goodbye: gone, but not a failure (no gossip, no split warning).
    pub fn departed(&mut self, peer: usize) {
        self.departed.insert(peer);
    }

    /// `rank` failed, as seen here or gossiped by a neighbour. `None` when it is old news (or not
    /// another rank of this world); otherwise the news is to be passed on, with the live components
    /// if the graph fell apart further.
    pub fn failed(&mut self, rank: usize) -> Option<FailureNews> {
        if rank == self.rank || rank >= self.world || !self.failed.insert(rank) {
            return None;
        }
        let comps = a2cid_topology::components(self.world, self.edges.iter().copied(), |v| {
            !self.failed.contains(&v)
        });
        let grew = comps.len() > self.components;
        self.components = comps.len();
        Some(FailureNews {
            split: grew.then_some(comps),
        })
    }

    /// Ranks that failed.
    pub fn dead(&self) -> Vec<usize> {
        self.failed.iter().copied().collect()
    }

    /// Every rank lost so far: failed ones first, then those that left.
    pub fn lost(&self) -> Vec<usize> {
        self.failed
            .iter()
            .chain(self.departed.iter())
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    fn health(max: u32) -> Health {
        Health::new(max, (60 * S, 2 * S, 300 * S), (S, 200 * MS, 30 * S))
    }

    /// One fixed instant, for the tests where time plays no part.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    #[test]
    fn a_late_but_living_peer_is_kept_until_its_silence_spans_the_least_time() {
        let t0 = t0();
        let mut h = health(3).with_min_silence(10 * S);
        // Three proposals unanswered within 1.5 s: a starved peer, not a gone one.
        for k in 0..3 {
            let at = t0 + k * 700 * MS;
            assert_eq!(h.proposal_expired(1, true, at), Verdict::Keep);
        }
        assert_eq!(h.failures(1), 3);
        // It answers late: the run of failures ends, and the next one starts afresh.
        h.heard(1, PairMsg::Busy { seq: 7 }, t0 + 2 * S);
        for k in 0..5 {
            let at = t0 + 3 * S + k * S;
            assert_eq!(
                h.proposal_expired(1, true, at),
                Verdict::Keep,
                "failure {k}"
            );
        }
        // Silent on: dropped once its failures span 10 s, naming the time.
        assert_eq!(h.proposal_expired(1, true, t0 + 12 * S), Verdict::Keep);
        let Verdict::Drop { reason } = h.proposal_expired(1, true, t0 + 13 * S) else {
            panic!("ten seconds of silence and seven failures in a row must drop the peer")
        };
        assert_eq!(
            reason,
            "unresponsive: 7 times in a row over 10.0 s (proposal went unanswered, the last)"
        );
        // Another peer's failures have their own clock.
        assert_eq!(
            h.exchange_expired(2, true, t0 + 13 * S),
            Verdict::Keep,
            "peer 2's first failure"
        );
    }

    #[test]
    fn a_timeout_while_our_own_caller_is_slow_does_not_count() {
        let mut h = health(2);
        assert_eq!(Health::blame(false), Blame::OwnCaller);
        for _ in 0..10 {
            assert_eq!(h.exchange_expired(1, false, t0()), Verdict::Keep);
        }
        assert_eq!(h.failures(1), 0);
        assert_eq!(Health::blame(true), Blame::Peer);
        assert_eq!(h.exchange_expired(1, true, t0()), Verdict::Keep);
        assert_eq!(h.failures(1), 1);
    }

    #[test]
    fn consecutive_failures_drop_the_peer_naming_count_and_last_cause() {
        let mut h = health(3);
        assert_eq!(h.proposal_expired(4, true, t0()), Verdict::Keep);
        assert_eq!(h.exchange_expired(4, true, t0()), Verdict::Keep);
        let Verdict::Drop { reason } = h.proposal_expired(4, true, t0()) else {
            panic!("the third failure in a row must drop the peer")
        };
        assert_eq!(
            reason,
            "unresponsive: 3 times in a row (proposal went unanswered, the last)"
        );
        // Other peers are counted apart.
        assert_eq!(h.failures(5), 0);
        let Verdict::Drop { reason } = health(1).failed(5, Failure::Stalled, t0()) else {
            panic!("a limit of 1 drops at once")
        };
        assert!(reason.contains("1 times in a row (its outgoing queue is full"));
    }

    #[test]
    fn stale_proposal_timers_do_not_count() {
        let mut h = health(1);
        assert_eq!(h.proposal_expired(2, false, t0()), Verdict::Keep);
        assert_eq!(h.failures(2), 0);
    }

    #[test]
    fn an_answer_or_a_completed_exchange_resets_the_count_but_an_abort_does_not() {
        let t0 = Instant::now();
        let mut h = health(3);
        h.failed(1, Failure::ProposalUnanswered, t0);
        h.failed(1, Failure::ProposalUnanswered, t0);
        h.heard(1, PairMsg::Abort { seq: 9 }, t0);
        assert_eq!(h.failures(1), 2);
        h.heard(1, PairMsg::Busy { seq: 9 }, t0);
        assert_eq!(h.failures(1), 0);
        h.failed(1, Failure::ExchangeTimedOut, t0);
        h.exchanged(1, 50 * MS);
        assert_eq!(h.failures(1), 0);
        h.failed(1, Failure::ExchangeTimedOut, t0);
        h.heard(1, PairMsg::Propose { seq: 3 }, t0);
        assert_eq!(h.failures(1), 0);
    }

    #[test]
    fn round_trips_tune_the_proposal_timeout_within_its_bounds() {
        let t0 = Instant::now();
        let mut h = health(3);
        assert_eq!(h.proposal_timeout(), S, "initial value before any answer");
        for seq in 0..50 {
            h.proposed(1, seq, t0);
            // An answer to another proposal, or from another peer, times nothing.
            h.heard(2, PairMsg::Accept { seq }, t0 + 5 * S);
            h.heard(1, PairMsg::Accept { seq: seq + 1000 }, t0 + 5 * S);
            h.heard(1, PairMsg::Accept { seq }, t0 + MS);
        }
        assert_eq!(h.proposal_timeout(), 200 * MS, "clamped to the minimum");
        for seq in 100..150 {
            h.proposed(1, seq, t0);
            h.heard(1, PairMsg::Busy { seq }, t0 + 100 * S);
        }
        assert_eq!(h.proposal_timeout(), 30 * S, "clamped to the maximum");
    }

    #[test]
    fn exchange_durations_tune_the_exchange_timeout_within_its_bounds() {
        let mut h = health(3);
        assert_eq!(h.exchange_timeout(), 60 * S);
        assert_eq!(h.typical_exchange(), None);
        for _ in 0..50 {
            h.exchanged(1, 10 * MS);
        }
        assert_eq!(h.exchange_timeout(), 2 * S);
        let typical = h.typical_exchange().expect("observed");
        assert!(typical < 20 * MS, "{typical:?}");
        for _ in 0..50 {
            h.exchanged(1, 1000 * S);
        }
        assert_eq!(h.exchange_timeout(), 300 * S);
    }

    fn ring(n: usize) -> Vec<(usize, usize, f64)> {
        (0..n).map(|i| (i, (i + 1) % n, 1.0)).collect()
    }

    #[test]
    fn membership_reports_each_failure_once_and_splits_as_they_happen() {
        let mut m = Membership::new(0, 6, &ring(6));
        let first = m.failed(2).expect("news");
        assert_eq!(first.split, None, "a ring survives one loss");
        assert_eq!(m.failed(2), None, "old news");
        assert_eq!(m.failed(0), None, "this worker itself");
        assert_eq!(m.failed(6), None, "outside the world");
        let second = m.failed(4).expect("news");
        assert_eq!(second.split, Some(vec![vec![0, 1, 5], vec![3]]));
        assert_eq!(m.dead(), vec![2, 4]);
    }

    #[test]
    fn a_graceful_departure_is_lost_but_not_failed() {
        let mut m = Membership::new(0, 4, &ring(4));
        m.departed(3);
        // With 3 counted as failed, losing 1 would cut 0 from 2; a departure is not a failure.
        assert_eq!(m.failed(1).map(|n| n.split), Some(None));
        assert_eq!(m.lost(), vec![1, 3]);
        assert_eq!(m.dead(), vec![1]);
    }
}
