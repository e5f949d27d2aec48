//! The single-worker loop: one worker in-process, no mesh, evaluated every epoch. It trains with
//! the same [`Learner`] as each worker of a multi-worker run: the `gossip` path (no x̃) without
//! peers, so its step is plain SGD.
use std::time::Instant;

use a2cid_engine::acid::AcidParams;
use a2cid_schema::{
    write_atomic, write_json_atomic, At, MetricEvent, MetricsLog, RunConfig, RunDir, Summary,
    WorkerSummary,
};
use anyhow::bail;

use crate::learner::{DataPlan, Learner};

/// Trains one worker in-process and writes the run directory. Returns the summary.
pub fn run_single(cfg: &RunConfig, progress: bool) -> anyhow::Result<Summary> {
    cfg.validate()?;
    if cfg.epochs == 0 {
        bail!(
            "a single-worker run needs --epochs N (N >= 1): it sets the length of the \
             learning-rate schedule; --grad-budget and --max-seconds can stop it earlier"
        );
    }
    let out = cfg.out_dir();
    let run = RunDir::new(&out);
    let _lock = run.lock()?;
    let mut resolved = cfg.clone();
    resolved.out = Some(out.clone());
    write_atomic(&run.config(), toml::to_string_pretty(&resolved)?.as_bytes())?;

    let plan = DataPlan {
        rank: 0,
        world: 1,
        shuffle_seed: cfg.seed,
        epochs: Some(cfg.epochs),
        position: (0, 0),
    };
    let mut learner = Learner::new(cfg, plan)?;
    let mut state = learner.train_state(cfg.sgd(), AcidParams::GOSSIP, false)?;
    tracing::info!(
        "dataset {} ({} train / {} test), model {} {}, adapter {:?}",
        learner.dataset.name,
        learner.dataset.train.len(),
        learner.dataset.test.len(),
        cfg.model,
        learner.model.describe(),
        learner.ctx.adapter.name
    );
    // The schedule runs over the epochs, or over the gradient budget when that is shorter;
    // --max-seconds only stops the loop (the schedule cannot know when that will be).
    let epoch_steps = learner.batches_per_epoch() * cfg.epochs;
    let total_steps = cfg
        .grad_budget
        .map_or(epoch_steps, |g| epoch_steps.min(g as usize));
    let mut metrics = MetricsLog::open(&run.single_metrics(), false)?;
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total_steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    let start = Instant::now();
    let mut eval_seconds = 0.0;
    let at = |step: usize, eval_seconds: f64| {
        let wall = start.elapsed().as_secs_f64();
        At {
            rank: 0,
            wall,
            train_wall: wall - eval_seconds,
            tau: None,
            step: step as u64,
        }
    };
    let mut step = 0usize;
    let mut since_log = 0usize;
    let mut epoch_loss = (0f64, 0f64, 0usize); // loss sum, correct, samples
    let mut last_train_loss = f64::NAN;
    let (mut test_loss, mut test_acc) = (f64::NAN, f64::NAN);
    let mut stopped_by = None;
    while step < total_steps {
        let Some(batch) = learner.next_batch() else {
            break;
        };
        let lr = cfg.schedule.lr(cfg.lr, step, total_steps, cfg.warmup_steps);
        // A single worker's clock never advances a mixing: tau stays 0 (eta = 0 anyway).
        let (stepped, _) = learner.step(&mut state, &batch, lr, 0.0, |_, _| Ok(()), |_| {})?;
        step += 1;
        since_log += 1;
        bar.inc(1);
        if step == total_steps && total_steps < epoch_steps {
            stopped_by = Some(format!("the gradient budget ({step} gradients)"));
        } else if let Some(limit) = cfg.max_seconds {
            if start.elapsed().as_secs_f64() - eval_seconds >= limit && step < total_steps {
                stopped_by = Some(format!("--max-seconds {limit} (after {step} gradients)"));
            }
        }
        // A stop inside an epoch logs its last window and evaluates, like an epoch's end.
        let ends_epoch = stepped.ends_epoch() || stopped_by.is_some();
        if since_log >= cfg.log_every || ends_epoch {
            let window = learner.take_window()?;
            window.check_diverged(step as u64, lr, learner.dataset.classes, cfg)?;
            last_train_loss = window.loss();
            epoch_loss.0 += window.loss_sum;
            epoch_loss.1 += window.correct;
            epoch_loss.2 += window.rows;
            metrics.record(&MetricEvent::Train {
                at: at(step, eval_seconds),
                epoch: stepped.epoch,
                train_loss: last_train_loss,
                train_accuracy: window.accuracy(),
                lr,
                averagings: 0,
                missed: 0,
                failed: 0,
                bytes_sent: 0,
                bytes_received: 0,
                global_grads: step as u64,
                step_seconds: None,
            })?;
            metrics.flush()?; // a killed run loses at most one logging window
            bar.set_message(format!(
                "epoch {} loss {last_train_loss:.4}",
                stepped.epoch + 1
            ));
            since_log = 0;
        }
        if ends_epoch {
            let t0 = Instant::now();
            (test_loss, test_acc) = learner.evaluate_test()?;
            let seconds = t0.elapsed().as_secs_f64();
            eval_seconds += seconds;
            let train_loss = epoch_loss.0 / epoch_loss.2 as f64;
            let train_acc = epoch_loss.1 / epoch_loss.2 as f64;
            metrics.record(&MetricEvent::Eval {
                at: at(step, eval_seconds),
                epoch: stepped.ends_epoch().then_some(stepped.epoch + 1),
                test_loss,
                test_accuracy: test_acc,
                averagings: 0,
                global_grads: step as u64,
                seconds,
            })?;
            metrics.flush()?;
            let partial = if stepped.ends_epoch() {
                ""
            } else {
                " (partial)"
            };
            let line = format!(
                "epoch {:>3}/{}{partial}  train loss {train_loss:.4}  train acc {:.2}%  test loss \
                 {test_loss:.4}  test acc {:.2}%",
                stepped.epoch + 1,
                cfg.epochs,
                100.0 * train_acc,
                100.0 * test_acc
            );
            if progress {
                bar.println(line);
            } else {
                println!("{line}");
            }
            epoch_loss = (0.0, 0.0, 0);
        }
        if let Some(why) = &stopped_by {
            tracing::info!("stopped by {why}");
            break;
        }
    }
    bar.finish_and_clear();
    metrics.flush()?;
    learner.ctx.sync()?;
    let wall = start.elapsed().as_secs_f64();
    let summary = Summary {
        method: "sgd".into(),
        graph: "none".into(),
        dataset: learner.dataset.name,
        model: cfg.model,
        workers: 1,
        wall_seconds: wall,
        test_accuracy: test_acc,
        test_loss,
        per_worker: vec![WorkerSummary {
            rank: 0,
            grads: step as u64,
            comms: 0,
            final_train_loss: last_train_loss,
            test_accuracy: test_acc,
            alive: true,
            rejoins: 0,
        }],
        parameters: learner.model.parameters(),
        architecture: learner.model.describe(),
        adapter: learner.ctx.adapter.name.clone(),
        epochs: cfg.epochs,
        averaged: "single worker".into(),
        total_grads: step as u64,
        rates: None,
        consensus: None,
        partition: cfg.partition.to_string(),
        worker_speeds: cfg.worker_speeds.to_string(),
        time_to_accuracy: a2cid_schema::time_to_accuracy(
            &[MetricsLog::read(&run.single_metrics())?],
            &cfg.target_accuracy,
        ),
    };
    write_json_atomic(&run.summary(), &summary)?;
    println!(
        "done in {wall:.1}s: test accuracy {:.2}%, test loss {test_loss:.4}; run directory {}",
        100.0 * test_acc,
        out.display()
    );
    Ok(summary)
}
