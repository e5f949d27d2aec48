//! Each WGSL kernel against its CPU twin (`a2cid_engine::cpu`) on random inputs, including awkward
//! shapes: not a multiple of the tile size, one row, large, and grids over 65,535 workgroups.
mod common;

use a2cid_engine::cpu;
use a2cid_engine::kernels::{self, Dispatch, MatRef};
use a2cid_engine::{GpuContext, MatmulVariant};
use common::*;

#[test]
fn matmul_all_transposes_awkward_shapes() {
    for variant in [
        MatmulVariant::Tiled,
        MatmulVariant::Direct,
        MatmulVariant::Wide,
    ] {
        matmul_all_transposes_awkward_shapes_on(&gpu_with(variant), variant);
    }
}

fn matmul_all_transposes_awkward_shapes_on(ctx: &GpuContext, variant: MatmulVariant) {
    let mut r = rng(1);
    let shapes = [
        (1, 1, 1),
        (1, 784, 128),
        (3, 5, 7),
        (64, 16, 64),
        (65, 17, 63),
        (128, 784, 10),
        (200, 129, 300),
        (1, 1000, 1),
    ];
    for &(m, k, n) in &shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = random_vec(&mut r, m * k, 1.0);
            let b = random_vec(&mut r, k * n, 1.0);
            // Operands sit at odd offsets inside larger buffers, as arena views do.
            let (a_off, b_off, c_off) = (3, 5, 7);
            let mut a_buf = vec![9.0; a_off];
            a_buf.extend(&a);
            let mut b_buf = vec![9.0; b_off];
            b_buf.extend(&b);
            let c_init = random_vec(&mut r, c_off + m * n, 1.0);
            for accumulate in [false, true] {
                let ga = ctx.storage_buffer_from("a", &a_buf).unwrap();
                let gb = ctx.storage_buffer_from("b", &b_buf).unwrap();
                let gc = ctx.storage_buffer_from("c", &c_init).unwrap();
                let mut ra = MatRef::new(&ga, a_off);
                ra.transposed = ta;
                let mut rb = MatRef::new(&gb, b_off);
                rb.transposed = tb;
                let d = kernels::matmul(ctx, ra, rb, &gc, c_off, (m, k, n), accumulate).unwrap();
                ctx.run(&[&d]);
                let got: Vec<f32> = ctx.read(&gc, 0, c_off + m * n).unwrap();
                let mut want = c_init.clone();
                cpu::matmul(&a, &b, &mut want[c_off..], (m, k, n), ta, tb, accumulate);
                assert_eq!(
                    &got[..c_off],
                    &c_init[..c_off],
                    "matmul wrote before its output"
                );
                assert_close(
                    &format!("matmul {variant:?} {m}x{k}x{n} ta={ta} tb={tb} acc={accumulate}"),
                    &got,
                    &want,
                    2e-6,
                );
            }
        }
    }
}

#[test]
fn matmul_large() {
    let ctx = gpu();
    let mut r = rng(2);
    let (m, k, n) = (512, 1024, 384);
    let a = random_vec(&mut r, m * k, 1.0);
    let b = random_vec(&mut r, k * n, 1.0);
    let ga = ctx.storage_buffer_from("a", &a).unwrap();
    let gb = ctx.storage_buffer_from("b", &b).unwrap();
    let gc = ctx.storage_buffer("c", m * n).unwrap();
    let d = kernels::matmul(
        &ctx,
        MatRef::new(&ga, 0),
        MatRef::new(&gb, 0),
        &gc,
        0,
        (m, k, n),
        false,
    )
    .unwrap();
    ctx.run(&[&d]);
    let got: Vec<f32> = ctx.read(&gc, 0, m * n).unwrap();
    let mut want = vec![0.0; m * n];
    cpu::matmul(&a, &b, &mut want, (m, k, n), false, false, false);
    assert_close("matmul 512x1024x384", &got, &want, 2e-6);
}

#[test]
fn bias_add_relu_and_grad() {
    let ctx = gpu();
    let mut r = rng(3);
    for &(rows, cols) in &[(1, 1), (1, 10), (7, 300), (300, 7), (1000, 33)] {
        for relu in [false, true] {
            let y = random_vec(&mut r, rows * cols, 1.0);
            let bias = random_vec(&mut r, 4 + cols, 1.0);
            let gy = ctx.storage_buffer_from("y", &y).unwrap();
            let gb = ctx.storage_buffer_from("bias", &bias).unwrap();
            let d = kernels::bias_add(&ctx, (&gy, 0), (&gb, 4), rows, cols, relu).unwrap();
            ctx.run(&[&d]);
            let got: Vec<f32> = ctx.read(&gy, 0, rows * cols).unwrap();
            let mut want = y.clone();
            cpu::bias_add(&mut want, &bias[4..], rows, cols, relu);
            assert_close(
                &format!("bias_add {rows}x{cols} relu={relu}"),
                &got,
                &want,
                1e-7,
            );
        }
        let dy = random_vec(&mut r, rows * cols, 1.0);
        let gdy = ctx.storage_buffer_from("dy", &dy).unwrap();
        let gdb = ctx
            .storage_buffer_from("db", &vec![5.0f32; cols + 2])
            .unwrap();
        let d = kernels::bias_grad(&ctx, (&gdy, 0), (&gdb, 2), rows, cols).unwrap();
        ctx.run(&[&d]);
        let got: Vec<f32> = ctx.read(&gdb, 0, cols + 2).unwrap();
        let mut want = vec![5.0f32; cols + 2];
        cpu::bias_grad(&dy, &mut want[2..], rows, cols);
        assert_close(&format!("bias_grad {rows}x{cols}"), &got, &want, 1e-6);
    }
}

#[test]
fn relu_forward_backward() {
    let ctx = gpu();
    let mut r = rng(4);
    for n in [1, 255, 256, 257, 100_003] {
        let h = random_vec(&mut r, n, 1.0);
        let gh = ctx.storage_buffer_from("h", &h).unwrap();
        ctx.run(&[&kernels::relu_forward(&ctx, (&gh, 0), n).unwrap()]);
        let got: Vec<f32> = ctx.read(&gh, 0, n).unwrap();
        let mut want = h.clone();
        cpu::relu_forward(&mut want);
        assert_eq!(got, want, "relu_forward n={n}");
        let dh = random_vec(&mut r, n, 1.0);
        let gdh = ctx.storage_buffer_from("dh", &dh).unwrap();
        ctx.run(&[&kernels::relu_backward(&ctx, (&gdh, 0), (&gh, 0), n).unwrap()]);
        let got: Vec<f32> = ctx.read(&gdh, 0, n).unwrap();
        let mut want_d = dh.clone();
        cpu::relu_backward(&mut want_d, &want);
        assert_eq!(got, want_d, "relu_backward n={n}");
    }
}

#[test]
fn softmax_cross_entropy_loss_grad_and_accuracy() {
    let ctx = gpu();
    let mut r = rng(5);
    for &(rows, classes) in &[(1, 2), (63, 10), (64, 10), (65, 37), (1000, 10)] {
        let logits = random_vec(&mut r, rows * classes, 4.0);
        let labels: Vec<u32> = (0..rows).map(|i| ((i * 7 + 3) % classes) as u32).collect();
        let gl = ctx.storage_buffer_from("logits", &logits).unwrap();
        let glab = ctx.storage_buffer_from("labels", &labels).unwrap();
        let gd = ctx.storage_buffer("dlogits", rows * classes).unwrap();
        let stats_len = kernels::softmax_stats_len(rows);
        let gs = ctx.storage_buffer("stats", stats_len).unwrap();
        let scale = 1.0 / rows as f32;
        let d =
            kernels::softmax_ce(&ctx, &gl, &glab, &gd, &gs, rows, classes, Some(scale)).unwrap();
        // Run twice: the statistics accumulate, the gradient is overwritten. (`submit_all` is
        // `ctx.run` from the dispatch side.)
        Dispatch::submit_all(&ctx, &[&d, &d]);
        let grad: Vec<f32> = ctx.read(&gd, 0, rows * classes).unwrap();
        let stats: Vec<f32> = ctx.read(&gs, 0, stats_len).unwrap();
        let mut want_grad = vec![0.0; rows * classes];
        let want = cpu::softmax_ce(&logits, &labels, Some(&mut want_grad), rows, classes, scale);
        let loss: f64 = stats.iter().step_by(2).map(|&v| f64::from(v)).sum();
        let correct: f64 = stats.iter().skip(1).step_by(2).map(|&v| f64::from(v)).sum();
        assert!(
            (loss - 2.0 * want.loss_sum).abs() <= 1e-5 * want.loss_sum.abs().max(1.0),
            "loss {rows}x{classes}: gpu {loss} vs cpu {}",
            2.0 * want.loss_sum
        );
        assert_eq!(
            correct,
            2.0 * want.correct,
            "correct count {rows}x{classes}"
        );
        assert_close(
            &format!("softmax grad {rows}x{classes}"),
            &grad,
            &want_grad,
            1e-5,
        );
    }
}

#[test]
fn utilities_over_more_than_65535_workgroups() {
    let ctx = gpu();
    let mut r = rng(7);
    // 65,535 · 256 + 777 elements: the grid must spill into the y dimension.
    let n = 65_535 * 256 + 777;
    assert!(kernels::grid_1d((n as u32).div_ceil(256))[1] > 1);
    let x = random_vec(&mut r, n, 1.0);
    let y = random_vec(&mut r, n, 1.0);
    let gx = ctx.storage_buffer_from("x", &x).unwrap();
    let gy = ctx.storage_buffer_from("y", &y).unwrap();
    ctx.run(&[&kernels::axpy(&ctx, 0.5, &gx, &gy, n).unwrap()]);
    let mut want = y.clone();
    cpu::axpy(0.5, &x, &mut want);
    let got: Vec<f32> = ctx.read(&gy, 0, n).unwrap();
    assert_eq!(got, want, "axpy over {n} elements");

    let gz = ctx.storage_buffer("z", n + 3).unwrap();
    ctx.run(&[&kernels::fill(&ctx, &gz, 0, n + 3, -1.0).unwrap()]);
    ctx.run(&[&kernels::copy(&ctx, &gx, 0, &gz, 1, n).unwrap()]);
    let got: Vec<f32> = ctx.read(&gz, 0, n + 3).unwrap();
    assert_eq!(got[0], -1.0);
    assert_eq!(&got[1..=n], &x[..], "copy over {n} elements");
    assert_eq!(&got[n + 1..], &[-1.0, -1.0]);
    let mut filled = vec![0.0; 10];
    cpu::fill(&mut filled, 2.5);
    let g10 = ctx.storage_buffer("f", 10).unwrap();
    ctx.run(&[&kernels::fill(&ctx, &g10, 0, 10, 2.5).unwrap()]);
    assert_eq!(ctx.read::<f32>(&g10, 0, 10).unwrap(), filled);
}

#[test]
fn pipelines_are_compiled_once() {
    let ctx = gpu();
    let a = ctx.storage_buffer("a", 16).unwrap();
    let _ = kernels::fill(&ctx, &a, 0, 16, 1.0).unwrap();
    let before = ctx.cached_pipelines();
    for _ in 0..5 {
        let _ = kernels::fill(&ctx, &a, 0, 16, 1.0).unwrap();
    }
    assert_eq!(ctx.cached_pipelines(), before, "fill recompiled");
    let b = ctx.storage_buffer("b", 16).unwrap();
    let c = ctx.storage_buffer("c", 16).unwrap();
    let _ = kernels::matmul(
        &ctx,
        MatRef::new(&a, 0).t(),
        MatRef::new(&b, 0),
        &c,
        0,
        (4, 4, 4),
        false,
    )
    .unwrap();
    let _ = kernels::matmul(
        &ctx,
        MatRef::new(&a, 0).t(),
        MatRef::new(&b, 0),
        &c,
        0,
        (2, 8, 2),
        false,
    )
    .unwrap();
    let after_t = ctx.cached_pipelines();
    let _ = kernels::matmul(
        &ctx,
        MatRef::new(&a, 0),
        MatRef::new(&b, 0),
        &c,
        0,
        (4, 4, 4),
        false,
    )
    .unwrap();
    assert!(
        ctx.cached_pipelines() <= after_t + 1,
        "one pipeline per transpose specialisation"
    );
}

#[test]
fn sketch_matches_twin_and_keeps_the_norm_in_expectation() {
    let ctx = gpu();
    let mut r = rng(9);
    let n = 20_003;
    let k = 64;
    let x = random_vec(&mut r, n, 1.0);
    let gx = ctx.storage_buffer_from("x", &x).unwrap();
    let out = ctx.storage_buffer("sketch", k).unwrap();
    let norm2: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
    let mut ratios = Vec::new();
    for seed in 0..12u32 {
        let params = kernels::SketchParams::new(n, k, seed.wrapping_mul(0x9e37_79b9)).unwrap();
        let d = kernels::sketch(&ctx, &gx, &out, &params).unwrap();
        ctx.run(&[&d]);
        let got: Vec<f32> = ctx.read(&out, 0, k).unwrap();
        let want = cpu::sketch(&x, k, params.seed);
        assert_close(&format!("sketch seed {seed}"), &got, &want, 1e-5);
        let s2: f64 = got.iter().map(|&v| f64::from(v).powi(2)).sum();
        ratios.push(s2 / norm2);
    }
    // Each ‖sketch‖²/‖x‖² has mean 1 and standard deviation sqrt(2/k) = 0.18; their mean over 12
    // seeds is within 3 standard errors of 1.
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let se = (2.0 / k as f64).sqrt() / (ratios.len() as f64).sqrt();
    assert!(
        (mean - 1.0).abs() < 3.0 * se,
        "mean ratio {mean} ({ratios:?})"
    );
    // Another seed, other signs.
    assert_ne!(cpu::sketch(&x, 4, 1), cpu::sketch(&x, 4, 2));
}

/// The three convolution products (implicit GEMM on the tiled matmul) against their twins, on
/// awkward shapes: 1×1, 3×3, 5×5 and non-square filters, strides 1–3, padding 0–2, one and
/// several channels, channel counts and pixel counts off the 64-tile, a batch large enough for
/// the split-K weight gradient; the weight, the input and the outputs at odd offsets, and the
/// input gradient both written and accumulated.
#[test]
fn conv_products_match_twins_on_awkward_shapes() {
    for variant in [
        MatmulVariant::Tiled,
        MatmulVariant::Direct,
        MatmulVariant::Wide,
    ] {
        conv_products_match_twins_on(&gpu_with(variant), variant);
    }
}

fn conv_products_match_twins_on(ctx: &GpuContext, variant: MatmulVariant) {
    use a2cid_engine::kernels::ConvGeometry;
    let mut r = rng(11);
    // (batch, (c_in, h, w), c_out, (kh, kw), stride, pad)
    let cases = [
        (1, (1, 8, 8), 1, (1, 1), 1, 0),
        (2, (1, 8, 8), 4, (3, 3), 1, 1),
        (3, (3, 9, 7), 5, (3, 3), 2, 1),
        (2, (2, 11, 13), 17, (5, 5), 1, 2),
        (1, (5, 6, 6), 3, (2, 3), 3, 0),
        (4, (16, 14, 14), 70, (3, 3), 1, 1),
        (64, (1, 28, 28), 8, (5, 5), 1, 2),
        (5, (4, 5, 5), 6, (5, 5), 1, 0),
        // Stride phases: a 1×1 downsampling shortcut, a ResNet stage entry, phases without taps
        // (2×2 filter, stride 3), trailing input rows no output reaches, a stride above the filter.
        (3, (8, 8, 8), 16, (1, 1), 2, 0),
        (2, (16, 16, 16), 32, (3, 3), 2, 1),
        (2, (3, 10, 11), 4, (2, 2), 3, 1),
        (2, (2, 10, 9), 5, (3, 3), 2, 0),
        (1, (3, 13, 12), 7, (3, 2), 4, 2),
    ];
    for (batch, input, c_out, k, stride, pad) in cases {
        let g = ConvGeometry::new(batch, input, c_out, k, stride, pad).unwrap();
        let what = format!("{variant:?} {g:?} (out {}×{})", g.oh(), g.ow());
        let (xo, wo, yo) = (3, 5, 7);
        let x = random_vec(&mut r, batch * g.input_len(), 1.0);
        let w = random_vec(&mut r, g.weights(), 1.0);
        let dy = random_vec(&mut r, batch * g.output_len(), 1.0);
        let pad_with = |off: usize, v: &[f32]| {
            let mut b = vec![9.0; off];
            b.extend(v);
            b
        };
        let gx = ctx.storage_buffer_from("x", &pad_with(xo, &x)).unwrap();
        let gw = ctx.storage_buffer_from("w", &pad_with(wo, &w)).unwrap();
        let gdy = ctx.storage_buffer_from("dy", &pad_with(yo, &dy)).unwrap();
        let gy = ctx.storage_buffer("y", yo + dy.len()).unwrap();
        let dx0 = random_vec(&mut r, xo + x.len(), 1.0);
        let gdx = ctx.storage_buffer_from("dx", &dx0).unwrap();
        let gdw = ctx.storage_buffer("dw", wo + w.len()).unwrap();
        let scratch = ctx
            .storage_buffer("scratch", g.weight_grad_splits() * g.weights())
            .unwrap();

        let f = kernels::conv_forward(ctx, &g, (&gx, xo), (&gw, wo), (&gy, yo)).unwrap();
        ctx.run(&[&f]);
        let want = cpu::conv_forward(&g, &x, &w);
        assert_close(
            &format!("forward {what}"),
            &ctx.read(&gy, yo, want.len()).unwrap(),
            &want,
            1e-5,
        );

        let dx_want = cpu::conv_input_grad(&g, &w, &dy);
        for accumulate in [true, false] {
            let d =
                kernels::conv_input_grad(ctx, &g, (&gw, wo), (&gdy, yo), (&gdx, xo), accumulate)
                    .unwrap();
            ctx.run(&[&d]);
            let got = ctx.read(&gdx, 0, dx0.len()).unwrap();
            assert_eq!(&got[..xo], &dx0[..xo], "wrote before its output");
            let mut want = dx_want.clone();
            if accumulate {
                for (v, &o) in want.iter_mut().zip(&dx0[xo..]) {
                    *v += o;
                }
            }
            assert_close(
                &format!("input grad {what} accumulate={accumulate}"),
                &got[xo..],
                &want,
                1e-5,
            );
        }

        let ds = kernels::conv_weight_grad(ctx, &g, (&gdy, yo), (&gx, xo), (&gdw, wo), &scratch)
            .unwrap();
        let refs: Vec<&Dispatch> = ds.iter().collect();
        ctx.run(&refs);
        let want = cpu::conv_weight_grad(&g, &dy, &x);
        assert_close(
            &format!("weight grad {what} ({} slices)", ds.len()),
            &ctx.read(&gdw, wo, want.len()).unwrap(),
            &want,
            1e-5,
        );
    }
}

#[test]
fn a_filter_larger_than_the_padded_input_is_refused_naming_both() {
    use a2cid_engine::kernels::ConvGeometry;
    let err = ConvGeometry::new(1, (1, 4, 4), 2, (7, 7), 1, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("7×7") && err.contains("4×4"), "{err}");
}

/// Per-channel kernels and GroupNorm against their twins: one-pixel planes, groups of one
/// channel, a group larger than a workgroup, values at odd offsets; and the twin's GroupNorm
/// backward against central differences of its forward (so the twin itself is right).
#[test]
fn channel_kernels_and_group_norm_match_twins() {
    use a2cid_engine::kernels::{GroupNorm, Nchw};
    let ctx = gpu();
    let mut r = rng(12);
    // (batch, channels, plane, groups)
    for (batch, channels, plane, groups) in [
        (1, 1, 1, 1),
        (3, 6, 49, 3),
        (2, 4, 1, 4),
        (5, 16, 196, 8),
        (2, 3, 1000, 1),
    ] {
        let t = Nchw {
            batch,
            channels,
            plane,
        };
        let what = format!("{t:?} groups {groups}");
        let off = 5;
        let with_off = |v: &[f32]| {
            let mut b = vec![7.0; off];
            b.extend(v);
            b
        };
        let x = random_vec(&mut r, t.len(), 2.0);
        let dy = random_vec(&mut r, t.len(), 1.0);
        let mut arena = random_vec(&mut r, off + 2 * channels, 1.0);
        arena[off..off + channels]
            .iter_mut()
            .for_each(|g| *g += 1.0);
        let (gamma, beta) = (
            arena[off..off + channels].to_vec(),
            arena[off + channels..].to_vec(),
        );
        let gx = ctx.storage_buffer_from("x", &with_off(&x)).unwrap();
        let gdy = ctx.storage_buffer_from("dy", &with_off(&dy)).unwrap();
        let gp = ctx.storage_buffer_from("params", &arena).unwrap();
        let gy = ctx.storage_buffer("y", off + t.len()).unwrap();
        let gdx = ctx.storage_buffer_from("dx", &with_off(&x)).unwrap();
        let xhat = ctx.storage_buffer("xhat", t.len()).unwrap();
        let stats = ctx.storage_buffer("stats", 2 * batch * groups).unwrap();
        let sums = ctx.storage_buffer("sums", off + channels).unwrap();

        // Bias add and the channel sums.
        let b = kernels::channel_bias_add(&ctx, t, (&gdx, off), (&gp, off)).unwrap();
        ctx.run(&[&b]);
        let mut want = x.clone();
        cpu::channel_bias_add(t, &mut want, &gamma);
        assert_close(
            &format!("bias add {what}"),
            &ctx.read(&gdx, off, t.len()).unwrap(),
            &want,
            1e-6,
        );
        let s = kernels::channel_sum(&ctx, t, (&gdy, off), (&sums, off)).unwrap();
        ctx.run(&[&s]);
        assert_close(
            &format!("channel sum {what}"),
            &ctx.read(&sums, off, channels).unwrap(),
            &cpu::channel_dot(t, &dy, None),
            1e-5,
        );

        // GroupNorm forward, its parameter gradients, backward (written and accumulated).
        let gn = GroupNorm {
            shape: t,
            groups,
            eps: 1e-5,
            params: &gp,
            gamma_off: off,
            beta_off: off + channels,
            xhat: &xhat,
            stats: &stats,
        };
        let f = gn.forward(&ctx, (&gx, off), (&gy, off)).unwrap();
        ctx.run(&[&f]);
        let (y, xh, st) = cpu::group_norm_forward(t, groups, 1e-5, &x, &gamma, &beta);
        assert_close(
            &format!("gn forward {what}"),
            &ctx.read(&gy, off, t.len()).unwrap(),
            &y,
            1e-5,
        );
        assert_close(
            &format!("gn stats {what}"),
            &ctx.read(&stats, 0, st.len()).unwrap(),
            &st,
            1e-5,
        );
        let d = kernels::channel_dot(&ctx, t, (&gdy, off), &xhat, (&sums, off)).unwrap();
        ctx.run(&[&d]);
        assert_close(
            &format!("gamma grad {what}"),
            &ctx.read(&sums, off, channels).unwrap(),
            &cpu::channel_dot(t, &dy, Some(&xh)),
            1e-5,
        );
        let dx_want = cpu::group_norm_backward(t, groups, &dy, &xh, &st, &gamma);
        for accumulate in [true, false] {
            let before = ctx.read(&gdx, off, t.len()).unwrap();
            let bw = gn
                .backward(&ctx, (&gdy, off), (&gdx, off), accumulate)
                .unwrap();
            ctx.run(&[&bw]);
            let mut want = dx_want.clone();
            if accumulate {
                want.iter_mut().zip(&before).for_each(|(w, b)| *w += b);
            }
            assert_close(
                &format!("gn backward {what} accumulate={accumulate}"),
                &ctx.read(&gdx, off, t.len()).unwrap(),
                &want,
                1e-4,
            );
        }

        // The twin's backward is the derivative of its forward: d(Σ y·dy)/dx by differences.
        if t.len() <= 400 {
            let loss = |x: &[f32]| -> f64 {
                let (y, _, _) = cpu::group_norm_forward(t, groups, 1e-5, x, &gamma, &beta);
                y.iter()
                    .zip(&dy)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum()
            };
            let h = 1e-2f32;
            let numeric: Vec<f32> = (0..x.len())
                .map(|i| {
                    let (mut a, mut b) = (x.clone(), x.clone());
                    a[i] += h;
                    b[i] -= h;
                    ((loss(&a) - loss(&b)) / (2.0 * f64::from(h))) as f32
                })
                .collect();
            assert_close(
                &format!("gn twin vs differences {what}"),
                &dx_want,
                &numeric,
                1e-2,
            );
        }
    }
}

/// Max and average pooling against their twins: 2×2/2, overlapping 3×3/2 with padding,
/// non-square windows, odd sizes, a global average pool; backward written and accumulated.
#[test]
fn pooling_matches_twins() {
    use a2cid_engine::kernels::{PoolGeometry, PoolKind};
    let ctx = gpu();
    let mut r = rng(13);
    for kind in [PoolKind::Max, PoolKind::Avg] {
        let mut geoms = vec![
            PoolGeometry::new(kind, 6, (28, 28), (2, 2), 2, 0).unwrap(),
            PoolGeometry::new(kind, 3, (7, 9), (3, 3), 2, 1).unwrap(),
            PoolGeometry::new(kind, 2, (5, 6), (2, 3), 1, 1).unwrap(),
            PoolGeometry::new(kind, 1, (1, 1), (1, 1), 1, 0).unwrap(),
        ];
        if kind == PoolKind::Avg {
            geoms.push(PoolGeometry::global_avg(10, (7, 7)).unwrap());
        }
        for g in geoms {
            let what = format!("{g:?}");
            let off = 3;
            let x = random_vec(&mut r, g.input_len(), 1.0);
            let dy = random_vec(&mut r, g.output_len(), 1.0);
            let mut xb = vec![5.0; off];
            xb.extend(&x);
            let mut dyb = vec![5.0; off];
            dyb.extend(&dy);
            let gx = ctx.storage_buffer_from("x", &xb).unwrap();
            let gdy = ctx.storage_buffer_from("dy", &dyb).unwrap();
            let gy = ctx.storage_buffer("y", off + g.output_len()).unwrap();
            let idx = ctx.storage_buffer("idx", g.output_len()).unwrap();
            let dx0 = random_vec(&mut r, off + g.input_len(), 1.0);
            let gdx = ctx.storage_buffer_from("dx", &dx0).unwrap();
            let f = g.forward(&ctx, (&gx, off), (&gy, off), &idx).unwrap();
            ctx.run(&[&f]);
            let (y, want_idx) = cpu::pool_forward(&g, &x);
            assert_close(
                &format!("pool forward {what}"),
                &ctx.read(&gy, off, y.len()).unwrap(),
                &y,
                1e-6,
            );
            if kind == PoolKind::Max {
                let got: Vec<u32> = ctx.read(&idx, 0, y.len()).unwrap();
                assert_eq!(got, want_idx, "argmax {what}");
            }
            let dx = cpu::pool_backward(&g, &dy, &want_idx);
            for accumulate in [true, false] {
                let before = ctx.read(&gdx, off, dx.len()).unwrap();
                let b = g
                    .backward(&ctx, (&gdy, off), (&gdx, off), &idx, accumulate)
                    .unwrap();
                ctx.run(&[&b]);
                let mut want = dx.clone();
                if accumulate {
                    want.iter_mut().zip(&before).for_each(|(w, b)| *w += b);
                }
                assert_close(
                    &format!("pool backward {what} accumulate={accumulate}"),
                    &ctx.read(&gdx, off, dx.len()).unwrap(),
                    &want,
                    1e-6,
                );
            }
        }
    }
    let err = PoolGeometry::new(PoolKind::Max, 1, (4, 4), (2, 2), 2, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2×2") && err.contains("4×4"), "{err}");
}
