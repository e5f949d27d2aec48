//! One worker process: the engine (GPU) and the mesh (tokio, TCP) joined.
//!
//! `acid` / `gossip`: the compute loop runs gradient steps back to back and keeps the device's
//! queue fed (at most one step waits behind the running one; nothing is read back but what is
//! logged and the parameters' asynchronous read-backs). Beside it, the exchange task
//! ([`crate::exchanges`]) answers the mesh at any moment: snapshots come from the host mirror at
//! once, averages are submitted to the device in clock order. The mesh itself runs the worker
//! clock ([`a2cid_net::ClockSegment`]) and proposes each edge's events when they fall due, not
//! at step boundaries (docs/algorithm.md §6).
//!
//! `allreduce`: synchronous data-parallel SGD, the gradient averaged by the mesh's ring all-reduce
//! every step (with one extra float: a stop vote, so every rank stops at the same step).
//!
//! `local`: each worker trains alone (no averaging); the final model is still averaged.
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use a2cid_engine::acid::Mirror;
use a2cid_engine::models::Model;
use a2cid_engine::outer::{synchronised_model, OuterOptimizer};
use a2cid_engine::relay::RelayNode;
use a2cid_engine::train_state::StateVectors;
use a2cid_engine::train_state::AVERAGE_SLOTS;
use a2cid_engine::TrainState;
use a2cid_net::{ClockSegment, Fingerprint, Mesh, MeshConfig, Rendezvous, Secret, ShutdownHandle};
use a2cid_schema::{
    write_atomic, write_json_atomic, At, AverageResult, Constants, EdgeReport, Method, MetricEvent,
    MetricsLog, Progress, RunConfig, RunDir, Slowdown, StopReason, WorkerResult,
};
use anyhow::{bail, Context};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checkpoint::{Checkpoint, CheckpointState};
use crate::clock::{meta_len, GlobalCounts, StepClock, StopRule};
use crate::exchanges::ExchangeTask;
use crate::learner::{DataPlan, Learner};
use crate::readback::Readbacks;
use crate::shared::{lock, PendingAverage, Shared, Timekeeper};

/// Records pairwise averages into one pass, each in its own averaging slot.
fn record_averages(
    st: &mut TrainState,
    pass: &mut wgpu::ComputePass<'_>,
    averages: &[PendingAverage],
) -> anyhow::Result<()> {
    for (k, p) in averages.iter().enumerate() {
        st.record_average_of(pass, k, &p.sent, &p.received, p.tau)?;
    }
    Ok(())
}

/// Weight of a new step time in the clock's moving average of the step time.
const CLOCK_BETA: f64 = 0.05;

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

/// The mesh fingerprint: the model's architecture, the method (acid and gossip workers must
/// not mix) and how snapshots travel; the snapshot carries the parameters (as `--compress`
/// packs them) plus the gradient-count view.
pub fn fingerprint(
    model: &dyn Model,
    method: Method,
    compress: a2cid_schema::Compression,
    world: usize,
) -> anyhow::Result<Fingerprint> {
    let wire = match compress {
        a2cid_schema::Compression::LowRank(r) => crate::exchanges::LowRankExchanges::wire_len(
            &a2cid_engine::compress::LowRankPlan::new(model.layout(), r)?,
        ),
        c => c.wire_len(model.parameters()),
    };
    Ok(Fingerprint::new(
        (wire + meta_len(world)) as u64,
        &format!(
            "{} method {} compress {compress}",
            model.fingerprint(),
            method.name()
        ),
    ))
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
        Placement::resolve_in(rank, world, master, peers, default_world, &|k| {
            std::env::var(k).ok()
        })
    }

    /// [`Placement::resolve`] with the environment given: explicit flags, else the torchrun /
    /// Kubernetes variables (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`: rank 0 serves
    /// the rendezvous at `MASTER_ADDR:MASTER_PORT`), else SLURM's.
    pub fn resolve_in(
        rank: Option<usize>,
        world: Option<usize>,
        master: Option<&str>,
        peers: Option<&[String]>,
        default_world: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Placement> {
        const TORCHRUN: [&str; 4] = ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"];
        let torchrun: Vec<Option<String>> = TORCHRUN.iter().map(|k| env(k)).collect();
        let number = |name: &str, v: &str| -> anyhow::Result<usize> {
            v.trim()
                .parse()
                .with_context(|| format!("{name}={v:?} is not a whole number"))
        };
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
        } else if torchrun.iter().any(Option::is_some) && env("SLURM_PROCID").is_none()
            || torchrun.iter().all(Option::is_some)
        {
            let missing: Vec<&str> = TORCHRUN
                .iter()
                .zip(&torchrun)
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| *k)
                .collect();
            if !missing.is_empty() {
                bail!(
                    "the torchrun/Kubernetes launch variables are incomplete: {} missing (set all \
                     of RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, or give --rank, --world \
                     and --master)",
                    missing.join(", ")
                );
            }
            let v = |i: usize| torchrun[i].clone().unwrap_or_default();
            Placement {
                rank: match rank {
                    Some(r) => r,
                    None => number("RANK", &v(0))?,
                },
                world: match world {
                    Some(w) => w,
                    None => number("WORLD_SIZE", &v(1))?,
                },
                rendezvous: Rendezvous::Rank0 {
                    addr: format!("{}:{}", v(2).trim(), number("MASTER_PORT", &v(3))?),
                },
            }
        } else if env("SLURM_PROCID").is_some() {
            let s = a2cid_net::slurm_from_env(env)?;
            Placement {
                rank: rank.unwrap_or(s.rank),
                world: world.unwrap_or(s.world),
                rendezvous: s.rendezvous,
            }
        } else {
            bail!(
                "a2cid worker does not know where the other workers are: give --rank R --world N \
                 --master HOST:PORT (or --peers), set the torchrun/Kubernetes variables RANK, \
                 WORLD_SIZE, MASTER_ADDR and MASTER_PORT, or run it under SLURM (srun), which sets \
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
    /// Rejoin the running mesh as a restarted worker: take a live neighbour's training state
    /// over the mesh (no checkpoint needed), continuing this rank's gradient count.
    pub rejoin: bool,
    /// Interface to listen on (`None`: loopback when every rendezvous address is local, else
    /// every interface).
    pub bind: Option<String>,
    /// Stop (gracefully) when standard input closes: the local launcher holds the other end, so
    /// a launcher that dies, however it dies, takes its workers with it.
    pub stop_with_launcher: bool,
}

/// Watches standard input on a thread: at its end (the launcher is gone) the worker leaves the
/// mesh gracefully once it has joined, or exits at once before.
fn stop_when_stdin_closes(mesh: Arc<std::sync::OnceLock<a2cid_net::ShutdownHandle>>, rank: usize) {
    std::thread::Builder::new()
        .name("a2cid-launcher-watch".into())
        .spawn(move || {
            let mut sink = [0u8; 64];
            loop {
                match std::io::Read::read(&mut std::io::stdin(), &mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            match mesh.get() {
                Some(h) => {
                    warn!("rank {rank}: the launcher is gone; stopping");
                    h.shutdown("the launcher is gone");
                }
                None => {
                    eprintln!("error: rank {rank}: the launcher is gone before the mesh formed");
                    std::process::exit(1);
                }
            }
        })
        .expect("spawning the launcher watch");
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
    let rejoin = options.rejoin;
    if rejoin && resume {
        bail!("--rejoin and --resume exclude each other: a rejoining worker takes a live neighbour's state, a resumed run starts from the checkpoints");
    }
    if rejoin && !cfg.method.is_pairwise() {
        bail!(
            "--rejoin needs an acid or gossip run (this one is {}): only pairwise methods go on \
             while a worker is away",
            cfg.method
        );
    }
    if place.rank == 0 && !resume && !rejoin {
        write_atomic(&run.config(), toml::to_string_pretty(&cfg)?.as_bytes())?;
    }
    let _rank_lock = run.lock_rank(place.rank)?;
    std::fs::write(run.pid(place.rank), std::process::id().to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("a2cid-mesh")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let _runtime = rt.enter(); // the mesh spawns tasks from plain (non-async) calls too
                               // A rejoining worker needs the running mesh's addresses before it touches the run directory.
    let table = if rejoin {
        let path = run.addresses();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "--rejoin: reading the running mesh's address table {} (written when the mesh \
                 formed; without it the run never started: start it normally)",
                path.display()
            )
        })?;
        let table: Vec<String> = serde_json::from_str(&text)
            .with_context(|| format!("--rejoin: {} is not an address table", path.display()))?;
        Some(table)
    } else {
        None
    };
    let mut w = Worker::new(&cfg, &place, &run, resume, rejoin, options.progress_lines)?;
    let local = place.rendezvous.is_loopback();
    let rendezvous = match table {
        Some(table) => a2cid_net::Rendezvous::Explicit(table),
        None => place.rendezvous,
    };
    let mut mc = MeshConfig::new(
        place.rank,
        place.world,
        rendezvous,
        w.pairing_edges(),
        run_id(&cfg)?,
        fingerprint(
            w.learner.model.as_ref(),
            cfg.method,
            cfg.compress,
            place.world,
        )?,
        options.secret,
    );
    mc.seed = cfg.seed ^ 0x5eed_0000 ^ w.generation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mc.clock_start = lock(&w.shared).time.tau();
    mc.connect_timeout = options.connect_timeout.max(Duration::from_secs(1));
    mc.bind_host = options.bind.clone().unwrap_or_else(|| {
        if local {
            "127.0.0.1".into()
        } else {
            "0.0.0.0".into()
        }
    });
    let launcher = Arc::new(std::sync::OnceLock::new());
    if options.stop_with_launcher {
        stop_when_stdin_closes(launcher.clone(), place.rank);
    }
    let mut mesh = if rejoin {
        let (mesh, state) = rt
            .block_on(Mesh::rejoin(mc))
            .context("rejoining the running mesh")?;
        w.adopt(state)?;
        mesh
    } else {
        let mesh = rt
            .block_on(Mesh::connect(mc))
            .context("joining the other workers (the mesh)")?;
        if place.rank == 0 {
            let table = serde_json::to_string_pretty(mesh.addresses())?;
            write_atomic(&run.addresses(), table.as_bytes())?;
        }
        mesh
    };
    watch_signals(mesh.shutdown_handle(), place.rank);
    let _ = launcher.set(mesh.shutdown_handle());
    lock(&w.shared).time.start_now();
    w.progress(false);
    info!(
        "rank {}/{}: joined the mesh; neighbours {:?}",
        place.rank,
        place.world,
        mesh.neighbours()
    );
    let outcome = match cfg.method {
        Method::AllReduce => w.train_allreduce(&rt, &mut mesh),
        Method::Lasgd => w.train_lasgd(&rt, &mut mesh),
        Method::RelaySum => w.train_relaysum(&rt, &mut mesh),
        _ => w.train_async(&rt, &mut mesh),
    };
    let outcome = outcome.and_then(|reason| w.finish(&rt, &mut mesh, reason));
    let reason = match &outcome {
        Ok(()) => "training finished".to_string(),
        Err(e) => format!("rank {} failed: {e:#}", place.rank),
    };
    let _ = rt.block_on(mesh.shutdown(&reason));
    outcome
}

/// The first SIGINT (Ctrl-C) or SIGTERM stops this worker gracefully: the mesh is told, and the
/// worker checkpoints, is evaluated and joins the final average. A second one ends the process at
/// once (exit status 130), as a second Ctrl-C ends the launcher: the final evaluation and average
/// can take minutes on a busy machine, or wait on a frozen peer, and whoever asks twice wants the
/// worker gone. Nothing is lost: every checkpoint is written to a temporary file and renamed.
fn watch_signals(mesh: ShutdownHandle, rank: usize) {
    tokio::spawn(async move {
        let first = a2cid_net::interrupt_signal().await;
        mesh.shutdown(&format!("interrupted ({first})"));
        let second = a2cid_net::interrupt_signal().await;
        eprintln!(
            "rank {rank}: {second} again: leaving now, without the final evaluation and average; \
             the last checkpoint stands (resume with `a2cid run --resume <run directory>`)"
        );
        std::process::exit(130);
    });
}

/// Sketches of the parameters at a common grid of the clock (`a2cid_schema::sketch`).
struct Sketcher {
    every: f64,
    k: usize,
    out: wgpu::Buffer,
    dispatch: a2cid_engine::kernels::Dispatch,
    /// The next grid point to sketch.
    next: u64,
}

/// When a worker stops (docs/running.md, "The end of a run"), given the sizes of all the workers'
/// shards. `allreduce` and `lasgd` step in lockstep, so `--epochs` counts each worker's steps of
/// an epoch of the largest shard. `acid`
/// and `gossip` let faster workers do more: `--epochs E` is a budget of as many gradients as E
/// epochs of every shard, all workers together (like `--grad-budget`), and the first worker to see
/// it spent ends the run for all. `local` workers never exchange, so none can count the others'
/// gradients: each does its equal share of the budget.
fn stop_rule(cfg: &RunConfig, shard_sizes: &[usize]) -> StopRule {
    let world = shard_sizes.len();
    let epochs = (cfg.epochs > 0).then_some(cfg.epochs as u64);
    if cfg.method.synchronises_by_allreduce() {
        return StopRule {
            grad_budget: cfg.grad_budget,
            budget_reason: StopReason::GradBudget,
            epoch_steps: epochs.map(|e| {
                let largest = shard_sizes.iter().copied().max().unwrap_or(0);
                e * largest.div_ceil(cfg.batch_size) as u64
            }),
            steps_reason: StopReason::Epochs,
            max_seconds: cfg.max_seconds,
        };
    }
    let per_epoch = a2cid_datasets::batches_in_shards(shard_sizes, cfg.batch_size);
    let from_epochs = epochs.map(|e| e * per_epoch as u64);
    let epochs_bind = match (cfg.grad_budget, from_epochs) {
        (Some(a), Some(b)) => b <= a,
        (a, b) => a.is_none() && b.is_some(),
    };
    let budget = match (cfg.grad_budget, from_epochs) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let reason = if epochs_bind {
        StopReason::Epochs
    } else {
        StopReason::GradBudget
    };
    if cfg.method.is_pairwise() {
        StopRule {
            grad_budget: budget,
            budget_reason: reason,
            epoch_steps: None,
            steps_reason: StopReason::Epochs,
            max_seconds: cfg.max_seconds,
        }
    } else {
        StopRule {
            grad_budget: None,
            budget_reason: reason,
            epoch_steps: budget.map(|b| b.div_ceil(world as u64)),
            steps_reason: reason,
            max_seconds: cfg.max_seconds,
        }
    }
}

/// The exchange task of a running worker.
struct Exchanging {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
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
    /// The graph's edges with their asked rates.
    edges: Vec<(usize, usize, f64)>,
    /// The training state on the device: only this loop submits work that touches it.
    state: TrainState,
    /// What the exchange task shares with this loop.
    shared: Arc<Mutex<Shared>>,
    readbacks: Readbacks,
    stop: StopRule,
    position: (usize, usize),
    /// (grads, averagings, test loss, test accuracy) of the last evaluation.
    last_eval: Option<(u64, u64, f64, f64)>,
    generation: u64,
    resumed: bool,
    last_loss: f64,
    last_progress: Instant,
    last_checkpoint: u64,
    constants: Option<Constants>,
    /// The clock when this session's Poisson processes started (0, or the resumed clock).
    tau_start: f64,
    sketcher: Option<Sketcher>,
    /// The emulated slow-down of `--worker-speeds` and the pace of `--step-time`.
    slowdown: Slowdown,
    /// Steps whose own work overran the `--step-time` pace.
    overran: u64,
    /// Whether this session's first step is done: the first one's work includes one-off
    /// costs (shader pipelines built, caches cold) that the emulated slow-down must not
    /// multiply.
    warmed: bool,
}

impl Worker {
    fn new(
        cfg: &RunConfig,
        place: &Placement,
        run: &RunDir,
        resume: bool,
        rejoin: bool,
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
            let (c, from) = Checkpoint::load_or_neighbours(
                run,
                rank,
                topology.neighbors(rank),
                cfg.method.is_pairwise(),
            )?;
            if let Some(p) = from {
                warn!(
                    "rank {rank}: no usable checkpoint of its own; it starts from neighbour {p}'s \
                     (step {} of this rank, clock {:.1})",
                    c.state.grads, c.state.tau
                );
            }
            Some(c)
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
        let learner = Learner::new(cfg, plan)?;
        let params = cfg.method.acid_params(&topology);
        let with_tilde = cfg.method.uses_x_tilde();
        let mut state = learner.train_state(cfg.sgd(), params, with_tilde)?;
        let d = learner.model.parameters();
        let mut x0 = learner.model.params()?;
        let mut xt0 = None;
        let mut t_last = 0.0;
        if let Some(c) = &ckpt {
            c.check_matches(
                rank,
                world,
                cfg.method.name(),
                learner.model.layout().fingerprint(),
            )?;
            state.load(
                &c.x,
                c.x_tilde.as_deref(),
                Some(&c.momentum),
                c.state.t_last,
            )?;
            x0 = c.x.clone();
            xt0 = c.x_tilde.clone();
            t_last = c.state.t_last;
        }
        let mut mirror = Mirror::new(x0, params, with_tilde, t_last, 0);
        if let Some(xt) = &xt0 {
            let x = mirror.snapshot(t_last);
            mirror.set_boundary(0, t_last, &x, Some(xt));
        }
        let stop = stop_rule(cfg, &learner.shard_sizes);
        let mut metrics = MetricsLog::open(&run.metrics(rank), resume || rejoin)?;
        if ckpt.is_none() && !rejoin {
            metrics.record(&MetricEvent::Shard {
                at: At {
                    rank,
                    wall: 0.0,
                    train_wall: 0.0,
                    tau: Some(0.0),
                    step: 0,
                },
                partition: cfg.partition.to_string(),
                rows: learner.shard_sizes[rank],
                histogram: learner.shard_histogram.clone(),
                speed: cfg.speeds()?[rank],
            })?;
            info!(
                "rank {rank}: shard of {} rows ({}), labels {:?}",
                learner.shard_sizes[rank], cfg.partition, learner.shard_histogram
            );
        }
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
            info!(
                "rank {rank}: resuming from {} (step {}, epoch {}, tau {:.1})",
                run.checkpoint(rank).display(),
                c.state.grads,
                c.state.epoch,
                c.state.tau
            );
        }
        let (time, counts, grads, comms, generation, last_loss) = match &ckpt {
            Some(c) => {
                let s = &c.state;
                (
                    Timekeeper::new(
                        StepClock::resumed(CLOCK_BETA, s.tau, s.step_seconds, 0.0),
                        s.wall,
                        s.eval_seconds,
                    ),
                    GlobalCounts::from_counts(rank, s.counts.clone()),
                    s.grads,
                    s.comms,
                    s.generation + 1,
                    s.final_train_loss,
                )
            }
            None => (
                Timekeeper::new(StepClock::new(CLOCK_BETA), 0.0, 0.0),
                GlobalCounts::new(rank, world),
                0,
                0,
                0,
                f64::NAN,
            ),
        };
        let constants = cfg.method.is_pairwise().then_some(Constants {
            eta: params.eta,
            alpha_tilde: params.alpha_tilde,
        });
        let readbacks = Readbacks::new(learner.ctx.clone(), d, with_tilde);
        let tau_start = time.tau();
        let sketcher = if cfg.sketch_every > 0.0 {
            let k = cfg.sketch_dim;
            let out = learner.ctx.storage_buffer("sketch", k)?;
            let params = a2cid_engine::kernels::SketchParams::new(d, k, 0)?;
            let dispatch = a2cid_engine::kernels::sketch(
                &learner.ctx,
                learner.model.params_buffer(),
                &out,
                &params,
            )?;
            Some(Sketcher {
                every: cfg.sketch_every,
                k,
                out,
                dispatch,
                next: (tau_start / cfg.sketch_every).ceil() as u64,
            })
        } else {
            None
        };
        let shared = Shared {
            rank,
            mirror,
            seq: 0,
            pending: Vec::new(),
            time,
            counts,
            grads,
            comms,
            failed: 0,
            in_flight: None,
            lost: Vec::new(),
            refused: Default::default(),
            refused_by: Default::default(),
            interrupted: false,
            stopped_elsewhere: None,
            edges: Default::default(),
            metrics,
        };
        Ok(Worker {
            cfg: cfg.clone(),
            rank,
            world,
            run: run.clone(),
            progress_lines,
            learner,
            d,
            edges,
            state,
            shared: Arc::new(Mutex::new(shared)),
            readbacks,
            stop,
            position,
            last_eval: None,
            generation,
            resumed: resume,
            last_loss,
            last_progress: Instant::now(),
            last_checkpoint: grads,
            constants,
            tau_start,
            sketcher,
            slowdown: Slowdown::new(cfg.speeds()?[rank], cfg.step_time),
            overran: 0,
            warmed: false,
        })
    }

    /// The edges the mesh draws Poisson clocks for: none for the methods that do not average
    /// pairwise (the links are still made, for the collectives).
    fn pairing_edges(&self) -> Vec<(usize, usize, f64)> {
        if self.cfg.method.is_pairwise() {
            self.edges.clone()
        } else {
            self.edges.iter().map(|&(i, j, _)| (i, j, 0.0)).collect()
        }
    }

    fn lr(&self, s: &Shared) -> f32 {
        const SCALE: usize = 1_000_000;
        let p = self
            .stop
            .progress(s.grads, self.global_grads(s), s.time.train_wall());
        let warmup = match self.stop.expected_steps(self.world) {
            Some(total) if total > 0 => self.cfg.warmup_steps * SCALE / total as usize,
            _ => 0,
        };
        self.cfg
            .schedule
            .lr(self.cfg.lr, (p * SCALE as f64) as usize, SCALE, warmup)
    }

    fn global_grads(&self, s: &Shared) -> u64 {
        match self.cfg.method {
            Method::AllReduce | Method::Lasgd | Method::RelaySum => s.grads * self.world as u64,
            _ => s.counts.total(),
        }
    }

    fn check_stop(&self) -> Option<StopReason> {
        let s = lock(&self.shared);
        if s.interrupted {
            return Some(StopReason::Interrupted);
        }
        if s.stopped_elsewhere.is_some() {
            return Some(StopReason::Elsewhere);
        }
        self.stop
            .check(s.grads, self.global_grads(&s), s.time.train_wall())
    }

    /// After a gradient step: the sketch, the logs, the evaluations, the progress line and the
    /// checkpoints that fall due.
    fn after_step(&mut self, mesh: &Mesh, lr: f32) -> anyhow::Result<()> {
        self.maybe_sketch()?;
        let grads = lock(&self.shared).grads;
        if grads.is_multiple_of(self.cfg.log_every as u64) {
            self.log_train(lr, mesh)?;
        }
        if self.cfg.eval_every > 0 && grads.is_multiple_of(self.cfg.eval_every as u64) {
            if self.learner.window_rows() > 0 {
                self.log_train(lr, mesh)?; // evaluation resets the loss accumulators
            }
            self.evaluate_own(mesh)?;
        }
        self.maybe_progress(false);
        if self.cfg.checkpoint_every > 0
            && grads - self.last_checkpoint >= self.cfg.checkpoint_every as u64
        {
            self.checkpoint(false)?;
        }
        Ok(())
    }

    fn log_train(&mut self, lr: f32, mesh: &Mesh) -> anyhow::Result<()> {
        let window = self.learner.take_window()?;
        let classes = self.learner.dataset.classes;
        window.check_diverged(lock(&self.shared).grads, lr, classes, &self.cfg)?;
        self.last_loss = window.loss();
        let st = mesh.stats();
        let missed = st.edges.values().map(|c| c.missed()).sum::<u64>();
        let mut s = lock(&self.shared);
        let event = MetricEvent::Train {
            at: s.at(),
            epoch: self.position.0,
            train_loss: self.last_loss,
            train_accuracy: window.accuracy(),
            lr,
            averagings: s.comms,
            missed,
            failed: s.failed,
            bytes_sent: st.bytes_sent + st.collective_bytes_sent,
            bytes_received: st.bytes_received + st.collective_bytes_received,
            global_grads: self.global_grads(&s),
            step_seconds: s.time.clock.step_seconds(),
        };
        s.metrics.record(&event)?;
        s.metrics.flush()?; // a killed worker loses at most one logging window
        Ok(())
    }

    /// The worker's own model on the test set, off the clock: the time it takes is neither on tau
    /// (no mixing, no Poisson events fall due: the mesh's clock stands still) nor in the training
    /// wall time. Pairing pauses meanwhile (peers that propose are told Busy and retry), so the
    /// model is not averaged while it is being evaluated.
    fn evaluate_own(&mut self, mesh: &Mesh) -> anyhow::Result<(f64, f64)> {
        let t0 = Instant::now();
        mesh.set_clock(ClockSegment::frozen(lock(&self.shared).time.tau()));
        mesh.pause(true);
        // An exchange agreed just before the pause completes first, and is applied.
        self.wait_for_exchange(Duration::from_secs(30));
        self.apply_pending()?;
        let evaluated = self.learner.evaluate_test();
        mesh.pause(false);
        let (test_loss, test_accuracy) = evaluated?;
        let dt = t0.elapsed().as_secs_f64();
        let mut s = lock(&self.shared);
        s.time.record_pause(dt);
        mesh.set_clock(s.time.segment());
        let event = MetricEvent::Eval {
            at: s.at(),
            epoch: None,
            test_loss,
            test_accuracy,
            averagings: s.comms,
            global_grads: self.global_grads(&s),
            seconds: dt,
        };
        s.metrics.record(&event)?;
        s.metrics.flush()?;
        self.last_eval = Some((s.grads, s.comms, test_loss, test_accuracy));
        Ok((test_loss, test_accuracy))
    }

    /// Sketches the parameters when the clock has passed the next point of the grid (every
    /// worker uses the grid point's seed, so their sketches compare).
    fn maybe_sketch(&mut self) -> anyhow::Result<()> {
        let Some(sk) = self.sketcher.as_mut() else {
            return Ok(());
        };
        let (grid, at) = {
            let s = lock(&self.shared);
            let tau = s.time.tau();
            if tau < sk.next as f64 * sk.every {
                return Ok(());
            }
            let grid = (tau / sk.every).floor() as u64;
            let seed = a2cid_schema::sketch::grid_seed(self.cfg.seed, grid);
            let params = a2cid_engine::kernels::SketchParams::new(self.d, sk.k, seed)?;
            sk.dispatch.set_params(&self.learner.ctx, &params);
            // Submitted under the lock: the sketch sees x between two events, in the device's
            // order. Read outside it (the read waits for the queue), so exchanges go on.
            self.learner.ctx.run(&[&sk.dispatch]);
            (grid, s.at())
        };
        let values: Vec<f32> = self.learner.ctx.read(&sk.out, 0, sk.k)?;
        sk.next = grid + 1;
        lock(&self.shared)
            .metrics
            .record(&MetricEvent::Sketch { at, grid, values })?;
        Ok(())
    }

    /// Submits completed averages to the device, in the order of events, each against the
    /// snapshot this worker sent (docs/algorithm.md §3.3).
    /// Submits averages, up to [`AVERAGE_SLOTS`] per submission, in their order.
    fn submit_averages(&mut self, pending: &[PendingAverage]) -> anyhow::Result<()> {
        for chunk in pending.chunks(AVERAGE_SLOTS) {
            let mut recorded = Ok(());
            self.state
                .submit(|st, pass| recorded = record_averages(st, pass, chunk));
            recorded?;
        }
        Ok(())
    }

    /// Submits the averages completed since the last step (before the device state is read).
    fn apply_pending(&mut self) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut lock(&self.shared).pending);
        self.submit_averages(&pending)
    }

    /// Waits (at most `limit`) until no exchange is in flight.
    fn wait_for_exchange(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while lock(&self.shared).in_flight.is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn maybe_progress(&mut self, done: bool) {
        if done || self.last_progress.elapsed() >= Duration::from_millis(300) {
            self.progress(done);
        }
    }

    /// A progress line for the launcher now (the first one, with no step yet, says the worker
    /// has joined the mesh).
    fn progress(&mut self, done: bool) {
        if !self.progress_lines {
            return;
        }
        self.last_progress = Instant::now();
        let p = {
            let s = lock(&self.shared);
            Progress {
                rank: self.rank,
                grads: s.grads,
                target: self.stop.expected_steps(self.world),
                loss: self.last_loss,
                comms: s.comms,
                wall: s.time.wall(),
                done,
            }
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
        self.apply_pending()?;
        // A diverging state is never checkpointed: the last good checkpoint stays.
        let grads = lock(&self.shared).grads;
        let lr = self.lr(&lock(&self.shared));
        self.learner.peek_window()?.check_diverged(
            grads,
            lr,
            self.learner.dataset.classes,
            &self.cfg,
        )?;
        let StateVectors {
            x,
            x_tilde,
            momentum,
        } = self.state.read()?;
        let s = lock(&self.shared);
        let c = Checkpoint {
            state: CheckpointState {
                rank: self.rank,
                world: self.world,
                method: self.cfg.method.name().to_string(),
                fingerprint: self.learner.model.layout().fingerprint(),
                parameters: self.d,
                grads: s.grads,
                comms: s.comms,
                missed: 0,
                epoch: self.position.0,
                batch: self.position.1,
                seed: self.cfg.seed,
                tau: s.time.tau(),
                t_last: self.state.t_last(),
                step_seconds: s.time.clock.step_seconds(),
                wall: s.time.wall(),
                counts: s.counts.counts().to_vec(),
                generation: self.generation,
                final_train_loss: self.last_loss,
                finished,
                eval_seconds: s.time.eval_seconds,
            },
            x,
            x_tilde,
            momentum,
        };
        let grads = s.grads;
        drop(s);
        c.save(&self.run.checkpoint(self.rank))?;
        self.last_checkpoint = grads;
        Ok(())
    }

    /// A restarted worker continues from a live neighbour's training state: its parameters and
    /// x̃ (refused if not finite), its clock, the gradient counts it knows of (this rank's own
    /// among them: the count goes on) and the run's wall time. The optimizer's momentum starts
    /// again from zero, and the data loader from the start of this worker's shard.
    fn adopt(&mut self, state: a2cid_net::PeerState) -> anyhow::Result<()> {
        let meta: crate::exchanges::RejoinMeta = serde_json::from_str(&state.meta)
            .with_context(|| format!("rank {} sent a malformed state description", state.from))?;
        let d = self.d;
        // x then x̃, sent in buffers of the mesh's snapshot length (the last zero-padded).
        let all: Vec<f32> = state.buffers.concat();
        if all.len() < d {
            bail!("rank {} sent no parameter vector of {d} values", state.from);
        }
        let x = &all[..d];
        let x_tilde = match self.state.has_tilde() {
            true if all.len() >= 2 * d => Some(&all[d..2 * d]),
            true => bail!("rank {} sent no x̃ of {d} values", state.from),
            false => None,
        };
        for (name, v) in std::iter::once(("x", x)).chain(x_tilde.map(|v| ("x̃", v))) {
            if let Some(bad) = v.iter().position(|v| !v.is_finite()) {
                bail!(
                    "rank {}'s {name} holds a non-finite value (index {bad} is {}); not taken",
                    state.from,
                    v[bad]
                );
            }
        }
        if meta.counts.len() != self.world {
            bail!(
                "rank {} sent gradient counts of {} workers for a run of {}",
                state.from,
                meta.counts.len(),
                self.world
            );
        }
        let tau = state.clock;
        self.state.load(x, x_tilde, None, tau)?;
        let grads = meta.counts[self.rank];
        let mut s = lock(&self.shared);
        let seq = s.seq;
        s.mirror.set_boundary(seq, tau, x, x_tilde);
        s.counts = GlobalCounts::from_counts(self.rank, meta.counts.clone());
        s.grads = grads;
        s.time = Timekeeper::new(
            StepClock::resumed(CLOCK_BETA, tau, meta.step_seconds, 0.0),
            meta.wall,
            meta.eval_seconds,
        );
        let event = MetricEvent::Rejoin {
            at: s.at(),
            from: state.from,
        };
        s.metrics.record(&event)?;
        s.metrics.flush()?; // a rejoin is news at once, not at the next logging window
        drop(s);
        info!(
            "rank {}: rejoined the run with rank {}'s state (clock {tau:.1}, this rank's \
             gradient count {grads})",
            self.rank, state.from
        );
        self.resumed = true;
        self.last_checkpoint = grads;
        self.tau_start = tau;
        if let Some(sk) = &mut self.sketcher {
            sk.next = (tau / sk.every).ceil() as u64;
        }
        Ok(())
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
        self.state.load(&x, None, None, 0.0)?;
        let mut s = lock(&self.shared);
        let x_tilde = self.state.has_tilde().then_some(x.as_slice());
        let seq = s.seq;
        s.mirror.set_boundary(seq, 0.0, &x, x_tilde);
        Ok(())
    }

    fn train_allreduce(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
    ) -> anyhow::Result<StopReason> {
        self.start_identical(rt, mesh)?;
        loop {
            self.note_interrupts(mesh);
            let vote = self.check_stop();
            let (stepped, lr, t0) = self.gradient()?;
            let mut g: Vec<f32> = self.learner.model.grads()?;
            g.push(if vote.is_some() { 1.0 } else { 0.0 });
            rt.block_on(mesh.allreduce_mean(&mut g)).map_err(|e| {
                anyhow::anyhow!(
                    "the gradient all-reduce failed: {e}. `allreduce` is synchronous and cannot \
                     go on without every worker (acid and gossip runs survive a lost worker)"
                )
            })?;
            if g[self.d] > 0.0 {
                // Every rank stops at this same step; one that did not vote itself stops for
                // another rank's reason (all share the budget and epochs: its clock ran out).
                return Ok(vote.unwrap_or(StopReason::MaxSeconds));
            }
            self.learner
                .ctx
                .write(self.learner.model.grads_buffer(), 0, &g[..self.d]);
            lock(&self.shared).comms += 1;
            self.apply_step(stepped, lr, t0)?;
            self.after_step(mesh, lr)?;
        }
    }

    /// A synchronous method's averaging: the model becomes `x` (the momentum stays), counted as
    /// one averaging.
    fn adopt_average(&mut self, x: &[f32]) -> anyhow::Result<()> {
        let mut s = lock(&self.shared);
        let tau = s.time.tau();
        self.state.set_x(x, tau)?;
        s.comms += 1;
        let seq = s.seq;
        s.mirror.set_boundary(seq, tau, x, None);
        Ok(())
    }

    /// Ctrl-C or a signal, seen between two steps of a synchronous method.
    fn note_interrupts(&self, mesh: &mut Mesh) {
        while let Some(ev) = mesh.try_next_event() {
            if matches!(ev, a2cid_net::MeshEvent::ShutdownRequested) {
                lock(&self.shared).interrupted = true;
            }
        }
    }

    /// The gradient of the next batch into the model's gradient buffer (a synchronous method's
    /// step, emulated speed included): what it stepped over, the learning rate, when it began.
    fn gradient(&mut self) -> anyhow::Result<(crate::learner::Stepped, f32, Instant)> {
        let batch = self
            .learner
            .next_batch()
            .context("the batch loader stopped")?;
        let lr = self.lr(&lock(&self.shared));
        let t0 = Instant::now();
        let stepped = self.learner.gradient(&batch)?;
        self.pace(t0.elapsed().as_secs_f64());
        Ok((stepped, lr, t0))
    }

    /// The emulated speed: after a step whose own work took `work` seconds, waits what
    /// `--worker-speeds` and `--step-time` ask (not after the session's first step, whose
    /// one-off costs are not the worker's speed).
    fn pace(&mut self, work: f64) {
        if !std::mem::replace(&mut self.warmed, true) || self.slowdown.is_none() {
            return;
        }
        self.overran += u64::from(self.slowdown.overran(work));
        std::thread::sleep(self.slowdown.delay(work));
    }

    /// The SGD step from the gradient buffer, counted, waited for and timed.
    fn apply_step(
        &mut self,
        stepped: crate::learner::Stepped,
        lr: f32,
        t0: Instant,
    ) -> anyhow::Result<()> {
        {
            let mut s = lock(&self.shared);
            let tau = s.time.tau();
            self.state.submit(|st, pass| st.record_step(pass, lr, tau));
            s.seq += 1;
            s.grads += 1;
            let grads = s.grads;
            s.counts.set_own(grads);
        }
        self.learner.ctx.sync()?;
        lock(&self.shared)
            .time
            .record_step(t0.elapsed().as_secs_f64());
        self.position = stepped.next_position();
        Ok(())
    }

    /// `lasgd` (docs/algorithm.md §9.1): local SGD steps, and every `sync_every` of them the
    /// models are all-reduced and every worker adopts the average — or, with `--outer`
    /// (DiLoCo), the outer optimizer's step from it. The all-reduce gives every rank the same
    /// bits, so the models are equal after each synchronisation. It carries the stop vote too,
    /// so every rank stops at the same synchronisation (up to `sync_every - 1` steps after the
    /// stop rule fired). Each worker keeps its own momentum.
    fn train_lasgd(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
    ) -> anyhow::Result<StopReason> {
        self.start_identical(rt, mesh)?;
        let every = self.cfg.sync_every.max(1) as u64;
        let mut outer = match self.cfg.outer {
            Some(spec) => Some(OuterOptimizer::new(spec, &self.learner.model.params()?)),
            None => None,
        };
        let mut local = 0u64;
        loop {
            self.note_interrupts(mesh);
            let (stepped, lr, t0) = self.gradient()?;
            self.apply_step(stepped, lr, t0)?;
            local += 1;
            if local == every {
                local = 0;
                let vote = self.check_stop();
                let mut x = self.learner.model.params()?;
                x.push(if vote.is_some() { 1.0 } else { 0.0 });
                rt.block_on(mesh.allreduce_mean(&mut x)).map_err(|e| {
                    anyhow::anyhow!(
                        "the synchronisation all-reduce failed: {e}. `lasgd` meets every worker \
                         at each synchronisation and cannot go on without one (acid and gossip \
                         runs survive a lost worker)"
                    )
                })?;
                let stop = x.pop().is_some_and(|flag| flag > 0.0);
                let mean: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                let synced = synchronised_model(&mean, outer.as_mut());
                self.adopt_average(&synced)?;
                if stop {
                    // Every rank stops at this same synchronisation.
                    return Ok(vote.unwrap_or(StopReason::MaxSeconds));
                }
            }
            self.after_step(mesh, lr)?;
        }
    }

    /// `relaysum` (RelaySGD, docs/algorithm.md §9.2): every step, a local SGD step, then one relay
    /// round on the graph's breadth-first spanning tree (`Topology::spanning_tree`, what
    /// `a2cid topology` shows): the updated model goes to each tree neighbour with the relayed
    /// sums of the others' (`a2cid_engine::relay`, the simulator's too), and the model becomes the
    /// relayed average — every model, each as old as its tree distance. The stop vote travels in
    /// a one-float all-reduce, so every rank stops at the same round. Each worker keeps its own
    /// momentum.
    fn train_relaysum(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
    ) -> anyhow::Result<StopReason> {
        self.start_identical(rt, mesh)?;
        let tree = self.cfg.topology()?.spanning_tree();
        let peers = tree.neighbors[self.rank].clone();
        let mut node = RelayNode::new(&peers, self.world, self.d);
        let lens = vec![self.d + 1; peers.len()];
        loop {
            self.note_interrupts(mesh);
            let vote = self.check_stop();
            let (stepped, lr, t0) = self.gradient()?;
            self.apply_step(stepped, lr, t0)?;
            let x = self.learner.model.params()?;
            let outgoing: Vec<Vec<f32>> =
                node.outgoing(&x).iter().map(RelayNode::to_wire).collect();
            let relay_failed = |e: a2cid_net::NetError| {
                anyhow::anyhow!(
                    "the relay round failed: {e}. `relaysum` relays every model along the \
                     spanning tree and cannot go on without every worker (acid and gossip runs \
                     survive a lost worker)"
                )
            };
            let received = rt
                .block_on(mesh.relay(&peers, &outgoing, &lens))
                .map_err(relay_failed)?;
            for (&from, slots) in peers.iter().zip(&received) {
                let message = RelayNode::from_wire(slots, self.d).with_context(|| {
                    format!("rank {from}'s relay message holds a non-finite value")
                })?;
                node.deliver(from, message);
            }
            let estimate = node.estimate(&x);
            let mut flag = [if vote.is_some() { 1.0 } else { 0.0 }];
            rt.block_on(mesh.allreduce_mean(&mut flag))
                .map_err(relay_failed)?;
            self.adopt_average(&estimate)?;
            if flag[0] > 0.0 {
                return Ok(vote.unwrap_or(StopReason::MaxSeconds));
            }
            self.after_step(mesh, lr)?;
        }
    }

    /// The asynchronous methods: steps back to back, the queue kept fed, exchanges answered by
    /// the exchange task meanwhile.
    fn train_async(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
    ) -> anyhow::Result<StopReason> {
        self.start_identical(rt, mesh)?;
        let exchanging = self.start_exchanges(rt, mesh);
        let outcome = self.async_loop(mesh);
        self.stop_exchanges(rt, mesh, exchanging);
        outcome
    }

    /// `--compress lowrank:R`: the edges' state, with the power-iteration products on a second
    /// device of this worker's adapter (its own queue: an exchange never waits behind a training
    /// step). If that device cannot be opened the products run on the CPU twins, said once.
    fn lowrank_exchanges(&self, r: usize) -> crate::exchanges::LowRankExchanges {
        let device = match a2cid_engine::GpuContext::open(&self.cfg.adapter) {
            Ok(ctx) => Some(ctx),
            Err(e) => {
                warn!(
                    "rank {}: the low-rank products run on the CPU: no second device on the \
                     adapter ({e})",
                    self.rank
                );
                None
            }
        };
        let layout = self.learner.model.layout();
        let built =
            crate::exchanges::LowRankExchanges::new(layout, r, self.rank, self.cfg.seed, device);
        match built {
            Ok(exchanges) => exchanges,
            Err(e) => {
                warn!(
                    "rank {}: the low-rank products run on the CPU: their GPU launches could \
                     not be built ({e:#})",
                    self.rank
                );
                crate::exchanges::LowRankExchanges::new(layout, r, self.rank, self.cfg.seed, None)
                    .expect("the plan was built for the fingerprint already")
            }
        }
    }

    fn start_exchanges(&mut self, rt: &tokio::runtime::Runtime, mesh: &mut Mesh) -> Exchanging {
        let stop = CancellationToken::new();
        let task = ExchangeTask {
            shared: self.shared.clone(),
            events: mesh.take_events(),
            d: self.d,
            wire: self.cfg.compress,
            lowrank: match self.cfg.compress {
                a2cid_schema::Compression::LowRank(r) => Some(self.lowrank_exchanges(r)),
                _ => None,
            },
        };
        let task = rt.spawn(task.run(stop.clone()));
        mesh.set_clock(lock(&self.shared).time.segment());
        Exchanging { stop, task }
    }

    /// Retires from pairing, lets the exchange in flight complete (the peer applies its half, so
    /// the pair's sum stays conserved), then stops the exchange task.
    fn stop_exchanges(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
        exchanging: Exchanging,
    ) {
        mesh.retire();
        mesh.set_clock(ClockSegment::frozen(lock(&self.shared).time.tau()));
        std::thread::sleep(Duration::from_millis(50)); // an agreement racing the retirement
        self.wait_for_exchange(Duration::from_secs(30));
        exchanging.stop.cancel();
        if let Err(e) = rt.block_on(exchanging.task) {
            warn!("rank {}: the exchange task ended badly: {e}", self.rank);
        }
    }

    fn async_loop(&mut self, mesh: &mut Mesh) -> anyhow::Result<StopReason> {
        let ctx = self.learner.ctx.clone();
        let mut previous: Option<wgpu::SubmissionIndex> = None;
        let mut last = Instant::now();
        let mut paused_before = lock(&self.shared).time.paused();
        loop {
            if let Some(reason) = self.check_stop() {
                // The run ends for everyone together: no worker trains or averages alone in a
                // tail (docs/running.md, "The end of a run"). `local` workers each do their
                // share and wait for the others at the final average.
                if reason != StopReason::Elsewhere && self.cfg.method.is_pairwise() {
                    mesh.announce_stop(&reason.to_string());
                }
                return Ok(reason);
            }
            let batch = self
                .learner
                .next_batch()
                .context("the batch loader stopped")?;
            // Under the lock: the averages completed so far, this step's clock value and place in
            // the order of events. Outside it: every submission, in that order.
            let (lr, tau, seq, pending) = {
                let mut s = lock(&self.shared);
                let lr = self.lr(&s);
                let tau = s.time.tau();
                s.seq += 1;
                (lr, tau, s.seq, std::mem::take(&mut s.pending))
            };
            // The last few averages share the step's submission (one submission per event would
            // cost more than the kernel on a CPU adapter); any beyond the slots go before it.
            let (early, in_step) = pending.split_at(pending.len().saturating_sub(AVERAGE_SLOTS));
            self.submit_averages(early)?;
            let mut slot = None;
            let readbacks = &mut self.readbacks;
            let x = self.state.x_buffer().clone();
            let x_tilde = self.state.x_tilde_buffer().cloned();
            let (stepped, submission) = self.learner.step(
                &mut self.state,
                &batch,
                lr,
                tau,
                |st, pass| record_averages(st, pass, in_step),
                |encoder| {
                    slot = readbacks.record(encoder, &x, x_tilde.as_ref(), seq, tau);
                },
            )?;
            let readback = slot;
            if let Some(k) = readback {
                self.readbacks.arm(k);
            }
            // Keep the queue fed: the next step is recorded while this one runs, and never more
            // than one waits behind the running one.
            if let Some(before) = previous.replace(submission) {
                ctx.device
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(before),
                        timeout: None,
                    })
                    .map_err(|e| anyhow::anyhow!("the GPU device failed: {e}"))?;
            }
            self.readbacks.collect(&self.shared);
            // An emulated slower worker waits in proportion to the step's own work, outside
            // the lock (the exchange task answers peers meanwhile).
            if !self.slowdown.is_none() {
                let paused = lock(&self.shared).time.paused() - paused_before;
                self.pace(last.elapsed().as_secs_f64() - paused);
            }
            let now = Instant::now();
            {
                let mut s = lock(&self.shared);
                // The step's time, less any evaluation pause since the previous one (the clock
                // stood still for it; counted in the step time it would slow tau for tens of
                // steps after each evaluation).
                let paused = s.time.paused();
                let seconds = now.duration_since(last).as_secs_f64() - (paused - paused_before);
                (last, paused_before) = (now, paused);
                s.time.record_step(seconds);
                s.grads += 1;
                let grads = s.grads;
                s.counts.set_own(grads);
                mesh.set_clock(s.time.segment());
            }
            self.position = stepped.next_position();
            self.after_step(mesh, lr)?;
        }
    }

    /// The owned edges' reports from the mesh's counters and the exchange task's log.
    fn edge_reports(&self, mesh: &Mesh, tau_end: f64) -> Vec<EdgeReport> {
        let stats = mesh.stats();
        let s = lock(&self.shared);
        self.edges
            .iter()
            .filter(|&&(i, j, _)| i.min(j) == self.rank && self.cfg.method.is_pairwise())
            .map(|&(i, j, rate)| {
                let peer = i.max(j);
                let c = stats.edges.get(&peer).copied().unwrap_or_default();
                let started = s.edges.get(&peer).map(|e| e.started.as_slice());
                let gaps = started
                    .and_then(|t| crate::poisson::gap_stats(t, rate, self.tau_start, tau_end));
                EdgeReport {
                    owner: self.rank,
                    peer,
                    asked_rate: rate,
                    fired: c.fired,
                    exchanges: c.started,
                    dropped: c.dropped,
                    owed: c.owed,
                    gaps,
                }
            })
            .collect()
    }

    /// Checkpoint, evaluate, report, average.
    fn finish(
        &mut self,
        rt: &tokio::runtime::Runtime,
        mesh: &mut Mesh,
        reason: StopReason,
    ) -> anyhow::Result<()> {
        let grads = lock(&self.shared).grads;
        info!(
            "rank {}: stopping after {grads} gradients: {reason}",
            self.rank
        );
        if self.overran > 0 {
            warn!(
                "rank {}: {} of this session's steps took longer than their --step-time pace \
                 ({:.3} s): the workers together need more of this machine than one step time \
                 gives them, so the emulated speeds did not hold for those steps; raise \
                 --step-time",
                self.rank,
                self.overran,
                self.slowdown.floor()
            );
        }
        self.learner.ctx.sync()?;
        let lr = self.lr(&lock(&self.shared));
        if self.learner.window_rows() > 0 {
            self.log_train(lr, mesh)?;
        }
        self.checkpoint(true)?;
        let (grads, comms) = {
            let s = lock(&self.shared);
            (s.grads, s.comms)
        };
        let (test_loss, test_accuracy) = match self.last_eval {
            // Evaluated at this very step and no averaging since: the same parameters.
            Some((g, c, loss, acc)) if (g, c) == (grads, comms) => (loss, acc),
            _ => self.evaluate_own(mesh)?,
        };
        let stats = mesh.stats();
        let tau = lock(&self.shared).time.tau();
        let edges = self.edge_reports(mesh, tau);
        let result = {
            let s = lock(&self.shared);
            WorkerResult {
                rank: self.rank,
                grads: s.grads,
                comms: s.comms,
                missed: stats.edges.values().map(|c| c.missed()).sum(),
                failed_exchanges: s.failed,
                final_train_loss: self.last_loss,
                test_accuracy,
                test_loss,
                wall_seconds: s.time.wall(),
                stop_reason: reason,
                lost_peers: s.lost.clone(),
                // Exchanges and collectives while training (the initial broadcast included;
                // the final average is not).
                bytes_sent: stats.bytes_sent + stats.collective_bytes_sent,
                bytes_received: stats.bytes_received + stats.collective_bytes_received,
                step_seconds: s.time.clock.step_seconds(),
                known_total_grads: self.global_grads(&s),
                adapter: self.learner.ctx.adapter.name.clone(),
                eval_seconds: s.time.eval_seconds,
                tau,
                edges,
                constants: self.constants,
            }
        };
        {
            let mut s = lock(&self.shared);
            let event = MetricEvent::End {
                at: s.at(),
                averagings: s.comms,
                test_loss,
                test_accuracy,
                stop_reason: reason,
            };
            s.metrics.record(&event)?;
            s.metrics.flush()?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn torchrun_variables_place_a_worker_and_flags_still_win() {
        let env = env_of(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29500"),
        ]);
        let p = Placement::resolve_in(None, None, None, None, 4, &env).unwrap();
        assert_eq!((p.rank, p.world), (3, 8));
        assert_eq!(
            p.rendezvous,
            Rendezvous::Rank0 {
                addr: "node7:29500".into()
            }
        );
        let p = Placement::resolve_in(Some(1), None, Some("h:1"), None, 4, &env).unwrap();
        assert_eq!((p.rank, p.world), (1, 4), "explicit flags come first");
    }

    #[test]
    fn incomplete_or_bad_torchrun_variables_are_named() {
        let env = env_of(&[("RANK", "0"), ("WORLD_SIZE", "2")]);
        let e = Placement::resolve_in(None, None, None, None, 4, &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MASTER_ADDR, MASTER_PORT missing"), "{e}");
        let env = env_of(&[
            ("RANK", "zero"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ]);
        let e = format!(
            "{:#}",
            Placement::resolve_in(None, None, None, None, 4, &env).unwrap_err()
        );
        assert!(e.contains("RANK=\"zero\" is not a whole number"), "{e}");
        let e = Placement::resolve_in(None, None, None, None, 4, &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MASTER_PORT") && e.contains("SLURM"), "{e}");
    }
}
