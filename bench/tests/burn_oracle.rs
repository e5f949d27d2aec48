//! burn as an independent oracle of the MLP: the same network built from burn's own operations
//! (its matmul, ReLU and log-softmax, on its wgpu backend, differentiated by burn's autodiff),
//! loaded with our initial weights and fed the same batch. Our loss and the gradient of every
//! parameter tensor must match burn's. Nothing is shared with our kernels or our CPU twins.
//!
//! burn runs on the adapter of `common::gpu()`: on its very `wgpu::Device` and queue when that
//! device has every feature cubecl would use on this adapter, otherwise on a second device of the
//! same adapter (see `a2cid_bench::burn_ref::burn_device_on`; the test prints which).
// The engine's GPU test helpers (one copy, shared by path).
#[path = "../../engine/tests/common/mod.rs"]
mod common;

use a2cid_bench::burn_ref::burn_device_on;
use a2cid_engine::models::Model;
use a2cid_engine::{GpuContext, Mlp, MlpSpec};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use rand::Rng;

/// Relative L2 error allowed between our gradient tensors (and loss) and burn's.
///
/// Both sides compute in f32 from identical inputs; they differ only in summation order and in how
/// exp/log are evaluated. The longest reduction has K = 784 terms (first layer; the batch
/// reductions have 128), whose f32 rounding error is at most ~√K·2⁻²⁴ ≈ 2e-6 relative for
/// independent rounding. Measured on lavapipe: ≤ 2.3e-7 (printed by the test; a single row is
/// bit-identical). 1e-5 leaves 5x over that bound for other hardware and reduction orders, while
/// the control assertions below show that a 1% change of the weights moves every tensor's gradient
/// by ≥ 4e-3, 400x the tolerance, and other labels by ~1.
const TOL: f64 = 1e-5;

/// burn's autodiff device on the adapter of `ctx` (its very device when that is safe, see
/// `a2cid_bench::burn_ref::burn_device_on`), with a line saying where it runs.
fn burn_device(ctx: &GpuContext) -> Device {
    let burn = burn_device_on(ctx);
    println!(
        "burn runs on the engine's adapter {:?}: {:?}",
        ctx.adapter.name, burn.placement
    );
    burn.device.autodiff()
}

/// Mean softmax cross-entropy and its gradient with respect to every parameter, by burn alone.
/// Returns (loss, gradient in our flat layout).
fn burn_loss_and_grad(
    spec: &MlpSpec,
    params: &[f32],
    x: &[f32],
    labels: &[u32],
) -> (f64, Vec<f32>) {
    let device = burn_device(&gpu());
    let rows = labels.len();
    let layers = spec.layers();
    let tensors: Vec<(Tensor<2>, Tensor<1>)> = layers
        .iter()
        .map(|l| {
            let w = TensorData::new(params[l.weight.range()].to_vec(), [l.fan_in, l.fan_out]);
            let b = TensorData::new(params[l.bias.range()].to_vec(), [l.fan_out]);
            (
                Tensor::<2>::from_data(w, &device).require_grad(),
                Tensor::<1>::from_data(b, &device).require_grad(),
            )
        })
        .collect();
    let mut h = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [rows, spec.input]), &device);
    for (i, (w, b)) in tensors.iter().enumerate() {
        let z = h.matmul(w.clone()) + b.clone().unsqueeze::<2>();
        h = if i + 1 < tensors.len() { relu(z) } else { z };
    }
    // Cross-entropy as −Σ onehot ⊙ log_softmax: no gather, nothing of ours.
    let mut onehot = vec![0f32; rows * spec.classes];
    for (r, &l) in labels.iter().enumerate() {
        onehot[r * spec.classes + l as usize] = 1.0;
    }
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [rows, spec.classes]), &device);
    let loss = (log_softmax(h, 1) * onehot)
        .sum()
        .neg()
        .div_scalar(rows as f32);
    let grads = loss.backward();
    let loss = f64::from(loss.into_scalar::<f32>());
    let mut flat = vec![0f32; params.len()];
    for (l, (w, b)) in layers.iter().zip(&tensors) {
        flat[l.weight.range()].copy_from_slice(&values(w.grad(&grads), &l.weight.name));
        flat[l.bias.range()].copy_from_slice(&values(b.grad(&grads), &l.bias.name));
    }
    (loss, flat)
}

fn values<const D: usize>(grad: Option<Tensor<D>>, name: &str) -> Vec<f32> {
    grad.unwrap_or_else(|| panic!("burn has no gradient for {name}"))
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 gradient")
}

/// Our mean loss and gradient, from the engine's kernels.
fn our_loss_and_grad(spec: &MlpSpec, params: &[f32], x: &[f32], labels: &[u32]) -> (f64, Vec<f32>) {
    let rows = labels.len();
    let mut mlp = Mlp::new(gpu(), spec.clone(), rows).expect("mlp");
    mlp.set_params(params).expect("set_params");
    mlp.forward_backward(x, labels).expect("forward_backward");
    let loss = mlp.read_stats().expect("read_stats").loss_sum / rows as f64;
    (loss, mlp.grads().expect("grads"))
}

/// Relative error of every parameter tensor's gradient, by name.
fn tensor_errors(spec: &MlpSpec, ours: &[f32], reference: &[f32]) -> Vec<(String, f64)> {
    spec.layout()
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                rel_err(&ours[t.range()], &reference[t.range()]),
            )
        })
        .collect()
}

fn check(spec: &MlpSpec, rows: usize, seed: u64) {
    let what = format!("{} x {rows} rows", spec.describe());
    let mut r = rng(seed);
    let params = spec.init(seed);
    let x = random_vec(&mut r, rows * spec.input, 1.0);
    let labels: Vec<u32> = (0..rows)
        .map(|_| r.random_range(0..spec.classes as u32))
        .collect();

    let (our_loss, our_grad) = our_loss_and_grad(spec, &params, &x, &labels);
    let (burn_loss, burn_grad) = burn_loss_and_grad(spec, &params, &x, &labels);
    let loss_err = (our_loss - burn_loss).abs() / burn_loss.abs().max(1e-30);
    println!("{what}: loss ours {our_loss:.7} burn {burn_loss:.7}, relative error {loss_err:.2e}");
    assert!(
        loss_err <= TOL,
        "{what}: loss relative error {loss_err:.3e} > {TOL:.0e}"
    );
    for (name, err) in tensor_errors(spec, &our_grad, &burn_grad) {
        println!("{what}: d loss / d {name:<11} relative error {err:.2e}");
        assert!(
            err <= TOL,
            "{what}: gradient of {name}: relative error {err:.3e} > {TOL:.0e}"
        );
    }

    // Controls: the same comparison must FAIL for gradients that are slightly wrong, or the
    // tolerance would be too loose to mean anything.
    // (1) burn's gradient at weights 1% larger: a small, smooth change of every tensor.
    let scaled: Vec<f32> = params.iter().map(|p| p * 1.01).collect();
    let (_, burn_scaled) = burn_loss_and_grad(spec, &scaled, &x, &labels);
    for (name, err) in tensor_errors(spec, &our_grad, &burn_scaled) {
        println!("{what}: control, weights x1.01: {name:<11} relative error {err:.2e}");
        assert!(
            err > 10.0 * TOL,
            "{what}: a 1% weight change moved the gradient of {name} by only {err:.3e}"
        );
    }
    // (2) burn's gradient for other labels (each shifted by one class).
    let shifted: Vec<u32> = labels
        .iter()
        .map(|&l| (l + 1) % spec.classes as u32)
        .collect();
    let (_, burn_shifted) = burn_loss_and_grad(spec, &params, &x, &shifted);
    let err = rel_err(&our_grad, &burn_shifted);
    println!("{what}: control, labels shifted: whole gradient relative error {err:.2e}");
    assert!(
        err > 100.0 * TOL,
        "{what}: other labels moved the gradient by only {err:.3e}"
    );
}

#[test]
fn small_mlp_single_row_matches_burn() {
    check(&MlpSpec::new(64, &[32], 10).expect("spec"), 1, 11);
}

#[test]
fn small_mlp_seven_rows_matches_burn() {
    check(&MlpSpec::new(64, &[32], 10).expect("spec"), 7, 12);
}

#[test]
fn mnist_mlp_full_batch_matches_burn() {
    check(&MlpSpec::new(784, &[128, 64], 10).expect("spec"), 128, 13);
}
