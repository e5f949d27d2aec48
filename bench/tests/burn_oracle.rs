//! burn as an independent oracle of the models: the same network built from burn's own operations
//! (its matmul, conv2d, max-pool, ReLU, means and log-softmax, on its wgpu backend, differentiated
//! by burn's autodiff), loaded with our initial weights and fed the same batch. Our loss and the
//! gradient of every parameter tensor must match burn's. Nothing is shared with our kernels or our
//! CPU twins: the convolutional networks are rebuilt in burn from the layer list alone.
//!
//! burn runs on the adapter of `common::gpu()`: on its very `wgpu::Device` and queue when that
//! device has every feature cubecl would use on this adapter, otherwise on a second device of the
//! same adapter (see `a2cid_bench::burn_ref::burn_device_on`; the test prints which).
// The engine's GPU test helpers (one copy, shared by path).
#[path = "../../engine/tests/common/mod.rs"]
mod common;

use a2cid_bench::burn_ref::burn_device_on;
use a2cid_engine::models::net::{NetSpec, Op, GN_EPS};
use a2cid_engine::models::Model;
use a2cid_engine::{GpuContext, InputShape, Mlp, MlpSpec, ModelKind, ModelSpec, ParamLayout};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
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
    let loss = cross_entropy(h, labels, spec.classes, &device);
    let grads = loss.backward();
    let loss = f64::from(loss.into_scalar::<f32>());
    let mut flat = vec![0f32; params.len()];
    for (l, (w, b)) in layers.iter().zip(&tensors) {
        flat[l.weight.range()].copy_from_slice(&values(w.grad(&grads), &l.weight.name));
        flat[l.bias.range()].copy_from_slice(&values(b.grad(&grads), &l.bias.name));
    }
    (loss, flat)
}

/// Mean cross-entropy as −Σ onehot ⊙ log_softmax: no gather, nothing of ours.
fn cross_entropy(logits: Tensor<2>, labels: &[u32], classes: usize, device: &Device) -> Tensor<1> {
    let rows = labels.len();
    let mut onehot = vec![0f32; rows * classes];
    for (r, &l) in labels.iter().enumerate() {
        onehot[r * classes + l as usize] = 1.0;
    }
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [rows, classes]), device);
    (log_softmax(logits, 1) * onehot)
        .sum()
        .neg()
        .div_scalar(rows as f32)
}

/// The network of `spec` rebuilt from burn's operations, its mean loss and the gradient of
/// every parameter tensor in our flat layout.
fn burn_net_loss_and_grad(
    spec: &NetSpec,
    params: &[f32],
    x: &[f32],
    labels: &[u32],
) -> (f64, Vec<f32>) {
    let device = burn_device(&gpu());
    let rows = labels.len();
    // Every parameter tensor a 1-D leaf; the layers reshape it.
    let leaves: Vec<Tensor<1>> = spec
        .layout
        .tensors()
        .iter()
        .map(|t| {
            let d = TensorData::new(params[t.range()].to_vec(), [t.len()]);
            Tensor::<1>::from_data(d, &device).require_grad()
        })
        .collect();
    let leaf = |name: &str| {
        let i = spec.layout.tensors().iter().position(|t| t.name == name);
        leaves[i.unwrap_or_else(|| panic!("no tensor {name}"))].clone()
    };
    let s0 = spec.shapes[0];
    let input = TensorData::new(x.to_vec(), [rows, s0.c, s0.h, s0.w]);
    let mut acts: Vec<Option<Tensor<4>>> = vec![None; spec.shapes.len()];
    acts[0] = Some(Tensor::<4>::from_data(input, &device));
    let act = |acts: &[Option<Tensor<4>>], t: usize| acts[t].clone().expect("computed before use");
    for op in &spec.ops {
        match op {
            Op::Conv {
                x,
                y,
                k,
                stride,
                pad,
                weight,
                bias,
            } => {
                let (ci, co) = (spec.shapes[*x].c, spec.shapes[*y].c);
                let w = leaf(&weight.name).reshape([co, ci, *k, *k]);
                let b = bias.as_ref().map(|b| leaf(&b.name));
                let opts = ConvOptions::new([*stride; 2], [*pad; 2], [1, 1], 1);
                acts[*y] = Some(conv2d(act(&acts, *x), w, b, opts));
            }
            Op::GroupNorm {
                x,
                y,
                groups,
                gamma,
                beta,
            } => {
                let s = spec.shapes[*x];
                let g = act(&acts, *x).reshape([rows, *groups, s.c / groups * s.h * s.w]);
                let centred = g.clone() - g.mean_dim(2);
                let var = centred.clone().powf_scalar(2.0).mean_dim(2);
                let xhat = (centred / var.add_scalar(GN_EPS).sqrt()).reshape([rows, s.c, s.h, s.w]);
                let gm = leaf(&gamma.name).reshape([1, s.c, 1, 1]);
                let bt = leaf(&beta.name).reshape([1, s.c, 1, 1]);
                acts[*y] = Some(xhat * gm + bt);
            }
            Op::Relu { t } => acts[*t] = Some(relu(act(&acts, *t))),
            Op::MaxPool { x, y, k, stride } => {
                let mut opts = MaxPoolOptions::new([*k; 2]);
                opts.stride = [*stride; 2];
                acts[*y] = Some(max_pool2d(act(&acts, *x), opts));
            }
            Op::GlobalAvgPool { x, y } => {
                acts[*y] = Some(act(&acts, *x).mean_dim(3).mean_dim(2));
            }
            Op::Linear { x, y, weight, bias } => {
                let (fan_in, out) = (spec.shapes[*x].len(), spec.shapes[*y].len());
                let h = act(&acts, *x).reshape([rows, fan_in]);
                let z = h.matmul(leaf(&weight.name).reshape([fan_in, out]))
                    + leaf(&bias.name).unsqueeze::<2>();
                acts[*y] = Some(z.reshape([rows, out, 1, 1]));
            }
            Op::Add { dst, src } => {
                acts[*dst] = Some(act(&acts, *dst) + act(&acts, *src));
            }
        }
    }
    let logits = act(&acts, spec.shapes.len() - 1).reshape([rows, spec.classes]);
    let loss = cross_entropy(logits, labels, spec.classes, &device);
    let grads = loss.backward();
    let loss = f64::from(loss.into_scalar::<f32>());
    let mut flat = vec![0f32; params.len()];
    for (t, l) in spec.layout.tensors().iter().zip(&leaves) {
        flat[t.range()].copy_from_slice(&values(l.grad(&grads), &t.name));
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
fn tensor_errors(layout: &ParamLayout, ours: &[f32], reference: &[f32]) -> Vec<(String, f64)> {
    layout
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

/// (loss, gradient) of a model at (params, x, labels).
type LossAndGrad<'a> = &'a dyn Fn(&[f32], &[f32], &[u32]) -> (f64, Vec<f32>);

/// One model against burn: loss and every tensor's gradient within `tol`, and the controls.
#[allow(clippy::too_many_arguments)]
fn check(
    what: &str,
    layout: &ParamLayout,
    params: &[f32],
    (inputs, classes): (usize, usize),
    rows: usize,
    seed: u64,
    (ours, burn): (LossAndGrad<'_>, LossAndGrad<'_>),
    tol: f64,
) {
    let mut r = rng(seed);
    let x = random_vec(&mut r, rows * inputs, 1.0);
    let labels: Vec<u32> = (0..rows)
        .map(|_| r.random_range(0..classes as u32))
        .collect();

    let (our_loss, our_grad) = ours(params, &x, &labels);
    let (burn_loss, burn_grad) = burn(params, &x, &labels);
    let loss_err = (our_loss - burn_loss).abs() / burn_loss.abs().max(1e-30);
    println!("{what}: loss ours {our_loss:.7} burn {burn_loss:.7}, relative error {loss_err:.2e}");
    assert!(
        loss_err <= tol,
        "{what}: loss relative error {loss_err:.3e} > {tol:.0e}"
    );
    for (name, err) in tensor_errors(layout, &our_grad, &burn_grad) {
        println!("{what}: d loss / d {name:<16} relative error {err:.2e}");
        assert!(
            err <= tol,
            "{what}: gradient of {name}: relative error {err:.3e} > {tol:.0e}"
        );
    }

    // Controls: the same comparison must FAIL for gradients that are slightly wrong, or the
    // tolerance would be too loose to mean anything.
    // (1) burn's gradient at weights 1% larger: a small, smooth change of every tensor.
    let scaled: Vec<f32> = params.iter().map(|p| p * 1.01).collect();
    let (_, burn_scaled) = burn(&scaled, &x, &labels);
    let err = rel_err(&our_grad, &burn_scaled);
    println!("{what}: control, weights x1.01: whole gradient relative error {err:.2e}");
    assert!(
        err > 10.0 * tol,
        "{what}: a 1% weight change moved the gradient by only {err:.3e}"
    );
    // (2) burn's gradient for other labels (each shifted by one class).
    let shifted: Vec<u32> = labels.iter().map(|&l| (l + 1) % classes as u32).collect();
    let (_, burn_shifted) = burn(params, &x, &shifted);
    let err = rel_err(&our_grad, &burn_shifted);
    println!("{what}: control, labels shifted: whole gradient relative error {err:.2e}");
    assert!(
        err > 100.0 * tol,
        "{what}: other labels moved the gradient by only {err:.3e}"
    );
}

fn check_mlp(spec: &MlpSpec, rows: usize, seed: u64) {
    let what = format!("{} x {rows} rows", spec.describe());
    let ours = |p: &[f32], x: &[f32], l: &[u32]| our_loss_and_grad(spec, p, x, l);
    let burn = |p: &[f32], x: &[f32], l: &[u32]| burn_loss_and_grad(spec, p, x, l);
    check(
        &what,
        &spec.layout(),
        &spec.init(seed),
        (spec.input, spec.classes),
        rows,
        seed,
        (&ours, &burn),
        TOL,
    );
}

/// Relative error allowed for the convolutional networks: their reductions are longer (GroupNorm
/// over a whole group, a conv weight gradient over batch × pixels) and summed in other orders than
/// burn's; the bound is 1e-3, the measured errors are printed.
const NET_TOL: f64 = 1e-4;

/// A convolutional model of `kind` on `input`, ours (the engine's `Net`) against burn's rebuild.
fn check_net(kind: ModelKind, width: usize, input: [usize; 3], rows: usize, seed: u64) {
    let spec = ModelSpec::new(kind, &[], width, InputShape(input), 10).expect("spec");
    let net = spec.net().expect("a layer list");
    let what = format!("{kind} {} x {rows} rows", net.describe());
    let ours = |p: &[f32], x: &[f32], l: &[u32]| {
        let mut model = spec.build(gpu(), rows).expect("model");
        model.set_params(p).expect("set_params");
        model.forward_backward(x, l).expect("forward_backward");
        let loss = model.read_stats().expect("read_stats").loss_sum / rows as f64;
        (loss, model.grads().expect("grads"))
    };
    let burn = |p: &[f32], x: &[f32], l: &[u32]| burn_net_loss_and_grad(&net, p, x, l);
    check(
        &what,
        &net.layout,
        &net.init(seed),
        (input.iter().product(), 10),
        rows,
        seed,
        (&ours, &burn),
        NET_TOL,
    );
}

#[test]
fn cnn_matches_burn_on_digits_and_mnist_shapes() {
    check_net(ModelKind::Cnn, 4, [1, 8, 8], 3, 21);
    check_net(ModelKind::Cnn, 4, [1, 28, 28], 5, 22);
}

#[test]
fn resnet8_matches_burn() {
    check_net(ModelKind::ResNet(8), 8, [1, 8, 8], 3, 23);
    check_net(ModelKind::ResNet(8), 4, [1, 28, 28], 2, 24);
}

#[test]
fn small_mlp_single_row_matches_burn() {
    check_mlp(&MlpSpec::new(64, &[32], 10).expect("spec"), 1, 11);
}

#[test]
fn small_mlp_seven_rows_matches_burn() {
    check_mlp(&MlpSpec::new(64, &[32], 10).expect("spec"), 7, 12);
}

#[test]
fn mnist_mlp_full_batch_matches_burn() {
    check_mlp(&MlpSpec::new(784, &[128, 64], 10).expect("spec"), 128, 13);
}
