//! The MLP's forward/backward on the GPU against the same network composed from the CPU twins, the
//! CPU composition against finite differences, deterministic init, and a convergence check.
mod common;

use a2cid_engine::acid::AcidParams;
use a2cid_engine::models::Model;
use a2cid_engine::TrainState;
use a2cid_engine::{cpu, Mlp, MlpSpec, SgdConfig};
use common::*;

/// Mean loss and gradient of the MLP on the CPU, composed from the kernel twins.
fn cpu_loss_and_grad(spec: &MlpSpec, params: &[f32], x: &[f32], y: &[u32]) -> (f64, Vec<f32>) {
    let rows = y.len();
    let layers = spec.layers();
    let mut acts: Vec<Vec<f32>> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let input: &[f32] = if i == 0 { x } else { &acts[i - 1] };
        let mut out = vec![0.0; rows * l.fan_out];
        cpu::matmul(
            input,
            &params[l.weight.range()],
            &mut out,
            (rows, l.fan_in, l.fan_out),
            false,
            false,
            false,
        );
        cpu::bias_add(
            &mut out,
            &params[l.bias.range()],
            rows,
            l.fan_out,
            i + 1 < layers.len(),
        );
        acts.push(out);
    }
    let mut dz = vec![0.0; rows * spec.classes];
    let stats = cpu::softmax_ce(
        acts.last().unwrap(),
        y,
        Some(&mut dz),
        rows,
        spec.classes,
        1.0 / rows as f32,
    );
    let mut grad = vec![0.0; params.len()];
    for (i, l) in layers.iter().enumerate().rev() {
        let input: &[f32] = if i == 0 { x } else { &acts[i - 1] };
        cpu::matmul(
            input,
            &dz,
            &mut grad[l.weight.range()],
            (l.fan_in, rows, l.fan_out),
            true,
            false,
            false,
        );
        cpu::bias_grad(&dz, &mut grad[l.bias.range()], rows, l.fan_out);
        if i > 0 {
            let mut dh = vec![0.0; rows * l.fan_in];
            cpu::matmul(
                &dz,
                &params[l.weight.range()],
                &mut dh,
                (rows, l.fan_out, l.fan_in),
                false,
                true,
                false,
            );
            cpu::relu_backward(&mut dh, &acts[i - 1]);
            dz = dh;
        }
    }
    (stats.loss_sum / rows as f64, grad)
}

fn batch(r: &mut rand_chacha::ChaCha8Rng, rows: usize, spec: &MlpSpec) -> (Vec<f32>, Vec<u32>) {
    let x = random_vec(r, rows * spec.input, 1.0);
    let y = (0..rows).map(|i| (i % spec.classes) as u32).collect();
    (x, y)
}

#[test]
fn gpu_gradients_match_cpu_composition() {
    let ctx = gpu();
    let mut r = rng(10);
    for (spec, rows) in [
        (MlpSpec::new(64, &[32], 10).unwrap(), 1),
        (MlpSpec::new(64, &[100, 37], 10).unwrap(), 77),
        (MlpSpec::new(784, &[128], 10).unwrap(), 128),
    ] {
        let params = spec.init(3);
        let (x, y) = batch(&mut r, rows, &spec);
        let mut mlp = Mlp::new(ctx.clone(), spec.clone(), 128).unwrap();
        mlp.set_params(&params).unwrap();
        mlp.forward_backward(&x, &y).unwrap();
        let stats = mlp.read_stats().unwrap();
        let (loss, grad) = cpu_loss_and_grad(&spec, &params, &x, &y);
        let gpu_loss = stats.loss_sum / rows as f64;
        assert!(
            (gpu_loss - loss).abs() < 1e-5 * loss.max(1.0),
            "{}: loss gpu {gpu_loss} cpu {loss}",
            spec.describe()
        );
        let g = mlp.grads().unwrap();
        for t in spec.layout().tensors() {
            assert_close(
                &format!("{} grad of {}", spec.describe(), t.name),
                &g[t.range()],
                &grad[t.range()],
                1e-5,
            );
        }
    }
}

#[test]
fn cpu_composition_matches_finite_differences() {
    let spec = MlpSpec::new(5, &[4], 3).unwrap();
    let mut r = rng(11);
    let params = spec.init(1);
    let (x, y) = batch(&mut r, 6, &spec);
    let (_, grad) = cpu_loss_and_grad(&spec, &params, &x, &y);
    let h = 1e-2f32;
    for i in 0..params.len() {
        let mut p = params.clone();
        p[i] += h;
        let (lp, _) = cpu_loss_and_grad(&spec, &p, &x, &y);
        p[i] -= 2.0 * h;
        let (lm, _) = cpu_loss_and_grad(&spec, &p, &x, &y);
        let fd = (lp - lm) / (2.0 * f64::from(h));
        assert!(
            (fd - f64::from(grad[i])).abs() < 2e-3,
            "param {i}: fd {fd} analytic {}",
            grad[i]
        );
    }
}

#[test]
fn init_is_deterministic_per_seed() {
    let spec = MlpSpec::new(784, &[128, 64], 10).unwrap();
    let a = spec.init(42);
    let b = spec.init(42);
    let c = spec.init(43);
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_ne!(a, c);
    let bound = (6.0f32 / 784.0).sqrt();
    let w0 = &a[spec.layout().get("fc0.weight").unwrap().range()];
    assert!(w0.iter().all(|v| v.abs() <= bound) && w0.iter().any(|v| v.abs() > 0.9 * bound));
    assert!(a[spec.layout().get("fc0.bias").unwrap().range()]
        .iter()
        .all(|&v| v == 0.0));
}

#[test]
fn parameters_round_trip_and_wrong_sizes_are_errors() {
    let ctx = gpu();
    let spec = MlpSpec::new(8, &[4], 2).unwrap();
    let mlp = Mlp::new(ctx, spec.clone(), 4).unwrap();
    let p = spec.init(9);
    mlp.set_params(&p).unwrap();
    assert_eq!(mlp.params().unwrap(), p);
    let err = mlp.set_params(&p[1..]).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "{} values for a model of {} parameters",
            p.len() - 1,
            p.len()
        )),
        "{err}"
    );
    let err = mlp.load_batch(&[0.0; 8], &[2]).unwrap_err().to_string();
    assert!(err.contains("label 2 out of range for 2 classes"), "{err}");
    let err = mlp.load_batch(&[0.0; 40], &[0; 5]).unwrap_err().to_string();
    assert!(err.contains("at most 4 rows"), "{err}");
}

#[test]
fn sgd_training_fits_a_separable_problem() {
    // Two Gaussian blobs per class in 16-D; an MLP must reach high training accuracy quickly.
    let ctx = gpu();
    let spec = MlpSpec::new(16, &[32], 4).unwrap();
    let mut r = rng(12);
    let centers = random_vec(&mut r, 4 * 16, 2.0);
    let n = 512;
    let labels: Vec<u32> = (0..n).map(|i| (i % 4) as u32).collect();
    let mut x = random_vec(&mut r, n * 16, 0.5);
    for i in 0..n {
        for j in 0..16 {
            x[i * 16 + j] += centers[labels[i] as usize * 16 + j];
        }
    }
    let mut mlp = Mlp::new(ctx.clone(), spec.clone(), 64).unwrap();
    mlp.set_params(&spec.init(0)).unwrap();
    let (loss0, _) = mlp.evaluate(&x, &labels).unwrap();
    // A single worker's training state: no x̃, plain SGD (the gossip path without peers).
    let mut state = TrainState::new(
        ctx.clone(),
        mlp.params_buffer(),
        mlp.grads_buffer(),
        spec.layout().len(),
        SgdConfig::default(),
        AcidParams::GOSSIP,
        false,
    )
    .unwrap();
    for _epoch in 0..5 {
        for start in (0..n).step_by(64) {
            let rows = mlp
                .load_batch(
                    &x[start * 16..(start + 64) * 16],
                    &labels[start..start + 64],
                )
                .unwrap();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                mlp.record_train(&mut pass, rows).unwrap();
                state.record_step(&mut pass, SgdConfig::default().lr, 0.0);
            }
            ctx.queue.submit(Some(enc.finish()));
        }
    }
    let (loss, acc) = mlp.evaluate(&x, &labels).unwrap();
    assert!(
        loss < 0.1 * loss0 && acc > 0.98,
        "loss {loss0} -> {loss}, accuracy {acc}"
    );
}
