//! The low-rank exchange kernels (`shaders/lowrank.wgsl`) against their CPU twins
//! (`a2cid_engine::cpu`), on random inputs at odd offsets and shapes that are not multiples of
//! the workgroup (256), of `left_product`'s 32 columns or of its 8 lanes; and one whole
//! compressed exchange run with the GPU products equal to the CPU one.
mod common;

use a2cid_engine::compress::{BlockKind, HalfStep, LowRankEdge, LowRankPlan, Role};
use a2cid_engine::cpu;
use a2cid_engine::kernels::lowrank;
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
            assert_close(
                &format!("right_product {what}"),
                &got[o_off..o_off + m * rank],
                &want,
                2e-6,
            );
            assert!(
                got[..o_off].iter().all(|v| *v == -7.0),
                "{what}: wrote before out"
            );
            assert!(
                got[o_off + m * rank..].iter().all(|v| *v == -7.0),
                "{what}: wrote past out"
            );

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
            assert_close(
                &format!("left_product {what}"),
                &got[o_off..o_off + n * rank],
                &want,
                2e-6,
            );
            assert!(
                got[..o_off].iter().all(|v| *v == -7.0),
                "{what}: wrote before out"
            );
            assert!(
                got[o_off + n * rank..].iter().all(|v| *v == -7.0),
                "{what}: wrote past out"
            );

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

/// A whole exchange on an MLP-like model with the messages computed by the GPU kernels and the
/// correction applied by them: the same result as the CPU path of `compress`.
#[test]
fn a_gpu_exchange_matches_the_cpu_exchange() {
    let ctx = gpu();
    let mut r = rng(22);
    let shapes: [&[usize]; 4] = [&[64, 200], &[200], &[200, 10], &[10]];
    let plan = LowRankPlan::from_shapes(&shapes, 2).unwrap();
    let len = plan.arena_len();
    let x1 = random_vec(&mut r, len, 1.0);
    let x2 = random_vec(&mut r, len, 1.0);
    let mut cpu_edges = (
        LowRankEdge::new(plan.clone(), Role::First, 3, true),
        LowRankEdge::new(plan.clone(), Role::Second, 3, true),
    );
    let mut gpu_edges = cpu_edges.clone();
    let (mut c1, mut c2) = (x1.clone(), x2.clone());
    let g1 = ctx.storage_buffer_from("x1", &x1).unwrap();
    let g2 = ctx.storage_buffer_from("x2", &x2).unwrap();
    let gamma = 1.0f32;
    for step in 0..4 {
        // CPU.
        let m1 = cpu_edges.0.message(&c1).unwrap();
        let m2 = cpu_edges.1.message(&c2).unwrap();
        cpu_edges.0.apply(&mut c1, &m1, &m2, gamma).unwrap();
        cpu_edges.1.apply(&mut c2, &m2, &m1, gamma).unwrap();
        // GPU: products from the uploaded basis, then the update from the uploaded factors.
        let half = gpu_edges.0.next_step();
        let mut msgs = Vec::new();
        for (edge, gx) in [(&mut gpu_edges.0, &g1), (&mut gpu_edges.1, &g2)] {
            let basis = ctx.storage_buffer_from("basis", edge.basis()).unwrap();
            let msg = ctx.storage_buffer("msg", plan.message_len(half)).unwrap();
            let factor_len = plan.message_len(half) - plan.dense_len();
            let mut ds = Vec::new();
            for b in plan.blocks() {
                match b.kind {
                    BlockKind::LowRank { m, n, p_off, q_off } => ds.push(
                        match half {
                            HalfStep::Right => lowrank::right_product(
                                &ctx,
                                (gx, b.offset),
                                (m, n),
                                2,
                                (&basis, q_off),
                                (&msg, p_off),
                            ),
                            HalfStep::Left => lowrank::left_product(
                                &ctx,
                                (gx, b.offset),
                                (m, n),
                                2,
                                (&basis, p_off),
                                (&msg, q_off),
                            ),
                        }
                        .unwrap(),
                    ),
                    BlockKind::Dense { len, dense_off } => ds.push(
                        a2cid_engine::kernels::copy(
                            &ctx,
                            gx,
                            b.offset,
                            &msg,
                            factor_len + dense_off,
                            len,
                        )
                        .unwrap(),
                    ),
                }
            }
            ctx.run(&ds.iter().collect::<Vec<_>>());
            msgs.push(ctx.read::<f32>(&msg, 0, plan.message_len(half)).unwrap());
        }
        for (k, (edge, gx)) in [(&mut gpu_edges.0, &g1), (&mut gpu_edges.1, &g2)]
            .into_iter()
            .enumerate()
        {
            let c = edge.finish(&msgs[k], &msgs[1 - k]).unwrap();
            let gp = ctx.storage_buffer_from("p", &c.p).unwrap();
            let gq = ctx.storage_buffer_from("q", &c.q).unwrap();
            let gd = ctx.storage_buffer_from("dense", &c.dense).unwrap();
            let one = ctx.storage_buffer_from("one", &[1.0f32]).unwrap();
            let mut ds = Vec::new();
            for b in plan.blocks() {
                match b.kind {
                    BlockKind::LowRank { m, n, p_off, q_off } => ds.push(
                        lowrank::rank_update(
                            &ctx,
                            (gx, b.offset),
                            (m, n),
                            2,
                            (&gp, p_off),
                            (&gq, q_off),
                            -gamma / 2.0,
                        )
                        .unwrap(),
                    ),
                    // A dense block is a 1×len rank-1 update with left factor [1].
                    BlockKind::Dense { len, dense_off } => ds.push(
                        lowrank::rank_update(
                            &ctx,
                            (gx, b.offset),
                            (1, len),
                            1,
                            (&one, 0),
                            (&gd, dense_off),
                            -gamma / 2.0,
                        )
                        .unwrap(),
                    ),
                }
            }
            ctx.run(&ds.iter().collect::<Vec<_>>());
        }
        let got1: Vec<f32> = ctx.read(&g1, 0, len).unwrap();
        let got2: Vec<f32> = ctx.read(&g2, 0, len).unwrap();
        assert_close(
            &format!("first model after exchange {step}"),
            &got1,
            &c1,
            1e-5,
        );
        assert_close(
            &format!("second model after exchange {step}"),
            &got2,
            &c2,
            1e-5,
        );
    }
}
