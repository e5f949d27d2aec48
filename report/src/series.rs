//! Pure arithmetic on series for the report: the workers' series of a run resampled onto one grid
//! (their mean and range at each grid point), and the rolling median of a noisy series.

/// How a worker's series is read between its points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// Linear interpolation between neighbouring points (a loss logged every few steps).
    Linear,
    /// The last value at or before x (an accuracy that holds until the next evaluation).
    Step,
}

/// The workers' values at one grid point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EnvelopePoint {
    pub x: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Workers whose series covers x (they alone enter the mean and the range).
    pub workers: usize,
}

/// Resamples each worker's series (`(x, y)` points, any order; non-finite points are left out)
/// onto `points` evenly spaced x values over the range that at least one worker covers, and
/// returns at each grid x the mean, minimum and maximum over the workers whose series covers x
/// (from its first to its last x). Grid points no worker covers are left out; a range of one x
/// value gives one point.
pub fn envelope(series: &[Vec<(f64, f64)>], points: usize, interp: Interp) -> Vec<EnvelopePoint> {
    let clean: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            let mut s: Vec<(f64, f64)> = s
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            // Stable: points at the same x keep their order (the later one wins).
            s.sort_by(|a, b| a.0.total_cmp(&b.0));
            s
        })
        .filter(|s| !s.is_empty())
        .collect();
    if clean.is_empty() || points == 0 {
        return Vec::new();
    }
    let lo = clean.iter().map(|s| s[0].0).fold(f64::INFINITY, f64::min);
    let hi = clean
        .iter()
        .map(|s| s[s.len() - 1].0)
        .fold(f64::NEG_INFINITY, f64::max);
    let n = if hi > lo { points.max(2) } else { 1 };
    (0..n)
        .filter_map(|k| {
            let x = if k + 1 == n {
                hi
            } else {
                lo + (hi - lo) * k as f64 / (n - 1) as f64
            };
            let values: Vec<f64> = clean
                .iter()
                .filter_map(|s| value_at(s, x, interp))
                .collect();
            if values.is_empty() {
                return None;
            }
            Some(EnvelopePoint {
                x,
                mean: values.iter().sum::<f64>() / values.len() as f64,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                workers: values.len(),
            })
        })
        .collect()
}

/// A series' value at x (`s` sorted by x, not empty); `None` outside its first and last x.
fn value_at(s: &[(f64, f64)], x: f64, interp: Interp) -> Option<f64> {
    if x < s[0].0 || x > s[s.len() - 1].0 {
        return None;
    }
    // The first point strictly after x; at least one point is at or before x.
    let i = s.partition_point(|p| p.0 <= x);
    let a = s[i - 1];
    match (interp, s.get(i)) {
        (Interp::Step, _) | (Interp::Linear, None) => Some(a.1),
        (Interp::Linear, Some(b)) => Some(a.1 + (x - a.0) / (b.0 - a.0) * (b.1 - a.1)),
    }
}

/// The window of the rolling median of `count` values: a fortieth of them, at least 9, odd.
pub fn median_window(count: usize) -> usize {
    let w = (count / 40).max(9);
    w | 1
}

/// The rolling median of `values` over a centred window of `window` values (rounded up to odd);
/// near the ends the window is cut to the values there are. One median per value; the median of
/// an even number of values is the mean of the middle two.
pub fn rolling_median(values: &[f64], window: usize) -> Vec<f64> {
    let n = values.len();
    let half = window / 2;
    let position = |sorted: &[f64], v: f64| sorted.partition_point(|x| x.total_cmp(&v).is_lt());
    // The window's values, kept sorted as it slides.
    let mut sorted: Vec<f64> = Vec::with_capacity(2 * half + 1);
    for &v in &values[..n.min(half + 1)] {
        sorted.insert(position(&sorted, v), v);
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            if let Some(&v) = values.get(i + half) {
                sorted.insert(position(&sorted, v), v);
            }
            if i > half {
                let v = values[i - half - 1];
                sorted.remove(position(&sorted, v));
            }
        }
        let m = sorted.len();
        out.push(if m % 2 == 1 {
            sorted[m / 2]
        } else {
            (sorted[m / 2 - 1] + sorted[m / 2]) / 2.0
        });
    }
    out
}

/// At most about `max` of `points`, evenly strided, the last one always kept (for drawing).
pub fn thin<T: Copy>(points: &[T], max: usize) -> Vec<T> {
    if points.is_empty() {
        return Vec::new();
    }
    let stride = points.len().div_ceil(max.max(1)).max(1);
    let mut out: Vec<T> = points.iter().copied().step_by(stride).collect();
    if !(points.len() - 1).is_multiple_of(stride) {
        out.extend(points.last().copied());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn the_envelope_interpolates_each_worker_and_uses_only_those_covering_x() {
        // Worker 0 covers [0, 10] (y = x), worker 1 covers [5, 20] at different x values
        // (y = 100 − x, given out of order), worker 2 has only non-finite points.
        let series = vec![
            vec![(0.0, 0.0), (10.0, 10.0)],
            vec![(20.0, 80.0), (5.0, 95.0), (12.5, 87.5)],
            vec![(f64::NAN, 1.0), (3.0, f64::INFINITY)],
        ];
        let env = envelope(&series, 5, Interp::Linear);
        let xs: Vec<f64> = env.iter().map(|p| p.x).collect();
        assert_eq!(xs, [0.0, 5.0, 10.0, 15.0, 20.0]);
        // x = 0: worker 0 alone.
        assert_eq!((env[0].workers, env[0].mean), (1, 0.0));
        // x = 5: both (5 and 95).
        assert_eq!(env[1].workers, 2);
        assert!(close(env[1].mean, 50.0) && close(env[1].min, 5.0) && close(env[1].max, 95.0));
        // x = 10: worker 0's last point and worker 1 interpolated between 5 and 12.5 (90).
        assert!(close(env[2].min, 10.0) && close(env[2].max, 90.0));
        // x = 15 and 20: worker 1 alone, interpolated between 12.5 and 20.
        assert_eq!(env[3].workers, 1);
        assert!(close(env[3].mean, 85.0) && close(env[4].mean, 80.0));
    }

    #[test]
    fn a_step_series_holds_its_last_value_and_gaps_are_left_out() {
        // Two workers that never overlap: the middle of the range is covered by neither.
        let series = vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(3.0, 5.0), (4.0, 7.0)]];
        let env = envelope(&series, 9, Interp::Step);
        let got: Vec<(f64, f64)> = env.iter().map(|p| (p.x, p.mean)).collect();
        // Grid step 0.5: 0 → 1, 0.5 → 1 (held), 1 → 2; 1.5, 2, 2.5 covered by nobody; 3 → 5,
        // 3.5 → 5 (held), 4 → 7.
        assert_eq!(
            got,
            [
                (0.0, 1.0),
                (0.5, 1.0),
                (1.0, 2.0),
                (3.0, 5.0),
                (3.5, 5.0),
                (4.0, 7.0)
            ]
        );
        // The same point twice: the later wins; a single x gives one grid point.
        let env = envelope(&[vec![(2.0, 1.0), (2.0, 3.0)]], 120, Interp::Linear);
        assert_eq!(env.len(), 1);
        assert_eq!((env[0].x, env[0].mean), (2.0, 3.0));
        assert!(envelope(&[vec![]], 120, Interp::Linear).is_empty());
        assert!(envelope(&[], 120, Interp::Step).is_empty());
    }

    #[test]
    fn the_rolling_median_ignores_spikes_and_cuts_the_window_at_the_ends() {
        let values = [1.0, 100.0, 2.0, 3.0, -50.0, 4.0, 5.0];
        let med = rolling_median(&values, 3);
        // Windows: [1,100] → 50.5, [1,100,2] → 2, [100,2,3] → 3, [2,3,-50] → 2, [3,-50,4] → 3,
        // [-50,4,5] → 4, [4,5] → 4.5.
        assert_eq!(med, [50.5, 2.0, 3.0, 2.0, 3.0, 4.0, 4.5]);
        // Against the definition, on a longer series with repeated values and a wide window.
        let values: Vec<f64> = (0..200).map(|i| ((i * 37) % 23) as f64).collect();
        let w = 9;
        let med = rolling_median(&values, w);
        for (i, m) in med.iter().enumerate() {
            let mut win: Vec<f64> =
                values[i.saturating_sub(w / 2)..(i + w / 2 + 1).min(200)].to_vec();
            win.sort_by(f64::total_cmp);
            let k = win.len();
            let want = if k % 2 == 1 {
                win[k / 2]
            } else {
                (win[k / 2 - 1] + win[k / 2]) / 2.0
            };
            assert_eq!(*m, want, "at {i}");
        }
        // A window wider than the series: every value's median is the whole series' one there.
        assert_eq!(rolling_median(&[3.0, 1.0, 2.0], 99), [2.0, 2.0, 2.0]);
        assert!(rolling_median(&[], 9).is_empty());
    }

    #[test]
    fn the_window_is_odd_and_at_least_nine() {
        assert_eq!(median_window(0), 9);
        assert_eq!(median_window(400), 11);
        assert_eq!(median_window(4000), 101);
        assert_eq!(median_window(4040), 101);
    }

    #[test]
    fn thinning_keeps_both_ends() {
        let v: Vec<usize> = (0..10).collect();
        assert_eq!(thin(&v, 4), [0, 3, 6, 9]);
        assert_eq!(thin(&v, 3), [0, 4, 8, 9]);
        assert_eq!(thin(&v, 100), v);
        assert!(thin::<usize>(&[], 5).is_empty());
    }
}
