//! Compressed exchanges between two neighbours, on the CPU: the one definition of that math (the
//! GPU runs its matrix products with `kernels::lowrank`, whose twins this module calls).
//!
//! - **fp16 on the wire** ([`encode_f16`], [`decode_f16`]): little-endian IEEE binary16, rounded
//!   to nearest even. A value that is not finite, or that would round to infinity, is refused with
//!   an error naming it (the runtime never sends non-finite parameters).
//! - **Low-rank differences** (PowerGossip: Vogels, Karimireddy & Jaggi 2020, "Practical low-rank
//!   communication compression in decentralized deep learning", Algorithm 1): per matrix-shaped
//!   block of the arena (a tensor of shape `[m, rest…]` seen as m × Π rest), the difference
//!   `D = x_first − x_second` of the two peers is compressed by one step of power iteration,
//!   warm-started from the previous exchange of the same edge. Each exchange is a *half-step*
//!   that alternates:
//!   - [`HalfStep::Right`]: orthonormalise Q (n×R); each side sends `X·Q` (m×R);
//!     `P = D·Q = X_first·Q − X_second·Q`; the compressed difference is `P·Qᵀ`.
//!   - [`HalfStep::Left`]: orthonormalise P (m×R, the previous step's `D·Q`); each side sends
//!     `Xᵀ·P` (n×R); `Q = Dᵀ·P`; the compressed difference is `P·Qᵀ`.
//!
//!   After each half-step both peers apply the paper's update with gossip weight ½ (a pairwise
//!   average when γ = 1): `x_self ← x_self − (γ/2)·C(x_self − x_peer)`. Both hold the same P and Q
//!   bit for bit (they combine the same two messages the same way), so the two corrections are
//!   exact negatives and the pair's sum is conserved to f32 rounding. A Right half-step followed by
//!   a Left one is one full power-iteration step (`P = D·Q`, orthonormalise P, `Q = Dᵀ·P`,
//!   compressed difference `P·Qᵀ`); the paper updates the models after each half.
//!   Vectors (biases, norms' scales) and blocks with `R ≥ min(m, n)` are sent uncompressed and
//!   averaged exactly.
//!
//! The runtime's use of it, per edge: [`LowRankEdge::new`] once (both peers the same plan and seed,
//! opposite [`Role`]s); per exchange [`LowRankEdge::message`] (or, on the GPU,
//! [`LowRankEdge::basis`] and the `kernels::lowrank` products), send it, receive the peer's, then
//! [`LowRankEdge::finish`] → [`Correction`], applied by [`Correction::apply`] (or on the GPU with
//! `kernels::lowrank::rank_update` and `kernels::axpy`).
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::arena::ParamLayout;
use crate::kernels::lowrank::cpu;
pub use crate::kernels::lowrank::MAX_RANK;

/// What a compressed exchange refuses.
#[derive(Debug, Error, PartialEq)]
pub enum CompressError {
    #[error("fp16 encoding: value {value} at index {index} is not finite; non-finite parameters are never sent")]
    NonFinite { index: usize, value: f32 },
    #[error(
        "fp16 encoding: value {value} at index {index} is beyond the largest half-precision value \
         ({F16_MAX}) and would arrive as infinity"
    )]
    Overflow { index: usize, value: f32 },
    #[error("fp16 decoding: {len} bytes is not a whole number of 2-byte values")]
    OddLength { len: usize },
    #[error("fp16 decoding: the value at index {index} is not finite (bits {bits:#06x})")]
    NonFiniteHalf { index: usize, bits: u16 },
    #[error("low-rank compression: rank {rank} is outside 1..={MAX_RANK}")]
    Rank { rank: usize },
    #[error("low-rank exchange: {what} has {got} values, expected {expected}")]
    Length {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    #[error(
        "low-rank exchange: the peer's message holds a non-finite value {value} at index {index}"
    )]
    PeerNonFinite { index: usize, value: f32 },
}

// ---------------------------------------------------------------------------------------------
// fp16 on the wire

/// The largest finite half-precision value.
pub const F16_MAX: f32 = 65504.0;

/// `values` as little-endian IEEE half-precision bytes (2 per value, round to nearest even).
/// For a normal half (|v| ≥ 2⁻¹⁴) the relative error is at most 2⁻¹¹; smaller values keep an
/// absolute error of at most 2⁻²⁵. Refuses non-finite values and values that would round to
/// infinity (|v| ≥ 65520), naming the first.
pub fn encode_f16(values: &[f32]) -> Result<Vec<u8>, CompressError> {
    let mut out = Vec::with_capacity(values.len() * 2);
    for (index, &value) in values.iter().enumerate() {
        if !value.is_finite() {
            return Err(CompressError::NonFinite { index, value });
        }
        let h = half::f16::from_f32(value);
        if h.is_infinite() {
            return Err(CompressError::Overflow { index, value });
        }
        out.extend_from_slice(&h.to_le_bytes());
    }
    Ok(out)
}

/// The f32 values of little-endian half-precision `bytes` (exact: every half is an f32). Refuses
/// an odd length and non-finite halves.
pub fn decode_f16(bytes: &[u8]) -> Result<Vec<f32>, CompressError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(CompressError::OddLength { len: bytes.len() });
    }
    bytes
        .chunks_exact(2)
        .enumerate()
        .map(|(index, b)| {
            let h = half::f16::from_le_bytes([b[0], b[1]]);
            if h.is_finite() {
                Ok(h.to_f32())
            } else {
                Err(CompressError::NonFiniteHalf {
                    index,
                    bits: h.to_bits(),
                })
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Blocks and bytes

/// How one tensor of the arena is exchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// An m×n matrix compressed to rank R: its P factor (m×R) at `p_off` of the P space, its Q
    /// factor (n×R) at `q_off` of the Q space.
    LowRank {
        m: usize,
        n: usize,
        p_off: usize,
        q_off: usize,
    },
    /// Sent as is: its `len` values at `dense_off` of the dense space.
    Dense { len: usize, dense_off: usize },
}

/// One tensor of the arena and how it is exchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub name: String,
    /// Element offset in the arena.
    pub offset: usize,
    pub kind: BlockKind,
}

/// The matrix view PowerGossip takes of a tensor: `[m, rest…]` as m × Π rest, when it has at least
/// two dimensions and rank R is below both sides (otherwise the block is sent uncompressed).
pub fn matrix_view(shape: &[usize], rank: usize) -> Option<(usize, usize)> {
    if shape.len() < 2 {
        return None;
    }
    let m = shape[0];
    let n: usize = shape[1..].iter().product();
    (rank < m.min(n)).then_some((m, n))
}

/// What one side sends per exchange, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeBytes {
    /// The whole model in f32 (an uncompressed exchange).
    pub f32_full: u64,
    /// The whole model in fp16.
    pub fp16_full: u64,
    /// A Right half-step: R·m f32 per compressed block, dense blocks in f32.
    pub lowrank_right: u64,
    /// A Left half-step: R·n f32 per compressed block, dense blocks in f32.
    pub lowrank_left: u64,
}

impl ExchangeBytes {
    /// A full power-iteration step (a Right and a Left half-step): R·(m+n) f32 per compressed
    /// block, dense blocks twice.
    pub fn lowrank_power_step(&self) -> u64 {
        self.lowrank_right + self.lowrank_left
    }

    /// The mean of one exchange over the alternation.
    pub fn lowrank_mean(&self) -> f64 {
        self.lowrank_power_step() as f64 / 2.0
    }
}

/// Bytes one side sends per exchange for a model whose tensors have `shapes`, at rank `rank`.
pub fn bytes_per_exchange<S: AsRef<[usize]>>(shapes: &[S], rank: usize) -> ExchangeBytes {
    let mut b = ExchangeBytes {
        f32_full: 0,
        fp16_full: 0,
        lowrank_right: 0,
        lowrank_left: 0,
    };
    for shape in shapes {
        let shape = shape.as_ref();
        let len: usize = shape.iter().product();
        b.f32_full += 4 * len as u64;
        b.fp16_full += 2 * len as u64;
        let (right, left) = match matrix_view(shape, rank) {
            Some((m, n)) => (rank * m, rank * n),
            None => (len, len),
        };
        b.lowrank_right += 4 * right as u64;
        b.lowrank_left += 4 * left as u64;
    }
    b
}

/// Which half of a power-iteration step an exchange is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfStep {
    /// Orthonormalise Q; send `X·Q` (m×R); `P = D·Q`.
    Right,
    /// Orthonormalise P; send `Xᵀ·P` (n×R); `Q = Dᵀ·P`.
    Left,
}

/// The two ends of an edge: `D = x_first − x_second`. Peers must take opposite roles (the lower
/// rank `First`, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    First,
    Second,
}

/// How a model's arena is exchanged at rank R: its blocks, and the sizes of the P space (Σ m·R),
/// the Q space (Σ n·R) and the dense space (Σ len) they occupy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LowRankPlan {
    rank: usize,
    blocks: Vec<Block>,
    arena_len: usize,
    p_len: usize,
    q_len: usize,
    dense_len: usize,
}

impl LowRankPlan {
    /// The plan of `layout`'s tensors at rank `rank` (1..=[`MAX_RANK`]).
    pub fn new(layout: &ParamLayout, rank: usize) -> Result<LowRankPlan, CompressError> {
        let tensors = layout
            .tensors()
            .iter()
            .map(|t| (t.name.as_str(), t.offset, t.shape.as_slice()));
        Self::build(tensors, layout.len(), rank)
    }

    /// The plan of contiguous tensors of `shapes` (named by index), for tests and benches.
    pub fn from_shapes<S: AsRef<[usize]>>(
        shapes: &[S],
        rank: usize,
    ) -> Result<LowRankPlan, CompressError> {
        let mut layout = ParamLayout::new();
        for (i, s) in shapes.iter().enumerate() {
            layout.push(format!("t{i}"), s.as_ref());
        }
        Self::new(&layout, rank)
    }

    fn build<'a>(
        tensors: impl Iterator<Item = (&'a str, usize, &'a [usize])>,
        arena_len: usize,
        rank: usize,
    ) -> Result<LowRankPlan, CompressError> {
        if rank == 0 || rank > MAX_RANK {
            return Err(CompressError::Rank { rank });
        }
        let mut plan = LowRankPlan {
            rank,
            blocks: Vec::new(),
            arena_len,
            p_len: 0,
            q_len: 0,
            dense_len: 0,
        };
        for (name, offset, shape) in tensors {
            let kind = match matrix_view(shape, rank) {
                Some((m, n)) => {
                    let kind = BlockKind::LowRank {
                        m,
                        n,
                        p_off: plan.p_len,
                        q_off: plan.q_len,
                    };
                    plan.p_len += m * rank;
                    plan.q_len += n * rank;
                    kind
                }
                None => {
                    let len = shape.iter().product();
                    let kind = BlockKind::Dense {
                        len,
                        dense_off: plan.dense_len,
                    };
                    plan.dense_len += len;
                    kind
                }
            };
            plan.blocks.push(Block {
                name: name.to_string(),
                offset,
                kind,
            });
        }
        Ok(plan)
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }
    /// Elements of the arena the plan covers.
    pub fn arena_len(&self) -> usize {
        self.arena_len
    }
    /// Σ m·R over the compressed blocks: the P factors.
    pub fn p_len(&self) -> usize {
        self.p_len
    }
    /// Σ n·R over the compressed blocks: the Q factors.
    pub fn q_len(&self) -> usize {
        self.q_len
    }
    /// Σ len over the dense blocks.
    pub fn dense_len(&self) -> usize {
        self.dense_len
    }

    /// Values of a `step` message: the products of the compressed blocks (in P space for a Right
    /// half-step, Q space for a Left one), then the dense blocks.
    pub fn message_len(&self, step: HalfStep) -> usize {
        self.factor_len(step) + self.dense_len
    }

    /// The size of the space a `step` message's products live in.
    fn factor_len(&self, step: HalfStep) -> usize {
        match step {
            HalfStep::Right => self.p_len,
            HalfStep::Left => self.q_len,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The exchange

/// The seed of the edge between workers `a` and `b` (either order) in a run seeded `run_seed`,
/// at `generation` (0 at the start; a restarted edge moves on): both ends derive the same value,
/// so their [`LowRankEdge`]s draw the same random bases. The worker of the lower index is
/// [`Role::First`].
pub fn edge_seed(run_seed: u64, a: usize, b: usize, generation: u64) -> u64 {
    let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
    run_seed ^ (lo << 40) ^ (hi << 20) ^ generation.wrapping_mul(0x9e37_79b9)
}

/// One edge's low-rank state, the same bit for bit on both peers: the P (Σ m·R) and Q (Σ n·R)
/// factors of the last exchange, the half-steps done and a shared random stream (the first Q,
/// cold starts and replacements of degenerate columns).
#[derive(Clone, Debug)]
pub struct LowRankEdge {
    plan: LowRankPlan,
    role: Role,
    warm_start: bool,
    half_steps: u64,
    p: Vec<f32>,
    q: Vec<f32>,
    rng: ChaCha8Rng,
    /// Whether this half-step's basis is orthonormalised already.
    prepared: bool,
}

/// A column shorter than this fraction of its length before projection is treated as dependent
/// on the earlier ones (or zero) and replaced by a random column.
const DEGENERATE: f64 = 1e-5;

impl LowRankEdge {
    /// An edge's state; both peers pass the same `plan` and `seed` and opposite roles. With
    /// `warm_start` false every half-step starts from a fresh random basis (the paper's ablation).
    pub fn new(plan: LowRankPlan, role: Role, seed: u64, warm_start: bool) -> LowRankEdge {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q = random_values(&mut rng, plan.q_len);
        LowRankEdge {
            p: vec![0.0; plan.p_len],
            q,
            plan,
            role,
            warm_start,
            half_steps: 0,
            rng,
            prepared: false,
        }
    }

    pub fn plan(&self) -> &LowRankPlan {
        &self.plan
    }
    pub fn role(&self) -> Role {
        self.role
    }
    /// Exchanges completed on this edge.
    pub fn half_steps(&self) -> u64 {
        self.half_steps
    }

    /// The half-step the next exchange is: Right first, then alternating.
    pub fn next_step(&self) -> HalfStep {
        if self.half_steps.is_multiple_of(2) {
            HalfStep::Right
        } else {
            HalfStep::Left
        }
    }

    /// The orthonormal basis the next exchange multiplies by: Q (Σ n·R, the n×R block factors at
    /// their `q_off`) for a Right half-step, P (Σ m·R at `p_off`) for a Left one. The GPU products
    /// read it: `right_product(x, basis)` or `left_product(x, basis)` per compressed block.
    pub fn basis(&mut self) -> &[f32] {
        let step = self.next_step();
        if !self.prepared {
            let rank = self.plan.rank;
            let (basis, rng) = match step {
                HalfStep::Right => (&mut self.q, &mut self.rng),
                HalfStep::Left => (&mut self.p, &mut self.rng),
            };
            if !self.warm_start {
                *basis = random_values(rng, basis.len());
            }
            for block in &self.plan.blocks {
                if let BlockKind::LowRank { m, n, p_off, q_off } = block.kind {
                    let (off, rows) = match step {
                        HalfStep::Right => (q_off, n),
                        HalfStep::Left => (p_off, m),
                    };
                    orthonormalise(&mut basis[off..off + rows * rank], rows, rank, rng);
                }
            }
            self.prepared = true;
        }
        match step {
            HalfStep::Right => &self.q,
            HalfStep::Left => &self.p,
        }
    }

    /// This side's message for its parameters `x` (the arena): per compressed block `X·Q` (Right)
    /// or `Xᵀ·P` (Left) at the block's offset of that space, then the dense blocks' values.
    pub fn message(&mut self, x: &[f32]) -> Result<Vec<f32>, CompressError> {
        check_len("the parameters", x.len(), self.plan.arena_len)?;
        let step = self.next_step();
        let rank = self.plan.rank;
        self.basis();
        let basis = match step {
            HalfStep::Right => &self.q,
            HalfStep::Left => &self.p,
        };
        let factor_len = self.plan.factor_len(step);
        let mut msg = vec![0f32; self.plan.message_len(step)];
        for block in &self.plan.blocks {
            match block.kind {
                BlockKind::LowRank { m, n, p_off, q_off } => {
                    let xb = &x[block.offset..block.offset + m * n];
                    let (out_off, out) = match step {
                        HalfStep::Right => {
                            let b = &basis[q_off..q_off + n * rank];
                            (p_off, cpu::right_product(xb, (m, n), rank, b))
                        }
                        HalfStep::Left => {
                            let b = &basis[p_off..p_off + m * rank];
                            (q_off, cpu::left_product(xb, (m, n), rank, b))
                        }
                    };
                    msg[out_off..out_off + out.len()].copy_from_slice(&out);
                }
                BlockKind::Dense { len, dense_off } => {
                    let at = factor_len + dense_off;
                    msg[at..at + len].copy_from_slice(&x[block.offset..block.offset + len]);
                }
            }
        }
        Ok(msg)
    }

    /// Completes the exchange from this side's message `mine` and the peer's `theirs`: stores the
    /// new factor (`D·Q` or `Dᵀ·P`, the warm start of the next half-step) and returns the
    /// compressed difference `x_self − x_peer`. Refuses messages of the wrong length and a peer's
    /// non-finite values (the state is then unchanged).
    pub fn finish(&mut self, mine: &[f32], theirs: &[f32]) -> Result<Correction, CompressError> {
        let step = self.next_step();
        let expected = self.plan.message_len(step);
        check_len("this side's message", mine.len(), expected)?;
        check_len("the peer's message", theirs.len(), expected)?;
        if let Some((index, &value)) = theirs.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(CompressError::PeerNonFinite { index, value });
        }
        self.basis();
        let factor_len = self.plan.factor_len(step);
        // D·basis with D = x_first − x_second: the same operation on the same two numbers on
        // both peers, so both store the same factor.
        let oriented: Vec<f32> = match self.role {
            Role::First => mine[..factor_len]
                .iter()
                .zip(&theirs[..factor_len])
                .map(|(a, b)| a - b)
                .collect(),
            Role::Second => theirs[..factor_len]
                .iter()
                .zip(&mine[..factor_len])
                .map(|(a, b)| a - b)
                .collect(),
        };
        match step {
            HalfStep::Right => self.p = oriented,
            HalfStep::Left => self.q = oriented,
        }
        // C(x_self − x_peer) = ±P·Qᵀ: the second peer negates P (exactly).
        let sign = match self.role {
            Role::First => 1.0,
            Role::Second => -1.0,
        };
        let correction = Correction {
            step,
            p: self.p.iter().map(|v| sign * v).collect(),
            q: self.q.clone(),
            dense: mine[factor_len..]
                .iter()
                .zip(&theirs[factor_len..])
                .map(|(a, b)| a - b)
                .collect(),
        };
        self.half_steps += 1;
        self.prepared = false;
        Ok(correction)
    }

    /// One whole exchange on the CPU, given both messages: [`LowRankEdge::finish`], then the
    /// paper's update `x ← x − (γ/2)·C(x_self − x_peer)`.
    pub fn apply(
        &mut self,
        x: &mut [f32],
        mine: &[f32],
        theirs: &[f32],
        gamma: f32,
    ) -> Result<Correction, CompressError> {
        check_len("the parameters", x.len(), self.plan.arena_len)?;
        let c = self.finish(mine, theirs)?;
        c.apply(&self.plan, x, -gamma / 2.0);
        Ok(c)
    }
}

/// The compressed difference `C(x_self − x_peer)` of one exchange: per compressed block `P·Qᵀ`
/// with `p` (Σ m·R, already signed for this side) and `q` (Σ n·R), per dense block the exact
/// difference in `dense`, at the plan's offsets. On the GPU: upload `p` and `q`, then per
/// compressed block `rank_update(x, p, q, coeff)`, per dense block an axpy of `dense`.
#[derive(Clone, Debug, PartialEq)]
pub struct Correction {
    pub step: HalfStep,
    pub p: Vec<f32>,
    pub q: Vec<f32>,
    pub dense: Vec<f32>,
}

impl Correction {
    /// `x += coeff · C(x_self − x_peer)` (the paper's update is `coeff = −γ/2`).
    pub fn apply(&self, plan: &LowRankPlan, x: &mut [f32], coeff: f32) {
        let rank = plan.rank;
        for block in &plan.blocks {
            match block.kind {
                BlockKind::LowRank { m, n, p_off, q_off } => cpu::rank_update(
                    &mut x[block.offset..block.offset + m * n],
                    (m, n),
                    rank,
                    &self.p[p_off..p_off + m * rank],
                    &self.q[q_off..q_off + n * rank],
                    coeff,
                ),
                BlockKind::Dense { len, dense_off } => {
                    let xs = &mut x[block.offset..block.offset + len];
                    for (v, d) in xs.iter_mut().zip(&self.dense[dense_off..dense_off + len]) {
                        *v = coeff.mul_add(*d, *v);
                    }
                }
            }
        }
    }

    /// The compressed difference as a dense arena-length vector.
    pub fn to_dense(&self, plan: &LowRankPlan) -> Vec<f32> {
        let mut out = vec![0f32; plan.arena_len];
        self.apply(plan, &mut out, 1.0);
        out
    }
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), CompressError> {
    if got == expected {
        Ok(())
    } else {
        Err(CompressError::Length {
            what,
            got,
            expected,
        })
    }
}

/// `len` values uniform in [−1, 1) from the edge's shared stream.
fn random_values(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
}

/// Orthonormalises the `rank` columns of the row-major `rows × rank` matrix `a` in place: modified
/// Gram–Schmidt in f64, each projection done twice ("twice is enough", Giraud et al. 2005), so
/// the columns are orthonormal to f32 rounding. A column that is (numerically) in the span of the
/// earlier ones, or zero — models that agree on a block give D = 0 — is replaced by a random one
/// from `rng`, orthonormalised the same way. Deterministic: two peers with the same `a` and the
/// same stream get the same result bit for bit.
pub fn orthonormalise(a: &mut [f32], rows: usize, rank: usize, rng: &mut ChaCha8Rng) {
    assert_eq!(a.len(), rows * rank, "orthonormalise: shape");
    assert!(
        rank <= rows,
        "orthonormalise: {rank} columns in {rows} dimensions"
    );
    let mut cols: Vec<Vec<f64>> = (0..rank)
        .map(|r| (0..rows).map(|i| f64::from(a[i * rank + r])).collect())
        .collect();
    for r in 0..rank {
        let (done, rest) = cols.split_at_mut(r);
        let col = &mut rest[0];
        let mut accepted = false;
        for _attempt in 0..4 {
            let before = norm(col);
            if before.is_finite() && before > 0.0 {
                for _pass in 0..2 {
                    for prev in done.iter() {
                        let dot: f64 = prev.iter().zip(col.iter()).map(|(p, c)| p * c).sum();
                        col.iter_mut().zip(prev).for_each(|(c, p)| *c -= dot * p);
                    }
                }
                let after = norm(col);
                if after > DEGENERATE * before {
                    col.iter_mut().for_each(|c| *c /= after);
                    accepted = true;
                    break;
                }
            }
            *col = (0..rows)
                .map(|_| f64::from(rng.random::<f32>() * 2.0 - 1.0))
                .collect();
        }
        assert!(accepted, "orthonormalise: no independent column found");
    }
    for (r, col) in cols.iter().enumerate() {
        for (i, &v) in col.iter().enumerate() {
            a[i * rank + r] = v as f32;
        }
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn random(rng: &mut ChaCha8Rng, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
            .collect()
    }

    fn rel(a: &[f32], b: &[f32]) -> f64 {
        let num: f64 = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        let den: f64 = b.iter().map(|&y| f64::from(y).powi(2)).sum();
        (num / den.max(1e-300)).sqrt()
    }

    /// ‖a‖ / ‖b‖.
    fn norm_ratio(a: &[f32], b: &[f32]) -> f64 {
        let n = |v: &[f32]| v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        n(a) / n(b)
    }

    /// The two ends of one edge over `plan`.
    fn edge(plan: &LowRankPlan, seed: u64, warm: bool) -> (LowRankEdge, LowRankEdge) {
        (
            LowRankEdge::new(plan.clone(), Role::First, seed, warm),
            LowRankEdge::new(plan.clone(), Role::Second, seed, warm),
        )
    }

    /// One exchange between the two ends, updating both models with `gamma`; returns the first
    /// side's compressed difference x_first − x_second.
    fn exchange(
        (a, b): &mut (LowRankEdge, LowRankEdge),
        xa: &mut [f32],
        xb: &mut [f32],
        gamma: f32,
    ) -> Correction {
        let ma = a.message(xa).unwrap();
        let mb = b.message(xb).unwrap();
        let ca = a.apply(xa, &ma, &mb, gamma).unwrap();
        let cb = b.apply(xb, &mb, &ma, gamma).unwrap();
        assert_eq!(ca.q, cb.q, "the peers' Q factors differ");
        assert!(
            ca.p.iter().zip(&cb.p).all(|(x, y)| *x == -*y),
            "the peers' P factors are not exact negatives"
        );
        assert_eq!(
            (&a.p, &a.q, &a.rng),
            (&b.p, &b.q, &b.rng),
            "states diverged"
        );
        ca
    }

    // --- fp16 -----------------------------------------------------------------------------

    #[test]
    fn fp16_round_trip_is_within_half_an_ulp() {
        let mut r = rng(1);
        // Normal halves, every binade from 2^-14 to 65504, both signs.
        let mut values: Vec<f32> = (0..20_000)
            .map(|_| {
                let e = r.random_range(-14..16);
                let v = (1.0 + r.random::<f32>()) * (e as f32).exp2();
                if r.random::<bool>() {
                    -v
                } else {
                    v
                }
            })
            .filter(|v| v.abs() <= F16_MAX)
            .collect();
        values.extend([
            F16_MAX,
            -F16_MAX,
            65519.0,
            6.1035156e-5,
            1.0,
            -2.5,
            0.0,
            -0.0,
        ]);
        let bytes = encode_f16(&values).unwrap();
        assert_eq!(bytes.len(), 2 * values.len());
        let back = decode_f16(&bytes).unwrap();
        for (&v, &w) in values.iter().zip(&back) {
            let err = (f64::from(v) - f64::from(w)).abs();
            assert!(
                err <= f64::from(v).abs() * (-11f64).exp2(),
                "{v} -> {w}: relative error {:.3e} > 2^-11",
                err / f64::from(v).abs()
            );
        }
        // Little-endian IEEE binary16: 1.0 is 0x3c00, -2.0 is 0xc000.
        assert_eq!(
            encode_f16(&[1.0, -2.0]).unwrap(),
            vec![0x00, 0x3c, 0x00, 0xc0]
        );
        // Below the normal range the absolute error is at most half the smallest subnormal.
        for v in [1e-5f32, -3e-7, 2e-8, 5.9604645e-8] {
            let w = decode_f16(&encode_f16(&[v]).unwrap()).unwrap()[0];
            assert!((v - w).abs() <= (-25f32).exp2(), "{v} -> {w}");
        }
    }

    #[test]
    fn fp16_refuses_non_finite_and_overflowing_values_naming_them() {
        for (values, index) in [
            (vec![1.0, f32::NAN], 1),
            (vec![f32::INFINITY], 0),
            (vec![0.5, 2.0, f32::NEG_INFINITY], 2),
        ] {
            let err = encode_f16(&values).unwrap_err();
            assert!(matches!(err, CompressError::NonFinite { index: i, .. } if i == index));
            assert!(err.to_string().contains("not finite"), "{err}");
        }
        // 65520 is the first value that rounds to infinity.
        let err = encode_f16(&[1.0, 65520.0]).unwrap_err();
        assert_eq!(
            err,
            CompressError::Overflow {
                index: 1,
                value: 65520.0
            }
        );
        assert!(err.to_string().contains("65504"), "{err}");
        assert!(encode_f16(&[-1e6]).is_err());
        assert_eq!(
            decode_f16(&[0, 0x3c, 0]).unwrap_err(),
            CompressError::OddLength { len: 3 }
        );
        // +inf and a NaN as halves.
        assert!(matches!(
            decode_f16(&[0, 0x3c, 0x00, 0x7c]),
            Err(CompressError::NonFiniteHalf {
                index: 1,
                bits: 0x7c00
            })
        ));
        assert!(decode_f16(&[0x01, 0x7e]).is_err());
    }

    // --- bytes ----------------------------------------------------------------------------

    #[test]
    fn bytes_per_exchange_counts_factors_and_dense_blocks() {
        // The digits MLP: 64 → 256 → 128 → 10.
        let shapes = [
            vec![64, 256],
            vec![256],
            vec![256, 128],
            vec![128],
            vec![128, 10],
            vec![10],
        ];
        let b = bytes_per_exchange(&shapes, 2);
        let params = 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10;
        assert_eq!(b.f32_full, 4 * params);
        assert_eq!(b.fp16_full, 2 * params);
        let dense = 256 + 128 + 10;
        assert_eq!(b.lowrank_right, 4 * (2 * (64 + 256 + 128) + dense));
        assert_eq!(b.lowrank_left, 4 * (2 * (256 + 128 + 10) + dense));
        assert_eq!(b.lowrank_power_step(), b.lowrank_right + b.lowrank_left);
        // Rank 10 is not below min(128, 10): that block goes whole.
        let b10 = bytes_per_exchange(&[vec![128, 10]], 10);
        assert_eq!((b10.lowrank_right, b10.lowrank_left), (4 * 1280, 4 * 1280));
        // A conv weight [c_out, c_in, kh, kw] is c_out × c_in·kh·kw.
        assert_eq!(matrix_view(&[32, 16, 5, 5], 4), Some((32, 400)));
        assert_eq!(matrix_view(&[32], 1), None);
        // The plan's messages are these sizes.
        let plan = LowRankPlan::from_shapes(&shapes, 2).unwrap();
        assert_eq!(
            4 * plan.message_len(HalfStep::Right) as u64,
            b.lowrank_right
        );
        assert_eq!(4 * plan.message_len(HalfStep::Left) as u64, b.lowrank_left);
    }

    // --- the defining properties --------------------------------------------------------------

    #[test]
    fn a_rank_r_difference_is_recovered_within_two_power_steps() {
        // Tolerances. A Left half-step's compressed difference is P·Pᵀ·D with P the orthonormal
        // basis of D·Q from the random start; D·Q arrives as the difference of two f32 messages,
        // so span(P) is off by about κ(D·Q)·2⁻²⁴, κ ≤ ~10³ for these random starts: 1e-3 after
        // the first power step (two half-steps). From then on the basis comes from D itself and is
        // well conditioned: 1e-5 after the second power step (four half-steps).
        let mut r = rng(2);
        for &(m, n) in &[(37, 23), (64, 64), (100, 7), (9, 300)] {
            for rank in 1..=4.min(m.min(n) - 1) {
                let plan = LowRankPlan::from_shapes(&[[m, n]], rank).unwrap();
                let a = random(&mut r, m * rank, 1.0);
                let b = random(&mut r, n * rank, 1.0);
                let mut d = vec![0f32; m * n];
                cpu::rank_update(&mut d, (m, n), rank, &a, &b, 1.0);
                let xs = random(&mut r, m * n, 1.0);
                let xf: Vec<f32> = xs.iter().zip(&d).map(|(s, d)| s + d).collect();
                let d: Vec<f32> = xf.iter().zip(&xs).map(|(f, s)| f - s).collect();
                let what = format!("{m}x{n} R={rank}");

                // Without updates (γ = 0): the compressed difference is D.
                let mut e = edge(&plan, 7 + rank as u64, true);
                let (mut x1, mut x2) = (xf.clone(), xs.clone());
                let errs: Vec<f64> = (0..4)
                    .map(|_| rel(&exchange(&mut e, &mut x1, &mut x2, 0.0).to_dense(&plan), &d))
                    .collect();
                assert!(
                    errs[1] <= 1e-3,
                    "{what}: ‖C(D) − D‖/‖D‖ by half-step: {errs:?}"
                );
                assert!(
                    errs[3] <= 1e-5,
                    "{what}: ‖C(D) − D‖/‖D‖ by half-step: {errs:?}"
                );

                // With the pairwise average (γ = 1) after each half-step, the pair agrees.
                let mut e = edge(&plan, 7 + rank as u64, true);
                let (mut x1, mut x2) = (xf.clone(), xs.clone());
                let gaps: Vec<f64> = (0..4)
                    .map(|_| {
                        exchange(&mut e, &mut x1, &mut x2, 1.0);
                        let gap: Vec<f32> = x1.iter().zip(&x2).map(|(a, b)| a - b).collect();
                        norm_ratio(&gap, &d)
                    })
                    .collect();
                assert!(
                    gaps[1] <= 1e-3,
                    "{what}: ‖x1 − x2‖/‖D‖ by half-step: {gaps:?}"
                );
                assert!(
                    gaps[3] <= 1e-5,
                    "{what}: ‖x1 − x2‖/‖D‖ by half-step: {gaps:?}"
                );
            }
        }
    }

    #[test]
    fn an_exchange_conserves_the_pairs_sum_to_f32_rounding() {
        let mut r = rng(3);
        let shapes: [&[usize]; 5] = [&[33, 70], &[70], &[8, 3, 5, 5], &[8], &[75, 10]];
        let plan = LowRankPlan::from_shapes(&shapes, 3).unwrap();
        let mut e = edge(&plan, 11, true);
        let mut x1 = random(&mut r, plan.arena_len(), 1.0);
        let mut x2 = random(&mut r, plan.arena_len(), 1.0);
        for (k, gamma) in [1.0, 0.5, 1.0, 0.3, 1.0].into_iter().enumerate() {
            let before: Vec<f64> = x1
                .iter()
                .zip(&x2)
                .map(|(a, b)| f64::from(*a) + f64::from(*b))
                .collect();
            exchange(&mut e, &mut x1, &mut x2, gamma);
            // Each side's update rounds once, so the sum moves by at most half an ulp of each.
            for (i, s) in before.iter().enumerate() {
                let after = f64::from(x1[i]) + f64::from(x2[i]);
                let bound = (f64::from(x1[i]).abs() + f64::from(x2[i]).abs()) * (-24f64).exp2();
                assert!(
                    (after - s).abs() <= bound,
                    "exchange {k}, element {i}: sum moved {:.3e} > {bound:.3e}",
                    (after - s).abs()
                );
            }
        }
    }

    #[test]
    fn the_warm_start_beats_a_cold_start_on_a_slowly_changing_difference() {
        let mut r = rng(4);
        let (m, n, rank) = (40, 30, 2);
        let plan = LowRankPlan::from_shapes(&[[m, n]], rank).unwrap();
        // D with a decaying spectrum: Σ_k 0.5^k a_k b_kᵀ.
        let mut d = vec![0f32; m * n];
        for k in 0..12 {
            let a = random(&mut r, m, 1.0);
            let b = random(&mut r, n, 1.0);
            cpu::rank_update(&mut d, (m, n), 1, &a, &b, 0.5f32.powi(k));
        }
        let xs = random(&mut r, m * n, 1.0);
        let drift: Vec<Vec<f32>> = (0..8).map(|_| random(&mut r, m * n, 1e-3)).collect();
        let residuals = |warm: bool| -> Vec<f64> {
            let mut e = edge(&plan, 5, warm);
            let mut x1: Vec<f32> = xs.iter().zip(&d).map(|(s, d)| s + d).collect();
            let mut x2 = xs.clone();
            let mut out = Vec::new();
            for step in &drift {
                let diff: Vec<f32> = x1.iter().zip(&x2).map(|(a, b)| a - b).collect();
                let c = exchange(&mut e, &mut x1, &mut x2, 0.0).to_dense(&plan);
                out.push(rel(&c, &diff));
                x1.iter_mut().zip(step).for_each(|(x, s)| *x += s);
            }
            out
        };
        let (warm, cold) = (residuals(true), residuals(false));
        // The first exchange is the same random start for both; from the second on, the warm
        // start has converged towards the top singular pair and the cold one has not.
        for k in 1..warm.len() {
            assert!(
                warm[k] < 0.8 * cold[k],
                "exchange {k}: warm residual {:.3} is not below cold {:.3} (warm {warm:.3?}, cold {cold:.3?})",
                warm[k],
                cold[k]
            );
        }
        assert!(warm[7] < 0.5 * cold[7], "warm {warm:.3?}, cold {cold:.3?}");
    }

    #[test]
    fn agreeing_models_exchange_zero_and_the_next_difference_still_compresses() {
        let mut r = rng(5);
        let plan = LowRankPlan::from_shapes(&[[20, 15]], 2).unwrap();
        let mut e = edge(&plan, 9, true);
        let x = random(&mut r, 300, 1.0);
        let (mut x1, mut x2) = (x.clone(), x.clone());
        for _ in 0..3 {
            let c = exchange(&mut e, &mut x1, &mut x2, 1.0);
            assert!(c.to_dense(&plan).iter().all(|v| *v == 0.0));
            assert_eq!(x1, x);
        }
        // The bases are still orthonormal (degenerate columns were replaced), so a rank-1
        // difference is recovered within two half-steps.
        let a = random(&mut r, 20, 1.0);
        let b = random(&mut r, 15, 1.0);
        cpu::rank_update(&mut x1, (20, 15), 1, &a, &b, 1.0);
        let d: Vec<f32> = x1.iter().zip(&x2).map(|(p, q)| p - q).collect();
        exchange(&mut e, &mut x1.clone(), &mut x2.clone(), 0.0);
        let c = exchange(&mut e, &mut x1, &mut x2, 0.0).to_dense(&plan);
        assert!(rel(&c, &d) <= 1e-5, "{:.2e}", rel(&c, &d));
    }

    #[test]
    fn orthonormalise_gives_orthonormal_columns_and_replaces_dependent_ones() {
        let mut r = rng(6);
        let (rows, rank) = (50, 4);
        let mut a = random(&mut r, rows * rank, 1.0);
        // Column 2 = column 0: dependent.
        for i in 0..rows {
            a[i * rank + 2] = a[i * rank];
        }
        orthonormalise(&mut a, rows, rank, &mut rng(0));
        for s in 0..rank {
            for t in 0..rank {
                let dot: f64 = (0..rows)
                    .map(|i| f64::from(a[i * rank + s]) * f64::from(a[i * rank + t]))
                    .sum();
                let want = if s == t { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-6, "columns {s},{t}: {dot}");
            }
        }
    }

    #[test]
    fn wrong_lengths_ranks_and_non_finite_peers_are_refused() {
        assert_eq!(
            LowRankPlan::from_shapes(&[[4, 4]], 0).unwrap_err(),
            CompressError::Rank { rank: 0 }
        );
        assert!(LowRankPlan::from_shapes(&[[40, 40]], MAX_RANK + 1).is_err());
        let plan = LowRankPlan::from_shapes(&[vec![10, 12], vec![12]], 2).unwrap();
        let (mut a, _) = edge(&plan, 1, true);
        assert!(matches!(
            a.message(&[0.0; 5]),
            Err(CompressError::Length { got: 5, .. })
        ));
        let x = vec![0.5f32; plan.arena_len()];
        let mine = a.message(&x).unwrap();
        assert_eq!(mine.len(), 2 * 10 + 12);
        let mut theirs = mine.clone();
        theirs[3] = f32::NAN;
        let err = a.finish(&mine, &theirs).unwrap_err();
        assert!(
            matches!(err, CompressError::PeerNonFinite { index: 3, .. }),
            "{err}"
        );
        assert_eq!(
            a.half_steps(),
            0,
            "a refused exchange leaves the state as it was"
        );
        assert!(a.finish(&mine, &mine[1..]).is_err());
        a.finish(&mine, &mine).unwrap();
        assert_eq!(a.next_step(), HalfStep::Left);
    }
}
