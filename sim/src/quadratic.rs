//! The `quadratic` problem: distributed least squares with heterogeneous data and noisy gradients.
//!
//! Worker i holds m = 2·dim samples (a, b) with a ~ N(0, D), D diagonal with eigenvalues
//! log-spaced in [1/condition, 1], and b = a·w_i + 0.1·N(0, 1), where the local optima
//! w_i = w* + heterogeneity·u_i (u_i ~ N(0, I)) differ between workers. Its local objective is
//! f_i(x) = 1/(2m) ||A_i x - b_i||², i.e. ½ xᵀH_i x - h_iᵀx + c_i with H_i = A_iᵀA_i/m, kept in
//! that precomputed form so a gradient costs dim² flops. A stochastic gradient is the exact local
//! gradient plus N(0, noise²·I) (a stand-in for minibatch noise with a controlled level). The global
//! objective f = (1/n) Σ f_i is evaluated exactly as f* + ½ (x - x*)ᵀ H (x - x*).

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::problem::Objective;

/// The knobs of the quadratic problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuadraticConfig {
    pub workers: usize,
    pub dim: usize,
    /// Ratio of the largest to the smallest eigenvalue of the data covariance D.
    pub condition: f64,
    /// Spread of the workers' local optima around the common one.
    pub heterogeneity: f64,
    /// Standard deviation of the gradient noise, per coordinate.
    pub noise: f64,
}

/// Errors in the quadratic problem's configuration.
#[derive(Debug, thiserror::Error)]
pub enum QuadraticError {
    #[error("--dim must be at least 1")]
    ZeroDim,
    #[error("--condition must be >= 1, got {0}")]
    BadCondition(f64),
    #[error(
        "--heterogeneity and --noise must be finite and >= 0, got {heterogeneity} and {noise}"
    )]
    BadScale { heterogeneity: f64, noise: f64 },
    #[error("the global Hessian is not positive definite (dim {dim} too large for the data?)")]
    Singular { dim: usize },
}

/// A distributed least-squares problem (see the module doc).
pub struct Quadratic {
    config: QuadraticConfig,
    /// Per worker: H_i (dim × dim, row-major) and h_i, in f32 for the gradient.
    local_hessians: Vec<Vec<f32>>,
    local_linear: Vec<Vec<f32>>,
    /// Global H = mean H_i (f64), the optimum x* and f*.
    hessian: DMatrix<f64>,
    optimum: DVector<f64>,
    optimal_loss: f64,
    /// The smallest and largest eigenvalues over the local Hessians H_i (mu and L).
    curvature: (f64, f64),
}

impl Quadratic {
    /// Generates the data from `seed` (identical for every method run with that seed).
    pub fn new(config: QuadraticConfig, seed: u64) -> Result<Quadratic, QuadraticError> {
        let QuadraticConfig {
            workers,
            dim,
            condition,
            heterogeneity,
            noise,
        } = config;
        if dim == 0 {
            return Err(QuadraticError::ZeroDim);
        }
        if !(condition >= 1.0 && condition.is_finite()) {
            return Err(QuadraticError::BadCondition(condition));
        }
        if !(heterogeneity >= 0.0 && heterogeneity.is_finite() && noise >= 0.0 && noise.is_finite())
        {
            return Err(QuadraticError::BadScale {
                heterogeneity,
                noise,
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(1);
        let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
        let scales: Vec<f64> = (0..dim)
            .map(|k| {
                let fraction = if dim > 1 {
                    k as f64 / (dim - 1) as f64
                } else {
                    0.0
                };
                condition.powf(-fraction).sqrt() // sqrt of the eigenvalue of D
            })
            .collect();
        let common: Vec<f64> = (0..dim).map(|_| normal()).collect();
        let samples = 2 * dim;
        let mut local_hessians = Vec::with_capacity(workers);
        let mut local_linear = Vec::with_capacity(workers);
        let mut hessian = DMatrix::<f64>::zeros(dim, dim);
        let mut linear = DVector::<f64>::zeros(dim);
        let mut constant = 0.0;
        let mut curvature = (f64::INFINITY, 0.0f64);
        for _ in 0..workers {
            let w: Vec<f64> = common
                .iter()
                .map(|c| c + heterogeneity * normal())
                .collect();
            let a = DMatrix::<f64>::from_fn(samples, dim, |_, k| scales[k] * normal());
            let b = DVector::<f64>::from_fn(samples, |r, _| {
                (0..dim).map(|k| a[(r, k)] * w[k]).sum::<f64>() + 0.1 * normal()
            });
            let h_i = a.transpose() * &a / samples as f64;
            for &lambda in nalgebra::SymmetricEigen::new(h_i.clone())
                .eigenvalues
                .iter()
            {
                curvature = (curvature.0.min(lambda), curvature.1.max(lambda));
            }
            let l_i = a.transpose() * &b / samples as f64;
            constant += b.norm_squared() / (2.0 * samples as f64) / workers as f64;
            hessian += &h_i / workers as f64;
            linear += &l_i / workers as f64;
            local_hessians.push(h_i.transpose().iter().map(|&v| v as f32).collect());
            local_linear.push(l_i.iter().map(|&v| v as f32).collect());
        }
        let optimum = hessian
            .clone()
            .cholesky()
            .ok_or(QuadraticError::Singular { dim })?
            .solve(&linear);
        let optimal_loss = constant - 0.5 * linear.dot(&optimum);
        Ok(Quadratic {
            config,
            local_hessians,
            local_linear,
            hessian,
            optimum,
            optimal_loss,
            curvature,
        })
    }

    pub fn config(&self) -> &QuadraticConfig {
        &self.config
    }
}

impl Objective for Quadratic {
    fn workers(&self) -> usize {
        self.config.workers
    }

    fn dim(&self) -> usize {
        self.config.dim
    }

    fn initial_params(&self) -> Vec<f32> {
        vec![0.0; self.config.dim]
    }

    fn stochastic_gradient(&self, worker: usize, x: &[f32], rng: &mut ChaCha8Rng, out: &mut [f32]) {
        let dim = self.config.dim;
        let hessian = &self.local_hessians[worker];
        let noise = self.config.noise as f32;
        for (k, (g, &l)) in out.iter_mut().zip(&self.local_linear[worker]).enumerate() {
            let row = &hessian[k * dim..(k + 1) * dim];
            let hx: f32 = row.iter().zip(x).map(|(h, x)| h * x).sum();
            let xi: f32 = StandardNormal.sample(rng);
            *g = hx - l + noise * xi;
        }
    }

    fn global_loss(&self, x: &[f32]) -> f64 {
        let diff = DVector::<f64>::from_iterator(
            self.config.dim,
            x.iter()
                .zip(self.optimum.iter())
                .map(|(&x, o)| f64::from(x) - o),
        );
        self.optimal_loss + 0.5 * diff.dot(&(&self.hessian * &diff))
    }

    fn optimal_loss(&self) -> Option<f64> {
        Some(self.optimal_loss)
    }

    fn curvature(&self) -> Option<(f64, f64)> {
        Some(self.curvature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Quadratic {
        let config = QuadraticConfig {
            workers: 4,
            dim: 6,
            condition: 10.0,
            heterogeneity: 1.0,
            noise: 0.0,
        };
        Quadratic::new(config, 3).unwrap()
    }

    #[test]
    fn the_average_of_local_gradients_vanishes_at_the_global_optimum() {
        let q = small();
        let x: Vec<f32> = q.optimum.iter().map(|&v| v as f32).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut sum = vec![0.0f32; 6];
        let mut g = vec![0.0f32; 6];
        let mut largest_local = 0.0f32;
        for worker in 0..4 {
            q.stochastic_gradient(worker, &x, &mut rng, &mut g);
            largest_local = g.iter().fold(largest_local, |m, v| m.max(v.abs()));
            sum.iter_mut().zip(&g).for_each(|(s, v)| *s += v / 4.0);
        }
        assert!(sum.iter().all(|v| v.abs() < 1e-4), "{sum:?}");
        assert!(
            largest_local > 0.05,
            "local optima should differ (heterogeneous data)"
        );
    }

    #[test]
    fn global_loss_is_minimal_at_the_optimum_and_exact() {
        let q = small();
        let x: Vec<f32> = q.optimum.iter().map(|&v| v as f32).collect();
        assert!((q.global_loss(&x) - q.optimal_loss).abs() < 1e-9);
        let mut y = x.clone();
        y[2] += 0.5;
        assert!(q.global_loss(&y) > q.optimal_loss + 1e-3);
        assert!(q.optimal_loss > 0.0);
    }

    #[test]
    fn the_same_seed_gives_the_same_data() {
        let a = small();
        let b = small();
        assert_eq!(a.local_hessians, b.local_hessians);
        assert_eq!(a.optimal_loss, b.optimal_loss);
    }

    #[test]
    fn bad_configurations_are_errors() {
        let base = QuadraticConfig {
            workers: 2,
            dim: 3,
            condition: 1.0,
            heterogeneity: 0.0,
            noise: 0.0,
        };
        assert!(Quadratic::new(QuadraticConfig { dim: 0, ..base }, 0).is_err());
        assert!(Quadratic::new(
            QuadraticConfig {
                condition: 0.5,
                ..base
            },
            0
        )
        .is_err());
        assert!(Quadratic::new(
            QuadraticConfig {
                noise: -1.0,
                ..base
            },
            0
        )
        .is_err());
        assert!(Quadratic::new(base, 0).is_ok());
    }
}
