//! The event loop of the simulator: n workers' exponential gradient clocks and every edge's
//! exponential averaging clock in ONE queue, exact continuized dynamics, seeded (bit-for-bit
//! reproducible). It owns time, the method, and the per-worker clock of the last event; the
//! `Problem` owns the parameters.
//!
//! Time unit: one gradient of a speed-1 worker. Worker i computes gradients at the times of a
//! Poisson process of rate `speeds[i]`; edge (i, j) fires at rate lambda_ij from the topology, so a
//! worker of a d-regular graph averages `rate_com` times per unit of time. `allreduce` instead takes
//! one synchronous step every 1/min(speeds) units (every worker computes one gradient, the step
//! waits for the slowest; the all-reduce itself is free), so at equal time it has computed as many
//! gradients per worker as a speed-1 asynchronous worker.

use a2cid_engine::SgdConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;

use a2cid_schema::Method;
use a2cid_topology::Topology;

use crate::events::{EventKind, EventQueue};
use crate::problem::Problem;

/// Everything the event loop needs besides the problem.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub method: Method,
    pub topology: Topology,
    /// Gradients per unit of time of each worker.
    pub speeds: Vec<f64>,
    pub sgd: SgdConfig,
    /// Simulated time T.
    pub horizon: f64,
    /// Metrics are recorded at 0, dt, 2 dt, ..., T.
    pub sample_every: f64,
    /// Seeds the clocks (the problem has its own seeded noise).
    pub seed: u64,
}

/// One row of the time series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub time: f64,
    pub mean_worker_loss: f64,
    pub average_model_loss: f64,
    pub consensus_distance: f64,
    /// Gradients computed by all workers so far.
    pub gradients: u64,
    /// Pairwise averagings so far (0 for allreduce).
    pub averagings: u64,
}

/// The time series and totals of one run.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    pub samples: Vec<Sample>,
    pub gradients_per_worker: Vec<u64>,
    pub averagings_per_worker: Vec<u64>,
    pub allreduce_steps: u64,
    /// Mean of ||s_i - s_j||² over all pairwise averagings (neighbour disagreement).
    pub mean_pair_distance: f64,
    pub optimal_loss: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{what} must be positive and finite, got {value}")]
    NotPositive { what: &'static str, value: f64 },
    #[error("{given} speeds for {workers} workers")]
    SpeedCount { given: usize, workers: usize },
    #[error("the problem has {problem} workers but the topology has {topology}")]
    WorkerCount { problem: usize, topology: usize },
}

/// Runs the simulation to `config.horizon` and returns the sampled series.
pub fn simulate<P: Problem + ?Sized>(
    problem: &mut P,
    config: &SimConfig,
) -> anyhow::Result<SimOutcome> {
    let n = config.topology.workers();
    for (what, value) in [
        ("--time", config.horizon),
        ("the sampling interval", config.sample_every),
    ] {
        if !(value > 0.0 && value.is_finite()) {
            return Err(SimError::NotPositive { what, value }.into());
        }
    }
    if problem.workers() != n {
        return Err(SimError::WorkerCount {
            problem: problem.workers(),
            topology: n,
        }
        .into());
    }
    if config.speeds.len() != n {
        return Err(SimError::SpeedCount {
            given: config.speeds.len(),
            workers: n,
        }
        .into());
    }
    if let Some(&bad) = config.speeds.iter().find(|s| !(**s > 0.0 && s.is_finite())) {
        return Err(SimError::NotPositive {
            what: "every speed",
            value: bad,
        }
        .into());
    }
    let edges = config.topology.edges();

    let mut clock_rng = ChaCha8Rng::seed_from_u64(config.seed);
    clock_rng.set_stream(1);
    let mut wait = |rate: f64| -> f64 {
        // Rates are validated positive above / by the topology, so Exp::new cannot fail.
        Exp::new(rate)
            .map(|exp| exp.sample(&mut clock_rng))
            .unwrap_or(f64::INFINITY)
    };
    let mut queue = EventQueue::default();
    let step_interval = 1.0 / config.speeds.iter().copied().fold(f64::INFINITY, f64::min);
    match config.method {
        Method::AllReduce => queue.push(step_interval, EventKind::AllReduce),
        Method::Acid | Method::Gossip | Method::Local => {
            for (worker, &speed) in config.speeds.iter().enumerate() {
                queue.push(wait(speed), EventKind::Gradient(worker));
            }
            // `local` never averages: no edge clocks.
            if config.method.is_pairwise() {
                for (edge, &rate) in config.topology.rates().iter().enumerate() {
                    queue.push(wait(rate), EventKind::Averaging(edge));
                }
            }
        }
    }

    let mut gradients_per_worker = vec![0u64; n];
    let mut averagings_per_worker = vec![0u64; n];
    let (mut gradients, mut averagings, mut allreduce_steps) = (0u64, 0u64, 0u64);
    let mut pair_distance_sum = 0.0f64;
    let sample_count = (config.horizon / config.sample_every).floor() as usize;
    let mut samples = Vec::with_capacity(sample_count + 1);
    let mut next_sample = 0usize;

    loop {
        let next_event = queue.peek_time().unwrap_or(f64::INFINITY);
        // Record every sample due before the next event (and before the horizon).
        while next_sample <= sample_count {
            let t = next_sample as f64 * config.sample_every;
            if t >= next_event {
                break;
            }
            for worker in 0..n {
                problem.mix(worker, t)?;
            }
            let m = problem.quality()?;
            samples.push(Sample {
                time: t,
                mean_worker_loss: m.mean_worker_loss,
                average_model_loss: m.average_model_loss,
                consensus_distance: m.consensus_distance,
                gradients,
                averagings,
            });
            next_sample += 1;
        }
        if next_event > config.horizon {
            break;
        }
        let Some(event) = queue.pop() else { break };
        let now = event.time;
        match event.kind {
            EventKind::Gradient(worker) => {
                problem.gradient_step(worker, now, &config.sgd)?;
                gradients += 1;
                gradients_per_worker[worker] += 1;
                queue.push(now + wait(config.speeds[worker]), event.kind);
            }
            EventKind::Averaging(edge) => {
                let (i, j) = edges[edge];
                let distance = problem.pairwise_average((i, j), now)?;
                pair_distance_sum += distance;
                averagings += 1;
                averagings_per_worker[i] += 1;
                averagings_per_worker[j] += 1;
                queue.push(now + wait(config.topology.rates()[edge]), event.kind);
            }
            EventKind::AllReduce => {
                problem.allreduce_step(now, &config.sgd)?;
                gradients += n as u64;
                gradients_per_worker.iter_mut().for_each(|g| *g += 1);
                allreduce_steps += 1;
                queue.push(now + step_interval, event.kind);
            }
        }
    }
    Ok(SimOutcome {
        samples,
        gradients_per_worker,
        averagings_per_worker,
        allreduce_steps,
        mean_pair_distance: if averagings > 0 {
            pair_distance_sum / averagings as f64
        } else {
            0.0
        },
        optimal_loss: problem.optimal_loss(),
    })
}
