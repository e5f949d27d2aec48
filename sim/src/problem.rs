//! What the simulator simulates: the `Problem` trait (n workers' states plus the hooks the event
//! loop calls), and `CpuWorkers`, a `Problem` for any CPU `Objective` whose workers are
//! `a2cid_engine::acid::State`s (the one implementation of the A²CiD² math).
//!
//! The split: the event loop (`runner`) owns time, the Poisson clocks and the method; a `Problem`
//! owns the workers' states (each with the clock value of its last event) and applies updates at
//! the times it is told. The GPU problem (`mlp`) holds one `a2cid_engine::TrainState` per worker,
//! the type the real runtime trains with.

use a2cid_engine::acid::{AcidParams, State};
use a2cid_engine::SgdConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Quality of the n workers' models at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// (1/n) Σ_i f(x_i): the global objective at each worker's own model, averaged.
    pub mean_worker_loss: f64,
    /// f(x̄), the global objective at the average model x̄ = (1/n) Σ_i x_i.
    pub average_model_loss: f64,
    /// (1/n) Σ_i ||x_i - x̄||².
    pub consensus_distance: f64,
}

/// n workers' states and the updates the event loop applies to them. A problem is built for one
/// method (it knows whether its workers keep x̃, and the A²CiD² parameters); every hook receives
/// the clock value `now` of its event and each worker mixes from its own last event up to it.
pub trait Problem {
    /// Number of workers.
    fn workers(&self) -> usize;

    /// The optimal value f* of the global objective, when known (to report excess loss).
    fn optimal_loss(&self) -> Option<f64> {
        None
    }

    /// Mixes worker `i`'s (x, x̃) up to `now` (a no-op for methods without x̃).
    fn mix(&mut self, worker: usize, now: f64) -> anyhow::Result<()>;

    /// A gradient event of worker `i` at `now`: mix, take a stochastic gradient at the mixed x
    /// (the continuized model: the gradient is instantaneous), then the SGD step on x and x̃.
    fn gradient_step(&mut self, worker: usize, now: f64, sgd: &SgdConfig) -> anyhow::Result<()>;

    /// A communication event on edge (i, j) at `now`: both sides mix, send their snapshot, and
    /// average against the SENT snapshot. Returns ||s_i - s_j||².
    fn pairwise_average(&mut self, pair: (usize, usize), now: f64) -> anyhow::Result<f64>;

    /// A communication event on edge (i, j) at `now` whose snapshots travel through a codec
    /// (`--compress`): both sides mix and snapshot, `codec` turns (s_i, s_j) into what each side
    /// averages with, and each averages against those. Returns ‖own_i − peer_i‖².
    fn pairwise_average_via(
        &mut self,
        pair: (usize, usize),
        now: f64,
        codec: &mut ExchangeCodec<'_>,
    ) -> anyhow::Result<f64> {
        let _ = (pair, now, codec);
        anyhow::bail!("this problem does not run compressed exchanges (--compress)")
    }

    /// The layout of a worker's parameters (tensors and shapes), for codecs that compress per
    /// weight matrix; `None` for a problem whose parameters are one vector.
    fn layout(&self) -> Option<a2cid_engine::arena::ParamLayout> {
        None
    }

    /// A synchronous all-reduce step at `now`: each worker takes a stochastic gradient at its x,
    /// and every worker steps with their average.
    fn allreduce_step(&mut self, now: f64, sgd: &SgdConfig) -> anyhow::Result<()>;

    /// Evaluates the workers' current x (the loop mixes everyone up to now first).
    fn quality(&mut self) -> anyhow::Result<Quality>;

    /// Number of parameters of one worker's model (what an exchange sends, in f32 values).
    fn parameters(&self) -> usize;

    /// Every worker's x at `now`, each mixed up to `now` first (the model-averaging methods:
    /// lasgd's synchronisation, relaysum's rounds).
    fn models(&mut self, now: f64) -> anyhow::Result<Vec<Vec<f32>>>;

    /// Replaces worker `i`'s x by `x` at `now` (its momentum is kept). Only for methods without
    /// x̃.
    fn set_model(&mut self, worker: usize, x: &[f32], now: f64) -> anyhow::Result<()>;

    /// Accuracy on the dataset's test split of the workers' current x (as last mixed by
    /// `quality`), for problems that have one (the model problem); `None` otherwise.
    fn test_accuracy(&mut self) -> anyhow::Result<Option<TestAccuracy>> {
        Ok(None)
    }
}

/// Turns the two snapshots of an exchange (s_i, s_j) into what each side averages with.
pub type ExchangeCodec<'a> = dyn FnMut(&[f32], &[f32]) -> anyhow::Result<ExchangeViews> + 'a;

/// What each side of a compressed exchange averages with: its own snapshot as sent and the
/// peer's as it sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeViews {
    pub own_i: Vec<f32>,
    pub peer_i: Vec<f32>,
    pub own_j: Vec<f32>,
    pub peer_j: Vec<f32>,
}

/// Test-split accuracy of the workers' models at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestAccuracy {
    /// (1/n) Σ_i acc(x_i): each worker's own model, averaged.
    pub mean_worker: f64,
    /// acc(x̄) of the average model x̄ = (1/n) Σ_i x_i.
    pub average_model: f64,
}

/// The average model x̄ = (1/n) Σ_i x_i and the consensus distance (1/n) Σ_i ||x_i − x̄||², in f64.
/// Sums first and divides once, so identical workers give x̄ = x and a distance of exactly 0.
pub fn average_and_consensus_distance(xs: &[&[f32]]) -> (Vec<f64>, f64) {
    let n = xs.len() as f64;
    let mut mean = vec![0.0f64; xs.first().map_or(0, |x| x.len())];
    for x in xs {
        for (m, &v) in mean.iter_mut().zip(x.iter()) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let distance = xs
        .iter()
        .map(|x| {
            x.iter()
                .zip(&mean)
                .map(|(&v, m)| (f64::from(v) - m).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n;
    (mean, distance)
}

/// A differentiable objective split over n workers, evaluated on the CPU.
pub trait Objective {
    fn workers(&self) -> usize;
    fn dim(&self) -> usize;
    /// The common initial parameters of every worker.
    fn initial_params(&self) -> Vec<f32>;
    /// Writes a stochastic gradient of worker `i`'s local objective at `x` into `out`.
    fn stochastic_gradient(&self, worker: usize, x: &[f32], rng: &mut ChaCha8Rng, out: &mut [f32]);
    /// The global objective f(x) = (1/n) Σ_i f_i(x), exactly.
    fn global_loss(&self, x: &[f32]) -> f64;
    fn optimal_loss(&self) -> Option<f64> {
        None
    }
    /// (mu, L): every local function is mu-strongly convex and L-smooth, when known (DADAO's
    /// constants need them).
    fn curvature(&self) -> Option<(f64, f64)> {
        None
    }
}

/// n CPU workers optimising an `Objective` with the A²CiD² rules of `a2cid_engine::acid`.
pub struct CpuWorkers<O: Objective> {
    objective: O,
    states: Vec<State>,
    noise_rng: ChaCha8Rng,
    gradient: Vec<f32>,
    gradient_sum: Vec<f32>,
    sent_i: Vec<f32>,
    sent_j: Vec<f32>,
}

impl<O: Objective> CpuWorkers<O> {
    /// Every worker starts from `objective.initial_params()`, with x̃ = x if `with_x_tilde` (the
    /// `acid` method) and zero momentum; `params` are the update rules' constants. `noise_seed`
    /// seeds the gradient noise.
    pub fn new(objective: O, params: AcidParams, with_x_tilde: bool, noise_seed: u64) -> Self {
        let x0 = objective.initial_params();
        let dim = objective.dim();
        assert_eq!(
            x0.len(),
            dim,
            "Objective::initial_params length differs from dim()"
        );
        let state = State::new(x0, params, with_x_tilde);
        let mut noise_rng = ChaCha8Rng::seed_from_u64(noise_seed);
        noise_rng.set_stream(2);
        CpuWorkers {
            states: vec![state; objective.workers()],
            objective,
            noise_rng,
            gradient: vec![0.0; dim],
            gradient_sum: vec![0.0; dim],
            sent_i: vec![0.0; dim],
            sent_j: vec![0.0; dim],
        }
    }

    pub fn objective(&self) -> &O {
        &self.objective
    }

    /// Worker `i`'s parameters x.
    pub fn params(&self, worker: usize) -> &[f32] {
        &self.states[worker].x
    }

    /// Worker `i`'s companion x̃, if the method keeps one.
    pub fn params_tilde(&self, worker: usize) -> Option<&[f32]> {
        self.states[worker].x_tilde.as_deref()
    }
}

impl<O: Objective> Problem for CpuWorkers<O> {
    fn workers(&self) -> usize {
        self.states.len()
    }

    fn optimal_loss(&self) -> Option<f64> {
        self.objective.optimal_loss()
    }

    fn mix(&mut self, worker: usize, now: f64) -> anyhow::Result<()> {
        self.states[worker].mix_until(now);
        Ok(())
    }

    fn gradient_step(&mut self, worker: usize, now: f64, sgd: &SgdConfig) -> anyhow::Result<()> {
        // The gradient is taken at x(now), so mix first; the step then has nothing left to mix.
        let state = &mut self.states[worker];
        state.mix_until(now);
        self.objective.stochastic_gradient(
            worker,
            &state.x,
            &mut self.noise_rng,
            &mut self.gradient,
        );
        state.step(&self.gradient, now, sgd);
        Ok(())
    }

    fn pairwise_average(&mut self, (i, j): (usize, usize), now: f64) -> anyhow::Result<f64> {
        anyhow::ensure!(
            i != j,
            "pairwise_average: a worker cannot average with itself ({i})"
        );
        self.states[i].mix_until(now);
        self.states[j].mix_until(now);
        self.sent_i.copy_from_slice(&self.states[i].x);
        self.sent_j.copy_from_slice(&self.states[j].x);
        let distance = self.states[i].average(&self.sent_i, &self.sent_j, now);
        self.states[j].average(&self.sent_j, &self.sent_i, now);
        Ok(distance)
    }

    fn pairwise_average_via(
        &mut self,
        (i, j): (usize, usize),
        now: f64,
        codec: &mut ExchangeCodec<'_>,
    ) -> anyhow::Result<f64> {
        anyhow::ensure!(
            i != j,
            "pairwise_average: a worker cannot average with itself ({i})"
        );
        self.states[i].mix_until(now);
        self.states[j].mix_until(now);
        let v = codec(&self.states[i].x, &self.states[j].x)?;
        let distance = self.states[i].average(&v.own_i, &v.peer_i, now);
        self.states[j].average(&v.own_j, &v.peer_j, now);
        Ok(distance)
    }

    fn allreduce_step(&mut self, now: f64, sgd: &SgdConfig) -> anyhow::Result<()> {
        self.gradient_sum.fill(0.0);
        for (worker, state) in self.states.iter().enumerate() {
            self.objective.stochastic_gradient(
                worker,
                &state.x,
                &mut self.noise_rng,
                &mut self.gradient,
            );
            for (sum, g) in self.gradient_sum.iter_mut().zip(&self.gradient) {
                *sum += g;
            }
        }
        let scale = 1.0 / self.states.len() as f32;
        self.gradient_sum.iter_mut().for_each(|g| *g *= scale);
        for state in &mut self.states {
            state.step(&self.gradient_sum, now, sgd);
        }
        Ok(())
    }

    fn parameters(&self) -> usize {
        self.objective.dim()
    }

    fn models(&mut self, now: f64) -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(self
            .states
            .iter_mut()
            .map(|state| {
                state.mix_until(now);
                state.x.clone()
            })
            .collect())
    }

    fn set_model(&mut self, worker: usize, x: &[f32], now: f64) -> anyhow::Result<()> {
        let state = &mut self.states[worker];
        anyhow::ensure!(
            state.x_tilde.is_none() && x.len() == state.x.len(),
            "set_model: worker {worker} keeps an x̃ or the model has {} values, not {}",
            state.x.len(),
            x.len()
        );
        state.mix_until(now);
        state.x.copy_from_slice(x);
        Ok(())
    }

    fn quality(&mut self) -> anyhow::Result<Quality> {
        let n = self.states.len() as f64;
        let xs: Vec<&[f32]> = self.states.iter().map(|s| s.x.as_slice()).collect();
        let (mean, consensus_distance) = average_and_consensus_distance(&xs);
        let mean_worker_loss = self
            .states
            .iter()
            .map(|s| self.objective.global_loss(&s.x))
            .sum::<f64>()
            / n;
        let mean_f32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        Ok(Quality {
            mean_worker_loss,
            average_model_loss: self.objective.global_loss(&mean_f32),
            consensus_distance,
        })
    }
}
