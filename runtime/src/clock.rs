//! Pure pieces of the worker runtime (no I/O, time passed in): the worker clock `tau`, the
//! decentralised gradient count that drives `--grad-budget`, and the stop rule.
//!
//! The same code runs in every worker process; unit tests drive it with synthetic times.

use a2cid_schema::StopReason;

/// The worker clock of docs/algorithm.md §1, in units of one gradient of this worker: it runs at
/// `d tau / d wall = 1 / dt_grad`, where `dt_grad` is an exponential moving average of the
/// worker's own seconds per gradient step, and is *integrated*: when the estimate changes, the
/// clock changes speed from then on and never jumps.
///
/// The start is guarded against the one-time costs of a process (pipeline compilation, first
/// uploads, peers still connecting), which make its first step many times slower than the next
/// ones; an EMA seeded with it would run the clock slow for tens of steps, and every Poisson
/// event of that time would be lost for good:
/// - the first step of a process is not a measurement: a fresh clock counts it as exactly one
///   unit, a resumed one keeps integrating at its saved speed;
/// - until the EMA has seen `1/beta` steps it is the plain mean of the steps seen (weight
///   `max(beta, 1/n)`), so no single early step dominates it.
///
/// Before the first measured step a fresh clock stands at its start (then at 1); the first
/// measurement integrates the time since the first step at that step's speed.
#[derive(Clone, Debug)]
pub struct StepClock {
    /// EMA of the seconds per gradient step; `None` before the first step.
    ema: Option<f64>,
    /// Weight of a new observation in the EMA.
    beta: f64,
    /// The clock's value at wall time `wall_at`: the point up to which it has been integrated.
    tau_at: f64,
    wall_at: f64,
    /// Steps recorded by this process (the first one is not a measurement).
    recorded: u64,
    /// Measurements in the EMA (its warm-up weight is `1/(updates+1)`).
    updates: f64,
}

impl StepClock {
    pub fn new(beta: f64) -> StepClock {
        StepClock::resumed(beta, 0.0, None, 0.0)
    }

    /// Continue a clock saved at `tau` with step time `ema` (resume): at wall time `wall` of the
    /// new process the clock reads `tau`.
    pub fn resumed(beta: f64, tau: f64, ema: Option<f64>, wall: f64) -> StepClock {
        let ema = ema.filter(|e| e.is_finite() && *e > 0.0);
        StepClock {
            ema,
            beta,
            tau_at: tau,
            wall_at: wall,
            recorded: 0,
            // A saved estimate is trusted as a warmed-up one.
            updates: if ema.is_some() { 1.0 / beta } else { 0.0 },
        }
    }

    /// A gradient step that took `seconds` ended at wall time `wall`: the clock is integrated up
    /// to `wall` at the old speed, then the speed changes.
    pub fn record_step(&mut self, seconds: f64, wall: f64) {
        if !(seconds.is_finite() && seconds > 0.0) {
            return;
        }
        self.recorded += 1;
        if self.recorded == 1 {
            // The process's first step carries its one-time costs: not a measurement.
            self.tau_at = match self.ema {
                Some(_) => self.tau(wall),
                None => self.tau_at + 1.0,
            };
            self.wall_at = self.wall_at.max(wall);
            return;
        }
        let weight = self.beta.max(1.0 / (self.updates + 1.0));
        self.updates += 1.0;
        let ema = match self.ema {
            None => seconds,
            Some(e) => e + weight * (seconds - e),
        };
        if self.ema.is_none() {
            // No speed was known: the time since the first step counts at this step's speed.
            self.ema = Some(ema);
        }
        self.tau_at = self.tau(wall);
        self.wall_at = self.wall_at.max(wall);
        self.ema = Some(ema);
    }

    /// Seconds per gradient step, as currently estimated.
    pub fn step_seconds(&self) -> Option<f64> {
        self.ema
    }

    /// The clock at wall time `wall` (seconds since this process started training); never less
    /// than its value at the last integration point.
    pub fn tau(&self, wall: f64) -> f64 {
        match self.ema {
            Some(e) => self.tau_at + (wall - self.wall_at).max(0.0) / e,
            None => self.tau_at,
        }
    }
}

/// What each worker knows of every worker's gradient count. Counts only grow, so merging two views
/// is an element-wise maximum; the views travel with the snapshots of the pairwise exchanges, so
/// the knowledge spreads through the graph like a gossip (no master, no extra messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalCounts {
    rank: usize,
    counts: Vec<u64>,
}

/// Floats appended to a snapshot to carry a [`GlobalCounts`] of `world` workers.
pub fn meta_len(world: usize) -> usize {
    2 * world
}

impl GlobalCounts {
    pub fn new(rank: usize, world: usize) -> GlobalCounts {
        GlobalCounts {
            rank,
            counts: vec![0; world],
        }
    }
    pub fn from_counts(rank: usize, counts: Vec<u64>) -> GlobalCounts {
        GlobalCounts { rank, counts }
    }
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
    /// This worker's own count changed.
    pub fn set_own(&mut self, grads: u64) {
        self.counts[self.rank] = grads;
    }
    /// The total this worker knows of (a lower bound of the true total).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// Merge a peer's view.
    pub fn merge(&mut self, other: &[u64]) {
        for (mine, &theirs) in self.counts.iter_mut().zip(other) {
            *mine = (*mine).max(theirs);
        }
    }
    /// Appends the view to a snapshot: each count as two f32 bit patterns (low, high 32 bits), so
    /// it crosses the network exactly.
    pub fn encode_into(&self, out: &mut Vec<f32>) {
        for &c in &self.counts {
            out.push(f32::from_bits(c as u32));
            out.push(f32::from_bits((c >> 32) as u32));
        }
    }
    /// Reads a view written by [`encode_into`](Self::encode_into).
    pub fn decode(meta: &[f32]) -> Vec<u64> {
        meta.chunks_exact(2)
            .map(|p| u64::from(p[0].to_bits()) | (u64::from(p[1].to_bits()) << 32))
            .collect()
    }
}

/// `--grad-budget`, `--epochs`, `--max-seconds`: whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StopRule {
    /// Gradients computed by all workers together.
    pub grad_budget: Option<u64>,
    /// What spending the budget means: `GradBudget`, or `Epochs` when it stands for epochs of
    /// every shard.
    pub budget_reason: StopReason,
    /// Gradient steps of this worker that make its epochs (its batches per epoch × epochs), or
    /// its share of the budget when workers cannot count each other's gradients (`local`).
    pub epoch_steps: Option<u64>,
    /// What reaching `epoch_steps` means: `Epochs`, or `GradBudget` for a share of it.
    pub steps_reason: StopReason,
    pub max_seconds: Option<f64>,
}

impl StopRule {
    /// Should a worker that has done `own_steps`, knows of `global_grads` in total and has run
    /// `wall` seconds stop?
    pub fn check(&self, own_steps: u64, global_grads: u64, wall: f64) -> Option<StopReason> {
        if self.grad_budget.is_some_and(|g| global_grads >= g) {
            return Some(self.budget_reason);
        }
        if self.epoch_steps.is_some_and(|e| own_steps >= e) {
            return Some(self.steps_reason);
        }
        if self.max_seconds.is_some_and(|s| wall >= s) {
            return Some(StopReason::MaxSeconds);
        }
        None
    }

    /// Fraction of the run done, in [0, 1]: the largest of the three criteria's fractions (drives
    /// the learning-rate schedule and the progress display).
    pub fn progress(&self, own_steps: u64, global_grads: u64, wall: f64) -> f64 {
        let mut p: f64 = 0.0;
        if let Some(g) = self.grad_budget {
            p = p.max(global_grads as f64 / g.max(1) as f64);
        }
        if let Some(e) = self.epoch_steps {
            p = p.max(own_steps as f64 / e.max(1) as f64);
        }
        if let Some(s) = self.max_seconds {
            p = p.max(wall / s.max(1e-9));
        }
        p.clamp(0.0, 1.0)
    }

    /// This worker's expected number of steps, when it can be told in advance (`world` workers of
    /// equal speed share the budget).
    pub fn expected_steps(&self, world: usize) -> Option<u64> {
        let from_budget = self.grad_budget.map(|g| g.div_ceil(world.max(1) as u64));
        match (from_budget, self.epoch_steps) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_counts_steps_of_the_measured_duration() {
        let mut c = StepClock::new(0.1);
        assert_eq!(c.tau(5.0), 0.0, "no step measured yet");
        // The first step (slow: the process's one-time costs) counts as one unit, whatever it
        // took, and measures nothing.
        c.record_step(3.0, 3.0);
        assert_eq!((c.tau(3.0), c.tau(100.0)), (1.0, 1.0));
        assert_eq!(c.step_seconds(), None);
        // The second step ends at wall 3.5 after taking 0.5 s: one more unit.
        c.record_step(0.5, 3.5);
        assert!((c.tau(3.5) - 2.0).abs() < 1e-12);
        assert!((c.tau(13.5) - 22.0).abs() < 1e-12);
        // Nonsense durations are ignored.
        let e = c.step_seconds();
        c.record_step(f64::NAN, 11.0);
        c.record_step(0.0, 11.0);
        assert_eq!(c.step_seconds(), e);
    }

    #[test]
    fn a_slower_estimate_slows_the_clock_from_then_on_without_a_jump() {
        let mut c = StepClock::new(0.5);
        c.record_step(1.0, 0.0);
        c.record_step(1.0, 1.0);
        assert!((c.tau(10.0) - 11.0).abs() < 1e-12);
        let before = c.tau(10.0);
        c.record_step(3.0, 10.0); // the estimate moves to 2 s per step
        assert!((c.tau(10.0) - before).abs() < 1e-12, "no jump");
        assert!((c.tau(12.0) - 12.0).abs() < 1e-12, "half speed afterwards");
    }

    #[test]
    fn a_slow_start_does_not_hold_the_clock_back() {
        // A first step 50 times slower than the rest, then steady 10 ms steps: after 100 steps
        // the clock reads 100 (within a step), where an EMA seeded with the first step at
        // beta = 0.05 would read about 65.
        let mut c = StepClock::new(0.05);
        let mut wall = 0.5;
        c.record_step(0.5, wall);
        for _ in 1..100 {
            wall += 0.01;
            c.record_step(0.01, wall);
        }
        assert!((c.tau(wall) - 100.0).abs() < 1.0, "{}", c.tau(wall));
        // A resumed clock keeps its saved speed through its own slow first step.
        let mut r = StepClock::resumed(0.05, 100.0, Some(0.01), 0.0);
        r.record_step(0.5, 0.5);
        assert!((r.tau(0.5) - 150.0).abs() < 1e-9);
        assert_eq!(r.step_seconds(), Some(0.01));
        r.record_step(0.02, 0.52);
        assert!(
            (r.step_seconds().unwrap() - 0.0105).abs() < 1e-12,
            "beta, no warm-up"
        );
    }

    #[test]
    fn resumed_clock_continues_from_its_offset() {
        let c = StepClock::resumed(0.1, 300.0, Some(0.25), 0.0);
        assert_eq!(c.tau(0.0), 300.0);
        assert!((c.tau(1.0) - 304.0).abs() < 1e-12);
    }

    proptest::proptest! {
        /// Driven by any sequence of step durations, the clock is monotone, continuous across
        /// every change of speed, and runs at 1/EMA between steps.
        #[test]
        fn the_integrated_clock_is_monotone_and_never_jumps(
            steps in proptest::collection::vec(0.001f64..5.0, 1..60),
            beta in 0.01f64..1.0,
            probes in proptest::collection::vec(0.0f64..1.0, 1..5),
        ) {
            let mut probes = probes;
            probes.sort_by(f64::total_cmp);
            let mut c = StepClock::new(beta);
            let mut wall = 0.0;
            let mut last = 0.0;
            for s in steps {
                let start = wall;
                wall += s;
                // Inside the step the clock runs at the current speed, monotonically.
                for &p in &probes {
                    let t = c.tau(start + p * s);
                    proptest::prop_assert!(t >= last - 1e-9, "{t} < {last}");
                    last = t;
                }
                let before = c.tau(wall);
                let known = c.step_seconds().is_some();
                c.record_step(s, wall);
                let after = c.tau(wall);
                // The first step counts one unit and the first measurement integrates the time
                // since it; later measurements never move the clock at the instant they happen.
                if known {
                    proptest::prop_assert!((after - before).abs() <= 1e-9 * (1.0 + before));
                }
                proptest::prop_assert!(after >= last - 1e-9);
                last = after;
                if let Some(e) = c.step_seconds() {
                    let ahead = c.tau(wall + 1.0) - after;
                    proptest::prop_assert!((ahead - 1.0 / e).abs() <= 1e-9 * (1.0 + 1.0 / e));
                }
            }
        }
    }

    #[test]
    fn counts_merge_by_maximum_and_cross_as_f32_bits() {
        let mut a = GlobalCounts::new(0, 3);
        a.set_own(10);
        let mut b = GlobalCounts::new(2, 3);
        b.set_own(u64::MAX - 7); // exercises both halves and NaN bit patterns
        b.merge(&[4, 9, 0]);
        let mut wire = vec![1.5f32]; // a parameter in front, as in a snapshot
        b.encode_into(&mut wire);
        assert_eq!(wire.len(), 1 + meta_len(3));
        let got = GlobalCounts::decode(&wire[1..]);
        assert_eq!(got, vec![4, 9, u64::MAX - 7]);
        a.merge(&got);
        assert_eq!(a.counts(), &[10, 9, u64::MAX - 7]);
        // Merging an older view never lowers a count.
        a.merge(&[0, 0, 0]);
        assert_eq!(a.counts(), &[10, 9, u64::MAX - 7]);
    }

    #[test]
    fn whichever_criterion_comes_first_stops() {
        let rule = StopRule {
            grad_budget: Some(1000),
            budget_reason: StopReason::GradBudget,
            epoch_steps: Some(300),
            steps_reason: StopReason::Epochs,
            max_seconds: Some(60.0),
        };
        assert_eq!(rule.check(10, 100, 1.0), None);
        assert_eq!(rule.check(10, 1000, 1.0), Some(StopReason::GradBudget));
        assert_eq!(rule.check(300, 999, 1.0), Some(StopReason::Epochs));
        assert_eq!(rule.check(299, 999, 60.0), Some(StopReason::MaxSeconds));
        assert!((rule.progress(150, 100, 0.0) - 0.5).abs() < 1e-12);
        assert!((rule.progress(0, 900, 30.0) - 0.9).abs() < 1e-12);
        assert_eq!(rule.expected_steps(4), Some(250));
        let budget_only = StopRule {
            grad_budget: Some(1001),
            budget_reason: StopReason::Epochs,
            epoch_steps: None,
            steps_reason: StopReason::Epochs,
            max_seconds: None,
        };
        assert_eq!(budget_only.expected_steps(4), Some(251));
        assert_eq!(budget_only.check(u64::MAX, 1000, 1e9), None);
        assert_eq!(budget_only.check(0, 1001, 0.0), Some(StopReason::Epochs));
    }
}
