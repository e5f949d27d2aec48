//! Is a point process Poisson at a given rate? Pure statistics of event times (time passed in):
//! the inter-arrival gaps' mean and coefficient of variation (1 for exponential gaps) and the
//! Kolmogorov–Smirnov distance between their empirical law and the exponential of the asked rate.

pub use a2cid_schema::GapStats;

/// The statistics of events at `times` (sorted) of a process asked to run at `rate` per unit of
/// time, observed from `start` to `end`. `None` with fewer than 3 events.
pub fn gap_stats(times: &[f64], rate: f64, start: f64, end: f64) -> Option<GapStats> {
    if times.len() < 3 || rate.is_nan() || rate <= 0.0 {
        return None;
    }
    let mut gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]).max(0.0)).collect();
    let m = gaps.len() as f64;
    let mean = gaps.iter().sum::<f64>() / m;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (m - 1.0);
    gaps.sort_by(f64::total_cmp);
    let ks = gaps
        .iter()
        .enumerate()
        .map(|(k, &g)| {
            let f = 1.0 - (-rate * g).exp();
            let below = k as f64 / m;
            let above = (k + 1) as f64 / m;
            (f - below).abs().max((above - f).abs())
        })
        .fold(0.0, f64::max);
    let span = (end - start).max(times[times.len() - 1] - times[0]);
    Some(GapStats {
        events: times.len(),
        achieved_rate: times.len() as f64 / span.max(f64::MIN_POSITIVE),
        mean_gap: mean,
        cv: var.sqrt() / mean.max(f64::MIN_POSITIVE),
        ks,
        ks_critical: 1.36 / m.sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Exp};

    fn poisson(rate: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let exp = Exp::new(rate).unwrap();
        let mut t = 0.0;
        (0..n)
            .map(|_| {
                t += exp.sample(&mut rng);
                t
            })
            .collect()
    }

    #[test]
    fn a_poisson_process_passes_and_a_clock_does_not() {
        let times = poisson(0.5, 2000, 3);
        let end = *times.last().unwrap();
        let s = gap_stats(&times, 0.5, 0.0, end).unwrap();
        assert!((s.cv - 1.0).abs() < 0.08, "{s:?}");
        assert!(s.ks < s.ks_critical, "{s:?}");
        assert!((s.achieved_rate - 0.5).abs() < 0.05, "{s:?}");
        // At the wrong rate the KS distance says so.
        let wrong = gap_stats(&times, 1.0, 0.0, end).unwrap();
        assert!(wrong.ks > wrong.ks_critical, "{wrong:?}");
        // Regular ticks: CV 0, far from exponential.
        let ticks: Vec<f64> = (1..=500).map(|k| k as f64 * 2.0).collect();
        let r = gap_stats(&ticks, 0.5, 0.0, 1000.0).unwrap();
        assert!(r.cv < 1e-9 && r.ks > r.ks_critical, "{r:?}");
        assert_eq!(gap_stats(&[1.0, 2.0], 1.0, 0.0, 2.0), None);
    }
}
