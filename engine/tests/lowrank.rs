//! The low-rank exchange kernels (`shaders/lowrank.wgsl`) against their CPU twins
//! (`a2cid_engine::cpu`), on random inputs at odd offsets and shapes that are not multiples of
//! the workgroup (256), of `left_product`'s 32 columns or of its 8 lanes; and one whole
//! compressed exchange run with the GPU products equal to the CPU one.
mod common;

use a2cid_engine::compress::{LowRankEdge, LowRankPlan, Role};
use a2cid_engine::cpu;
use a2cid_engine::kernels::lowrank;
use a2cid_engine::lowrank_gpu::GpuLowRank;
use common::*;

/// Shapes (m, n): one element, thin, not multiples of anything, wider than a workgroup, and the
/// digits MLP's and MNIST MLP's first layers.
const SHAPES: &[(usize, usize)] = &[
    (1, 1),
    (3, 5),
    (37, 300),
    (257, 33),
    (300, 257),
    (64, 256),
    (784, 256),
];

#[test]
fn products_and_update_equal_the_cpu_twins() {
    let ctx = gpu();
    let mut r = rng(21);
    for &(m, n) in SHAPES {
        for rank in [1, 2, 3, 4, 8] {
            let what = format!("{m}x{n} R={rank}");
            let x = random_vec(&mut r, m * n, 1.0);
            let q = random_vec(&mut r, n * rank, 1.0);
            let p = random_vec(&mut r, m * rank, 1.0);
            // Views at odd offsets inside larger buffers, as blocks of the arena and the factor
            // spaces are.
            let (x_off, f_off, o_off) = (5, 3, 7);
            let pad = |off: usize, v: &[f32]| {
                let mut b = vec![9.0f32; off];
                b.extend_from_slice(v);
                b.extend_from_slice(&[9.0; 3]);
                b
            };
            let gx = ctx.storage_buffer_from("x", &pad(x_off, &x)).unwrap();
            let gq = ctx.storage_buffer_from("q", &pad(f_off, &q)).unwrap();
            let gp = ctx.storage_buffer_from("p", &pad(f_off, &p)).unwrap();
            let out_init = vec![-7.0f32; o_off + m.max(n) * rank + 3];
            let gout = ctx.storage_buffer_from("out", &out_init).unwrap();

            let d = lowrank::right_product(
                &ctx,
                (&gx, x_off),
                (m, n),
                rank,
                (&gq, f_off),
                (&gout, o_off),
            )
            .unwrap();
            ctx.run(&[&d]);
            let got: Vec<f32> = ctx.read(&gout, 0, out_init.len()).unwrap();
            let want = cpu::right_product(&x, (m, n), rank, &q);
            assert_output_only(&format!("right_product {what}"), &got, o_off, &want);

            ctx.write(&gout, 0, &out_init);
            let d = lowrank::left_product(
                &ctx,
                (&gx, x_off),
                (m, n),
                rank,
                (&gp, f_off),
                (&gout, o_off),
            )
            .unwrap();
            ctx.run(&[&d]);
            let got: Vec<f32> = ctx.read(&gout, 0, out_init.len()).unwrap();
            let want = cpu::left_product(&x, (m, n), rank, &p);
            assert_output_only(&format!("left_product {what}"), &got, o_off, &want);

            let coeff = -0.37;
            let d = lowrank::rank_update(
                &ctx,
                (&gx, x_off),
                (m, n),
                rank,
                (&gp, f_off),
                (&gq, f_off),
                coeff,
            )
            .unwrap();
            ctx.run(&[&d]);
            let got: Vec<f32> = ctx.read(&gx, 0, x_off + m * n + 3).unwrap();
            let mut want = x.clone();
            cpu::rank_update(&mut want, (m, n), rank, &p, &q, coeff);
            assert_close(
                &format!("rank_update {what}"),
                &got[x_off..x_off + m * n],
                &want,
                2e-6,
            );
            assert!(
                got[..x_off].iter().all(|v| *v == 9.0),
                "{what}: wrote before dst"
            );
            assert!(
                got[x_off + m * n..].iter().all(|v| *v == 9.0),
                "{what}: wrote past dst"
            );
        }
    }
}

#[test]
fn bad_ranks_and_short_buffers_are_errors_naming_the_kernel() {
    let ctx = gpu();
    let x = ctx.storage_buffer("x", 100).unwrap();
    let f = ctx.storage_buffer("f", 100).unwrap();
    let err = lowrank::right_product(&ctx, (&x, 0), (10, 10), 9, (&f, 0), (&f, 0))
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("right_product: rank 9"), "{err}");
    let err = lowrank::left_product(&ctx, (&x, 1), (10, 10), 2, (&f, 0), (&f, 0))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("left_product: x: 100 values at offset 1"),
        "{err}"
    );
}

/// A whole exchange on an MLP-like model with the messages and the peer's view computed by the
/// GPU (`GpuLowRank`, what the runtime runs): the same messages as the CPU path of `compress`
/// within f32 rounding, the same models after each exchange, and a GPU end and a CPU end of one
/// edge stay in step (both derive the factors from the same two messages).
#[test]
fn a_gpu_exchange_matches_the_cpu_exchange() {
    let ctx = gpu();
    let mut r = rng(22);
    let shapes: [&[usize]; 4] = [&[64, 200], &[200], &[200, 10], &[10]];
    let plan = LowRankPlan::from_shapes(&shapes, 2).unwrap();
    let len = plan.arena_len();
    let gpu_products = GpuLowRank::new(ctx.clone(), plan.clone()).unwrap();
    let x1 = random_vec(&mut r, len, 1.0);
    let x2 = random_vec(&mut r, len, 1.0);
    let mut cpu_edges = (
        LowRankEdge::new(plan.clone(), Role::First, 3, true),
        LowRankEdge::new(plan.clone(), Role::Second, 3, true),
    );
    let mut gpu_edges = cpu_edges.clone();
    // Mixed: the first end on the GPU, the second on the CPU.
    let mut mixed_edges = cpu_edges.clone();
    let (mut c1, mut c2) = (x1.clone(), x2.clone());
    let (mut g1, mut g2) = (x1.clone(), x2.clone());
    let (mut m1, mut m2) = (x1.clone(), x2.clone());
    let gamma = 1.0f32;
    for step in 0..6 {
        // CPU.
        let a = cpu_edges.0.message(&c1).unwrap();
        let b = cpu_edges.1.message(&c2).unwrap();
        // GPU: the same messages within rounding.
        let ga = gpu_products.message(&mut gpu_edges.0, &g1).unwrap();
        let gb = gpu_products.message(&mut gpu_edges.1, &g2).unwrap();
        if step == 0 {
            assert_close("first message", &ga, &a, 1e-5);
            assert_close("second message", &gb, &b, 1e-5);
        }
        cpu_edges.0.apply(&mut c1, &a, &b, gamma).unwrap();
        cpu_edges.1.apply(&mut c2, &b, &a, gamma).unwrap();
        // x ← x − (γ/2)·C = x + (γ/2)·(peer_view − x).
        let adopt = |x: &mut Vec<f32>, view: &[f32]| {
            for (v, w) in x.iter_mut().zip(view) {
                *v += gamma / 2.0 * (w - *v);
            }
        };
        let ca = gpu_edges.0.finish(&ga, &gb).unwrap();
        let cb = gpu_edges.1.finish(&gb, &ga).unwrap();
        let (v1, v2) = (
            gpu_products.peer_view(&ca, &g1).unwrap(),
            gpu_products.peer_view(&cb, &g2).unwrap(),
        );
        let cpu_view = {
            let mut v = g1.clone();
            ca.apply(&plan, &mut v, -1.0);
            v
        };
        assert_close(&format!("peer view {step}"), &v1, &cpu_view, 1e-5);
        adopt(&mut g1, &v1);
        adopt(&mut g2, &v2);
        assert_close(
            &format!("first model after exchange {step}"),
            &g1,
            &c1,
            1e-4,
        );
        assert_close(
            &format!("second model after exchange {step}"),
            &g2,
            &c2,
            1e-4,
        );

        // One end on the GPU, the other on the CPU: the same factors on both ends (bit for
        // bit), so the pair's sum is conserved.
        let ma = gpu_products.message(&mut mixed_edges.0, &m1).unwrap();
        let mb = mixed_edges.1.message(&m2).unwrap();
        let fa = mixed_edges.0.finish(&ma, &mb).unwrap();
        let fb = mixed_edges.1.finish(&mb, &ma).unwrap();
        assert_eq!(fa.q, fb.q, "exchange {step}: the ends' Q factors differ");
        assert!(
            fa.p.iter().zip(&fb.p).all(|(a, b)| *a == -*b),
            "exchange {step}: the ends' P factors are not exact negatives"
        );
        let sum_before: f64 = m1.iter().chain(&m2).map(|&v| f64::from(v)).sum();
        fa.apply(&plan, &mut m1, -gamma / 2.0);
        fb.apply(&plan, &mut m2, -gamma / 2.0);
        let sum_after: f64 = m1.iter().chain(&m2).map(|&v| f64::from(v)).sum();
        assert!(
            (sum_after - sum_before).abs() < 1e-3,
            "exchange {step}: the pair's sum moved from {sum_before} to {sum_after}"
        );
    }
}

#[test]
fn gpu_products_refuse_inputs_of_the_wrong_length_or_plan() {
    let ctx = gpu();
    let plan = LowRankPlan::from_shapes(&[[8usize, 6].as_slice(), &[6]], 2).unwrap();
    let products = GpuLowRank::new(ctx, plan.clone()).unwrap();
    let mut edge = LowRankEdge::new(plan, Role::First, 1, true);
    let err = products
        .message(&mut edge, &[0.0; 5])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the parameters has 5 values, expected 54"),
        "{err}"
    );
    let other = LowRankPlan::from_shapes(&[[8usize, 6].as_slice(), &[6]], 3).unwrap();
    let mut stranger = LowRankEdge::new(other, Role::First, 1, true);
    let err = products
        .message(&mut stranger, &[0.0; 54])
        .unwrap_err()
        .to_string();
    assert!(err.contains("another plan"), "{err}");
}

/// `got[off..off + want.len()]` equals `want` within 2e-6 and nothing around it was written
/// (the buffer was filled with −7 before the launch).
fn assert_output_only(what: &str, got: &[f32], off: usize, want: &[f32]) {
    let end = off + want.len();
    assert_close(what, &got[off..end], want, 2e-6);
    assert!(
        got[..off].iter().all(|v| *v == -7.0),
        "{what}: wrote before out"
    );
    assert!(
        got[end..].iter().all(|v| *v == -7.0),
        "{what}: wrote past out"
    );
}
