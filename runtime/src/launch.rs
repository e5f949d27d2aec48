//! `a2cid run --workers N`: starts N worker processes of this same binary on this machine (direct
//! children), shows their progress in one display and gathers their results into `summary.json`.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::checkpoint::Checkpoint;
use a2cid_schema::{write_atomic, Method, Progress, RunConfig, RunDir, Summary};

fn describe(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => "exited".into(),
    }
}

/// The last lines of a worker's log that say what went wrong.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    let from = lines.len().saturating_sub(3);
    lines[from..].join("\n    ")
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free local port")?;
    Ok(l.local_addr()?.port())
}

struct Display {
    multi: Option<MultiProgress>,
    bars: Vec<ProgressBar>,
    last_print: Instant,
    latest: Vec<Option<Progress>>,
}

impl Display {
    fn new(n: usize, tty: bool) -> Display {
        let multi = tty.then(MultiProgress::new);
        let bars = (0..n)
            .map(|r| {
                let bar = match &multi {
                    Some(m) => m.add(ProgressBar::new(0)),
                    None => ProgressBar::hidden(),
                };
                bar.set_style(
                    ProgressStyle::with_template(
                        "rank {prefix:>3} [{bar:28}] {pos:>6}/{len:6} steps  {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(r.to_string());
                bar.set_message("starting");
                bar
            })
            .collect();
        Display {
            multi,
            bars,
            last_print: Instant::now(),
            latest: vec![None; n],
        }
    }

    fn update(&mut self, p: Progress) {
        let bar = &self.bars[p.rank];
        if let Some(t) = p.target {
            bar.set_length(t.max(p.grads));
        }
        bar.set_position(p.grads);
        bar.set_message(format!(
            "loss {:.4}  averagings {}{}",
            p.loss,
            p.comms,
            if p.done { "  done" } else { "" }
        ));
        let r = p.rank;
        self.latest[r] = Some(p);
        if self.multi.is_none() && self.last_print.elapsed() > Duration::from_secs(10) {
            self.print_lines();
        }
    }

    fn print_lines(&mut self) {
        self.last_print = Instant::now();
        for p in self.latest.iter().flatten() {
            println!(
                "rank {:>3}: {:>6} steps  loss {:.4}  averagings {}  {:.0}s",
                p.rank, p.grads, p.loss, p.comms, p.wall
            );
        }
    }

    fn note(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn mark(&self, rank: usize, what: &str) {
        self.bars[rank].set_message(what.to_string());
    }

    fn finish(&self) {
        for b in &self.bars {
            b.abandon();
        }
    }
}

/// Runs `cfg.workers` local worker processes. `resume`: continue from the run directory's
/// checkpoints.
///
/// `max_restarts`: how many times each worker of an `acid` or `gossip` run that fails after the
/// mesh formed is started again (`a2cid worker --rejoin`), as torchrun's `--max-restarts` does.
pub fn run_local(
    cfg: &RunConfig,
    resume: bool,
    max_restarts: u32,
    tty: bool,
) -> anyhow::Result<Summary> {
    let n = cfg.workers;
    let out = cfg.out_dir();
    let topology = cfg.topology()?;
    for w in topology.warnings() {
        eprintln!("warning: {w}");
    }
    // Fail here, once, with a clear message, rather than in N workers.
    let dataset = a2cid_datasets::load(cfg.dataset, &cfg.data_dir)?;
    let spec = cfg.model_spec(&dataset)?;
    let shards = cfg.shards(&dataset, n)?;
    if let Some((rank, small)) = shards
        .iter()
        .enumerate()
        .find(|(_, s)| s.len() < cfg.batch_size)
    {
        eprintln!(
            "warning: worker {rank}'s shard holds {} rows, fewer than a batch of {} (--partition \
             {}, {n} workers on {} training rows): its epochs are single short steps; use fewer \
             workers, a smaller --batch-size or a less skewed partition",
            small.len(),
            cfg.batch_size,
            cfg.partition,
            dataset.train.len()
        );
    }
    if !cfg.worker_speeds.is_homogeneous() || cfg.step_time.is_some() {
        let speeds = cfg.speeds()?;
        let how = match cfg.step_time {
            None => "a slower worker sleeps after each step; all share this machine".to_string(),
            Some(p) => format!(
                "each step paced to at least {p} s / speed, as if each worker had a device to \
                 itself"
            ),
        };
        println!(
            "emulated worker speeds ({}): {} ({how})",
            cfg.worker_speeds,
            speeds
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let run = RunDir::new(&out);
    let _lock = run.lock()?;
    if resume {
        // Everything is checked before anything is written: a refused resume leaves the run
        // directory as it was, resumable with its own config.toml.
        let fingerprint = spec.layout().fingerprint();
        for rank in 0..n {
            Checkpoint::load_or_neighbours(
                &run,
                rank,
                topology.neighbors(rank),
                cfg.method.is_pairwise(),
            )
            .and_then(|(c, from)| {
                if let Some(p) = from {
                    eprintln!(
                        "warning: worker {rank} has no usable checkpoint; it starts from its \
                         neighbour {p}'s (see its log)"
                    );
                }
                c.check_matches(rank, n, cfg.method.name(), fingerprint)
            })
            .with_context(|| {
                format!(
                    "--resume {}: worker {rank}'s checkpoint does not fit this run; nothing \
                         was changed in the run directory",
                    out.display()
                )
            })?;
        }
    }
    std::fs::create_dir_all(run.workers())
        .with_context(|| format!("creating run directory {}", out.display()))?;
    let mut resolved = cfg.clone();
    resolved.out = Some(out.clone());
    let config_path = run.config();
    write_atomic(&config_path, toml::to_string_pretty(&resolved)?.as_bytes())?;
    // The previous summary.json stays until this run's replaces it (atomically, at the end).
    let _ = std::fs::remove_file(run.average());
    for rank in 0..n {
        let _ = std::fs::remove_file(run.result(rank));
    }
    let c = topology.constants();
    println!(
        "{} workers, {} on {} (rate_com {}: chi_1 {:.3}, chi_2 {:.3}, eta {:.4}, alpha_tilde {:.3}), \
         {} ({} train / {} test), {} {}; run directory {}",
        n,
        cfg.method.name(),
        topology.name(),
        cfg.rate_com,
        c.chi_1,
        c.chi_2,
        c.eta,
        c.alpha_tilde,
        cfg.dataset,
        dataset.train.len(),
        dataset.test.len(),
        cfg.model,
        spec.describe(),
        out.display()
    );
    drop(dataset);

    let secret = a2cid_net::Secret::generate();
    let master = format!("127.0.0.1:{}", free_port()?);
    let exe = std::env::current_exe().context("locating the a2cid executable")?;
    let (tx, rx) = mpsc::channel::<Progress>();
    let mut children: Vec<Option<Child>> = Vec::with_capacity(n);
    let mut pipes: Vec<Option<std::process::ChildStdin>> = Vec::with_capacity(n);
    let interrupted = on_interrupt()?;
    let mut logs: Vec<PathBuf> = Vec::with_capacity(n);
    let start = Instant::now();
    // Starts worker `rank`; `rejoin`: restarted, it rejoins the running mesh (its log goes on).
    let spawn =
        |rank: usize, rejoin: bool| -> anyhow::Result<(Child, Option<std::process::ChildStdin>)> {
            let log = run.log(rank);
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(rejoin)
                .truncate(!rejoin)
                .open(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let mut cmd = Command::new(&exe);
            cmd.arg("worker")
                .arg("--config")
                .arg(&config_path)
                .arg("--out")
                .arg(&out)
                .args(["--rank", &rank.to_string(), "--world", &n.to_string()])
                .args(["--master", &master, "--progress-lines"])
                .env(a2cid_net::SECRET_ENV, secret.as_env_value())
                // The worker stops when this pipe closes: when the launcher dies or is interrupted.
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log_file));
            if resume && !rejoin {
                cmd.arg("--resume").arg(&out);
            }
            if rejoin {
                cmd.arg("--rejoin");
            }
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn,a2cid=info,a2cid_net=warn");
            }
            let mut child = cmd
                .spawn()
                .with_context(|| format!("starting worker {rank} ({})", exe.display()))?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().expect("piped stdout");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(json) = line.strip_prefix(Progress::PREFIX) {
                        if let Ok(p) = serde_json::from_str::<Progress>(json) {
                            let _ = tx.send(p);
                        }
                    }
                }
            });
            Ok((child, stdin))
        };
    for rank in 0..n {
        let (child, stdin) = spawn(rank, false)?;
        pipes.push(stdin);
        children.push(Some(child));
        logs.push(run.log(rank));
    }
    let mut restarts = vec![0u32; n];
    if max_restarts > 0 && !cfg.method.is_pairwise() {
        eprintln!(
            "warning: --max-restarts {max_restarts} has no effect on a {} run: only acid and \
             gossip runs go on while a worker is away (resume a stopped run with --resume)",
            cfg.method
        );
    }

    let mut display = Display::new(n, tty);
    // A worker has joined the mesh once it sent a progress line (the first comes on joining).
    let mut joined = vec![false; n];
    let mut status: Vec<Option<ExitStatus>> = vec![None; n];
    let mut first_failure: Option<(usize, String)> = None;
    // Workers this launcher killed itself (lingering after an allreduce failure).
    let mut killed_here = vec![false; n];
    let mut kill_at: Option<Instant> = None;
    loop {
        while let Ok(p) = rx.try_recv() {
            if p.rank < n {
                joined[p.rank] = true;
                display.update(p);
            }
        }
        for rank in 0..n {
            let Some(child) = children[rank].as_mut() else {
                continue;
            };
            if let Some(st) = child.try_wait()? {
                children[rank] = None;
                status[rank] = Some(st);
                if st.success() {
                    continue; // its last progress line already says "done"
                }
                let why = describe(&st);
                // Its last lines may still be on their way from its reader thread.
                let grace = Instant::now() + Duration::from_secs(2);
                while !joined[rank] && Instant::now() < grace {
                    match rx.recv_timeout(Duration::from_millis(50)) {
                        Ok(p) if p.rank < n => {
                            joined[p.rank] = true;
                            display.update(p);
                        }
                        Ok(_) => {}
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                if !joined[rank] {
                    // The mesh cannot form without it: stop everyone now rather than let the
                    // others wait out the rendezvous timeout.
                    for c in children.iter_mut().flatten() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    display.finish();
                    bail!(
                        "worker {rank} {why} before every worker had joined the mesh, so the run \
                         cannot start; the other workers were stopped. Its log ({}):\n    {}",
                        logs[rank].display(),
                        log_tail(&logs[rank])
                    );
                }
                let others_on = children.iter().any(Option::is_some);
                let stopping = interrupted.load(std::sync::atomic::Ordering::Relaxed);
                if cfg.method.is_pairwise()
                    && restarts[rank] < max_restarts
                    && others_on
                    && !stopping
                {
                    restarts[rank] += 1;
                    display.note(&format!(
                        "worker {rank} {why}; restarting it ({} of --max-restarts {max_restarts}): \
                         it rejoins from a live neighbour's state. Its log ({}):\n    {}",
                        restarts[rank],
                        logs[rank].display(),
                        log_tail(&logs[rank])
                    ));
                    display.mark(rank, "restarting");
                    let (child, stdin) = spawn(rank, true)?;
                    children[rank] = Some(child);
                    if !pipes.is_empty() {
                        pipes[rank] = stdin;
                    }
                    status[rank] = None;
                    continue;
                }
                display.mark(rank, &format!("LOST: {why}"));
                display.note(&format!(
                    "worker {rank} {why}; its log ({}):\n    {}",
                    logs[rank].display(),
                    log_tail(&logs[rank])
                ));
                if first_failure.is_none() {
                    first_failure = Some((rank, why));
                    if cfg.method.synchronises_by_allreduce() {
                        // The others fail at their next all-reduce; make sure nothing lingers.
                        kill_at = Some(Instant::now() + Duration::from_secs(30));
                    } else {
                        display.note(&format!(
                            "{} goes on with the other workers",
                            cfg.method.name()
                        ));
                    }
                }
            }
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        if interrupted.load(std::sync::atomic::Ordering::Relaxed) && !pipes.is_empty() {
            display
                .note("interrupted: stopping every worker (final checkpoints, then the summary)");
            pipes.clear(); // closing their stdin stops the workers gracefully
        }
        if kill_at.is_some_and(|t| Instant::now() > t) {
            for (rank, c) in children.iter_mut().enumerate() {
                if let Some(c) = c {
                    let _ = c.kill();
                    killed_here[rank] = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    while let Ok(p) = rx.try_recv() {
        if p.rank < n {
            display.update(p);
        }
    }
    display.finish();
    if !tty {
        display.print_lines();
    }
    let launcher_wall = start.elapsed().as_secs_f64();
    let ok: Vec<bool> = status
        .iter()
        .map(|s| s.is_some_and(|s| s.success()))
        .collect();
    if let (Some(first), true) = (&first_failure, cfg.method.synchronises_by_allreduce()) {
        // Blame the worker that was lost, not the first survivor whose all-reduce failed on it:
        // the rank the others' errors name, else one killed by a signal (not by this launcher),
        // else the first failure seen.
        let failed: Vec<(usize, String)> = status
            .iter()
            .enumerate()
            .filter_map(|(r, st)| st.filter(|st| !st.success()).map(|st| (r, describe(&st))))
            .collect();
        let named = failed.iter().find_map(|(r, _)| lost_rank_named(&logs[*r]));
        let (rank, why) = blame(&failed, named, &killed_here).unwrap_or(first);
        bail!(
            "worker {rank} {why}: {} stops without it (the other workers' errors are in {}). \
             Resume with `a2cid run --resume {}`",
            match cfg.method {
                Method::Lasgd => "a `lasgd` run meets every worker at each synchronisation, so it",
                Method::RelaySum => "a `relaysum` run relays every model at every step, so it",
                _ => "an `allreduce` run is synchronous and",
            },
            run.workers().display(),
            out.display()
        );
    }
    drop(pipes);
    let summary = match crate::gather(&run, cfg, Some(&ok)) {
        Ok(s) => s,
        Err(e) => match &first_failure {
            Some((rank, why)) if ok.iter().all(|ok| !ok) => bail!(
                "every worker failed; the first, worker {rank}, {why}:\n    {}\n(every worker's \
                 log is in {})",
                log_tail(&logs[*rank]),
                run.workers().display()
            ),
            _ => return Err(e),
        },
    };
    println!(
        "done in {launcher_wall:.1}s: averaged model ({}) test accuracy {:.2}%, test loss {:.4}",
        summary.averaged,
        100.0 * summary.test_accuracy,
        summary.test_loss
    );
    for w in &summary.per_worker {
        println!(
            "  rank {:>3}: {:>6} gradients, {:>6} averagings, train loss {:.4}, own test accuracy {}{}",
            w.rank,
            w.grads,
            w.comms,
            w.final_train_loss,
            if w.test_accuracy.is_finite() {
                format!("{:.2}%", 100.0 * w.test_accuracy)
            } else {
                "-".into()
            },
            match (w.alive, w.rejoins) {
                (false, _) => "  (lost)".to_string(),
                (true, 0) => String::new(),
                (true, k) => format!("  (restarted; rejoined {k}x from a neighbour)"),
            }
        );
    }
    if let Some(rates) = &summary.rates {
        print_rates(rates);
    }
    println!("summary {}", run.summary().display());
    if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
        bail!(
            "interrupted: every worker stopped with a final checkpoint and the summary above is \
             written; continue with `a2cid run --resume {}`",
            out.display()
        );
    }
    Ok(summary)
}

/// Which of the `failed` workers (rank, how it ended) an `allreduce` run lost: the rank the
/// others' errors name (`named`), else one killed by a signal that this launcher did not send.
fn blame<'a>(
    failed: &'a [(usize, String)],
    named: Option<usize>,
    killed_here: &[bool],
) -> Option<&'a (usize, String)> {
    named
        .and_then(|n| failed.iter().find(|(r, _)| *r == n))
        .or_else(|| {
            failed
                .iter()
                .find(|(r, why)| why.contains("signal") && !killed_here[*r])
        })
}

/// The rank a worker's log says its collective operation lost (`lost rank R`), if any.
fn lost_rank_named(log: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(log).ok()?;
    let at = text.rfind("lost rank ")? + "lost rank ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A flag raised on the first SIGINT (Ctrl-C) or SIGTERM, watched by a thread of its own; a
/// second one ends the launcher at once (its workers, whose stdin closes with it, still stop
/// gracefully).
fn on_interrupt() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let raised = flag.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    std::thread::Builder::new()
        .name("a2cid-signals".into())
        .spawn(move || {
            rt.block_on(async {
                let first = a2cid_net::interrupt_signal().await;
                eprintln!("{first}: stopping the run gracefully (again to stop at once)");
                raised.store(true, std::sync::atomic::Ordering::Relaxed);
                let second = a2cid_net::interrupt_signal().await;
                eprintln!("{second} again: leaving now; the workers stop on their own");
                std::process::exit(130);
            });
        })
        .context("starting the signal watcher")?;
    Ok(flag)
}

/// The averaging rate asked and achieved, per worker and per edge, and a warning naming the likely
/// cause when a run falls below 0.8 of the asked rate (docs/algorithm.md §1: the constants assume
/// the asked rate).
fn print_rates(r: &a2cid_schema::RateSummary) {
    let per: Vec<String> = r
        .achieved_rate_per_worker
        .iter()
        .map(|a| format!("{a:.2}"))
        .collect();
    println!(
        "averagings per gradient per worker: asked {}, achieved {:.2} ({:.0}% of asked; by rank: {})",
        r.asked_rate,
        r.achieved_rate,
        100.0 * r.achieved_rate / r.asked_rate,
        per.join(" ")
    );
    let edges: Vec<String> = r
        .edges
        .iter()
        .map(|e| {
            let cv = e.gaps.map_or(String::from("-"), |g| format!("{:.2}", g.cv));
            format!("({},{}) {} cv {cv}", e.owner, e.peer, e.exchanges)
        })
        .collect();
    println!("exchanges per edge: {}", edges.join(", "));
    if let (Some(used), Some(implied)) = (r.constants_in_use, r.constants_implied) {
        println!(
            "constants: eta {:.4} and alpha_tilde {:.3} in use; the achieved rates imply eta {:.4}, \
             alpha_tilde {:.3}",
            used.eta, used.alpha_tilde, implied.eta, implied.alpha_tilde
        );
    }
    if r.achieved_rate < 0.8 * r.asked_rate {
        let dropped: u64 = r.edges.iter().map(|e| e.dropped).sum();
        eprintln!(
            "warning: the run averaged at {:.0}% of the asked rate ({dropped} edge events dropped): \
             exchanges take too long against the step time — a slow link, a model too large to \
             send at this rate, or more workers than the machine runs at once. Lower --rate-com \
             or use fewer workers per machine; the A²CiD² constants assume the asked rate",
            100.0 * r.achieved_rate / r.asked_rate
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allreduce_failure_blames_the_lost_worker_not_the_first_survivor_seen() {
        let failed = vec![
            (0, "exited with status 1".to_string()),
            (1, "exited with status 1".to_string()),
            (2, "was killed by signal 9".to_string()),
        ];
        let none = [false; 3];
        assert_eq!(blame(&failed, None, &none).unwrap().0, 2);
        // The survivors name the lost rank: that decides, whatever the signals.
        assert_eq!(blame(&failed, Some(1), &none).unwrap().0, 1);
        // A worker the launcher killed itself is not the cause.
        assert_eq!(blame(&failed, None, &[false, false, true]), None);
    }

    #[test]
    fn the_lost_rank_is_read_from_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("rank0.log");
        std::fs::write(
            &log,
            "...\nerror: collective operation lost rank 12: connection reset\n",
        )
        .unwrap();
        assert_eq!(lost_rank_named(&log), Some(12));
        std::fs::write(&log, "error: something else\n").unwrap();
        assert_eq!(lost_rank_named(&log), None);
    }
}
