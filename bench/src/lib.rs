//! Shared helpers for the a2cid criterion benchmarks: timing GPU work honestly (the device is
//! synchronised before the clock stops) and reporting ratios measured in the same run.
#[cfg(feature = "burn")]
pub mod burn_ref;

use std::time::{Duration, Instant};

use a2cid_engine::kernels::Dispatch;
use a2cid_engine::{AdapterChoice, GpuContext};

/// Runs `dispatches` `iters` times (in submissions of at most 64 repetitions) and returns the wall
/// time including the final synchronisation, so queued-but-unfinished work is never counted as done.
pub fn time_dispatches(ctx: &GpuContext, dispatches: &[&Dispatch], iters: u64) -> Duration {
    ctx.sync().expect("device sync before timing");
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let batch = left.min(64);
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..batch {
                for d in dispatches {
                    d.record(&mut pass);
                }
            }
        }
        ctx.queue.submit(Some(encoder.finish()));
        left -= batch;
    }
    ctx.sync().expect("device sync after timing");
    start.elapsed()
}

/// Median seconds per iteration of `f(iters)` over `samples` runs (for ratios printed beside
/// criterion's own numbers).
pub fn median_secs(samples: usize, iters: u64, mut f: impl FnMut(u64) -> Duration) -> f64 {
    f(1); // warm-up: pipelines, first-touch of memory
    let mut v: Vec<f64> = (0..samples)
        .map(|_| f(iters).as_secs_f64() / iters as f64)
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `n` deterministic values in [-1, 1) (xorshift): benchmarks need non-trivial data, not statistics.
pub fn random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The device a benchmark runs on: `A2CID_ADAPTER` or the best adapter, named on stderr.
pub fn bench_context() -> std::sync::Arc<GpuContext> {
    let choice: AdapterChoice = std::env::var("A2CID_ADAPTER")
        .unwrap_or_default()
        .parse()
        .expect("infallible");
    let ctx = GpuContext::new(&choice).expect("benchmarks need a GPU adapter");
    eprintln!(
        "adapter: {} ({}, {})",
        ctx.adapter.name, ctx.adapter.backend, ctx.adapter.device_type
    );
    ctx
}
