//! The fused A²CiD² kernels (shaders/acid.wgsl) against their CPU twins (`a2cid_engine::acid`),
//! and the closed forms of docs/algorithm.md §3.1: mixing keeps (x + x̃)/2 and shrinks x − x̃ by
//! e^(−2·eta·d); a pairwise average conserves the pair's sum; gossip leaves x̃ alone.
mod common;

use a2cid_engine::acid::{self, AcidParams};
use a2cid_engine::kernels::{self, AcidUniform};
use a2cid_engine::{GpuContext, SgdConfig};
use common::*;

const N: usize = 70_001; // not a multiple of the workgroup size

fn sgd() -> SgdConfig {
    SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-3,
        nesterov: false,
    }
}

fn uniform(n: usize, mix: f64, s: &SgdConfig, p: &AcidParams) -> AcidUniform {
    let mut u = AcidUniform::new(n).unwrap();
    u.mix = mix as f32;
    u.lr = s.lr;
    u.momentum = s.momentum;
    u.weight_decay = s.weight_decay;
    u.nesterov = s.nesterov as u32;
    u.alpha = p.alpha as f32;
    u.alpha_tilde = p.alpha_tilde as f32;
    u
}

fn read(ctx: &GpuContext, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
    ctx.read(b, 0, n).unwrap()
}

#[test]
fn mix_and_step_matches_twin_with_and_without_x_tilde() {
    let ctx = gpu();
    let mut r = rng(20);
    let params = AcidParams {
        eta: 0.035,
        alpha: 0.5,
        alpha_tilde: 7.26,
    };
    for nesterov in [false, true] {
        for with_tilde in [true, false] {
            let s = SgdConfig { nesterov, ..sgd() };
            let d = 1.7;
            let mut x = random_vec(&mut r, N, 1.0);
            let mut xt = random_vec(&mut r, N, 1.0);
            let mut m = random_vec(&mut r, N, 0.1);
            let g = random_vec(&mut r, N, 1.0);
            let (gx, gxt, gm, gg) = (
                ctx.storage_buffer_from("x", &x).unwrap(),
                ctx.storage_buffer_from("xt", &xt).unwrap(),
                ctx.storage_buffer_from("m", &m).unwrap(),
                ctx.storage_buffer_from("g", &g).unwrap(),
            );
            let eta = if with_tilde { params.eta } else { 0.0 };
            let u = uniform(N, acid::mix_factor(eta, d), &s, &params);
            let disp =
                kernels::mix_and_step(&ctx, &gx, with_tilde.then_some(&gxt), &gm, &gg, &u).unwrap();
            ctx.run(&[&disp]);
            acid::mix_and_step(
                &mut x,
                with_tilde.then_some(&mut xt[..]),
                &mut m,
                &g,
                eta,
                d,
                &s,
            );
            let what = format!("mix_and_step nesterov={nesterov} tilde={with_tilde}");
            assert_close(&format!("{what} x"), &read(&ctx, &gx, N), &x, 1e-6);
            assert_close(&format!("{what} m"), &read(&ctx, &gm, N), &m, 1e-6);
            // Without x̃ the kernel must not touch it.
            assert_close(&format!("{what} x̃"), &read(&ctx, &gxt, N), &xt, 1e-6);
        }
    }
}

#[test]
fn mix_and_average_matches_twin_and_reports_the_distance() {
    let ctx = gpu();
    let mut r = rng(21);
    let params = AcidParams {
        eta: 0.035,
        alpha: 0.5,
        alpha_tilde: 7.26,
    };
    for with_tilde in [true, false] {
        let d = 0.4;
        let mut x = random_vec(&mut r, N, 1.0);
        let mut xt = random_vec(&mut r, N, 1.0);
        let sent = random_vec(&mut r, N, 1.0);
        let peer = random_vec(&mut r, N, 1.0);
        let gx = ctx.storage_buffer_from("x", &x).unwrap();
        let gxt = ctx.storage_buffer_from("xt", &xt).unwrap();
        let gs = ctx.storage_buffer_from("sent", &sent).unwrap();
        let gp = ctx.storage_buffer_from("peer", &peer).unwrap();
        let gpart = ctx
            .storage_buffer("partials", kernels::acid_partials_len(N))
            .unwrap();
        let p = if with_tilde {
            params
        } else {
            AcidParams::GOSSIP
        };
        let u = uniform(N, acid::mix_factor(p.eta, d), &sgd(), &p);
        let disp =
            kernels::mix_and_average(&ctx, &gx, with_tilde.then_some(&gxt), &gs, &gp, &gpart, &u)
                .unwrap();
        ctx.run(&[&disp]);
        let want_dist = acid::mix_and_average(
            &mut x,
            with_tilde.then_some(&mut xt[..]),
            &sent,
            &peer,
            d,
            &p,
        );
        let what = format!("mix_and_average tilde={with_tilde}");
        assert_close(&format!("{what} x"), &read(&ctx, &gx, N), &x, 1e-6);
        assert_close(&format!("{what} x̃"), &read(&ctx, &gxt, N), &xt, 1e-6);
        let partials: Vec<f32> = ctx.read(&gpart, 0, kernels::acid_partials_len(N)).unwrap();
        let got_dist: f64 = partials.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (got_dist - want_dist).abs() <= 1e-5 * want_dist,
            "{what}: ‖s_i − s_j‖² gpu {got_dist} cpu {want_dist}"
        );
    }
}

#[test]
fn mixing_keeps_the_mean_and_shrinks_the_gap_on_the_gpu() {
    let ctx = gpu();
    let mut r = rng(22);
    let (eta, d) = (0.2, 1.3);
    let x = random_vec(&mut r, N, 1.0);
    let xt = random_vec(&mut r, N, 1.0);
    let gx = ctx.storage_buffer_from("x", &x).unwrap();
    let gxt = ctx.storage_buffer_from("xt", &xt).unwrap();
    let snap = ctx.storage_buffer("snapshot", N).unwrap();
    let u = uniform(N, acid::mix_factor(eta, d), &sgd(), &AcidParams::GOSSIP);
    ctx.run(&[&kernels::mix_and_snapshot(&ctx, &gx, Some(&gxt), &snap, &u).unwrap()]);
    let (x1, xt1, s1) = (
        read(&ctx, &gx, N),
        read(&ctx, &gxt, N),
        read(&ctx, &snap, N),
    );
    assert_eq!(x1, s1, "the snapshot is the mixed x");
    let shrink = (-2.0 * eta * d).exp();
    for i in 0..N {
        let (m0, m1) = (
            f64::from(x[i] + xt[i]) / 2.0,
            f64::from(x1[i] + xt1[i]) / 2.0,
        );
        assert!((m0 - m1).abs() < 1e-6, "mean moved at {i}: {m0} -> {m1}");
        let (g0, g1) = (f64::from(x[i] - xt[i]), f64::from(x1[i] - xt1[i]));
        assert!(
            (g1 - shrink * g0).abs() < 1e-5,
            "gap at {i}: {g0} -> {g1}, expected ×{shrink}"
        );
    }
}

#[test]
fn a_pairwise_average_conserves_the_pairs_sum_on_the_gpu() {
    // Two workers i and j, each with gradient steps landed after its snapshot was taken.
    let ctx = gpu();
    let mut r = rng(23);
    let p = AcidParams {
        eta: 0.05,
        alpha: 0.5,
        alpha_tilde: 3.0,
    };
    let s_i = random_vec(&mut r, N, 1.0);
    let s_j = random_vec(&mut r, N, 1.0);
    let step_i = random_vec(&mut r, N, 0.01);
    let step_j = random_vec(&mut r, N, 0.01);
    let x_i: Vec<f32> = s_i.iter().zip(&step_i).map(|(a, b)| a + b).collect();
    let x_j: Vec<f32> = s_j.iter().zip(&step_j).map(|(a, b)| a + b).collect();
    let bufs = |x: &[f32]| {
        (
            ctx.storage_buffer_from("x", x).unwrap(),
            ctx.storage_buffer_from("xt", x).unwrap(),
        )
    };
    let ((gxi, gti), (gxj, gtj)) = (bufs(&x_i), bufs(&x_j));
    let (gsi, gsj) = (
        ctx.storage_buffer_from("si", &s_i).unwrap(),
        ctx.storage_buffer_from("sj", &s_j).unwrap(),
    );
    let part = ctx
        .storage_buffer("partials", kernels::acid_partials_len(N))
        .unwrap();
    let u = uniform(N, 0.0, &sgd(), &p);
    let di = kernels::mix_and_average(&ctx, &gxi, Some(&gti), &gsi, &gsj, &part, &u).unwrap();
    let dj = kernels::mix_and_average(&ctx, &gxj, Some(&gtj), &gsj, &gsi, &part, &u).unwrap();
    ctx.run(&[&di, &dj]);
    let (xi, xj) = (read(&ctx, &gxi, N), read(&ctx, &gxj, N));
    let (ti, tj) = (read(&ctx, &gti, N), read(&ctx, &gtj, N));
    for k in 0..N {
        let before = f64::from(x_i[k]) + f64::from(x_j[k]);
        assert!(
            (f64::from(xi[k]) + f64::from(xj[k]) - before).abs() < 1e-5,
            "x sum not conserved at {k}"
        );
        assert!(
            (f64::from(ti[k]) + f64::from(tj[k]) - before).abs() < 1e-4,
            "x̃ sum not conserved at {k}"
        );
        // The steps taken after the snapshot survive: x_i = (s_i + s_j)/2 + step_i.
        let want = 0.5 * (f64::from(s_i[k]) + f64::from(s_j[k])) + f64::from(step_i[k]);
        assert!(
            (f64::from(xi[k]) - want).abs() < 1e-5,
            "in-flight gradient step lost at {k}"
        );
    }
}
