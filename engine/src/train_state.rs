//! A worker's training state on the device and its fused dispatches (docs/algorithm.md §2–3).
//!
//! [`TrainState`] holds what one worker carries besides its model's activations: the parameters
//! x (the model's own arena, shared), the companion x̃ (`acid` only), the momentum, the snapshot
//! it sends, the snapshot it receives, the partial sums of ‖s_i − s_j‖², and `t_last`, the clock
//! value of the last event that touched (x, x̃). Its three events are the fused kernels of
//! `shaders/acid.wgsl`:
//!
//! - a gradient step: mix (x, x̃) up to the event's clock value, then the SGD step on both;
//! - a snapshot: mix up to now and copy x into the snapshot buffer (what is sent to a peer);
//! - a pairwise average: mix up to now, then x += α (s_j − s_i), x̃ += α̃ (s_j − s_i) against the
//!   snapshot that was SENT.
//!
//! Without x̃ (`gossip`, `allreduce`, a single worker) the same kernels run their `HAS_TILDE =
//! false` specialisation: the step is plain SGD and the average plain gossip. Every trainer of the
//! project — the single-worker loop, the worker runtime, the simulator's model problem — holds its
//! state in this one type; its CPU twin is [`crate::acid::State`].
use std::sync::Arc;

use crate::acid::{mix_factor, AcidParams};
use crate::device::GpuContext;
use crate::error::Result;
use crate::kernels::{self, AcidUniform, Dispatch};
use crate::optim::SgdConfig;

/// A worker's state vectors read back to the host.
#[derive(Clone, Debug, PartialEq)]
pub struct StateVectors {
    pub x: Vec<f32>,
    pub x_tilde: Option<Vec<f32>>,
    pub momentum: Vec<f32>,
}

/// Pairwise averages one submission can hold (see [`TrainState::record_average_of`]): each has its
/// own sent/received buffers and uniform block, because buffer writes all land before the
/// submission's first command.
pub const AVERAGE_SLOTS: usize = 4;

/// The buffers of one pairwise average recorded from host snapshots (slots 1.. of
/// [`TrainState::record_average_of`]; slot 0 is the state's own snapshot and received buffers).
struct AverageSlot {
    sent: wgpu::Buffer,
    received: wgpu::Buffer,
    average: Dispatch,
}

/// One worker's optimizer and A²CiD² state on the device.
pub struct TrainState {
    ctx: Arc<GpuContext>,
    n: usize,
    params: AcidParams,
    x: wgpu::Buffer,
    x_tilde: Option<wgpu::Buffer>,
    momentum: wgpu::Buffer,
    snapshot: wgpu::Buffer,
    received: wgpu::Buffer,
    partials: wgpu::Buffer,
    step: Dispatch,
    snap: Dispatch,
    average: Dispatch,
    /// Extra averaging slots, created on first use.
    slots: Vec<AverageSlot>,
    /// The uniform block shared by the three kernels; the fields that change per event (mixing
    /// factor, learning rate) are set just before each is recorded.
    base: AcidUniform,
    t_last: f64,
}

impl TrainState {
    /// Binds the state to a parameter arena `x` and gradient arena `grads` of `n` elements (a
    /// model's own buffers). `with_tilde` keeps an x̃ (the `acid` method), equal to x at first.
    /// Momentum starts at zero and the clock of the last event at `t_last = 0`.
    pub fn new(
        ctx: Arc<GpuContext>,
        x: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        n: usize,
        sgd: SgdConfig,
        params: AcidParams,
        with_tilde: bool,
    ) -> Result<TrainState> {
        let x_tilde = if with_tilde {
            let t = ctx.storage_buffer("x_tilde", n)?;
            let mut encoder = ctx.device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(x, 0, &t, 0, (n * 4) as u64);
            ctx.queue.submit(Some(encoder.finish()));
            Some(t)
        } else {
            None
        };
        let momentum = ctx.storage_buffer("momentum", n)?;
        let snapshot = ctx.storage_buffer("snapshot sent", n)?;
        let received = ctx.storage_buffer("snapshot received", n)?;
        let partials = ctx.storage_buffer("partials", kernels::acid_partials_len(n))?;
        let base = AcidUniform::new(n)?.with_sgd(&sgd);
        let xt = x_tilde.as_ref();
        let step = kernels::mix_and_step(&ctx, x, xt, &momentum, grads, &base)?;
        let snap = kernels::mix_and_snapshot(&ctx, x, xt, &snapshot, &base)?;
        let average =
            kernels::mix_and_average(&ctx, x, xt, &snapshot, &received, &partials, &base)?;
        Ok(TrainState {
            x: x.clone(),
            ctx,
            n,
            params,
            x_tilde,
            momentum,
            snapshot,
            received,
            partials,
            step,
            snap,
            average,
            slots: Vec::new(),
            base,
            t_last: 0.0,
        })
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn has_tilde(&self) -> bool {
        self.x_tilde.is_some()
    }

    pub fn params(&self) -> &AcidParams {
        &self.params
    }

    /// The clock value of the last event that touched (x, x̃).
    pub fn t_last(&self) -> f64 {
        self.t_last
    }

    /// The mixing factor `(1 − e^(−2·eta·(tau − t_last)))/2` of an event at clock value `tau`
    /// (docs/algorithm.md §3.1); `t_last` moves to `tau` (never backwards).
    fn mix_until(&mut self, tau: f64) -> f32 {
        let factor = mix_factor(self.params.eta, tau - self.t_last) as f32;
        self.t_last = self.t_last.max(tau);
        factor
    }

    /// Records a gradient event at clock value `tau` with learning rate `lr`: mix up to `tau`,
    /// then the SGD step on x (and x̃) with the gradient in the model's gradient arena.
    pub fn record_step(&mut self, pass: &mut wgpu::ComputePass<'_>, lr: f32, tau: f64) {
        let mut u = self.base;
        u.mix = self.mix_until(tau);
        u.lr = lr;
        self.step.set_params(&self.ctx, &u);
        self.step.record(pass);
    }

    /// Records the snapshot of an exchange at clock value `tau`: mix up to `tau`, then
    /// `snapshot = x`.
    pub fn record_snapshot(&mut self, pass: &mut wgpu::ComputePass<'_>, tau: f64) {
        let mut u = self.base;
        u.mix = self.mix_until(tau);
        self.snap.set_params(&self.ctx, &u);
        self.snap.record(pass);
    }

    /// Records the pairwise average at clock value `tau` against the received snapshot (upload
    /// it first with [`TrainState::write_received`] or copy it into
    /// [`TrainState::received_buffer`]); the partial sums of ‖s_i − s_j‖² land in the partials
    /// buffer ([`TrainState::read_distance`]).
    pub fn record_average(&mut self, pass: &mut wgpu::ComputePass<'_>, tau: f64) {
        let mut u = self.base;
        u.mix = self.mix_until(tau);
        u.alpha = self.params.alpha as f32;
        u.alpha_tilde = self.params.alpha_tilde as f32;
        self.average.set_params(&self.ctx, &u);
        self.average.record(pass);
    }

    /// Records the pairwise average at clock value `tau` of a snapshot taken on the host (`sent`,
    /// what this worker sent; `peer`, what it received) into `pass`, using averaging slot `slot`
    /// (< [`AVERAGE_SLOTS`]). Several averages, each in its own slot, can share one submission
    /// (with a gradient step after them): each slot has its own buffers and uniform block. The
    /// uploads are queued at once and land before the submission's first command.
    pub fn record_average_of(
        &mut self,
        pass: &mut wgpu::ComputePass<'_>,
        slot: usize,
        sent: &[f32],
        peer: &[f32],
        tau: f64,
    ) -> Result<()> {
        assert!(
            slot < AVERAGE_SLOTS,
            "averaging slot {slot} of {AVERAGE_SLOTS}"
        );
        let mut u = self.base;
        u.mix = self.mix_until(tau);
        u.alpha = self.params.alpha as f32;
        u.alpha_tilde = self.params.alpha_tilde as f32;
        let n = self.n;
        if slot == 0 {
            self.write_sent(sent);
            self.write_received(peer);
            self.average.set_params(&self.ctx, &u);
            self.average.record(pass);
            return Ok(());
        }
        while self.slots.len() < slot {
            let k = self.slots.len() + 1;
            let sent = self.ctx.storage_buffer(&format!("snapshot sent {k}"), n)?;
            let received = self
                .ctx
                .storage_buffer(&format!("snapshot received {k}"), n)?;
            let average = kernels::mix_and_average(
                &self.ctx,
                &self.x,
                self.x_tilde.as_ref(),
                &sent,
                &received,
                &self.partials,
                &self.base,
            )?;
            self.slots.push(AverageSlot {
                sent,
                received,
                average,
            });
        }
        let s = &self.slots[slot - 1];
        self.ctx.write(&s.sent, 0, &sent[..n.min(sent.len())]);
        self.ctx.write(&s.received, 0, &peer[..n.min(peer.len())]);
        s.average.set_params(&self.ctx, &u);
        s.average.record(pass);
        Ok(())
    }

    /// Records one event into its own compute pass and submits it.
    pub fn submit(&mut self, record: impl FnOnce(&mut Self, &mut wgpu::ComputePass<'_>)) {
        let ctx = self.ctx.clone();
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            record(self, &mut pass);
        }
        ctx.queue.submit(Some(encoder.finish()));
    }

    /// Uploads the snapshot this worker sent, when it was not taken on the device (a snapshot
    /// from the host's mirror): the average takes its delta against it.
    pub fn write_sent(&self, sent: &[f32]) {
        self.ctx
            .write(&self.snapshot, 0, &sent[..self.n.min(sent.len())]);
    }

    /// Uploads the peer's snapshot (queued before the next submit).
    pub fn write_received(&self, peer: &[f32]) {
        self.ctx
            .write(&self.received, 0, &peer[..self.n.min(peer.len())]);
    }

    /// The snapshot last taken (waits for the GPU).
    pub fn read_snapshot(&self) -> Result<Vec<f32>> {
        self.ctx.read(&self.snapshot, 0, self.n)
    }

    /// ‖s_i − s_j‖² of the last average (waits for the GPU).
    pub fn read_distance(&self) -> Result<f64> {
        let partials: Vec<f32> =
            self.ctx
                .read(&self.partials, 0, kernels::acid_partials_len(self.n))?;
        Ok(partials.iter().map(|&v| f64::from(v)).sum())
    }

    pub fn snapshot_buffer(&self) -> &wgpu::Buffer {
        &self.snapshot
    }

    pub fn received_buffer(&self) -> &wgpu::Buffer {
        &self.received
    }

    /// The parameter arena x.
    pub fn x_buffer(&self) -> &wgpu::Buffer {
        &self.x
    }

    /// The companion x̃, if this state keeps one.
    pub fn x_tilde_buffer(&self) -> Option<&wgpu::Buffer> {
        self.x_tilde.as_ref()
    }

    /// Replaces the whole state: x, x̃ (ignored without one; x when `None`), the momentum and
    /// `t_last` (from a checkpoint, or identical initial parameters broadcast by rank 0).
    pub fn load(
        &mut self,
        x: &[f32],
        x_tilde: Option<&[f32]>,
        momentum: Option<&[f32]>,
        t_last: f64,
    ) -> Result<()> {
        for (what, len) in [
            ("x", Some(x.len())),
            ("x_tilde", x_tilde.map(<[f32]>::len)),
            ("momentum", momentum.map(<[f32]>::len)),
        ] {
            if let Some(len) = len.filter(|&l| l != self.n) {
                return Err(crate::error::EngineError::Shape {
                    op: "TrainState::load",
                    detail: format!(
                        "{what} has {len} values for a model of {} parameters",
                        self.n
                    ),
                });
            }
        }
        self.ctx.write(&self.x, 0, x);
        if let Some(t) = &self.x_tilde {
            self.ctx.write(t, 0, x_tilde.unwrap_or(x));
        }
        match momentum {
            Some(m) => self.ctx.write(&self.momentum, 0, m),
            None => self.ctx.write(&self.momentum, 0, &vec![0f32; self.n]),
        }
        self.t_last = t_last;
        Ok(())
    }

    /// Replaces x (and x̃, set equal) by a model every worker adopts — an all-reduce average, a
    /// relayed average — keeping the momentum, at clock `t_last`.
    pub fn set_x(&mut self, x: &[f32], t_last: f64) -> Result<()> {
        if x.len() != self.n {
            return Err(crate::error::EngineError::Shape {
                op: "TrainState::set_x",
                detail: format!(
                    "x has {} values for a model of {} parameters",
                    x.len(),
                    self.n
                ),
            });
        }
        self.ctx.write(&self.x, 0, x);
        if let Some(t) = &self.x_tilde {
            self.ctx.write(t, 0, x);
        }
        self.t_last = t_last;
        Ok(())
    }

    /// Reads x, x̃ (if any) and the momentum back (waits for the GPU): what a checkpoint saves.
    pub fn read(&self) -> Result<StateVectors> {
        let x = self.ctx.read(&self.x, 0, self.n)?;
        let x_tilde = match &self.x_tilde {
            Some(t) => Some(self.ctx.read(t, 0, self.n)?),
            None => None,
        };
        let momentum = self.ctx.read(&self.momentum, 0, self.n)?;
        Ok(StateVectors {
            x,
            x_tilde,
            momentum,
        })
    }
}
