//! Time to accuracy (`--target-accuracy`): when the workers' own models, averaged over the
//! workers, first reached a test accuracy — in training wall time (evaluation pauses excluded)
//! and in gradients of all workers together. Pure: it reads the metric events.
//!
//! The workers evaluate at their own times (every `--eval-every` of their own steps), so the
//! mean is taken over each worker's latest evaluation: at every evaluation of any worker (once
//! every worker has evaluated), the mean of the latest accuracies is compared with each target.
//! The gradients at that moment are each worker's step count at its latest event up to then.
//! The resolution is one evaluation interval: evaluate often (`--eval-every`) when it matters.
use crate::records::{MetricEvent, TargetTime};

/// The first time the mean over workers of their own models' test accuracy reached each target;
/// `workers[r]` holds worker r's metric events in order.
pub fn time_to_accuracy(workers: &[Vec<MetricEvent>], targets: &[f64]) -> Vec<TargetTime> {
    let n = workers.len();
    // (train_wall, worker, accuracy) of every evaluation, in time order.
    let mut evals: Vec<(f64, usize, f64)> = workers
        .iter()
        .enumerate()
        .flat_map(|(r, events)| {
            events.iter().filter_map(move |e| match e {
                MetricEvent::Eval {
                    at, test_accuracy, ..
                }
                | MetricEvent::End {
                    at, test_accuracy, ..
                } if test_accuracy.is_finite() => Some((at.train_wall, r, *test_accuracy)),
                _ => None,
            })
        })
        .collect();
    evals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let steps_at = |r: usize, t: f64| -> u64 {
        workers[r]
            .iter()
            .map(MetricEvent::at)
            .filter(|a| a.train_wall <= t)
            .map(|a| a.step)
            .max()
            .unwrap_or(0)
    };
    let mut latest: Vec<Option<f64>> = vec![None; n];
    let mut out: Vec<TargetTime> = targets
        .iter()
        .map(|&target| TargetTime {
            target,
            train_wall: None,
            grads: None,
            accuracy: None,
        })
        .collect();
    for (t, r, acc) in evals {
        latest[r] = Some(acc);
        if n == 0 || latest.iter().any(Option::is_none) {
            continue;
        }
        let mean = latest.iter().flatten().sum::<f64>() / n as f64;
        for o in out.iter_mut().filter(|o| o.train_wall.is_none()) {
            if mean >= o.target {
                o.train_wall = Some(t);
                o.grads = Some((0..n).map(|w| steps_at(w, t)).sum());
                o.accuracy = Some(mean);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::At;

    fn eval(rank: usize, t: f64, step: u64, acc: f64) -> MetricEvent {
        MetricEvent::Eval {
            at: At {
                rank,
                wall: t,
                train_wall: t,
                tau: None,
                step,
            },
            epoch: None,
            test_loss: 0.0,
            test_accuracy: acc,
            averagings: 0,
            global_grads: 0,
            seconds: 0.0,
        }
    }

    #[test]
    fn the_mean_over_workers_of_their_latest_evaluations_decides() {
        let workers = vec![
            vec![
                eval(0, 1.0, 10, 0.5),
                eval(0, 2.0, 20, 0.9),
                eval(0, 3.0, 30, 0.95),
            ],
            // A slower worker: evaluates later and less often.
            vec![eval(1, 1.5, 5, 0.6), eval(1, 3.5, 15, 0.95)],
        ];
        let t = time_to_accuracy(&workers, &[0.5, 0.75, 0.9, 0.99]);
        // 0.5: first moment both have evaluated, t = 1.5, mean 0.55; steps 10 + 5.
        assert_eq!(t[0].train_wall, Some(1.5));
        assert_eq!(t[0].grads, Some(15));
        // 0.75: at t = 2 the mean is (0.9 + 0.6) / 2 = 0.75.
        assert_eq!((t[1].train_wall, t[1].grads), (Some(2.0), Some(25)));
        // 0.9: at t = 3.5, mean (0.95 + 0.95) / 2; steps 30 + 15.
        assert_eq!((t[2].train_wall, t[2].grads), (Some(3.5), Some(45)));
        assert!((t[2].accuracy.unwrap() - 0.95).abs() < 1e-12);
        // 0.99: never.
        assert_eq!(t[3].train_wall, None);
        assert_eq!(t[3].grads, None);
    }

    #[test]
    fn no_evaluation_means_no_time() {
        let t = time_to_accuracy(&[vec![], vec![eval(1, 1.0, 1, 1.0)]], &[0.1]);
        assert_eq!(t[0].train_wall, None, "worker 0 never evaluated");
    }
}
