//! A worker's training state on the GPU (`TrainState`) against its CPU twin (`acid::State`): the
//! same sequence of gradient, snapshot and averaging events at the same clock values gives the
//! same x, x̃ and momentum, and the same ‖s_i − s_j‖².
mod common;

use a2cid_engine::acid::{AcidParams, State};
use a2cid_engine::train_state::AVERAGE_SLOTS;
use a2cid_engine::SgdConfig;
use a2cid_engine::TrainState;
use common::*;

const N: usize = 3_001;

fn sgd() -> SgdConfig {
    SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-3,
        nesterov: false,
    }
}

/// Two workers (GPU and CPU twin each) through one scripted history of events.
fn run(params: AcidParams, with_tilde: bool) {
    let ctx = gpu();
    let mut r = rng(7);
    let x0 = [random_vec(&mut r, N, 1.0), random_vec(&mut r, N, 1.0)];
    let grads: Vec<Vec<f32>> = (0..6).map(|_| random_vec(&mut r, N, 0.5)).collect();
    let x_bufs = [
        ctx.storage_buffer_from("x0", &x0[0]).unwrap(),
        ctx.storage_buffer_from("x1", &x0[1]).unwrap(),
    ];
    let g = ctx.storage_buffer("g", N).unwrap();
    let mut gpu_states: Vec<TrainState> = x_bufs
        .iter()
        .map(|x| TrainState::new(ctx.clone(), x, &g, N, sgd(), params, with_tilde).unwrap())
        .collect();
    let mut cpu_states: Vec<State> = x0
        .iter()
        .map(|x| State::new(x.clone(), params, with_tilde))
        .collect();

    // (worker, clock value) of each gradient event, with an exchange between them.
    let steps = [(0, 0.7), (1, 1.1), (0, 1.9), (1, 2.4)];
    for (k, &(w, tau)) in steps.iter().enumerate() {
        ctx.write(&g, 0, &grads[k]);
        gpu_states[w].submit(|s, pass| s.record_step(pass, sgd().lr, tau));
        cpu_states[w].step(&grads[k], tau, &sgd());
        if k == 1 || k == 3 {
            // An exchange at tau + 0.3: both snapshot, then each averages against what it sent.
            let t = tau + 0.3;
            for s in &mut gpu_states {
                s.submit(|s, pass| s.record_snapshot(pass, t));
            }
            let snaps: Vec<Vec<f32>> = gpu_states
                .iter()
                .map(|s| s.read_snapshot().unwrap())
                .collect();
            gpu_states[0].write_received(&snaps[1]);
            gpu_states[1].write_received(&snaps[0]);
            let mut gpu_d = [0.0; 2];
            for (i, s) in gpu_states.iter_mut().enumerate() {
                s.submit(|s, pass| s.record_average(pass, t));
                gpu_d[i] = s.read_distance().unwrap();
            }
            for s in &mut cpu_states {
                s.mix_until(t);
            }
            let sent: Vec<Vec<f32>> = cpu_states.iter().map(|s| s.x.clone()).collect();
            assert_close("snapshot 0", &snaps[0], &sent[0], 1e-5);
            assert_close("snapshot 1", &snaps[1], &sent[1], 1e-5);
            let d0 = cpu_states[0].average(&sent[0], &sent[1], t);
            let d1 = cpu_states[1].average(&sent[1], &sent[0], t);
            assert_eq!(d0, d1, "the pair sees one distance");
            for d in gpu_d {
                assert!(
                    (d - d0).abs() <= 1e-4 * d0,
                    "‖s_i − s_j‖²: GPU {d} vs CPU {d0}"
                );
            }
        }
    }
    for (w, (gpu, cpu)) in gpu_states.iter().zip(&cpu_states).enumerate() {
        let v = gpu.read().unwrap();
        let (x, x_tilde, momentum) = (v.x, v.x_tilde, v.momentum);
        assert_close(&format!("x of worker {w}"), &x, &cpu.x, 1e-5);
        assert_close(
            &format!("momentum of worker {w}"),
            &momentum,
            &cpu.momentum,
            1e-5,
        );
        assert_eq!(x_tilde.is_some(), with_tilde);
        if let (Some(g), Some(c)) = (x_tilde, &cpu.x_tilde) {
            assert_close(&format!("x̃ of worker {w}"), &g, c, 1e-5);
        }
        assert_eq!(gpu.t_last(), cpu.t_last);
    }
}

#[test]
fn acid_state_on_the_gpu_matches_its_cpu_twin() {
    run(
        AcidParams {
            eta: 0.35,
            alpha: 0.5,
            alpha_tilde: 3.0,
        },
        true,
    );
}

#[test]
fn gossip_state_on_the_gpu_matches_its_cpu_twin() {
    run(AcidParams::GOSSIP, false);
}

/// Averages of snapshots taken on the host, several of them and a gradient step in ONE
/// submission (each in its own slot), give what the CPU twin gives applying them one by one in
/// clock order; more averages than slots go in two submissions.
#[test]
fn several_averages_and_a_step_in_one_submission_match_the_cpu_twin() {
    let params = AcidParams {
        eta: 0.4,
        alpha: 0.5,
        alpha_tilde: 2.5,
    };
    let ctx = gpu();
    let mut r = rng(11);
    let x0 = random_vec(&mut r, N, 1.0);
    let x = ctx.storage_buffer_from("x", &x0).unwrap();
    let g = ctx.storage_buffer("g", N).unwrap();
    let mut gpu_state = TrainState::new(ctx.clone(), &x, &g, N, sgd(), params, true).unwrap();
    let mut cpu = State::new(x0.clone(), params, true);
    let total = AVERAGE_SLOTS + 2;
    let pairs: Vec<(Vec<f32>, Vec<f32>, f64)> = (0..total)
        .map(|k| {
            let sent = random_vec(&mut r, N, 1.0);
            let peer = random_vec(&mut r, N, 1.0);
            (sent, peer, 0.2 + 0.15 * k as f64)
        })
        .collect();
    let grad = random_vec(&mut r, N, 0.5);
    let step_tau = 0.2 + 0.15 * total as f64;
    ctx.write(&g, 0, &grad);
    let (first, last) = pairs.split_at(total - AVERAGE_SLOTS);
    gpu_state.submit(|st, pass| {
        for (k, (sent, peer, tau)) in first.iter().enumerate() {
            st.record_average_of(pass, k, sent, peer, *tau).unwrap();
        }
    });
    gpu_state.submit(|st, pass| {
        for (k, (sent, peer, tau)) in last.iter().enumerate() {
            st.record_average_of(pass, k, sent, peer, *tau).unwrap();
        }
        st.record_step(pass, sgd().lr, step_tau);
    });
    for (sent, peer, tau) in &pairs {
        cpu.average(sent, peer, *tau);
    }
    cpu.step(&grad, step_tau, &sgd());
    let v = gpu_state.read().unwrap();
    assert_close("x", &v.x, &cpu.x, 1e-5);
    assert_close(
        "x̃",
        &v.x_tilde.unwrap(),
        cpu.x_tilde.as_ref().unwrap(),
        1e-5,
    );
    assert_close("momentum", &v.momentum, &cpu.momentum, 1e-5);
    assert_eq!(gpu_state.t_last(), cpu.t_last);
}

#[test]
fn load_replaces_the_state_and_checks_lengths() {
    let ctx = gpu();
    let x = ctx.storage_buffer("x", 4).unwrap();
    let g = ctx.storage_buffer("g", 4).unwrap();
    let mut s = TrainState::new(ctx, &x, &g, 4, sgd(), AcidParams::GOSSIP, true).unwrap();
    s.load(&[1.0, 2.0, 3.0, 4.0], None, Some(&[0.5; 4]), 7.5)
        .unwrap();
    let v = s.read().unwrap();
    let (x, x_tilde, m) = (v.x, v.x_tilde, v.momentum);
    assert_eq!(x, vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(x_tilde, Some(x.clone()), "x̃ defaults to x");
    assert_eq!(m, vec![0.5; 4]);
    assert_eq!(s.t_last(), 7.5);
    let e = s.load(&[1.0; 3], None, None, 0.0).unwrap_err().to_string();
    assert!(
        e.contains("x has 3 values for a model of 4 parameters"),
        "{e}"
    );
}
