//! One worker process: the engine (GPU) and the mesh (tokio, TCP) joined.
//!
//! `acid` / `gossip`: the compute loop runs gradient steps back to back on the GPU; the mesh's tasks
//! run beside it on a small tokio runtime and the loop only polls them between steps
//! (`try_next_event`), so it never waits for the network. At an agreed exchange the worker mixes up
//! to now into a snapshot buffer (one fused kernel), reads the snapshot back and hands it to the
//! mesh; when the peer's snapshot has arrived it is uploaded and `mix_and_average` applies the
//! update against the snapshot that was sent. The stall is those copies and kernels, nothing else.
//!
//! `allreduce`: synchronous data-parallel SGD, the gradient averaged by the mesh's ring all-reduce
//! every step (with one extra float: a stop vote, so every rank stops at the same step).
use std::io::Write;
use std::time::{Duration, Instant};

use a2cid_engine::models::Model;
use a2cid_net::{Fingerprint, Mesh, MeshConfig, MeshEvent, Rendezvous, Secret};
use a2cid_schema::{
    write_atomic, write_json_atomic, At, AverageResult, Method, MetricEvent, MetricsLog, Progress,
    RunConfig, RunDir, StopReason, WorkerResult,
};
use anyhow::{bail, Context};
use tracing::{info, warn};

use crate::checkpoint::{Checkpoint, CheckpointState};
use crate::clock::{meta_len, GlobalCounts, StepClock, StopRule};
use crate::learner::{DataPlan, Learner};

/// The run's id: a hash of its run directory, so workers of another run are refused (a worker of
/// this run with another model is refused by the model fingerprint, with a message saying so).
pub fn run_id(cfg: &RunConfig) -> anyhow::Result<String> {
    let text = cfg
        .out
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut h = fnv::FnvHasher::default();
    std::hash::Hasher::write(&mut h, text.as_bytes());
    Ok(format!("a2cid-{:016x}", std::hash::Hasher::finish(&h)))
}

/// The mesh fingerprint: the model's architecture and the method (acid and gossip workers must
/// not mix); the snapshot carries the parameters plus the gradient-count view.
pub fn fingerprint(model: &dyn Model, method: Method, world: usize) -> Fingerprint {
    Fingerprint::new(
        (model.parameters() + meta_len(world)) as u64,
        &format!("{} method {}", model.fingerprint(), method.name()),
    )
}

/// Where a worker stands in the run: its rank, the run's size and how to find the others.
#[derive(Clone, Debug)]
pub struct Placement {
    pub rank: usize,
    pub world: usize,
    pub rendezvous: Rendezvous,
}

impl Placement {
    /// From explicit values (`--peers` wins over `--master`), else from SLURM's environment.
    /// `default_world` is the configuration's worker count, used with `master` when `world` is
    /// not given.
    pub fn resolve(
        rank: Option<usize>,
        world: Option<usize>,
        master: Option<&str>,
        peers: Option<&[String]>,
        default_world: usize,
    ) -> anyhow::Result<Placement> {
        let place = if let Some(peers) = peers {
            Placement {
                rank: rank.context("--peers needs --rank")?,
                world: peers.len(),
                rendezvous: Rendezvous::Explicit(peers.to_vec()),
            }
        } else if let Some(master) = master {
            Placement {
                rank: rank.context("--master needs --rank")?,
                world: world.unwrap_or(default_world),
                rendezvous: Rendezvous::Rank0 {
                    addr: master.to_string(),
                },
            }
        } else if std::env::var_os("SLURM_PROCID").is_some() {
            let s = a2cid_net::slurm_from_env(|k| std::env::var(k).ok())?;
            Placement {
                rank: rank.unwrap_or(s.rank),
                world: world.unwrap_or(s.world),
                rendezvous: s.rendezvous,
            }
        } else {
            bail!(
                "a2cid worker does not know where the other workers are: give --rank R --world N \
                 --master HOST:PORT (or --peers), or run it under SLURM (srun), which sets \
                 SLURM_PROCID and friends"
            )
        };
        if place.world < 2 {
            bail!(
                "a worker needs at least 2 workers in the run (got {}); use `a2cid run --workers 1` \
                 for one",
                place.world
            );
        }
        if place.rank >= place.world {
            bail!(
                "--rank {} is outside a run of {} workers",
                place.rank,
                place.world
            );
        }
        Ok(place)
    }
}

/// How a worker process runs, besides the run's configuration.
#[derive(Debug)]
pub struct WorkerOptions {
    /// The cluster secret every worker of the run shares.
    pub secret: Secret,
    /// Longest wait for the other workers to join.
    pub connect_timeout: Duration,
    /// Print machine-readable progress lines on stdout (for the local launcher).
    pub progress_lines: bool,
    /// Continue from the run directory's checkpoints.
    pub resume: bool,
}

/// `a2cid worker`: one worker of a multi-worker run, for cluster launchers (SLURM's `srun`) and for
/// `a2cid run`, which starts N of them.
pub fn run_worker(
    mut cfg: RunConfig,
    place: Placement,
    options: WorkerOptions,
) -> anyhow::Result<()> {
    cfg.workers = place.world;
    cfg.validate()?;
    let run = RunDir::new(cfg.out.clone().context(
        "a2cid worker needs the run directory: --out DIR (shared by all workers) or --resume DIR",
    )?);
    let resume = options.resume;
    std::fs::create_dir_all(run.workers())
        .with_context(|| format!("creating {}", run.workers().display()))?;
    if place.rank == 0 && !resume {
        write_atomic(&run.config(), toml::to_string_pretty(&cfg)?.as_bytes())?;
    }
    std::fs::write(run.pid(place.rank), std::process::id().to_string())?;
    let secret = options.secret;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("a2cid-mesh")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let _runtime = rt.enter(); // the mesh spawns tasks from plain (non-async) calls too
    let mut w = Worker::new(&cfg, &place, &run, resume, options.progress_lines)?;
    let mut mc = MeshConfig::new(
        place.rank,
        place.world,
        place.rendezvous,
        w.edges.clone(),
        run_id(&cfg)?,
        fingerprint(w.learner.model.as_ref(), cfg.method, place.world),
        secret,
    );
    mc.seed = cfg.seed ^ 0x5eed_0000 ^ w.generation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mc.clock_start = w.clock.tau(0.0);
    mc.connect_timeout = options.connect_timeout.max(Duration::from_secs(1));
    let mut mesh = rt
        .block_on(Mesh::connect(mc))
        .context("joining the other workers (the mesh)")?;
    mesh.shutdown_on_ctrl_c();
    info!(
        "rank {}/{}: joined the mesh; neighbours {:?}",
        place.rank,
        place.world,
        mesh.neighbours()
    );
    let outcome = match cfg.method {
        Method::AllReduce => w.train_allreduce(&rt, &mut mesh),
        Method::Acid | Method::Gossip => w.train_async(&rt, &mut mesh),
    };
    let outcome = outcome.and_then(|reason| w.finish(&rt, &mut mesh, reason));
    let reason = match &outcome {
        Ok(()) => "training finished".to_string(),
        Err(e) => format!("rank {} failed: {e:#}", place.rank),
    };
    let _ = rt.block_on(mesh.shutdown(&reason));
    outcome
}

/// The state of one worker process.
struct Worker {
    cfg: RunConfig,
    rank: usize,
    world: usize,
    run: RunDir,
    progress_lines: bool,
    learner: Learner,
    /// Parameters in the model (the snapshot sent to peers carries `meta_len(world)` more floats).
    d: usize,
    edges: Vec<(usize, usize, f64)>,
    metrics: MetricsLog,
    clock: StepClock,
    counts: GlobalCounts,
    stop: StopRule,
    // counters
    grads: u64,
    comms: u64,
    failed: u64,
    position: (usize, usize),
    wall0: f64,
    start: Instant,
    /// Seconds spent evaluating, over all sessions / in this process (off the clock).
    eval_seconds: f64,
    paused: f64,
    /// (grads, averagings, test loss, test accuracy) of the last evaluation.
    last_eval: Option<(u64, u64, f64, f64)>,
    generation: u64,
    resumed: bool,
    in_flight: Option<u64>,
    lost: Vec<usize>,
    interrupted: bool,
    last_loss: f64,
    last_progress: Instant,
    last_checkpoint: u64,
}

impl Worker {
    fn new(
        cfg: &RunConfig,
        place: &Placement,
        run: &RunDir,
        resume: bool,
        progress_lines: bool,
    ) -> anyhow::Result<Worker> {
        let (rank, world) = (place.rank, place.world);
        let topology = cfg.topology()?;
        let edges: Vec<(usize, usize, f64)> = topology
            .edges()
            .iter()
            .zip(topology.rates())
            .map(|(&(i, j), &r)| (i, j, r))
            .collect();
        let ckpt = if resume {
            Some(Checkpoint::load(&run.checkpoint(rank))?)
        } else {
            None
        };
        let position = ckpt
            .as_ref()
            .map(|c| (c.state.epoch, c.state.batch))
            .unwrap_or((0, 0));
        let plan = DataPlan {
            rank,
            world,
            shuffle_seed: cfg.seed ^ (rank as u64).wrapping_mul(0x9e37_79b9),
            epochs: None,
            position,
        };
        let mut learner = Learner::new(
            cfg,
            cfg.method.acid_params(&topology),
            cfg.method.uses_x_tilde(),
            plan,
        )?;
        let d = learner.model.parameters();
        if let Some(c) = &ckpt {
            c.check_matches(
                rank,
                world,
                cfg.method.name(),
                learner.model.layout().fingerprint(),
            )?;
            learner.state.load(
                &c.x,
                c.x_tilde.as_deref(),
                Some(&c.momentum),
                c.state.t_last,
            )?;
        }
        let batches_per_epoch = match cfg.method {
            // Synchronous: every rank must count the same steps per epoch.
            Method::AllReduce => learner
                .dataset
                .train
                .len()
                .div_ceil(world)
                .div_ceil(cfg.batch_size),
            _ => learner.batches_per_epoch(),
        };
        let stop = StopRule {
            grad_budget: cfg.grad_budget,
            epoch_steps: (cfg.epochs > 0).then(|| (batches_per_epoch * cfg.epochs) as u64),
            max_seconds: cfg.max_seconds,
        };
        let mut metrics = MetricsLog::open(&run.metrics(rank), resume)?;
        if let Some(c) = &ckpt {
            metrics.record(&MetricEvent::Resume {
                at: At {
                    rank,
                    wall: c.state.wall,
                    train_wall: c.state.wall - c.state.eval_seconds,
                    tau: Some(c.state.tau),
                    step: c.state.grads,
                },
                epoch: c.state.epoch,
                batch: c.state.batch,
            })?;
        }
        let (clock, counts, grads, comms, wall0, generation, last_loss) = match &ckpt {
            Some(c) => {
                let s = &c.state;
                (
                    StepClock::resumed(0.05, s.tau, s.step_seconds, 0.0),
                    GlobalCounts::from_counts(rank, s.counts.clone()),
                    s.grads,
                    s.comms,
                    s.wall,
                    s.generation + 1,
                    s.final_train_loss,
                )
            }
            None => (
                StepClock::new(0.05),
                GlobalCounts::new(rank, world),
                0,
                0,
                0.0,
                0,
                f64::NAN,
            ),
        };
        if let Some(c) = &ckpt {
            info!(
                "rank {rank}: resuming from {} (step {}, epoch {}, tau {:.1})",
                run.checkpoint(rank).display(),
                c.state.grads,
                c.state.epoch,
                c.state.tau
            );
        }
        Ok(Worker {
            cfg: cfg.clone(),
            rank,
            world,
            run: run.clone(),
            progress_lines,
            learner,
            d,
            edges,
            metrics,
            clock,
            counts,
            stop,
            grads,
            comms,
            failed: 0,
            position,
            wall0,
            start: Instant::now(),
            eval_seconds: ckpt.as_ref().map_or(0.0, |c| c.state.eval_seconds),
            paused: 0.0,
            last_eval: None,
            generation,
            resumed: resume,
            in_flight: None,
            lost: Vec::new(),
            interrupted: false,
            last_loss,
            last_progress: Instant::now(),
            last_checkpoint: grads,
        })
    }

    /// Where and when an event of this worker happens: now.
    fn at(&mut self) -> At {
        At {
            rank: self.rank,
            wall: self.wall(),
            train_wall: self.train_wall(),
            tau: Some(self.clock.tau(self.clock_seconds())),
            step: self.grads,
        }
    }

    fn wall(&self) -> f64 {
        self.wall0 + self.start.elapsed().as_secs_f64()
    }

    /// Wall seconds spent training (evaluation pauses excluded): what the stop rule, the
    /// learning-rate schedule and the plots against time use.
    fn train_wall(&self) -> f64 {
        self.wall() - self.eval_seconds
    }

    /// Seconds on this process's clock: training time since this process started.
    fn clock_seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64() - self.paused
    }

    /// The worker clock now.
    fn tau(&mut self) -> f64 {
        self.clock.tau(self.clock_seconds())
    }

    fn lr(&self) -> f32 {
        const SCALE: usize = 1_000_000;
        let p = self
            .stop
            .progress(self.grads, self.global_grads(), self.train_wall());
        let warmup = match self.stop.expected_steps(self.world) {
            Some(total) if total > 0 => self.cfg.warmup_steps * SCALE / total as usize,
            _ => 0,
        };
        self.cfg
            .schedule
            .lr(self.cfg.lr, (p * SCALE as f64) as usize, SCALE, warmup)
    }

    fn global_grads(&self) -> u64 {
        match self.cfg.method {
            Method::AllReduce => self.grads * self.world as u64,
            _ => self.counts.total(),
        }
    }

    /// Forward, backward and the (mixing +) SGD step for one batch. With `average_grads`, the
    /// gradient is first replaced by the all-reduced one.
    fn gradient_step(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
        allreduce: bool,
        stop_vote: bool,
    ) -> anyhow::Result<bool> {
        let batch = self
            .learner
            .next_batch()
            .context("the batch loader stopped")?;
        let lr = self.lr();
        let t0 = Instant::now();
        let stepped = if allreduce {
            let stepped = self.learner.gradient(&batch)?;
            let mut g: Vec<f32> = self.learner.model.grads()?;
            g.push(if stop_vote { 1.0 } else { 0.0 });
            rt.block_on(mesh.allreduce_mean(&mut g)).map_err(|e| {
                anyhow::anyhow!(
                    "the gradient all-reduce failed: {e}. `allreduce` is synchronous and cannot \
                     go on without every worker (acid and gossip runs survive a lost worker)"
                )
            })?;
            if g[self.d] > 0.0 {
                return Ok(false); // some rank stopped: everyone stops at this same step
            }
            self.learner
                .ctx
                .write(self.learner.model.grads_buffer(), 0, &g[..self.d]);
            self.comms += 1;
            let tau = self.tau();
            self.learner.apply_gradient(lr, tau);
            stepped
        } else {
            let tau = self.tau();
            self.learner.step(&batch, lr, tau)?
        };
        self.learner.ctx.sync()?;
        let now = self.clock_seconds();
        self.clock.record_step(t0.elapsed().as_secs_f64(), now);
        self.grads += 1;
        self.counts.set_own(self.grads);
        self.position = stepped.next_position();
        if self.grads % self.cfg.log_every as u64 == 0 {
            self.log_train(lr, Some(mesh))?;
        }
        if self.cfg.eval_every > 0 && self.grads % self.cfg.eval_every as u64 == 0 {
            if self.learner.window_rows() > 0 {
                self.log_train(lr, Some(mesh))?; // evaluation resets the loss accumulators
            }
            self.evaluate_own(mesh)?;
        }
        self.maybe_progress(false);
        if self.cfg.checkpoint_every > 0
            && self.grads - self.last_checkpoint >= self.cfg.checkpoint_every as u64
        {
            self.checkpoint(false)?;
        }
        Ok(true)
    }

    fn log_train(&mut self, lr: f32, mesh: Option<&Mesh>) -> anyhow::Result<()> {
        let window = self.learner.take_window()?;
        self.last_loss = window.loss();
        let (missed, sent, recv) = match mesh {
            Some(m) => {
                let st = m.stats();
                (
                    st.edges.values().map(|c| c.missed()).sum::<u64>(),
                    st.bytes_sent,
                    st.bytes_received,
                )
            }
            None => (0, 0, 0),
        };
        let event = MetricEvent::Train {
            at: self.at(),
            epoch: self.position.0,
            train_loss: self.last_loss,
            train_accuracy: window.accuracy(),
            lr,
            averagings: self.comms,
            missed,
            failed: self.failed,
            bytes_sent: sent,
            bytes_received: recv,
            global_grads: self.global_grads(),
            step_seconds: self.clock.step_seconds(),
        };
        self.metrics.record(&event)?;
        self.metrics.flush()?; // a killed worker loses at most one logging window
        Ok(())
    }

    /// The worker's own model on the test set, off the clock: the time it takes is neither on tau
    /// (no mixing, no Poisson events accrue) nor in the training wall time.
    /// Pairing pauses meanwhile, so no peer waits on this worker's snapshot.
    fn evaluate_own(&mut self, mesh: &Mesh) -> anyhow::Result<(f64, f64)> {
        let t0 = Instant::now();
        mesh.pause(true);
        let evaluated = self.learner.evaluate_test();
        mesh.pause(false);
        let (test_loss, test_accuracy) = evaluated?;
        let dt = t0.elapsed().as_secs_f64();
        self.paused += dt;
        self.eval_seconds += dt;
        let event = MetricEvent::Eval {
            at: self.at(),
            epoch: None,
            test_loss,
            test_accuracy,
            averagings: self.comms,
            global_grads: self.global_grads(),
            seconds: dt,
        };
        self.metrics.record(&event)?;
        self.metrics.flush()?;
        self.last_eval = Some((self.grads, self.comms, test_loss, test_accuracy));
        Ok((test_loss, test_accuracy))
    }

    fn maybe_progress(&mut self, done: bool) {
        if !self.progress_lines
            || (!done && self.last_progress.elapsed() < Duration::from_millis(300))
        {
            return;
        }
        self.last_progress = Instant::now();
        let p = Progress {
            rank: self.rank,
            grads: self.grads,
            target: self.stop.expected_steps(self.world),
            loss: self.last_loss,
            comms: self.comms,
            wall: self.wall(),
            done,
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{}{}",
            Progress::PREFIX,
            serde_json::to_string(&p).unwrap_or_default()
        );
        let _ = out.flush();
    }

    fn checkpoint(&mut self, finished: bool) -> anyhow::Result<()> {
        let a2cid_engine::train_state::StateVectors {
            x,
            x_tilde,
            momentum,
        } = self.learner.state.read()?;
        let tau = self.tau();
        let c = Checkpoint {
            state: CheckpointState {
                rank: self.rank,
                world: self.world,
                method: self.cfg.method.name().to_string(),
                fingerprint: self.learner.model.layout().fingerprint(),
                parameters: self.d,
                grads: self.grads,
                comms: self.comms,
                missed: 0,
                epoch: self.position.0,
                batch: self.position.1,
                seed: self.cfg.seed,
                tau,
                t_last: self.learner.state.t_last(),
                step_seconds: self.clock.step_seconds(),
                wall: self.wall(),
                counts: self.counts.counts().to_vec(),
                generation: self.generation,
                final_train_loss: self.last_loss,
                finished,
                eval_seconds: self.eval_seconds,
            },
            x,
            x_tilde,
            momentum,
        };
        c.save(&self.run.checkpoint(self.rank))?;
        self.last_checkpoint = self.grads;
        Ok(())
    }

    fn check_stop(&self) -> Option<StopReason> {
        if self.interrupted {
            return Some(StopReason::Interrupted);
        }
        self.stop
            .check(self.grads, self.global_grads(), self.train_wall())
    }

    /// A fresh run starts every worker from rank 0's parameters (x̃ = x); a resumed one from its
    /// checkpoint.
    fn start_identical(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
    ) -> anyhow::Result<()> {
        if self.resumed {
            return Ok(());
        }
        let mut x: Vec<f32> = self.learner.model.params()?;
        rt.block_on(mesh.broadcast(0, &mut x))
            .context("broadcasting the initial parameters")?;
        self.learner.state.load(&x, None, None, 0.0)?;
        Ok(())
    }

    fn train_allreduce(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
    ) -> anyhow::Result<StopReason> {
        self.start_identical(rt, mesh)?;
        loop {
            while let Some(ev) = mesh.try_next_event() {
                if matches!(ev, MeshEvent::ShutdownRequested) {
                    self.interrupted = true;
                }
            }
            let vote = self.check_stop();
            if !self.gradient_step(rt, mesh, true, vote.is_some())? {
                // Every rank stops at this same step; one that did not vote itself stops for
                // another rank's reason (all share the budget and epochs: its clock ran out).
                return Ok(vote.unwrap_or(StopReason::MaxSeconds));
            }
        }
    }

    fn train_async(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
    ) -> anyhow::Result<StopReason> {
        self.start_identical(rt, mesh)?;
        loop {
            if let Some(reason) = self.check_stop() {
                return Ok(reason);
            }
            self.gradient_step(rt, mesh, false, false)?;
            let tau = self.tau();
            mesh.advance_clock(tau);
            while let Some(ev) = mesh.try_next_event() {
                self.on_event(ev, mesh)?;
            }
        }
    }

    fn on_event(&mut self, ev: MeshEvent, mesh: &Mesh) -> anyhow::Result<()> {
        match ev {
            MeshEvent::Exchange(req) => {
                let tau = self.tau();
                self.learner
                    .state
                    .submit(|state, pass| state.record_snapshot(pass, tau));
                let mut buf: Vec<f32> = self.learner.state.read_snapshot()?;
                self.counts.encode_into(&mut buf);
                self.in_flight = Some(req.seq);
                if let Err(e) = req.supply(buf) {
                    self.in_flight = None;
                    warn!("rank {}: could not supply a snapshot: {e}", self.rank);
                }
            }
            MeshEvent::Exchanged(x) => {
                self.counts
                    .merge(&GlobalCounts::decode(&x.theirs[self.d..]));
                self.learner.state.write_received(&x.theirs[..self.d]);
                let tau = self.tau();
                self.learner
                    .state
                    .submit(|state, pass| state.record_average(pass, tau));
                let dist2 = self.learner.state.read_distance()?;
                self.comms += 1;
                self.in_flight = None;
                let event = MetricEvent::Exchange {
                    at: At {
                        tau: Some(tau),
                        ..self.at()
                    },
                    peer: x.peer,
                    dist2,
                    bytes_sent: x.stats.bytes_sent,
                    bytes_received: x.stats.bytes_received,
                    seconds: x.stats.total.as_secs_f64(),
                    initiator: x.stats.initiator,
                    missed_before: x.stats.missed_since_previous,
                };
                self.metrics.record(&event)?;
                mesh.recycle(x.theirs);
                mesh.recycle(x.mine);
            }
            MeshEvent::ExchangeFailed { peer, seq, why } => {
                if self.in_flight == Some(seq) {
                    self.in_flight = None;
                }
                self.failed += 1;
                tracing::debug!(
                    "rank {}: exchange {seq} with {peer} failed: {why}",
                    self.rank
                );
            }
            MeshEvent::PeerLost {
                peer,
                why,
                graceful,
            } => {
                if !graceful {
                    warn!(
                        "rank {}: lost neighbour {peer} ({why}); training goes on without it",
                        self.rank
                    );
                    self.lost.push(peer);
                }
                let event = MetricEvent::PeerLost {
                    at: self.at(),
                    peer,
                    why,
                    graceful,
                };
                self.metrics.record(&event)?;
            }
            MeshEvent::GraphSplit { components } => {
                warn!(
                    "rank {}: the live graph fell apart into {components:?}: the parts train \
                     apart until the end",
                    self.rank
                );
            }
            MeshEvent::ShutdownRequested => self.interrupted = true,
        }
        Ok(())
    }

    /// Retire from pairing, finish the exchange in flight, checkpoint, evaluate, average.
    fn finish(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
        reason: StopReason,
    ) -> anyhow::Result<()> {
        info!(
            "rank {}: stopping after {} gradients: {reason}",
            self.rank, self.grads
        );
        if self.cfg.method != Method::AllReduce {
            mesh.retire();
            // An exchange agreed just before retiring still completes: apply it (the peer
            // applies its half), so the pair's sum stays conserved.
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match rt.block_on(tokio::time::timeout(
                    Duration::from_millis(300),
                    mesh.next_event(),
                )) {
                    Ok(Some(ev)) => self.on_event(ev, mesh)?,
                    Ok(None) => break,
                    Err(_) if self.in_flight.is_none() => break,
                    Err(_) => {}
                }
            }
        }
        let lr = self.lr();
        if self.learner.window_rows() > 0 {
            self.log_train(lr, Some(mesh))?;
        }
        self.checkpoint(true)?;
        let (test_loss, test_accuracy) = match self.last_eval {
            // Evaluated at this very step and no averaging since: the same parameters.
            Some((g, c, loss, acc)) if (g, c) == (self.grads, self.comms) => (loss, acc),
            _ => self.evaluate_own(mesh)?,
        };
        let stats = mesh.stats();
        let result = WorkerResult {
            rank: self.rank,
            grads: self.grads,
            comms: self.comms,
            missed: stats.edges.values().map(|c| c.missed()).sum(),
            failed_exchanges: self.failed,
            final_train_loss: self.last_loss,
            test_accuracy,
            test_loss,
            wall_seconds: self.wall(),
            stop_reason: reason,
            lost_peers: self.lost.clone(),
            bytes_sent: stats.bytes_sent,
            bytes_received: stats.bytes_received,
            step_seconds: self.clock.step_seconds(),
            known_total_grads: self.global_grads(),
            adapter: self.learner.ctx.adapter.name.clone(),
            eval_seconds: self.eval_seconds,
        };
        let event = MetricEvent::End {
            at: self.at(),
            averagings: self.comms,
            test_loss,
            test_accuracy,
            stop_reason: reason,
        };
        self.metrics.record(&event)?;
        self.metrics.flush()?;
        self.maybe_progress(true);
        // The final average over the workers: every one of them must be alive for the ring
        // all-reduce; if one was lost, the launcher averages the survivors' final checkpoints.
        let mut x = self.learner.model.params()?;
        match rt.block_on(mesh.allreduce_mean(&mut x)) {
            Ok(_) => {
                if self.rank == 0 {
                    let (loss, acc) = self.learner.evaluate_params(&x)?;
                    let avg = AverageResult {
                        test_accuracy: acc,
                        test_loss: loss,
                        workers: self.world,
                        via: "all-reduce".into(),
                    };
                    write_json_atomic(&self.run.average(), &avg)?;
                }
            }
            Err(e) => warn!(
                "rank {}: the final all-reduce failed ({e}); the average will be taken over the \
                 survivors' final checkpoints",
                self.rank
            ),
        }
        write_json_atomic(&self.run.result(self.rank), &result)?;
        Ok(())
    }
}
