//! What the simulator simulates: the `Problem` trait (n workers' states plus the hooks the event
//! loop calls), and `CpuWorkers`, a `Problem` for any CPU `Objective` that applies the A²CiD² update
//! rules with `a2cid_engine::acid` (the one implementation of the math).
//!
//! The split: the event loop (`runner`) owns time, clocks, the method and the elapsed intervals; a
//! `Problem` owns the parameters and applies updates when told. A GPU problem (the engine's MLP
//! with all n workers' arenas on the device) implements `Problem` directly with the fused kernels
//! `mix_and_step` / `mix_and_average`, whose CPU twins are the functions used here.

use a2cid_engine::acid::{self, AcidParams, SgdParams};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Quality of the n workers' models at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// (1/n) Σ_i f(x_i): the global objective at each worker's own model, averaged.
    pub mean_worker_loss: f64,
    /// f(x̄), the global objective at the average model x̄ = (1/n) Σ_i x_i.
    pub average_model_loss: f64,
    /// (1/n) Σ_i ||x_i - x̄||².
    pub consensus_distance: f64,
}

/// n workers' states and the updates the event loop applies to them. Every hook receives the
/// interval `elapsed` since the worker's previous event (the loop keeps the clocks).
pub trait Problem {
    /// Number of workers.
    fn workers(&self) -> usize;

    /// The optimal value f* of the global objective, when known (to report excess loss).
    fn optimal_loss(&self) -> Option<f64> {
        None
    }

    /// Mixes worker `i`'s (x, x̃) over `elapsed` (a no-op for methods without x̃).
    fn mix(&mut self, worker: usize, eta: f64, elapsed: f64) -> anyhow::Result<()>;

    /// A gradient event of worker `i`: mix over `elapsed`, take a stochastic gradient at the mixed
    /// x (the continuized model: the gradient is instantaneous), then the SGD step on x and x̃.
    fn gradient_step(
        &mut self,
        worker: usize,
        eta: f64,
        elapsed: f64,
        sgd: &SgdParams,
    ) -> anyhow::Result<()>;

    /// A communication event on edge (i, j): both sides mix over their own elapsed interval, send
    /// their snapshot, and average against the SENT snapshot. Returns ||s_i - s_j||².
    fn pairwise_average(
        &mut self,
        pair: (usize, usize),
        elapsed: (f64, f64),
        params: &AcidParams,
    ) -> anyhow::Result<f64>;

    /// A synchronous all-reduce step: each worker takes a stochastic gradient at its x, and every
    /// worker steps with their average.
    fn allreduce_step(&mut self, sgd: &SgdParams) -> anyhow::Result<()>;

    /// Evaluates the workers' current x (the loop mixes everyone up to now first).
    fn metrics(&mut self) -> anyhow::Result<Metrics>;
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
}

/// One worker's state (SPEC §2).
#[derive(Debug, Clone)]
struct WorkerState {
    x: Vec<f32>,
    x_tilde: Option<Vec<f32>>,
    momentum: Vec<f32>,
}

/// n CPU workers optimising an `Objective` with the A²CiD² rules of `a2cid_engine::acid`.
pub struct CpuWorkers<O: Objective> {
    objective: O,
    states: Vec<WorkerState>,
    noise_rng: ChaCha8Rng,
    gradient: Vec<f32>,
    gradient_sum: Vec<f32>,
    sent_i: Vec<f32>,
    sent_j: Vec<f32>,
}

impl<O: Objective> CpuWorkers<O> {
    /// Every worker starts from `objective.initial_params()`, with x̃ = x if `with_x_tilde` (the
    /// `acid` method) and zero momentum. `noise_seed` seeds the gradient noise.
    pub fn new(objective: O, with_x_tilde: bool, noise_seed: u64) -> Self {
        let x0 = objective.initial_params();
        let dim = objective.dim();
        assert_eq!(
            x0.len(),
            dim,
            "Objective::initial_params length differs from dim()"
        );
        let state = WorkerState {
            x: x0.clone(),
            x_tilde: with_x_tilde.then(|| x0.clone()),
            momentum: vec![0.0; dim],
        };
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

    fn mix(&mut self, worker: usize, eta: f64, elapsed: f64) -> anyhow::Result<()> {
        let state = &mut self.states[worker];
        if let Some(x_tilde) = state.x_tilde.as_mut() {
            acid::mix(&mut state.x, x_tilde, eta, elapsed);
        }
        Ok(())
    }

    fn gradient_step(
        &mut self,
        worker: usize,
        eta: f64,
        elapsed: f64,
        sgd: &SgdParams,
    ) -> anyhow::Result<()> {
        // The gradient is taken at x(t), so mix first; the fused step then has nothing left to mix.
        self.mix(worker, eta, elapsed)?;
        let state = &mut self.states[worker];
        self.objective.stochastic_gradient(
            worker,
            &state.x,
            &mut self.noise_rng,
            &mut self.gradient,
        );
        acid::mix_and_step(
            &mut state.x,
            state.x_tilde.as_deref_mut(),
            &mut state.momentum,
            &self.gradient,
            eta,
            0.0,
            sgd,
        );
        Ok(())
    }

    fn pairwise_average(
        &mut self,
        (i, j): (usize, usize),
        (elapsed_i, elapsed_j): (f64, f64),
        params: &AcidParams,
    ) -> anyhow::Result<f64> {
        anyhow::ensure!(
            i != j,
            "pairwise_average: a worker cannot average with itself ({i})"
        );
        self.mix(i, params.eta, elapsed_i)?;
        self.mix(j, params.eta, elapsed_j)?;
        self.sent_i.copy_from_slice(&self.states[i].x);
        self.sent_j.copy_from_slice(&self.states[j].x);
        let state_i = &mut self.states[i];
        let distance = acid::mix_and_average(
            &mut state_i.x,
            state_i.x_tilde.as_deref_mut(),
            &self.sent_i,
            &self.sent_j,
            0.0,
            params,
        );
        let state_j = &mut self.states[j];
        acid::mix_and_average(
            &mut state_j.x,
            state_j.x_tilde.as_deref_mut(),
            &self.sent_j,
            &self.sent_i,
            0.0,
            params,
        );
        Ok(distance)
    }

    fn allreduce_step(&mut self, sgd: &SgdParams) -> anyhow::Result<()> {
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
            acid::mix_and_step(
                &mut state.x,
                None,
                &mut state.momentum,
                &self.gradient_sum,
                0.0,
                0.0,
                sgd,
            );
        }
        Ok(())
    }

    fn metrics(&mut self) -> anyhow::Result<Metrics> {
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
        Ok(Metrics {
            mean_worker_loss,
            average_model_loss: self.objective.global_loss(&mean_f32),
            consensus_distance,
        })
    }
}
