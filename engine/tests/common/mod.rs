//! Shared helpers of the engine's GPU tests.
#![allow(dead_code)]
use std::sync::{Arc, OnceLock};

use a2cid_engine::{AdapterChoice, GpuContext};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The device every GPU test uses. A test that needs a GPU adapter FAILS when there is none: it
/// never skips (CI has lavapipe; `apt-get install mesa-vulkan-drivers` provides it).
pub fn gpu() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let choice: AdapterChoice = std::env::var("A2CID_ADAPTER")
            .unwrap_or_default()
            .parse()
            .unwrap();
        match GpuContext::new(&choice) {
            Ok(ctx) => ctx,
            Err(e) => panic!("this test needs a GPU adapter and none could be opened: {e}"),
        }
    })
    .clone()
}

/// A device of its own on the same adapter whose matrix products read their operands `variant`'s
/// way (both variants are tested on every adapter).
pub fn gpu_with(variant: a2cid_engine::MatmulVariant) -> Arc<GpuContext> {
    let ctx = GpuContext::new(&gpu().adapter.index.to_string().parse().unwrap())
        .expect("a second device on the test adapter");
    ctx.set_matmul_variant(variant);
    ctx
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in [-scale, scale).
pub fn random_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

/// ‖a − b‖ / max(‖b‖, tiny): the relative error of `a` against the reference `b`.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut num = 0f64;
    let mut den = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        assert!(x.is_finite(), "non-finite GPU value {x}");
        num += (f64::from(x) - f64::from(y)).powi(2);
        den += f64::from(y).powi(2);
    }
    num.sqrt() / den.sqrt().max(1e-30)
}

pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: f64) {
    let e = rel_err(gpu, cpu);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.1e}");
}
