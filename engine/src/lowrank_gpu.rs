//! The matrix products of a low-rank compressed exchange on the GPU (`shaders/lowrank.wgsl`), for
//! one model's plan: what the runtime runs for `--compress lowrank:R`. The exchange's protocol
//! state (the factors, the orthonormalisation, the half-step alternation) stays in
//! [`LowRankEdge`]; this type only moves its products onto the device:
//!
//! - [`GpuLowRank::message`]: per compressed block `X·Q` (Right half-step) or `Xᵀ·P` (Left) with
//!   `right_product` / `left_product`, the dense blocks copied after them — the message
//!   [`LowRankEdge::message`] computes on the CPU;
//! - [`GpuLowRank::peer_view`]: `x − C(x − x_peer)`, the peer's model as this side sees it after
//!   the exchange, with `rank_update` (a dense block is a 1×len rank-1 update with left factor
//!   \[1\]) — what [`Correction::apply`] with coefficient −1 computes on the CPU.
//!
//! The buffers and launches are built once per plan; each call uploads its inputs, runs one
//! submission and reads the result back. Both ends of an edge derive the next factor from the two
//! messages the same way, so one end on the GPU and the other on the CPU stay in step: a message
//! differs from the CPU twin's by f32 rounding only, and both ends combine the same two messages.
use std::sync::Arc;

use crate::compress::{BlockKind, Correction, HalfStep, LowRankEdge, LowRankPlan};
use crate::device::GpuContext;
use crate::error::{EngineError, Result};
use crate::kernels::{self, lowrank, Dispatch};

/// One plan's exchange products on one device.
pub struct GpuLowRank {
    ctx: Arc<GpuContext>,
    plan: LowRankPlan,
    /// The parameters (arena length): a message's input, and `peer_view`'s in-place result.
    x: wgpu::Buffer,
    /// The half-step's orthonormal basis (Q space for Right, P space for Left).
    basis: wgpu::Buffer,
    /// A message: the products, then the dense blocks.
    out: wgpu::Buffer,
    /// A correction's factors and dense differences.
    p: wgpu::Buffer,
    q: wgpu::Buffer,
    dense: wgpu::Buffer,
    right: Vec<Dispatch>,
    left: Vec<Dispatch>,
    update: Vec<Dispatch>,
}

impl GpuLowRank {
    /// Builds the buffers and launches of `plan` on `ctx`.
    pub fn new(ctx: Arc<GpuContext>, plan: LowRankPlan) -> Result<GpuLowRank> {
        let rank = plan.rank();
        // Zero-length storage buffers are not allowed; an empty space gets one unused value.
        let at_least_one = |len: usize| len.max(1);
        let x = ctx.storage_buffer("low-rank x", at_least_one(plan.arena_len()))?;
        let basis = ctx.storage_buffer(
            "low-rank basis",
            at_least_one(plan.p_len().max(plan.q_len())),
        )?;
        let message_len = plan
            .message_len(HalfStep::Right)
            .max(plan.message_len(HalfStep::Left));
        let out = ctx.storage_buffer("low-rank message", at_least_one(message_len))?;
        let p = ctx.storage_buffer("low-rank P", at_least_one(plan.p_len()))?;
        let q = ctx.storage_buffer("low-rank Q", at_least_one(plan.q_len()))?;
        let dense = ctx.storage_buffer("low-rank dense", at_least_one(plan.dense_len()))?;
        let one = ctx.storage_buffer_from("low-rank one", &[1.0f32])?;

        let mut right = Vec::new();
        let mut left = Vec::new();
        let mut update = Vec::new();
        for block in plan.blocks() {
            match block.kind {
                BlockKind::LowRank { m, n, p_off, q_off } => {
                    right.push(lowrank::right_product(
                        &ctx,
                        (&x, block.offset),
                        (m, n),
                        rank,
                        (&basis, q_off),
                        (&out, p_off),
                    )?);
                    left.push(lowrank::left_product(
                        &ctx,
                        (&x, block.offset),
                        (m, n),
                        rank,
                        (&basis, p_off),
                        (&out, q_off),
                    )?);
                    update.push(lowrank::rank_update(
                        &ctx,
                        (&x, block.offset),
                        (m, n),
                        rank,
                        (&p, p_off),
                        (&q, q_off),
                        -1.0,
                    )?);
                }
                BlockKind::Dense { len, dense_off } => {
                    for (list, factor_len) in
                        [(&mut right, plan.p_len()), (&mut left, plan.q_len())]
                    {
                        list.push(kernels::copy(
                            &ctx,
                            &x,
                            block.offset,
                            &out,
                            factor_len + dense_off,
                            len,
                        )?);
                    }
                    update.push(lowrank::rank_update(
                        &ctx,
                        (&x, block.offset),
                        (1, len),
                        1,
                        (&one, 0),
                        (&dense, dense_off),
                        -1.0,
                    )?);
                }
            }
        }
        Ok(GpuLowRank {
            ctx,
            plan,
            x,
            basis,
            out,
            p,
            q,
            dense,
            right,
            left,
            update,
        })
    }

    pub fn plan(&self) -> &LowRankPlan {
        &self.plan
    }

    /// `edge`'s next message for the parameters `x`, its products computed on the device (the
    /// basis is orthonormalised by `edge`, as on the CPU path).
    pub fn message(&self, edge: &mut LowRankEdge, x: &[f32]) -> Result<Vec<f32>> {
        self.check("the parameters", x.len(), self.plan.arena_len())?;
        if edge.plan() != &self.plan {
            return Err(EngineError::Shape {
                op: "low-rank message",
                detail: "the edge was built for another plan".into(),
            });
        }
        let step = edge.next_step();
        self.ctx.write(&self.x, 0, x);
        self.ctx.write(&self.basis, 0, edge.basis());
        let launches = match step {
            HalfStep::Right => &self.right,
            HalfStep::Left => &self.left,
        };
        self.ctx.run(&launches.iter().collect::<Vec<_>>());
        self.ctx.read(&self.out, 0, self.plan.message_len(step))
    }

    /// `sent − C`, the peer's parameters as this side sees them after an exchange whose
    /// compressed difference (this side minus the peer) is `correction` and whose snapshot was
    /// `sent`.
    pub fn peer_view(&self, correction: &Correction, sent: &[f32]) -> Result<Vec<f32>> {
        let plan = &self.plan;
        self.check("the snapshot", sent.len(), plan.arena_len())?;
        self.check("the correction's P", correction.p.len(), plan.p_len())?;
        self.check("the correction's Q", correction.q.len(), plan.q_len())?;
        self.check(
            "the correction's dense part",
            correction.dense.len(),
            plan.dense_len(),
        )?;
        self.ctx.write(&self.x, 0, sent);
        self.ctx.write(&self.p, 0, &correction.p);
        self.ctx.write(&self.q, 0, &correction.q);
        self.ctx.write(&self.dense, 0, &correction.dense);
        self.ctx.run(&self.update.iter().collect::<Vec<_>>());
        self.ctx.read(&self.x, 0, plan.arena_len())
    }

    fn check(&self, what: &str, got: usize, expected: usize) -> Result<()> {
        if got == expected {
            Ok(())
        } else {
            Err(EngineError::Shape {
                op: "low-rank exchange",
                detail: format!("{what} has {got} values, expected {expected}"),
            })
        }
    }
}
