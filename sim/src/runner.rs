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
//!
//! The neighbouring methods (docs/algorithm.md §9): `lasgd` runs the gradient clocks only; a
//! worker that has taken `sync_every` local steps since the last synchronisation stops and waits,
//! and when the last one arrives every model is replaced by the all-reduce average (or DiLoCo's
//! outer step from it), and the clocks restart. `relaysum` runs synchronous rounds like
//! `allreduce` (one every 1/min(speeds)): every worker takes one local step, then one relay round
//! along the spanning tree replaces each model by its relayed average. `dadao` uses the same
//! gradient and edge clocks as `acid` and `gossip`, with its own problem (`crate::dadao`).

use a2cid_engine::SgdConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;

use a2cid_schema::{Compression, Method};
use a2cid_topology::Topology;

use crate::codec::Codec;
use crate::events::{EventKind, EventQueue};
use crate::lasgd::{synchronised_model, OuterOptimizer, OuterSpec};
use crate::problem::{average_and_consensus_distance, Problem};
use crate::relaysum::Relay;

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
    /// lasgd: local steps of each worker between two synchronisations (H >= 1).
    pub sync_every: usize,
    /// lasgd: the outer optimizer applied at each synchronisation (DiLoCo), or plain averaging.
    pub outer: Option<OuterSpec>,
    /// gossip, acid: how the pairwise exchanges' snapshots travel (`crate::codec`).
    pub compress: Compression,
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
    /// lasgd: synchronisations (all-reduce averages); relaysum: relay rounds.
    pub syncs: u64,
    /// Messages each worker sent, and their bytes (f32 models; a ring all-reduce sends
    /// 2(n − 1) messages of d/n values per worker), mean over workers.
    pub messages_per_worker: f64,
    pub bytes_per_worker: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{what} must be positive and finite, got {value}")]
    NotPositive { what: &'static str, value: f64 },
    #[error("{given} speeds for {workers} workers")]
    SpeedCount { given: usize, workers: usize },
    #[error("the problem has {problem} workers but the topology has {topology}")]
    WorkerCount { problem: usize, topology: usize },
    #[error("--sync-every must be at least 1 local step")]
    ZeroSyncEvery,
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
    if config.sync_every == 0 {
        return Err(SimError::ZeroSyncEvery.into());
    }
    let edges = config.topology.edges();
    let d = problem.parameters() as f64;
    // One f32 model per message; a ring all-reduce: 2(n − 1) messages of d/n values per worker.
    let model_bytes = 4.0 * d;
    let (allreduce_messages, allreduce_bytes) = if n > 1 {
        (
            2.0 * (n - 1) as f64,
            2.0 * (n - 1) as f64 * model_bytes / n as f64,
        )
    } else {
        (0.0, 0.0)
    };
    let (mut messages, mut bytes) = (0.0f64, 0.0f64);
    if config.compress != Compression::None && !config.method.is_pairwise() {
        return Err(anyhow::anyhow!(
            "--compress {} applies to the pairwise exchanges of acid and gossip, not to {}",
            config.compress,
            config.method.name()
        ));
    }
    let mut codec = Codec::new(config.compress, problem.layout().as_ref(), config.seed)?;
    let mut relay = (config.method == Method::RelaySum)
        .then(|| Relay::new(&config.topology.spanning_tree(), problem.parameters()));
    let mut outer = match (config.method, config.outer) {
        (Method::Lasgd, Some(spec)) => {
            let x0 = problem.models(0.0)?;
            Some(OuterOptimizer::new(spec, &x0[0]))
        }
        _ => None,
    };
    // lasgd: local steps since the last synchronisation, and how many workers wait for it.
    let mut local_steps = vec![0usize; n];
    let mut waiting = 0usize;
    let mut syncs = 0u64;

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
        Method::RelaySum => queue.push(step_interval, EventKind::RelayRound),
        Method::Acid | Method::Gossip | Method::Local | Method::Lasgd | Method::Dadao => {
            for (worker, &speed) in config.speeds.iter().enumerate() {
                queue.push(wait(speed), EventKind::Gradient(worker));
            }
            // `local` and `lasgd` never average pairwise: no edge clocks.
            if config.method.is_pairwise() || config.method == Method::Dadao {
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
                if config.method != Method::Lasgd {
                    queue.push(now + wait(config.speeds[worker]), event.kind);
                    continue;
                }
                local_steps[worker] += 1;
                if local_steps[worker] < config.sync_every {
                    queue.push(now + wait(config.speeds[worker]), event.kind);
                    continue;
                }
                // This worker waits for the all-reduce; the last one to arrive triggers it.
                waiting += 1;
                if waiting < n {
                    continue;
                }
                let models = problem.models(now)?;
                let views: Vec<&[f32]> = models.iter().map(Vec::as_slice).collect();
                let (mean, _) = average_and_consensus_distance(&views);
                let synced = synchronised_model(&mean, outer.as_mut());
                for w in 0..n {
                    problem.set_model(w, &synced, now)?;
                    queue.push(now + wait(config.speeds[w]), EventKind::Gradient(w));
                }
                local_steps.fill(0);
                waiting = 0;
                syncs += 1;
                messages += allreduce_messages;
                bytes += allreduce_bytes;
            }
            EventKind::Averaging(edge) => {
                let (i, j) = edges[edge];
                let (distance, sent) = match codec.as_mut() {
                    None => (problem.pairwise_average((i, j), now)?, 2.0 * model_bytes),
                    Some(codec) => {
                        let mut sent = 0.0;
                        let distance = problem.pairwise_average_via((i, j), now, &mut |a, b| {
                            let (views, bytes) = codec.exchange((i, j), a, b)?;
                            sent = bytes;
                            Ok(views)
                        })?;
                        (distance, sent)
                    }
                };
                pair_distance_sum += distance;
                averagings += 1;
                averagings_per_worker[i] += 1;
                averagings_per_worker[j] += 1;
                messages += 2.0 / n as f64;
                bytes += sent / n as f64;
                queue.push(now + wait(config.topology.rates()[edge]), event.kind);
            }
            EventKind::AllReduce => {
                problem.allreduce_step(now, &config.sgd)?;
                gradients += n as u64;
                gradients_per_worker.iter_mut().for_each(|g| *g += 1);
                allreduce_steps += 1;
                messages += allreduce_messages;
                bytes += allreduce_bytes;
                queue.push(now + step_interval, event.kind);
            }
            EventKind::RelayRound => {
                let relay = relay.as_mut().expect("relaysum has a relay");
                for worker in 0..n {
                    problem.gradient_step(worker, now, &config.sgd)?;
                }
                let estimates = relay.round(&problem.models(now)?);
                for (worker, estimate) in estimates.iter().enumerate() {
                    problem.set_model(worker, estimate, now)?;
                    let sent = relay.messages_sent(worker) as f64;
                    messages += sent / n as f64;
                    // A relayed model travels with its count (one more 8-byte integer).
                    bytes += sent * (model_bytes + 8.0) / n as f64;
                }
                gradients += n as u64;
                gradients_per_worker.iter_mut().for_each(|g| *g += 1);
                syncs += 1;
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
        syncs,
        messages_per_worker: messages,
        bytes_per_worker: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::{CpuWorkers, Quality};
    use crate::quadratic::{Quadratic, QuadraticConfig};
    use a2cid_engine::acid::AcidParams;
    use a2cid_topology::GraphSpec;

    fn quadratic_workers(n: usize, seed: u64) -> CpuWorkers<Quadratic> {
        let config = QuadraticConfig {
            workers: n,
            dim: 8,
            condition: 10.0,
            heterogeneity: 1.0,
            noise: 1.0,
        };
        CpuWorkers::new(
            Quadratic::new(config, seed).unwrap(),
            AcidParams::GOSSIP,
            false,
            seed,
        )
    }

    fn config(method: Method, n: usize, horizon: f64) -> SimConfig {
        let spec: GraphSpec = "ring".parse().unwrap();
        SimConfig {
            method,
            topology: Topology::from_spec(&spec, n, 1.0, 0).unwrap(),
            speeds: vec![1.0; n],
            sgd: SgdConfig {
                lr: 0.05,
                momentum: 0.0,
                weight_decay: 0.0,
                nesterov: false,
            },
            horizon,
            sample_every: horizon / 50.0,
            seed: 3,
            sync_every: 5,
            outer: None,
            compress: Compression::None,
        }
    }

    /// Delegates to the quadratic workers and checks LASGD's schedule: every worker takes exactly
    /// H local steps between two synchronisations, and right after each all models are equal.
    struct SyncChecker {
        inner: CpuWorkers<Quadratic>,
        sync_every: usize,
        steps_since_sync: Vec<usize>,
        just_synced: bool,
        syncs: usize,
        differed_before_sync: bool,
    }

    impl Problem for SyncChecker {
        fn workers(&self) -> usize {
            self.inner.workers()
        }
        fn mix(&mut self, worker: usize, now: f64) -> anyhow::Result<()> {
            self.inner.mix(worker, now)
        }
        fn gradient_step(
            &mut self,
            worker: usize,
            now: f64,
            sgd: &SgdConfig,
        ) -> anyhow::Result<()> {
            if self.just_synced {
                let models = self.inner.models(now)?;
                assert!(
                    models.iter().all(|m| m == &models[0]),
                    "models differ after a sync"
                );
                self.just_synced = false;
            }
            self.steps_since_sync[worker] += 1;
            assert!(
                self.steps_since_sync[worker] <= self.sync_every,
                "a worker ran ahead"
            );
            self.inner.gradient_step(worker, now, sgd)
        }
        fn pairwise_average(&mut self, _: (usize, usize), _: f64) -> anyhow::Result<f64> {
            unreachable!("lasgd never averages pairwise")
        }
        fn allreduce_step(&mut self, _: f64, _: &SgdConfig) -> anyhow::Result<()> {
            unreachable!("lasgd never steps synchronously")
        }
        fn quality(&mut self) -> anyhow::Result<Quality> {
            self.inner.quality()
        }
        fn parameters(&self) -> usize {
            self.inner.parameters()
        }
        fn models(&mut self, now: f64) -> anyhow::Result<Vec<Vec<f32>>> {
            let models = self.inner.models(now)?;
            assert!(self.steps_since_sync.iter().all(|&s| s == self.sync_every));
            self.differed_before_sync |= models.iter().any(|m| m != &models[0]);
            Ok(models)
        }
        fn set_model(&mut self, worker: usize, x: &[f32], now: f64) -> anyhow::Result<()> {
            self.steps_since_sync[worker] = 0;
            if worker + 1 == self.workers() {
                self.just_synced = true;
                self.syncs += 1;
            }
            self.inner.set_model(worker, x, now)
        }
    }

    #[test]
    fn lasgd_synchronises_every_h_local_steps_and_models_are_equal_after_each_sync() {
        let n = 8;
        let mut problem = SyncChecker {
            inner: quadratic_workers(n, 1),
            sync_every: 5,
            steps_since_sync: vec![0; n],
            just_synced: false,
            syncs: 0,
            differed_before_sync: false,
        };
        let outcome = simulate(&mut problem, &config(Method::Lasgd, n, 200.0)).unwrap();
        assert!(problem.syncs > 10 && problem.differed_before_sync);
        assert_eq!(outcome.syncs, problem.syncs as u64);
        // The barrier: every worker computed H gradients per sync (plus the unfinished round).
        let steps: u64 = outcome.gradients_per_worker.iter().sum();
        assert!(
            steps >= (problem.syncs * 5 * n) as u64 && steps < ((problem.syncs + 1) * 5 * n) as u64
        );
        // A ring all-reduce: 2(n − 1) messages of d/n values per worker and sync.
        let expected = problem.syncs as f64 * 2.0 * 7.0 * 4.0 * 8.0 / 8.0;
        assert!((outcome.bytes_per_worker - expected).abs() < 1e-9);
        assert!(outcome.averagings_per_worker.iter().all(|&a| a == 0));
    }

    #[test]
    fn fp16_exchanges_send_half_the_bytes_on_the_same_clocks() {
        let n = 8;
        let plain_config = config(Method::Acid, n, 200.0);
        let fp16_config = SimConfig {
            compress: Compression::Fp16,
            ..plain_config.clone()
        };
        let mut plain = quadratic_workers(n, 2);
        let mut fp16 = quadratic_workers(n, 2);
        let a = simulate(&mut plain, &plain_config).unwrap();
        let b = simulate(&mut fp16, &fp16_config).unwrap();
        assert_eq!(a.averagings_per_worker, b.averagings_per_worker);
        assert!((b.bytes_per_worker - a.bytes_per_worker / 2.0).abs() < 1e-9);
        // Rounding to fp16 perturbs the run, a little.
        let (la, lb) = (
            a.samples.last().unwrap().mean_worker_loss,
            b.samples.last().unwrap().mean_worker_loss,
        );
        assert!(la != lb && (la - lb).abs() < 0.05 * la, "{la} vs {lb}");
        // lowrank:R needs weight matrices; compression needs pairwise exchanges.
        let lowrank = SimConfig {
            compress: Compression::LowRank(2),
            ..plain_config.clone()
        };
        let e = simulate(&mut quadratic_workers(n, 2), &lowrank).unwrap_err();
        assert!(e.to_string().contains("use --problem model"), "{e}");
        let lasgd = SimConfig {
            compress: Compression::Fp16,
            ..config(Method::Lasgd, n, 200.0)
        };
        let e = simulate(&mut quadratic_workers(n, 2), &lasgd).unwrap_err();
        assert!(e.to_string().contains("acid and gossip"), "{e}");
    }

    #[test]
    fn diloco_with_outer_nesterov_1_0_is_plain_lasgd() {
        let n = 8;
        let plain_config = config(Method::Lasgd, n, 300.0);
        let outer_config = SimConfig {
            outer: Some(OuterSpec {
                lr: 1.0,
                momentum: 0.0,
            }),
            ..plain_config.clone()
        };
        let mut plain = quadratic_workers(n, 2);
        let mut outer = quadratic_workers(n, 2);
        let a = simulate(&mut plain, &plain_config).unwrap();
        let b = simulate(&mut outer, &outer_config).unwrap();
        assert_eq!(a.syncs, b.syncs);
        for (x, y) in plain
            .models(300.0)
            .unwrap()
            .iter()
            .zip(outer.models(300.0).unwrap())
        {
            for (u, v) in x.iter().zip(&y) {
                assert!((u - v).abs() <= 1e-6 * u.abs().max(1.0), "{u} vs {v}");
            }
        }
        // A real outer momentum changes the trajectory.
        let mut momentum = quadratic_workers(n, 2);
        let c_config = SimConfig {
            outer: Some(OuterSpec {
                lr: 0.7,
                momentum: 0.9,
            }),
            ..plain_config
        };
        let c = simulate(&mut momentum, &c_config).unwrap();
        assert_ne!(
            c.samples.last().unwrap().mean_worker_loss,
            a.samples.last().unwrap().mean_worker_loss
        );
    }

    #[test]
    fn relaysum_rounds_step_relay_and_bring_the_workers_together() {
        let n = 16;
        let mut relay = quadratic_workers(n, 4);
        let mut local = quadratic_workers(n, 4);
        let horizon = 400.0;
        let r = simulate(&mut relay, &config(Method::RelaySum, n, horizon)).unwrap();
        let l = simulate(&mut local, &config(Method::Local, n, horizon)).unwrap();
        assert_eq!(r.syncs, 400);
        assert!(r.gradients_per_worker.iter().all(|&g| g == 400));
        // On the ring's spanning tree (a path) the two ends send 1 message a round, the others 2.
        let per_round = (2.0 * 14.0 + 2.0) / 16.0;
        assert!((r.messages_per_worker - per_round * 400.0).abs() < 1e-9);
        assert!((r.bytes_per_worker - per_round * 400.0 * (4.0 * 8.0 + 8.0)).abs() < 1e-6);
        let tail = |o: &SimOutcome| {
            o.samples[25..]
                .iter()
                .map(|s| s.consensus_distance)
                .sum::<f64>()
        };
        assert!(
            tail(&r) < 0.2 * tail(&l),
            "relaysum {} vs local {}",
            tail(&r),
            tail(&l)
        );
    }
}
