//! Consensus distance in a real run, from sketches (docs/algorithm.md §1, §5).
//!
//! At every point g of a common grid of its clock, each worker logs the sketch y_i = P_g x_i of its
//! parameters: a random ±1 projection to k numbers (scaled by 1/√k) whose signs every worker
//! draws from the same seed ([`grid_seed`]), computed on the device (`shaders/sketch.wgsl`). P_g
//! is linear and E‖P_g v‖² = ‖v‖², so (1/n) Σ_i ‖y_i − ȳ‖² estimates the consensus distance
//! (1/n) Σ_i ‖x_i − x̄‖² without any worker sending its parameters. A fresh P_g per grid point
//! makes the errors of successive points independent. The error bar comes from the rows
//! themselves: the k rows are split into blocks, each block is an unbiased estimate, and the
//! standard error is their spread over √blocks.

/// Row blocks of the error estimate.
pub const BLOCKS: usize = 8;

/// The projection's seed at grid point `grid` of a run seeded `run_seed` (the same on every
/// worker).
pub fn grid_seed(run_seed: u64, grid: u64) -> u32 {
    let mut z = run_seed
        .wrapping_add(grid.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x5ce7_c4ed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as u32
}

/// An estimate and its standard error.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub std_error: f64,
}

/// The consensus distance (1/n) Σ_i ‖x_i − x̄‖² estimated from the workers' sketches of one grid
/// point (all of the same length k, taken with the same seed). `None` with fewer than two workers.
pub fn consensus_distance(sketches: &[&[f32]]) -> Option<Estimate> {
    let n = sketches.len();
    let k = sketches.first()?.len();
    if n < 2 || k == 0 || sketches.iter().any(|s| s.len() != k) {
        return None;
    }
    let mean: Vec<f64> = (0..k)
        .map(|j| sketches.iter().map(|s| f64::from(s[j])).sum::<f64>() / n as f64)
        .collect();
    // Per row: (1/n) Σ_i (y_ij − ȳ_j)²; k times a row's value is an unbiased estimate.
    let rows: Vec<f64> = (0..k)
        .map(|j| {
            sketches
                .iter()
                .map(|s| (f64::from(s[j]) - mean[j]).powi(2))
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let value = rows.iter().sum::<f64>();
    let blocks = BLOCKS.min(k);
    let per_block = k / blocks;
    let estimates: Vec<f64> = (0..blocks)
        .map(|b| {
            let block = &rows[b * per_block..(b + 1) * per_block];
            block.iter().sum::<f64>() * k as f64 / per_block as f64
        })
        .collect();
    let m = estimates.iter().sum::<f64>() / blocks as f64;
    let var = if blocks > 1 {
        estimates.iter().map(|e| (e - m).powi(2)).sum::<f64>() / (blocks - 1) as f64
    } else {
        value * value * 2.0 / k as f64
    };
    Some(Estimate {
        value,
        std_error: (var / blocks as f64).sqrt(),
    })
}

/// One worker's sketch of one grid point.
#[derive(Clone, Debug, PartialEq)]
pub struct GridSketch {
    pub grid: u64,
    /// The worker's clock when it took the sketch.
    pub tau: f64,
    pub values: Vec<f32>,
}

/// The consensus distance at one grid point of the clock.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConsensusPoint {
    pub grid: u64,
    /// The workers' mean clock at their sketches.
    pub tau: f64,
    pub estimate: Estimate,
}

/// The consensus distance over time from every worker's sketches (one list per worker): the grid
/// points every worker sketched, in order.
pub fn consensus_series(workers: &[Vec<GridSketch>]) -> Vec<ConsensusPoint> {
    let Some(first) = workers.first() else {
        return Vec::new();
    };
    let mut points = Vec::new();
    for g in first {
        let same: Vec<&GridSketch> = workers
            .iter()
            .filter_map(|w| w.iter().find(|s| s.grid == g.grid))
            .collect();
        if same.len() != workers.len() {
            continue;
        }
        let views: Vec<&[f32]> = same.iter().map(|s| s.values.as_slice()).collect();
        if let Some(estimate) = consensus_distance(&views) {
            points.push(ConsensusPoint {
                grid: g.grid,
                tau: same.iter().map(|s| s.tau).sum::<f64>() / same.len() as f64,
                estimate,
            });
        }
    }
    points
}

/// The mean of estimates (independent, e.g. of successive grid points) and its standard error.
pub fn mean_of(estimates: &[Estimate]) -> Option<Estimate> {
    if estimates.is_empty() {
        return None;
    }
    let n = estimates.len() as f64;
    Some(Estimate {
        value: estimates.iter().map(|e| e.value).sum::<f64>() / n,
        std_error: estimates
            .iter()
            .map(|e| e.std_error.powi(2))
            .sum::<f64>()
            .sqrt()
            / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use a2cid_engine::cpu;

    fn exact(xs: &[Vec<f32>]) -> f64 {
        let n = xs.len() as f64;
        let d = xs[0].len();
        (0..d)
            .map(|i| {
                let m = xs.iter().map(|x| f64::from(x[i])).sum::<f64>() / n;
                xs.iter()
                    .map(|x| (f64::from(x[i]) - m).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / n
    }

    #[test]
    fn the_estimate_is_within_its_theoretical_error_of_the_exact_value() {
        // Four "workers": a shared model plus worker-specific offsets of different sizes.
        let d = 3000;
        let k = 128;
        let base: Vec<f32> = (0..d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let xs: Vec<Vec<f32>> = (0..4)
            .map(|w| {
                base.iter()
                    .enumerate()
                    .map(|(i, &b)| {
                        b + (w as f32 + 1.0) * (((i * 13 + w * 7) % 29) as f32 - 14.0) / 40.0
                    })
                    .collect()
            })
            .collect();
        let truth = exact(&xs);
        let mut ratios = Vec::new();
        for g in 0..40u64 {
            let seed = grid_seed(7, g);
            let sketches: Vec<Vec<f32>> = xs.iter().map(|x| cpu::sketch(x, k, seed)).collect();
            let views: Vec<&[f32]> = sketches.iter().map(|s| s.as_slice()).collect();
            let e = consensus_distance(&views).unwrap();
            // The theory: relative standard deviation at most sqrt(2/k) (0.125 here). Every
            // estimate within 4 of those, and the block error bar of the right size.
            let sigma = truth * (2.0 / k as f64).sqrt();
            assert!((e.value - truth).abs() < 4.0 * sigma, "{e:?} vs {truth}");
            assert!(
                e.std_error > 0.2 * sigma && e.std_error < 3.0 * sigma,
                "{e:?}"
            );
            ratios.push(e.value / truth);
        }
        // Unbiased: the mean over 40 independent grid points is within 3 standard errors of 1.
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        assert!(
            (mean - 1.0).abs() < 3.0 * (2.0 / k as f64).sqrt() / 40f64.sqrt(),
            "mean ratio {mean}"
        );
        // Identical workers: exactly zero.
        let same = cpu::sketch(&base, k, 3);
        let e = consensus_distance(&[&same, &same, &same]).unwrap();
        assert_eq!(e.value, 0.0);
        assert_eq!(consensus_distance(&[&same]), None);
        // Seeds differ per grid point and agree across calls.
        assert_ne!(grid_seed(7, 0), grid_seed(7, 1));
        assert_eq!(grid_seed(7, 5), grid_seed(7, 5));
    }
}
