//! The A²CiD² update rules (docs/algorithm.md §3) on the CPU: the one implementation of the math.
//!
//! Pure functions over flat f32 parameter slices; time is passed in as the elapsed clock interval
//! `elapsed` (in units of one gradient) since the last event that touched (x, x̃). This module owns
//! the continuous mixing of (x, x̃), the mixed SGD step and the mixed pairwise average against the
//! SENT snapshot. It is the reference twin the fused WGSL kernels are tested against, and what the
//! simulator runs. It knows nothing of graphs (the root package's `topology` computes eta, alpha,
//! alpha_tilde), of scheduling, or of the network.
//!
//! Numerics: scalar coefficients (the mixing factor) are computed once in f64 and applied in f32,
//! which is what a GPU kernel receiving an f32 uniform does too. Norms are accumulated in f64.
//! `gossip` is the same code with `x_tilde = None` (and eta irrelevant): no mixing, no x̃ update.
//!
//! # Panics
//! Every function asserts that the slices it is given have the same length: a mismatch is a
//! programming error of the caller, not bad user input.

use crate::optim::SgdConfig;

/// The A²CiD² constants of one graph and communication rate (docs/algorithm.md §5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcidParams {
    /// Rate of the continuous mixing between x and x̃, per unit of time.
    pub eta: f64,
    /// Weight of the pairwise average on x (1/2).
    pub alpha: f64,
    /// Weight of the pairwise average on x̃.
    pub alpha_tilde: f64,
}

impl AcidParams {
    /// Plain pairwise gossip: no mixing, x moves half way to the peer.
    pub const GOSSIP: AcidParams = AcidParams {
        eta: 0.0,
        alpha: 0.5,
        alpha_tilde: 0.5,
    };
}

/// The mixing coefficient (1 - e)/2 with e = exp(-2 eta d): how far x and x̃ each move towards the
/// other over an interval `elapsed` = d. Computed as -expm1(-2 eta d)/2, accurate for tiny eta·d.
/// A non-positive or NaN interval mixes nothing.
pub fn mix_factor(eta: f64, elapsed: f64) -> f64 {
    let exponent = 2.0 * eta * elapsed;
    if exponent > 0.0 {
        -(-exponent).exp_m1() / 2.0
    } else {
        0.0
    }
}

/// Continuous mixing over `elapsed`: x += c (x̃ - x), x̃ += c (x - x̃), both from the old values,
/// with c = `mix_factor(eta, elapsed)`. Keeps (x + x̃)/2 and shrinks x - x̃ by exp(-2 eta elapsed).
pub fn mix(x: &mut [f32], x_tilde: &mut [f32], eta: f64, elapsed: f64) {
    assert_eq!(
        x.len(),
        x_tilde.len(),
        "mix: x and x_tilde differ in length"
    );
    let c = mix_factor(eta, elapsed) as f32;
    if c == 0.0 {
        return;
    }
    for (xi, ti) in x.iter_mut().zip(x_tilde.iter_mut()) {
        let shift = c * (*ti - *xi);
        *xi += shift;
        *ti -= shift;
    }
}

/// A gradient event (docs/algorithm.md §3.2): mix (x, x̃) over `elapsed`, then the SGD step
/// `m <- mu m + g + wd x`, `u = lr m` (Nesterov: `u = lr (g + wd x + mu m)`), `x -= u`, `x̃ -= u`.
/// The weight decay uses x after mixing. With `x_tilde = None` (gossip, all-reduce) it is plain SGD.
pub fn mix_and_step(
    x: &mut [f32],
    x_tilde: Option<&mut [f32]>,
    momentum_buf: &mut [f32],
    grad: &[f32],
    eta: f64,
    elapsed: f64,
    sgd: &SgdConfig,
) {
    let n = x.len();
    assert_eq!(
        momentum_buf.len(),
        n,
        "mix_and_step: momentum buffer length differs from x"
    );
    assert_eq!(
        grad.len(),
        n,
        "mix_and_step: gradient length differs from x"
    );
    let step =
        |xi: f32, mi: &mut f32, gi: f32| -> f32 { crate::optim::sgd_update(sgd, xi, gi, mi) };
    match x_tilde {
        Some(x_tilde) => {
            assert_eq!(
                x_tilde.len(),
                n,
                "mix_and_step: x_tilde length differs from x"
            );
            let c = mix_factor(eta, elapsed) as f32;
            for (((xi, ti), mi), &gi) in x
                .iter_mut()
                .zip(x_tilde.iter_mut())
                .zip(momentum_buf.iter_mut())
                .zip(grad)
            {
                let shift = c * (*ti - *xi);
                let mixed_x = *xi + shift;
                let mixed_t = *ti - shift;
                let u = step(mixed_x, mi, gi);
                *xi = mixed_x - u;
                *ti = mixed_t - u;
            }
        }
        None => {
            for ((xi, mi), &gi) in x.iter_mut().zip(momentum_buf.iter_mut()).zip(grad) {
                *xi -= step(*xi, mi, gi);
            }
        }
    }
}

/// The receiving half of a communication event (docs/algorithm.md §3.3): mix (x, x̃) over `elapsed`, then
/// `x += alpha (s_j - s_i)`, `x̃ += alpha_tilde (s_j - s_i)`, where `sent` = s_i is the snapshot this
/// worker sent (its x after mixing up to the exchange) and `peer` = s_j the one it received.
/// Taking the delta against the sent snapshot keeps gradient steps that landed in between and
/// conserves the pair's sum exactly. Returns ||s_i - s_j||^2 (accumulated in f64).
/// With `x_tilde = None` (gossip) only x is averaged, with `params.alpha`.
pub fn mix_and_average(
    x: &mut [f32],
    x_tilde: Option<&mut [f32]>,
    sent: &[f32],
    peer: &[f32],
    elapsed: f64,
    params: &AcidParams,
) -> f64 {
    let n = x.len();
    assert_eq!(
        sent.len(),
        n,
        "mix_and_average: sent snapshot length differs from x"
    );
    assert_eq!(
        peer.len(),
        n,
        "mix_and_average: peer snapshot length differs from x"
    );
    let alpha = params.alpha as f32;
    let mut squared_distance = 0.0_f64;
    match x_tilde {
        Some(x_tilde) => {
            assert_eq!(
                x_tilde.len(),
                n,
                "mix_and_average: x_tilde length differs from x"
            );
            let c = mix_factor(params.eta, elapsed) as f32;
            let alpha_tilde = params.alpha_tilde as f32;
            for (((xi, ti), &si), &sj) in x.iter_mut().zip(x_tilde.iter_mut()).zip(sent).zip(peer) {
                let shift = c * (*ti - *xi);
                let delta = sj - si;
                *xi = (*xi + shift) + alpha * delta;
                *ti = (*ti - shift) + alpha_tilde * delta;
                squared_distance += f64::from(delta) * f64::from(delta);
            }
        }
        None => {
            for ((xi, &si), &sj) in x.iter_mut().zip(sent).zip(peer) {
                let delta = sj - si;
                *xi += alpha * delta;
                squared_distance += f64::from(delta) * f64::from(delta);
            }
        }
    }
    squared_distance
}

/// One worker's state on the CPU (docs/algorithm.md §2): x, x̃ (`acid` only), the momentum and
/// `t_last`, the clock value of the last event that touched (x, x̃). The CPU twin of
/// [`crate::train_state::TrainState`]: every event takes the clock value `now` at which it happens and
/// mixes up to it first.
#[derive(Debug, Clone)]
pub struct State {
    pub x: Vec<f32>,
    pub x_tilde: Option<Vec<f32>>,
    pub momentum: Vec<f32>,
    pub t_last: f64,
    pub params: AcidParams,
}

impl State {
    /// A worker at `x0` (x̃ = x0 when `with_tilde`), zero momentum, clock 0.
    pub fn new(x0: Vec<f32>, params: AcidParams, with_tilde: bool) -> State {
        State {
            x_tilde: with_tilde.then(|| x0.clone()),
            momentum: vec![0.0; x0.len()],
            x: x0,
            t_last: 0.0,
            params,
        }
    }

    /// The interval since the last event; `t_last` moves to `now`.
    fn elapsed_until(&mut self, now: f64) -> f64 {
        let elapsed = now - self.t_last;
        self.t_last = self.t_last.max(now);
        elapsed
    }

    /// Mixes (x, x̃) up to `now` (a no-op without x̃).
    pub fn mix_until(&mut self, now: f64) {
        let elapsed = self.elapsed_until(now);
        if let Some(x_tilde) = self.x_tilde.as_mut() {
            mix(&mut self.x, x_tilde, self.params.eta, elapsed);
        }
    }

    /// A gradient event at `now` with gradient `grad`: mix, then the SGD step on x and x̃.
    pub fn step(&mut self, grad: &[f32], now: f64, sgd: &SgdConfig) {
        let elapsed = self.elapsed_until(now);
        mix_and_step(
            &mut self.x,
            self.x_tilde.as_deref_mut(),
            &mut self.momentum,
            grad,
            self.params.eta,
            elapsed,
            sgd,
        );
    }

    /// The receiving half of an exchange at `now`: mix, then average against the snapshot this
    /// worker sent (`sent`) with the peer's (`peer`). Returns ‖s_i − s_j‖².
    pub fn average(&mut self, sent: &[f32], peer: &[f32], now: f64) -> f64 {
        let elapsed = self.elapsed_until(now);
        mix_and_average(
            &mut self.x,
            self.x_tilde.as_deref_mut(),
            sent,
            peer,
            elapsed,
            &self.params,
        )
    }
}

/// A host-side mirror of a worker whose state lives on the device, from which a snapshot can be
/// taken at once, without waiting for the device's queue (docs/algorithm.md §3.3).
///
/// It holds the device's (x, x̃) as read back at a *boundary* (just after some gradient step, at
/// clock value `tau`) and every pairwise average applied to the device since. Its snapshot at
/// `now` replays those averages at their clock values and mixes up to `now`: it is the device's
/// state at `now` minus the gradient steps taken since the boundary. Gradient steps do not
/// change the gap x̃ − x, so leaving them out does not change the mixing; every average is in,
/// so two exchanges never see the same stale snapshot (which, with a large alpha_tilde, would
/// overshoot). The exchange takes its delta against the snapshot it sent, so the pair's sum is
/// conserved whatever the snapshot; the steps that are left out are kept, as steps that land
/// while bytes are in flight are.
#[derive(Debug, Clone)]
pub struct Mirror {
    boundary: State,
    boundary_seq: u64,
    pending: Vec<PendingAverage>,
}

#[derive(Debug, Clone)]
struct PendingAverage {
    seq: u64,
    tau: f64,
    sent: Vec<f32>,
    peer: Vec<f32>,
}

impl Mirror {
    /// A mirror of a device state (x0, x̃ = x0 when `with_tilde`) at clock `tau`, as of
    /// submission `seq` (0 before anything was submitted).
    pub fn new(x0: Vec<f32>, params: AcidParams, with_tilde: bool, tau: f64, seq: u64) -> Mirror {
        Mirror {
            boundary: State {
                x_tilde: with_tilde.then(|| x0.clone()),
                x: x0,
                momentum: Vec::new(),
                t_last: tau,
                params,
            },
            boundary_seq: seq,
            pending: Vec::new(),
        }
    }

    /// The device's (x, x̃) as they were just after submission `seq`, at clock `tau`. A boundary
    /// older than the current one is ignored; averages it already holds are dropped.
    pub fn set_boundary(&mut self, seq: u64, tau: f64, x: &[f32], x_tilde: Option<&[f32]>) {
        if seq < self.boundary_seq {
            return;
        }
        self.boundary.x.copy_from_slice(x);
        if let (Some(mine), Some(theirs)) = (self.boundary.x_tilde.as_mut(), x_tilde) {
            mine.copy_from_slice(theirs);
        }
        self.boundary.t_last = tau;
        self.boundary_seq = seq;
        self.pending.retain(|p| p.seq > seq);
    }

    /// The submission the boundary is as of.
    pub fn boundary_seq(&self) -> u64 {
        self.boundary_seq
    }

    /// Averages applied to the device after the boundary.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A pairwise average was submitted to the device as submission `seq`, at clock `tau`,
    /// against the snapshot `sent` with the peer's `peer`.
    pub fn push_average(&mut self, seq: u64, tau: f64, sent: &[f32], peer: &[f32]) {
        self.pending.push(PendingAverage {
            seq,
            tau,
            sent: sent.to_vec(),
            peer: peer.to_vec(),
        });
    }

    /// The snapshot to send at clock `now`: x of the boundary, every average since, mixed up to
    /// `now`.
    pub fn snapshot(&self, now: f64) -> Vec<f32> {
        self.state_at(now).0
    }

    /// (x, x̃) at clock `now`, as [`snapshot`](Self::snapshot) takes x: the whole training state
    /// a restarted neighbour continues from (x̃ is `None` without the companion).
    pub fn state_at(&self, now: f64) -> (Vec<f32>, Option<Vec<f32>>) {
        let mut state = self.boundary.clone();
        for p in &self.pending {
            state.average(&p.sent, &p.peer, p.tau);
        }
        state.mix_until(now);
        (state.x, state.x_tilde)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SGD: SgdConfig = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.01,
        nesterov: false,
    };

    fn vec_pair(len: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (
            proptest::collection::vec(-10.0f32..10.0, len),
            proptest::collection::vec(-10.0f32..10.0, len),
        )
    }

    #[test]
    fn mix_factor_is_stable_and_has_the_right_limits() {
        assert_eq!(mix_factor(0.0, 5.0), 0.0);
        assert_eq!(mix_factor(0.3, 0.0), 0.0);
        assert_eq!(mix_factor(0.3, -1.0), 0.0);
        assert!((mix_factor(1.0, 1e3) - 0.5).abs() < 1e-15);
        // For tiny eta*d the factor is eta*d to first order; naive (1 - exp)/2 would lose digits.
        let tiny = mix_factor(1e-12, 1.0);
        assert!((tiny / 1e-12 - 1.0).abs() < 1e-11, "{tiny}");
        let naive = (1.0 - (-2e-12f64).exp()) / 2.0;
        assert!(
            (naive / 1e-12 - 1.0).abs() > 1e-6,
            "the naive form should lose digits: {naive}"
        );
        let e = (-2.0f64 * 0.035 * 3.0).exp();
        assert!((mix_factor(0.035, 3.0) - (1.0 - e) / 2.0).abs() < 1e-15);
    }

    #[test]
    fn a_gradient_step_moves_x_and_x_tilde_by_the_same_sgd_update() {
        // No mixing (elapsed 0): both move by exactly u = lr (mu m + g + wd x).
        let mut x = vec![1.0f32, -2.0];
        let mut t = vec![3.0f32, 0.5];
        let mut m = vec![0.5f32, 1.0];
        let g = [2.0f32, -4.0];
        mix_and_step(&mut x, Some(&mut t), &mut m, &g, 0.7, 0.0, &SGD);
        let m0 = 0.9 * 0.5 + 2.0 + 0.01 * 1.0;
        let m1 = 0.9 * 1.0 - 4.0 + 0.01 * -2.0;
        assert_eq!(m, vec![m0, m1]);
        assert_eq!(x, vec![1.0 - 0.1 * m0, -2.0 - 0.1 * m1]);
        assert_eq!(t, vec![3.0 - 0.1 * m0, 0.5 - 0.1 * m1]);
    }

    #[test]
    fn nesterov_uses_the_lookahead_momentum() {
        let sgd = SgdConfig {
            nesterov: true,
            ..SGD
        };
        let mut x = vec![1.0f32];
        let mut m = vec![0.5f32];
        mix_and_step(&mut x, None, &mut m, &[2.0], 0.0, 0.0, &sgd);
        let d_p = 2.0 + 0.01 * 1.0;
        let m_new = 0.9 * 0.5 + d_p;
        assert_eq!(m, vec![m_new]);
        assert_eq!(x, vec![1.0 - 0.1 * (d_p + 0.9 * m_new)]);
    }

    #[test]
    fn the_average_is_taken_against_the_sent_snapshot() {
        // A gradient step landed after the snapshot was sent: it is kept.
        let sent = vec![1.0f32];
        let peer = vec![3.0f32];
        let mut x = vec![0.8f32]; // = sent - 0.2 from a later step
        let params = AcidParams {
            eta: 0.0,
            alpha: 0.5,
            alpha_tilde: 4.0,
        };
        let mut t = vec![5.0f32];
        let d2 = mix_and_average(&mut x, Some(&mut t), &sent, &peer, 0.0, &params);
        assert_eq!(d2, 4.0);
        assert_eq!(x, vec![1.8]);
        assert_eq!(t, vec![13.0]);
    }

    /// Workers at `x0` with x̃ (their "device" states) and a mirror of each.
    fn mirrored_states(x0: &[Vec<f32>], params: AcidParams) -> (Vec<State>, Vec<Mirror>) {
        let device = x0
            .iter()
            .map(|x| State::new(x.clone(), params, true))
            .collect();
        let mirrors = x0
            .iter()
            .map(|x| Mirror::new(x.clone(), params, true, 0.0, 0))
            .collect();
        (device, mirrors)
    }

    /// Two workers whose states live "on the device" (`State`s) exchange through mirrors, with
    /// gradient steps and late read-backs interleaved as `script` says. Returns the largest
    /// relative change of the pair's sum of x at an exchange, and the largest relative error of
    /// "snapshot = device state + the gradient steps since the boundary".
    fn mirrored_pair(script: &[u8], grads: &[Vec<f32>], alpha_tilde: f64) -> (f64, f64) {
        let params = AcidParams {
            eta: 0.2,
            alpha: 0.5,
            alpha_tilde,
        };
        let d = grads[0].len();
        let x0: Vec<Vec<f32>> = (0..2)
            .map(|w| (0..d).map(|k| ((w * 7 + k) % 5) as f32 - 2.0).collect())
            .collect();
        let (mut device, mut mirrors) = mirrored_states(&x0, params);
        // Each worker's gradient steps as (seq, update of x), and the read-back of its last step,
        // delivered later.
        let mut steps: Vec<Vec<(u64, Vec<f64>)>> = vec![Vec::new(), Vec::new()];
        type ReadBack = (u64, f64, Vec<f32>, Vec<f32>);
        let mut in_flight: Vec<Option<ReadBack>> = vec![None, None];
        let (mut seq, mut tau) = (0u64, 0.0f64);
        let (mut worst_sum, mut worst_snapshot) = (0.0f64, 0.0f64);
        for (k, &op) in script.iter().enumerate() {
            tau += 0.25 + (op % 3) as f64 * 0.1;
            seq += 1;
            let w = (op / 4 % 2) as usize;
            match op % 4 {
                0 | 1 => {
                    device[w].mix_until(tau);
                    let before = device[w].x.clone();
                    device[w].step(&grads[k % grads.len()], tau, &SGD);
                    let update = before
                        .iter()
                        .zip(&device[w].x)
                        .map(|(&b, &a)| f64::from(b) - f64::from(a))
                        .collect();
                    steps[w].push((seq, update));
                    let t = device[w].x_tilde.clone().unwrap();
                    in_flight[w] = Some((seq, tau, device[w].x.clone(), t));
                }
                2 => {
                    if let Some((s, t, x, xt)) = in_flight[w].take() {
                        mirrors[w].set_boundary(s, t, &x, Some(&xt));
                    }
                }
                _ => {
                    let sent: Vec<Vec<f32>> = mirrors.iter().map(|m| m.snapshot(tau)).collect();
                    // Mixing moves x on its own (it keeps x + x̃); the exchange keeps the pair's x.
                    device.iter_mut().for_each(|s| s.mix_until(tau));
                    for w in 0..2 {
                        // f32 rounding grows with the state's magnitude: measure against it.
                        let scale = 1.0
                            + device[w]
                                .x
                                .iter()
                                .chain(device[w].x_tilde.as_ref().unwrap())
                                .fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
                        for i in 0..d {
                            let left_out: f64 = steps[w]
                                .iter()
                                .filter(|(s, _)| *s > mirrors[w].boundary_seq())
                                .map(|(_, u)| u[i])
                                .sum();
                            let expected = f64::from(device[w].x[i]) + left_out;
                            let e = (f64::from(sent[w][i]) - expected).abs() / scale;
                            worst_snapshot = worst_snapshot.max(e);
                        }
                    }
                    let before: Vec<f64> = (0..d)
                        .map(|i| f64::from(device[0].x[i]) + f64::from(device[1].x[i]))
                        .collect();
                    for (i, j) in [(0, 1), (1, 0)] {
                        device[i].average(&sent[i], &sent[j], tau);
                        mirrors[i].push_average(seq, tau, &sent[i], &sent[j]);
                    }
                    for (i, b) in before.iter().enumerate() {
                        let after = f64::from(device[0].x[i]) + f64::from(device[1].x[i]);
                        worst_sum = worst_sum.max((after - b).abs() / (1.0 + b.abs()));
                    }
                }
            }
        }
        (worst_sum, worst_snapshot)
    }

    #[test]
    fn without_gradient_steps_the_mirror_snapshot_is_the_device_state() {
        // Zero gradients and no decay: a step only mixes, so the device's x at any time must be
        // exactly what the mirror says, however late the read-backs.
        let zero = SgdConfig {
            lr: 0.0,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        };
        let params = AcidParams {
            eta: 0.3,
            alpha: 0.5,
            alpha_tilde: 7.26,
        };
        let x0 = vec![1.0f32, -2.0, 0.5];
        let mut device = State::new(x0.clone(), params, true);
        let mut mirror = Mirror::new(x0, params, true, 0.0, 0);
        let peers = [
            vec![3.0f32, 1.0, 0.0],
            vec![-1.0, 0.0, 2.0],
            vec![0.5, 0.5, 0.5],
        ];
        let mut tau = 0.0;
        for (k, peer) in peers.iter().enumerate() {
            tau += 0.4;
            device.step(&[0.0; 3], tau, &zero);
            if k == 1 {
                let t = device.x_tilde.clone().unwrap();
                mirror.set_boundary(2 * k as u64 + 1, tau, &device.x.clone(), Some(&t));
            }
            tau += 0.3;
            let sent = mirror.snapshot(tau);
            let mut truth = device.clone();
            truth.mix_until(tau);
            for (a, b) in sent.iter().zip(&truth.x) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "snapshot {sent:?} vs device {:?}",
                    truth.x
                );
            }
            device.average(&sent, peer, tau);
            mirror.push_average(2 * k as u64 + 2, tau, &sent, peer);
        }
    }

    #[test]
    fn back_to_back_exchanges_reach_consensus_while_stale_snapshots_overshoot() {
        // No gradient steps: after one exchange (alpha = 1/2) the pair agrees, and a second
        // exchange before any read-back must leave it so. Reusing the first snapshot (no pending
        // averages) pushes x past the average and x̃ by alpha_tilde times that.
        let params = AcidParams {
            eta: 0.0,
            alpha: 0.5,
            alpha_tilde: 7.26,
        };
        let run = |mirror_averages: bool| {
            let x0 = [vec![1.0f32, 4.0], vec![-3.0f32, 0.0]];
            let (mut device, mut mirrors) = mirrored_states(&x0, params);
            for round in 1..=3u64 {
                let tau = round as f64;
                let sent: Vec<Vec<f32>> = mirrors.iter().map(|m| m.snapshot(tau)).collect();
                for (i, j) in [(0, 1), (1, 0)] {
                    device[i].average(&sent[i], &sent[j], tau);
                    if mirror_averages {
                        mirrors[i].push_average(round, tau, &sent[i], &sent[j]);
                    }
                }
            }
            let gap: f32 = (0..2)
                .map(|k| (device[0].x[k] - device[1].x[k]).abs())
                .sum();
            let tilde: f32 = device[0]
                .x_tilde
                .as_ref()
                .unwrap()
                .iter()
                .map(|v| v.abs())
                .sum();
            (gap, tilde)
        };
        let (gap, tilde) = run(true);
        assert!(gap < 1e-6, "mirrored exchanges agree: gap {gap}");
        let (stale_gap, stale_tilde) = run(false);
        assert!(
            stale_gap > 1.0,
            "stale snapshots overshoot: gap {stale_gap}"
        );
        assert!(
            stale_tilde > 2.0 * tilde,
            "x̃ kicked too hard: {stale_tilde} vs {tilde}"
        );
    }

    proptest! {
        #[test]
        fn mirrored_exchanges_conserve_the_pair_and_leave_out_only_gradient_steps(
            script in proptest::collection::vec(0u8..8, 1..60),
            grads in proptest::collection::vec(proptest::collection::vec(-1.0f32..1.0, 6), 1..4),
            alpha_tilde in 0.5f64..8.0,
        ) {
            // Whatever the interleaving: the pair's sum is conserved at every exchange, and a
            // snapshot differs from the device's state only by the worker's gradient steps since
            // its read-back — never by an average (which would be applied twice, or missed).
            let (worst_sum, worst_snapshot) = mirrored_pair(&script, &grads, alpha_tilde);
            prop_assert!(worst_sum < 1e-4, "pair sum moved by {worst_sum}");
            prop_assert!(worst_snapshot < 1e-3, "snapshot off by {worst_snapshot}");
        }

        #[test]
        fn mixing_keeps_the_mean_and_shrinks_the_gap(
            (x0, t0) in vec_pair(17), eta in 0.0f64..2.0, elapsed in 0.0f64..5.0,
        ) {
            let (mut x, mut t) = (x0.clone(), t0.clone());
            mix(&mut x, &mut t, eta, elapsed);
            let e = (-2.0 * eta * elapsed).exp();
            for k in 0..x.len() {
                let (mean0, mean1) = ((x0[k] + t0[k]) as f64 / 2.0, (x[k] + t[k]) as f64 / 2.0);
                prop_assert!((mean0 - mean1).abs() <= 1e-5 * (1.0 + mean0.abs()));
                let (gap0, gap1) = ((x0[k] - t0[k]) as f64, (x[k] - t[k]) as f64);
                prop_assert!((gap1 - e * gap0).abs() <= 2e-5 * (1.0 + gap0.abs()), "{gap1} vs {}", e * gap0);
            }
        }

        #[test]
        fn mixing_twice_equals_mixing_once_over_the_sum(
            (x0, t0) in vec_pair(9), eta in 0.0f64..1.0, d1 in 0.0f64..3.0, d2 in 0.0f64..3.0,
        ) {
            let (mut xa, mut ta) = (x0.clone(), t0.clone());
            mix(&mut xa, &mut ta, eta, d1);
            mix(&mut xa, &mut ta, eta, d2);
            let (mut xb, mut tb) = (x0, t0);
            mix(&mut xb, &mut tb, eta, d1 + d2);
            for k in 0..xa.len() {
                prop_assert!((xa[k] - xb[k]).abs() <= 1e-4 * (1.0 + xb[k].abs()));
                prop_assert!((ta[k] - tb[k]).abs() <= 1e-4 * (1.0 + tb[k].abs()));
            }
        }

        #[test]
        fn mix_and_step_is_mix_then_step(
            (x0, t0) in vec_pair(13), (m0, g) in vec_pair(13),
            eta in 0.0f64..1.0, elapsed in 0.0f64..4.0, nesterov: bool,
        ) {
            let sgd = SgdConfig { nesterov, ..SGD };
            let (mut x, mut t, mut m) = (x0.clone(), t0.clone(), m0.clone());
            mix_and_step(&mut x, Some(&mut t), &mut m, &g, eta, elapsed, &sgd);
            let (mut xr, mut tr) = (x0, t0);
            mix(&mut xr, &mut tr, eta, elapsed);
            let (mut x_stepped, mut m_stepped) = (xr.clone(), m0);
            mix_and_step(&mut x_stepped, None, &mut m_stepped, &g, 0.0, 0.0, &sgd);
            for k in 0..x.len() {
                // x and m: bit for bit what mixing then a plain SGD step gives.
                prop_assert_eq!(x[k], x_stepped[k]);
                prop_assert_eq!(m[k], m_stepped[k]);
                // x̃ moved by the same update u as x.
                let u = xr[k] - x_stepped[k];
                prop_assert!((t[k] - (tr[k] - u)).abs() <= 1e-5 * (1.0 + tr[k].abs()));
            }
        }

        #[test]
        fn a_pairwise_average_conserves_the_pair_sums(
            (xi0, xj0) in vec_pair(11), (ti0, tj0) in vec_pair(11),
            eta in 0.0f64..1.0, di in 0.0f64..3.0, dj in 0.0f64..3.0, alpha_tilde in 0.5f64..10.0,
        ) {
            let params = AcidParams { eta, alpha: 0.5, alpha_tilde };
            let (mut xi, mut ti, mut xj, mut tj) = (xi0, ti0, xj0, tj0);
            // Each side mixes up to the exchange and sends its snapshot.
            mix(&mut xi, &mut ti, eta, di);
            mix(&mut xj, &mut tj, eta, dj);
            let (si, sj) = (xi.clone(), xj.clone());
            let (sum_x, sum_t): (Vec<f64>, Vec<f64>) = (0..xi.len())
                .map(|k| (xi[k] as f64 + xj[k] as f64, ti[k] as f64 + tj[k] as f64))
                .unzip();
            let d_i = mix_and_average(&mut xi, Some(&mut ti), &si, &sj, 0.0, &params);
            let d_j = mix_and_average(&mut xj, Some(&mut tj), &sj, &si, 0.0, &params);
            prop_assert_eq!(d_i, d_j);
            let expected: f64 = si.iter().zip(&sj).map(|(a, b)| ((b - a) as f64).powi(2)).sum();
            prop_assert!((d_i - expected).abs() <= 1e-9 * (1.0 + expected));
            for k in 0..xi.len() {
                let scale = 1.0 + sum_x[k].abs() + sum_t[k].abs() + 20.0 * alpha_tilde;
                prop_assert!((xi[k] as f64 + xj[k] as f64 - sum_x[k]).abs() <= 1e-5 * scale);
                prop_assert!((ti[k] as f64 + tj[k] as f64 - sum_t[k]).abs() <= 1e-5 * scale);
                // alpha = 1/2: x lands exactly on the average of the snapshots.
                prop_assert!((xi[k] - xj[k]).abs() <= 1e-5 * (1.0 + xi[k].abs()));
            }
        }

        #[test]
        fn eta_zero_reduces_to_gossip(
            (x0, t0) in vec_pair(10), (m0, g) in vec_pair(10), peer in proptest::collection::vec(-5.0f32..5.0, 10),
            elapsed in 0.0f64..5.0,
        ) {
            // With eta = 0 and alpha_tilde = alpha, x evolves exactly as gossip without x̃.
            let (mut x_acid, mut t, mut m_acid) = (x0.clone(), t0, m0.clone());
            let (mut x_gossip, mut m_gossip) = (x0, m0);
            mix_and_step(&mut x_acid, Some(&mut t), &mut m_acid, &g, 0.0, elapsed, &SGD);
            mix_and_step(&mut x_gossip, None, &mut m_gossip, &g, 0.0, elapsed, &SGD);
            prop_assert_eq!(&x_acid, &x_gossip);
            let sent = x_acid.clone();
            let params = AcidParams { eta: 0.0, ..AcidParams::GOSSIP };
            let da = mix_and_average(&mut x_acid, Some(&mut t), &sent, &peer, elapsed, &params);
            let dg = mix_and_average(&mut x_gossip, None, &sent, &peer, elapsed, &AcidParams::GOSSIP);
            prop_assert_eq!(da, dg);
            prop_assert_eq!(x_acid, x_gossip);
        }
    }
}
