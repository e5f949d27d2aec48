//! DADAO (Nabli & Oyallon, ICML 2023; docs/algorithm.md §9.3): a decoupled, accelerated,
//! asynchronous primal-dual method for a sum of L-smooth, mu-strongly convex local functions.
//! Gradients and gossip follow independent Poisson processes (the simulator's gradient and edge
//! clocks); between events each worker's six variables follow a linear ODE, solved exactly.
//!
//! Worker i holds (x, x̃, y, ỹ, z, z̃). With nu = mu/2 and r = sqrt(nu/L):
//!
//! ```text
//! dx = eta (x̃ − x)     dx̃ = eta (x − x̃)                 eta = r/8
//! dy = alpha (ỹ − y)   dỹ = −theta (nu x̃ + y + z)        alpha = r/4, theta = 1/(2r)
//! dz = alpha (z̃ − z)   dz̃ = alpha_tilde (z − z̃)          alpha_tilde = r/8
//! gradient at i:  g = ∇f_i(x) − nu x − ỹ;  x −= g/(4L);  x̃ −= g/(4 sqrt(L nu));  ỹ += (r/4 + 1) g
//! gossip on (i,j): w = (y_i + z_i) − (y_j + z_j);  z_i −= w/2, z̃_i −= beta_tilde w, and the
//!                  opposite at j;  beta_tilde = 2 chi_1 sqrt(L/nu)
//! ```
//!
//! chi_1 (and chi_2, for the rate condition chi_1 chi_2 <= 1/2) are the topology's constants
//! of the rate-weighted Laplacian, the same that A²CiD² uses. Everything here is f64: the
//! method's accelerated rate needs many digits of the primal-dual balance.

use nalgebra::Matrix6;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use a2cid_engine::SgdConfig;
use a2cid_topology::Topology;

use crate::problem::{average_and_consensus_distance, Objective, Problem, Quality};

/// The constants of the dynamics, from mu, L and the graph's chi_1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DadaoConstants {
    pub mu: f64,
    pub smoothness: f64,
    pub nu: f64,
    pub eta: f64,
    pub alpha: f64,
    pub alpha_tilde: f64,
    pub theta: f64,
    pub gamma: f64,
    pub gamma_tilde: f64,
    /// The step of ỹ at a gradient event (delta + delta_tilde = r/4 + 1).
    pub delta: f64,
    pub beta: f64,
    pub beta_tilde: f64,
}

impl DadaoConstants {
    /// The constants for local functions that are `mu`-strongly convex and `smoothness`-smooth on
    /// a graph whose rate-weighted Laplacian has constant `chi_1`.
    pub fn new(mu: f64, smoothness: f64, chi_1: f64) -> DadaoConstants {
        let nu = mu / 2.0;
        let r = (nu / smoothness).sqrt();
        DadaoConstants {
            mu,
            smoothness,
            nu,
            eta: r / 8.0,
            alpha: r / 4.0,
            alpha_tilde: r / 8.0,
            theta: 1.0 / (2.0 * r),
            gamma: 1.0 / (4.0 * smoothness),
            gamma_tilde: 1.0 / (4.0 * (smoothness * nu).sqrt()),
            delta: r / 4.0 + 1.0,
            beta: 0.5,
            beta_tilde: 2.0 * chi_1 / r,
        }
    }

    /// The generator of the linear ODE on (x, x̃, y, ỹ, z, z̃).
    pub fn generator(&self) -> Matrix6<f64> {
        let mut m = Matrix6::zeros();
        m[(0, 0)] = -self.eta;
        m[(0, 1)] = self.eta;
        m[(1, 0)] = self.eta;
        m[(1, 1)] = -self.eta;
        m[(2, 2)] = -self.alpha;
        m[(2, 3)] = self.alpha;
        m[(3, 1)] = -self.theta * self.nu;
        m[(3, 2)] = -self.theta;
        m[(3, 4)] = -self.theta;
        m[(4, 4)] = -self.alpha;
        m[(4, 5)] = self.alpha;
        m[(5, 4)] = self.alpha_tilde;
        m[(5, 5)] = -self.alpha_tilde;
        m
    }

    /// The rate at which the analysis contracts its Lyapunov function: of order sqrt(mu/L) per
    /// unit of time (one gradient per worker). We use the slowest timescale of the dynamics,
    /// eta = sqrt(nu/L)/8, as the predicted slope of log(excess loss).
    pub fn predicted_rate(&self) -> f64 {
        self.eta
    }
}

/// One worker's six variables, coordinate by coordinate, and the time of its last event.
#[derive(Debug, Clone)]
struct Worker {
    vars: Vec<[f64; 6]>,
    t_last: f64,
}

impl Worker {
    fn x(&self) -> Vec<f32> {
        self.vars.iter().map(|v| v[0] as f32).collect()
    }
}

/// n DADAO workers optimising an `Objective` that knows its curvature bounds.
pub struct DadaoWorkers<O: Objective> {
    objective: O,
    constants: DadaoConstants,
    generator: Matrix6<f64>,
    workers: Vec<Worker>,
    noise_rng: ChaCha8Rng,
    x32: Vec<f32>,
    gradient: Vec<f32>,
}

impl<O: Objective> DadaoWorkers<O> {
    /// Every worker starts with x = x̃ = the objective's initial parameters, the dual variables
    /// at zero. `noise_seed` seeds the gradient noise.
    pub fn new(objective: O, topology: &Topology, noise_seed: u64) -> anyhow::Result<Self> {
        let (mu, smoothness) = objective.curvature().ok_or_else(|| {
            anyhow::anyhow!(
                "--method dadao needs a problem with known mu and L (--problem quadratic)"
            )
        })?;
        anyhow::ensure!(
            mu > 0.0 && smoothness >= mu && smoothness.is_finite(),
            "--method dadao needs strongly convex local functions: mu = {mu}, L = {smoothness}"
        );
        let constants = DadaoConstants::new(mu, smoothness, topology.constants().chi_1);
        let x0 = objective.initial_params();
        let worker = Worker {
            vars: x0
                .iter()
                .map(|&x| [f64::from(x), f64::from(x), 0.0, 0.0, 0.0, 0.0])
                .collect(),
            t_last: 0.0,
        };
        let mut noise_rng = ChaCha8Rng::seed_from_u64(noise_seed);
        noise_rng.set_stream(2);
        Ok(DadaoWorkers {
            workers: vec![worker; objective.workers()],
            generator: constants.generator(),
            constants,
            noise_rng,
            x32: vec![0.0; x0.len()],
            gradient: vec![0.0; x0.len()],
            objective,
        })
    }

    pub fn constants(&self) -> &DadaoConstants {
        &self.constants
    }

    /// Solves worker i's ODE exactly from its last event up to `now`.
    fn flow(&mut self, worker: usize, now: f64) {
        let w = &mut self.workers[worker];
        let elapsed = now - w.t_last;
        if elapsed > 0.0 {
            let e = (self.generator * elapsed).exp();
            for v in &mut w.vars {
                let old = nalgebra::Vector6::from_column_slice(v);
                v.copy_from_slice((e * old).as_slice());
            }
            w.t_last = now;
        }
    }
}

impl<O: Objective> Problem for DadaoWorkers<O> {
    fn workers(&self) -> usize {
        self.workers.len()
    }

    fn optimal_loss(&self) -> Option<f64> {
        self.objective.optimal_loss()
    }

    fn mix(&mut self, worker: usize, now: f64) -> anyhow::Result<()> {
        self.flow(worker, now);
        Ok(())
    }

    /// A gradient event: flow up to now, then the jumps of x, x̃ and ỹ along
    /// g = ∇f_i(x) − nu x − ỹ (the SGD settings are not used: DADAO's steps are its constants).
    fn gradient_step(&mut self, worker: usize, now: f64, _sgd: &SgdConfig) -> anyhow::Result<()> {
        self.flow(worker, now);
        let c = self.constants;
        let w = &mut self.workers[worker];
        for (x, v) in self.x32.iter_mut().zip(&w.vars) {
            *x = v[0] as f32;
        }
        self.objective.stochastic_gradient(
            worker,
            &self.x32,
            &mut self.noise_rng,
            &mut self.gradient,
        );
        for (v, &g) in w.vars.iter_mut().zip(&self.gradient) {
            let step = f64::from(g) - c.nu * v[0] - v[3];
            v[0] -= c.gamma * step;
            v[1] -= c.gamma_tilde * step;
            v[3] += c.delta * step;
        }
        Ok(())
    }

    /// A gossip event on (i, j): both flow up to now, then exchange y + z. Returns ||x_i − x_j||².
    fn pairwise_average(&mut self, (i, j): (usize, usize), now: f64) -> anyhow::Result<f64> {
        anyhow::ensure!(
            i != j,
            "pairwise_average: a worker cannot average with itself ({i})"
        );
        self.flow(i, now);
        self.flow(j, now);
        let (beta, beta_tilde) = (self.constants.beta, self.constants.beta_tilde);
        let (lo, hi) = (i.min(j), i.max(j));
        let (head, tail) = self.workers.split_at_mut(hi);
        let (a, b) = (&mut head[lo], &mut tail[0]);
        let mut distance = 0.0;
        for (u, v) in a.vars.iter_mut().zip(&mut b.vars) {
            let w = (u[2] + u[4]) - (v[2] + v[4]);
            u[4] -= beta * w;
            u[5] -= beta_tilde * w;
            v[4] += beta * w;
            v[5] += beta_tilde * w;
            distance += (u[0] - v[0]).powi(2);
        }
        Ok(distance)
    }

    fn allreduce_step(&mut self, _: f64, _: &SgdConfig) -> anyhow::Result<()> {
        anyhow::bail!("dadao has no synchronous step")
    }

    fn quality(&mut self) -> anyhow::Result<Quality> {
        let xs: Vec<Vec<f32>> = self.workers.iter().map(Worker::x).collect();
        let views: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let (mean, consensus_distance) = average_and_consensus_distance(&views);
        let n = xs.len() as f64;
        let mean_worker_loss = xs
            .iter()
            .map(|x| self.objective.global_loss(x))
            .sum::<f64>()
            / n;
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        Ok(Quality {
            mean_worker_loss,
            average_model_loss: self.objective.global_loss(&mean32),
            consensus_distance,
        })
    }

    fn parameters(&self) -> usize {
        self.objective.dim()
    }

    fn models(&mut self, now: f64) -> anyhow::Result<Vec<Vec<f32>>> {
        for worker in 0..self.workers.len() {
            self.flow(worker, now);
        }
        Ok(self.workers.iter().map(Worker::x).collect())
    }

    fn set_model(&mut self, _: usize, _: &[f32], _: f64) -> anyhow::Result<()> {
        anyhow::bail!("dadao's models are not replaced from outside (it has no synchronisation)")
    }
}

/// The DADAO workers of `objective` on `topology`, boxed for the simulator.
pub fn workers<O: Objective + 'static>(
    objective: O,
    topology: &Topology,
    noise_seed: u64,
) -> anyhow::Result<Box<dyn Problem>> {
    Ok(Box::new(DadaoWorkers::new(
        objective, topology, noise_seed,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quadratic::{Quadratic, QuadraticConfig};
    use crate::runner::{simulate, SimConfig};
    use a2cid_schema::Method;
    use a2cid_topology::GraphSpec;

    /// Least-squares slope of log(excess loss) against time over the samples in [from, to].
    fn log_slope(samples: &[crate::Sample], optimum: f64, from: f64, to: f64) -> f64 {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.time >= from && s.time <= to)
            .map(|s| (s.time, (s.mean_worker_loss - optimum).ln()))
            .collect();
        let k = points.len() as f64;
        let (mt, ml) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), (t, l)| (a + t / k, b + l / k));
        let cov: f64 = points.iter().map(|(t, l)| (t - mt) * (l - ml)).sum();
        let var: f64 = points.iter().map(|(t, _)| (t - mt).powi(2)).sum();
        cov / var
    }

    fn run(rate_com: f64, condition: f64, horizon: f64) -> (DadaoConstants, crate::SimOutcome) {
        let n = 16;
        let spec: GraphSpec = "ring".parse().unwrap();
        let topology = Topology::from_spec(&spec, n, rate_com, 0).unwrap();
        let quadratic = Quadratic::new(
            QuadraticConfig {
                workers: n,
                dim: 16,
                condition,
                heterogeneity: 1.0,
                noise: 0.0,
            },
            0,
        )
        .unwrap();
        let mut problem = DadaoWorkers::new(quadratic, &topology, 0).unwrap();
        let constants = *problem.constants();
        let config = SimConfig {
            method: Method::Dadao,
            topology,
            speeds: vec![1.0; n],
            sgd: SgdConfig {
                lr: 0.05,
                momentum: 0.0,
                weight_decay: 0.0,
                nesterov: false,
            },
            horizon,
            sample_every: horizon / 100.0,
            seed: 0,
            sync_every: 1,
            outer: None,
            compress: a2cid_schema::Compression::None,
        };
        (constants, simulate(&mut problem, &config).unwrap())
    }

    #[test]
    fn converges_linearly_at_the_rate_its_constants_predict() {
        // Ring n = 16: chi_1 chi_2 = 12.3 / rate_com², so rate_com 5 meets DADAO's condition
        // chi_1 chi_2 <= 1/2. Exact gradients: the excess loss falls linearly in log scale, at a
        // slope set by the gradients (sqrt(mu/L)), not by the communication rate.
        let (c, outcome) = run(5.0, 10.0, 1000.0);
        let optimum = outcome.optimal_loss.unwrap();
        let slope = log_slope(&outcome.samples, optimum, 100.0, 800.0);
        let predicted = c.predicted_rate();
        eprintln!(
            "mu {:.4} L {:.4} predicted -{predicted:.5} measured {slope:.5} ratio {:.2}",
            c.mu,
            c.smoothness,
            -slope / predicted
        );
        assert!(
            -slope > predicted && -slope < 8.0 * predicted,
            "slope {slope} vs predicted -{predicted}"
        );
        let last = outcome.samples.last().unwrap();
        assert!(last.mean_worker_loss - optimum < 1e-6 && last.consensus_distance < 1e-6);
        // Faster communication does not change the gradient-limited rate much.
        let (_, faster) = run(10.0, 10.0, 1000.0);
        let faster_slope = log_slope(&faster.samples, optimum, 100.0, 800.0);
        assert!(
            (faster_slope / slope - 1.0).abs() < 0.25,
            "{faster_slope} vs {slope}"
        );
        // Accelerated: a 4x worse conditioning slows it by about sqrt, not 4x.
        let (c4, harder) = run(5.0, 40.0, 3000.0);
        let harder_slope = log_slope(&harder.samples, harder.optimal_loss.unwrap(), 300.0, 2400.0);
        let ratio4 = -harder_slope / c4.predicted_rate();
        eprintln!(
            "condition 40: mu {:.5} L {:.4} predicted -{:.5} measured {harder_slope:.5} ratio {ratio4:.2}",
            c4.mu,
            c4.smoothness,
            c4.predicted_rate()
        );
        assert!(ratio4 > 1.0 && ratio4 < 8.0, "{ratio4}");
    }
}
