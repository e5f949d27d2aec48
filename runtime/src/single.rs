//! The single-worker loop: one worker in-process, no mesh, evaluated every epoch.
use std::sync::Arc;
use std::time::Instant;

use a2cid_data::{self as data, BatchLoader};
use a2cid_engine::{AdapterChoice, GpuContext, Mlp, MlpSpec, Sgd};
use a2cid_schema::{
    write_atomic, write_json_atomic, At, MetricEvent, MetricsLog, RunConfig, RunDir, Summary,
    WorkerSummary,
};
use anyhow::{bail, Context};

/// Trains one worker in-process and writes the run directory. Returns the summary.
pub fn run_single(cfg: &RunConfig, progress: bool) -> anyhow::Result<Summary> {
    cfg.validate()?;
    if cfg.epochs == 0 {
        bail!("a single-worker run stops on --epochs: give --epochs N (N >= 1)");
    }
    let out = cfg.out_dir();
    let run = RunDir::new(&out);
    std::fs::create_dir_all(&out)
        .with_context(|| format!("creating run directory {}", out.display()))?;
    let mut resolved = cfg.clone();
    resolved.out = Some(out.clone());
    write_atomic(&run.config(), toml::to_string_pretty(&resolved)?.as_bytes())?;

    let dataset = data::load(cfg.dataset, &cfg.data_dir)?;
    let ctx = GpuContext::new(&cfg.adapter.parse::<AdapterChoice>().expect("infallible"))?;
    let spec = MlpSpec::new(dataset.features, &cfg.hidden, dataset.classes)?;
    tracing::info!(
        "dataset {} ({} train / {} test), model mlp {}, adapter {:?}",
        dataset.name,
        dataset.train.len(),
        dataset.test.len(),
        spec.describe(),
        ctx.adapter.name
    );
    let eval_batch = 1024.max(cfg.batch_size);
    let mut mlp = Mlp::new(ctx.clone(), spec.clone(), eval_batch)?;
    mlp.set_params(&spec.init(cfg.seed))?;
    let mut sgd = Sgd::new(
        ctx.clone(),
        mlp.params_buffer(),
        mlp.grads_buffer(),
        spec.layout().len(),
        cfg.sgd(),
    )?;

    let train = Arc::new(dataset.train);
    let shard = data::shard_indices(train.len(), 0, 1, cfg.seed);
    let loader = BatchLoader::spawn(
        train.clone(),
        dataset.features,
        shard,
        cfg.batch_size,
        cfg.seed,
        Some(cfg.epochs),
    );
    let total_steps = loader.batches_per_epoch * cfg.epochs;

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
    let schedule = cfg.schedule;
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
    let mut window_samples = 0usize;
    let mut last_train_loss = f64::NAN;
    let (mut test_loss, mut test_acc) = (f64::NAN, f64::NAN);
    while let Some(batch) = loader.next_batch() {
        let lr = schedule.lr(cfg.lr, step, total_steps, cfg.warmup_steps);
        sgd.set_lr(lr)?;
        let rows = mlp.load_batch(&batch.x, &batch.y)?;
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            mlp.record_train(&mut pass, rows)?;
            sgd.record(&mut pass);
        }
        ctx.queue.submit(Some(encoder.finish()));
        step += 1;
        since_log += 1;
        window_samples += rows;
        bar.inc(1);
        let end_of_epoch = batch.index + 1 == batch.batches_in_epoch;
        if since_log >= cfg.log_every || end_of_epoch {
            let s = mlp.read_stats()?;
            mlp.reset_stats()?;
            last_train_loss = s.loss_sum / window_samples as f64;
            epoch_loss.0 += s.loss_sum;
            epoch_loss.1 += s.correct;
            epoch_loss.2 += window_samples;
            metrics.record(&MetricEvent::Train {
                at: at(step, eval_seconds),
                epoch: batch.epoch,
                train_loss: last_train_loss,
                train_accuracy: s.correct / window_samples as f64,
                lr,
                averagings: 0,
                missed: 0,
                failed: 0,
                bytes_sent: 0,
                bytes_received: 0,
                global_grads: step as u64,
                step_seconds: None,
            })?;
            bar.set_message(format!(
                "epoch {} loss {last_train_loss:.4}",
                batch.epoch + 1
            ));
            since_log = 0;
            window_samples = 0;
        }
        if end_of_epoch {
            let t0 = Instant::now();
            (test_loss, test_acc) = mlp.evaluate(&dataset.test.x, &dataset.test.y)?;
            let seconds = t0.elapsed().as_secs_f64();
            eval_seconds += seconds;
            let train_loss = epoch_loss.0 / epoch_loss.2 as f64;
            let train_acc = epoch_loss.1 / epoch_loss.2 as f64;
            metrics.record(&MetricEvent::Eval {
                at: at(step, eval_seconds),
                epoch: Some(batch.epoch + 1),
                test_loss,
                test_accuracy: test_acc,
                averagings: 0,
                global_grads: step as u64,
                seconds,
            })?;
            metrics.flush()?;
            bar.println(format!(
                "epoch {:>3}/{}  train loss {train_loss:.4}  train acc {:.2}%  test loss {test_loss:.4}  test acc {:.2}%",
                batch.epoch + 1,
                cfg.epochs,
                100.0 * train_acc,
                100.0 * test_acc
            ));
            if !progress {
                println!(
                    "epoch {:>3}/{}  train loss {train_loss:.4}  train acc {:.2}%  test loss {test_loss:.4}  test acc {:.2}%",
                    batch.epoch + 1,
                    cfg.epochs,
                    100.0 * train_acc,
                    100.0 * test_acc
                );
            }
            epoch_loss = (0.0, 0.0, 0);
        }
    }
    bar.finish_and_clear();
    ctx.sync()?;
    let wall = start.elapsed().as_secs_f64();
    let summary = Summary {
        method: "sgd".into(),
        graph: "none".into(),
        dataset: dataset.name,
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
        }],
        parameters: spec.layout().len(),
        architecture: spec.describe(),
        adapter: ctx.adapter.name.clone(),
        epochs: cfg.epochs,
        averaged: "single worker".into(),
        total_grads: step as u64,
    };
    write_json_atomic(&run.summary(), &summary)?;
    println!(
        "done in {wall:.1}s: test accuracy {:.2}%, test loss {test_loss:.4}; run directory {}",
        100.0 * test_acc,
        out.display()
    );
    Ok(summary)
}
