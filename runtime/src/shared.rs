//! What a worker's compute loop and its exchange task share, behind one lock ([`Shared`]): the
//! host mirror of the training state, the event counter, the clock, the averages waiting to be
//! applied and the counters both update.
//!
//! Only the compute loop submits work to the device. The exchange task never waits for it: it
//! takes snapshots from the mirror, and queues each completed average ([`PendingAverage`]) with
//! its clock value and its place in the order of events; the compute loop submits the queued
//! averages, in that order, just before its next step. So the device applies every event in the
//! order of its clock value (docs/algorithm.md §3), and an exchange completes in the time the
//! network takes, whatever the device is doing.
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use a2cid_engine::acid::Mirror;
use a2cid_net::ClockSegment;
use a2cid_schema::{At, MetricsLog};

use crate::clock::{GlobalCounts, StepClock};

/// A worker's time: wall seconds since the run started (over all resumed sessions), the
/// evaluation pauses taken off, and the worker clock tau (docs/algorithm.md §1).
#[derive(Debug)]
pub struct Timekeeper {
    pub clock: StepClock,
    /// This process's start.
    start: Instant,
    /// Wall seconds of earlier sessions (resume).
    wall0: f64,
    /// Seconds this process spent with the clock stopped (evaluations).
    paused: f64,
    /// Seconds of wall time, over all sessions, spent evaluating (off the training time).
    pub eval_seconds: f64,
}

impl Timekeeper {
    pub fn new(clock: StepClock, wall0: f64, eval_seconds: f64) -> Timekeeper {
        Timekeeper {
            clock,
            start: Instant::now(),
            wall0,
            paused: 0.0,
            eval_seconds,
        }
    }

    /// Starts this session's clocks now: the training time of a worker starts when the mesh has
    /// formed, not while it waits for the others (which would cut an early worker's share of
    /// `--max-seconds` and put its clock ahead of theirs). Only before the first step.
    pub fn start_now(&mut self) {
        self.start = Instant::now();
        self.paused = 0.0;
    }

    /// Wall seconds since the run started.
    pub fn wall(&self) -> f64 {
        self.wall0 + self.start.elapsed().as_secs_f64()
    }

    /// Wall seconds spent training (evaluation pauses excluded): what the stop rule, the
    /// learning-rate schedule and the plots against time use.
    pub fn train_wall(&self) -> f64 {
        self.wall() - self.eval_seconds
    }

    /// Seconds on this process's clock: training time since this process started.
    fn clock_seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64() - self.paused
    }

    /// The worker clock now.
    pub fn tau(&self) -> f64 {
        self.clock.tau(self.clock_seconds())
    }

    /// A gradient step took `seconds` and ended now.
    pub fn record_step(&mut self, seconds: f64) {
        let now = self.clock_seconds();
        self.clock.record_step(seconds, now);
    }

    /// Seconds the clock has stood still so far (evaluations).
    pub fn paused(&self) -> f64 {
        self.paused
    }

    /// The clock stood still for `seconds` (an evaluation): neither tau nor the training time
    /// moved.
    pub fn record_pause(&mut self, seconds: f64) {
        self.paused += seconds;
        self.eval_seconds += seconds;
    }

    /// The clock from now on, for the mesh to extrapolate (standing still before the first step).
    pub fn segment(&self) -> ClockSegment {
        let tau = self.tau();
        match self.clock.step_seconds() {
            Some(s) => ClockSegment::running(tau, Instant::now(), s),
            None => ClockSegment::frozen(tau),
        }
    }
}

/// Exchanges this worker started on one edge it owns: the clock values at which they started
/// (the Poisson process as it happened).
#[derive(Clone, Debug, Default)]
pub struct EdgeLog {
    pub started: Vec<f64>,
}

/// A completed exchange whose average the device has not applied yet.
#[derive(Debug)]
pub struct PendingAverage {
    /// The clock value of the exchange.
    pub tau: f64,
    /// The snapshot this worker sent and the peer's (parameters only).
    pub sent: Vec<f32>,
    pub received: Vec<f32>,
}

/// The state both of a worker's threads touch.
pub struct Shared {
    pub rank: usize,
    pub mirror: Mirror,
    /// Events that touched (x, x̃) so far (gradient steps and averages): the order the device
    /// applies them in, and what a read-back is "as of".
    pub seq: u64,
    /// Averages completed and not yet submitted to the device, in order.
    pub pending: Vec<PendingAverage>,
    pub time: Timekeeper,
    pub counts: GlobalCounts,
    /// This worker's gradient steps.
    pub grads: u64,
    /// Pairwise averagings completed.
    pub comms: u64,
    /// Exchanges that failed or were called off.
    pub failed: u64,
    /// The exchange agreed and not yet applied: (peer, pairing seq).
    pub in_flight: Option<(usize, u64)>,
    /// Neighbours lost (not gracefully).
    pub lost: Vec<usize>,
    /// Snapshots refused because they held non-finite values, by peer.
    pub refused: BTreeMap<usize, u64>,
    /// This worker's snapshots that neighbours refused, by neighbour.
    pub refused_by: BTreeMap<usize, u64>,
    /// Ctrl-C, a signal or a peer asked the run to stop.
    pub interrupted: bool,
    /// Another worker stopped the run: (its rank, why).
    pub stopped_elsewhere: Option<(usize, String)>,
    /// Per owned edge: when its exchanges started.
    pub edges: BTreeMap<usize, EdgeLog>,
    pub metrics: MetricsLog,
}

impl Shared {
    /// Where and when an event of this worker happens: now.
    pub fn at(&self) -> At {
        At {
            rank: self.rank,
            wall: self.time.wall(),
            train_wall: self.time.train_wall(),
            tau: Some(self.time.tau()),
            step: self.grads,
        }
    }
}

/// Locks `m`, also after a thread that held it panicked (the state is still the best there is;
/// the panic itself is reported where it happened).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
