//! The exchange task: answers the mesh while the compute loop trains, so a pairing never waits for
//! a step boundary (docs/algorithm.md §3.3, §6).
//!
//! An agreed exchange takes its snapshot from the host mirror at once (the device state at the
//! exchange's clock value, minus the gradient steps since the last read-back, which are kept as
//! steps that land while bytes are in flight); when the peer's snapshot arrives, the average gets
//! its clock value and its place in the order of events, is pushed onto the mirror (so the next
//! snapshot includes it) and queued for the compute loop, which submits it to the device before
//! its next step. ‖s_i − s_j‖² is computed on the host from the two snapshots. The task never
//! touches the training device, so an exchange takes what the network takes; `--compress
//! lowrank:R` runs its power-iteration products on a second device of the same adapter, whose
//! queue holds only them.
use std::sync::{Arc, Mutex};

use a2cid_engine::arena::ParamLayout;
use a2cid_engine::compress::{
    decode_f16, edge_seed, encode_f16, HalfStep, LowRankEdge, LowRankPlan, Role,
};
use a2cid_engine::lowrank_gpu::GpuLowRank;
use a2cid_engine::GpuContext;
use a2cid_net::{MeshEvent, MeshEvents};
use a2cid_schema::{Compression, MetricEvent};
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::clock::GlobalCounts;
use crate::shared::{lock, PendingAverage, Shared};

/// What a worker tells a restarted neighbour about its training state, besides (x, x̃) and its
/// clock: the gradient counts it knows of (the newcomer's own count among them, so it continues
/// it), and the run's wall time.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RejoinMeta {
    pub counts: Vec<u64>,
    pub wall: f64,
    pub eval_seconds: f64,
    pub step_seconds: Option<f64>,
}

/// Handles the mesh's events for one worker.
pub struct ExchangeTask {
    pub shared: Arc<Mutex<Shared>>,
    pub events: MeshEvents,
    /// Parameters in the model; a snapshot on the wire carries the gradient counts after them.
    pub d: usize,
    /// How the parameters travel (`--compress`).
    pub wire: Compression,
    /// `lowrank:R`: each edge's state and the snapshot each exchange in flight was built from.
    pub lowrank: Option<LowRankExchanges>,
}

/// PowerGossip on every edge of this worker (docs/algorithm.md §9.4): one [`LowRankEdge`] per
/// neighbour, the same bit for bit on both ends. A message is the edge's half-step message,
/// padded to the longer of the two half-steps, then the edge's count of completed half-steps,
/// which both ends compare: if they differ (one end completed an exchange the other did not, or
/// restarted), both drop the exchange and start the edge afresh from a seed both derive from the
/// larger count.
pub struct LowRankExchanges {
    plan: LowRankPlan,
    rank: usize,
    seed: u64,
    edges: std::collections::HashMap<usize, LowRankEdge>,
    /// The snapshot (parameters) each exchange in flight was built from, by (peer, seq).
    sent: std::collections::HashMap<(usize, u64), Vec<f32>>,
    /// The power-iteration products on the GPU (the engine's `GpuLowRank` kernels), on a device of the
    /// exchange task's own so they never wait behind a training step; `None`: the CPU twins.
    products: Option<GpuLowRank>,
}

impl LowRankExchanges {
    /// The exchanges of worker `rank` at rank `r`; with `device`, the products run there.
    pub fn new(
        layout: &ParamLayout,
        r: usize,
        rank: usize,
        seed: u64,
        device: Option<Arc<GpuContext>>,
    ) -> anyhow::Result<Self> {
        let plan = LowRankPlan::new(layout, r)?;
        let products = match device {
            Some(ctx) => Some(GpuLowRank::new(ctx, plan.clone())?),
            None => None,
        };
        Ok(LowRankExchanges {
            plan,
            rank,
            seed,
            edges: Default::default(),
            sent: Default::default(),
            products,
        })
    }

    /// Whether the products run on a GPU device (else on the CPU twins).
    pub fn on_device(&self) -> bool {
        self.products.is_some()
    }

    /// Floats of a message on the wire: the longer half-step, then the half-step count.
    pub fn wire_len(plan: &LowRankPlan) -> usize {
        plan.message_len(HalfStep::Right)
            .max(plan.message_len(HalfStep::Left))
            + 1
    }

    fn fresh_edge(&self, peer: usize, generation: u64) -> LowRankEdge {
        let seed = edge_seed(self.seed, self.rank, peer, generation);
        let role = if self.rank < peer {
            Role::First
        } else {
            Role::Second
        };
        LowRankEdge::new(self.plan.clone(), role, seed, true)
    }

    fn edge(&mut self, peer: usize) -> &mut LowRankEdge {
        if !self.edges.contains_key(&peer) {
            let e = self.fresh_edge(peer, 0);
            self.edges.insert(peer, e);
        }
        self.edges.get_mut(&peer).expect("inserted")
    }

    /// This side's message for exchange `seq` with `peer`, from the snapshot `x`.
    fn message(&mut self, peer: usize, seq: u64, x: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        let len = Self::wire_len(&self.plan);
        self.edge(peer);
        let edge = self.edges.get_mut(&peer).expect("created above");
        let count = edge.half_steps();
        let mut msg = match &self.products {
            Some(gpu) => gpu.message(edge, &x)?,
            None => edge.message(&x)?,
        };
        msg.resize(len - 1, 0.0);
        msg.push(count as f32);
        self.sent.insert((peer, seq), x);
        Ok(msg)
    }

    /// The snapshot this side sent and the peer's as this side sees it, `x − C(x − x_peer)`;
    /// `None` when the two ends' half-step counts differ (the edge starts afresh).
    fn finish(
        &mut self,
        peer: usize,
        seq: u64,
        mine: &[f32],
        theirs: &[f32],
    ) -> anyhow::Result<Option<(Vec<f32>, Vec<f32>)>> {
        let len = Self::wire_len(&self.plan);
        let sent = self
            .sent
            .remove(&(peer, seq))
            .context("a low-rank exchange completed that this side never started")?;
        let (a, b) = (mine[len - 1], theirs[len - 1]);
        if a != b {
            let generation = a.max(b) as u64 + 1;
            let e = self.fresh_edge(peer, generation);
            self.edges.insert(peer, e);
            return Ok(None);
        }
        self.edge(peer);
        let edge = self.edges.get_mut(&peer).expect("created above");
        let n = self.plan.message_len(edge.next_step());
        let c = edge.finish(&mine[..n], &theirs[..n])?;
        let received = match &self.products {
            Some(gpu) => gpu.peer_view(&c, &sent)?,
            None => {
                let mut received = sent.clone();
                c.apply(&self.plan, &mut received, -1.0);
                received
            }
        };
        Ok(Some((sent, received)))
    }

    fn forget(&mut self, peer: usize, seq: u64) {
        self.sent.remove(&(peer, seq));
    }
}

/// The parameters as they go on the wire: as they are, or as fp16 halves packed two per f32
/// slot (the mesh moves the slots' bytes untouched). Fails on a value fp16 cannot carry.
pub fn to_wire(x: &[f32], wire: Compression, out: &mut Vec<f32>) -> anyhow::Result<()> {
    match wire {
        Compression::Fp16 => {
            let mut bytes = encode_f16(x)?;
            bytes.resize(4 * wire.wire_len(x.len()), 0);
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_bits(u32::from_le_bytes(b.try_into().expect("4 bytes")))),
            );
        }
        _ => out.extend_from_slice(x),
    }
    Ok(())
}

/// The `d` parameters of a wire buffer (what [`to_wire`] made); fails on a non-finite half.
pub fn from_wire(slots: &[f32], d: usize, wire: Compression) -> anyhow::Result<Vec<f32>> {
    match wire {
        Compression::Fp16 => {
            let bytes: Vec<u8> = slots[..wire.wire_len(d)]
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect();
            Ok(decode_f16(&bytes[..2 * d])?)
        }
        _ => Ok(slots[..d].to_vec()),
    }
}

impl ExchangeTask {
    /// Runs until `stop` is cancelled or the mesh shuts down.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                ev = self.events.recv() => match ev {
                    Some(ev) => {
                        if let Err(e) = self.on_event(ev) {
                            warn!("exchange task: {e:#}");
                        }
                    }
                    None => break,
                },
            }
        }
    }

    fn on_event(&mut self, ev: MeshEvent) -> anyhow::Result<()> {
        match ev {
            MeshEvent::Exchange(req) => {
                let buf = {
                    let mut s = lock(&self.shared);
                    let tau = s.time.tau();
                    let x = s.mirror.snapshot(tau);
                    let mut buf = match (self.wire, &mut self.lowrank) {
                        (Compression::None, _) => x,
                        (Compression::LowRank(_), Some(lr)) => {
                            match lr.message(req.peer, req.seq, x) {
                                Ok(msg) => msg,
                                Err(e) => {
                                    warn!("rank {}: not sending a snapshot: {e:#}", s.rank);
                                    return Ok(());
                                }
                            }
                        }
                        (wire, _) => {
                            let mut buf = Vec::with_capacity(wire.wire_len(x.len()) + 64);
                            if let Err(e) = to_wire(&x, wire, &mut buf) {
                                // Dropping the request declines the exchange.
                                warn!("rank {}: not sending a snapshot: {e:#}", s.rank);
                                return Ok(());
                            }
                            buf
                        }
                    };
                    s.counts.encode_into(&mut buf);
                    s.in_flight = Some((req.peer, req.seq));
                    if req.initiator {
                        s.edges.entry(req.peer).or_default().started.push(tau);
                    }
                    buf
                };
                let (peer, seq) = (req.peer, req.seq);
                if let Err(e) = req.supply(buf) {
                    let mut s = lock(&self.shared);
                    if s.in_flight == Some((peer, seq)) {
                        s.in_flight = None;
                    }
                    warn!("rank {}: could not supply a snapshot: {e}", s.rank);
                }
            }
            MeshEvent::Exchanged(x) => {
                let d = self.d;
                let w = match &self.lowrank {
                    Some(lr) => LowRankExchanges::wire_len(&lr.plan),
                    None => self.wire.wire_len(d),
                };
                // fp16: both sides average the rounded values (the own ones rounded as sent), so
                // the pair's sum is conserved. lowrank: the peer's snapshot as this side sees it
                // is its own minus the compressed difference.
                let decoded = match (self.wire, &mut self.lowrank) {
                    (Compression::None, _) => None,
                    (Compression::LowRank(_), Some(lr)) => {
                        match lr.finish(x.peer, x.seq, &x.mine, &x.theirs) {
                            Ok(Some(pair)) => Some(pair),
                            Ok(None) => {
                                let mut s = lock(&self.shared);
                                s.in_flight = None;
                                s.failed += 1;
                                debug!(
                                    "rank {}: low-rank state out of step with {}: the edge \
                                     starts afresh",
                                    s.rank, x.peer
                                );
                                drop(s);
                                self.events.recycle(x.theirs);
                                self.events.recycle(x.mine);
                                return Ok(());
                            }
                            Err(e) => {
                                debug!("low-rank exchange with {}: {e:#}", x.peer);
                                Some((vec![0.0; d], vec![f32::NAN; d]))
                            }
                        }
                    }
                    (wire, _) => Some((
                        from_wire(&x.mine, d, wire)?,
                        from_wire(&x.theirs, d, wire).unwrap_or_else(|_| vec![f32::NAN; d]),
                    )),
                };
                let (mine, theirs) = match &decoded {
                    Some((m, t)) => (&m[..], &t[..]),
                    None => (&x.mine[..d], &x.theirs[..d]),
                };
                if let Some(bad) = theirs.iter().position(|v| !v.is_finite()) {
                    // A diverged (or corrupted) peer: its snapshot is not averaged in, so its
                    // NaNs cannot spread; it detects its own divergence and stops.
                    let mut s = lock(&self.shared);
                    s.in_flight = None;
                    s.failed += 1;
                    x.refuse(&format!(
                        "rank {} did not average your snapshot in: value {bad} is {}",
                        s.rank, theirs[bad]
                    ));
                    let n = s.refused.entry(x.peer).or_default();
                    *n += 1;
                    if *n == 1 {
                        warn!(
                            "rank {}: refused the snapshot of neighbour {} (value {bad} is {}): \
                             it diverged or is corrupt; its snapshots are not averaged in (it \
                             is told)",
                            s.rank, x.peer, theirs[bad]
                        );
                    }
                    drop(s);
                    self.events.recycle(x.theirs);
                    self.events.recycle(x.mine);
                    return Ok(());
                }
                let dist2: f64 = mine
                    .iter()
                    .zip(theirs)
                    .map(|(&a, &b)| (f64::from(b) - f64::from(a)).powi(2))
                    .sum();
                let mut s = lock(&self.shared);
                s.counts.merge(&GlobalCounts::decode(&x.theirs[w..]));
                let tau = s.time.tau();
                s.seq += 1;
                let seq = s.seq;
                s.mirror.push_average(seq, tau, mine, theirs);
                s.pending.push(PendingAverage {
                    tau,
                    sent: mine.to_vec(),
                    received: theirs.to_vec(),
                });
                s.comms += 1;
                s.in_flight = None;
                let event = MetricEvent::Exchange {
                    at: s.at(),
                    peer: x.peer,
                    dist2,
                    bytes_sent: x.stats.bytes_sent,
                    bytes_received: x.stats.bytes_received,
                    seconds: x.stats.total.as_secs_f64(),
                    snapshot_seconds: x.stats.wait_for_snapshot.as_secs_f64(),
                    initiator: x.stats.initiator,
                    missed_before: x.stats.missed_since_previous,
                };
                s.metrics.record(&event)?;
                drop(s);
                self.events.recycle(x.theirs);
                self.events.recycle(x.mine);
            }
            MeshEvent::ExchangeFailed { peer, seq, why } => {
                if let Some(lr) = &mut self.lowrank {
                    lr.forget(peer, seq);
                }
                let mut s = lock(&self.shared);
                if s.in_flight == Some((peer, seq)) {
                    s.in_flight = None;
                }
                s.failed += 1;
                debug!("rank {}: exchange {seq} with {peer} failed: {why}", s.rank);
            }
            MeshEvent::PeerLost {
                peer,
                why,
                graceful,
            } => {
                let mut s = lock(&self.shared);
                if !graceful {
                    warn!(
                        "rank {}: lost neighbour {peer} ({why}); training goes on without it",
                        s.rank
                    );
                    s.lost.push(peer);
                }
                let event = MetricEvent::PeerLost {
                    at: s.at(),
                    peer,
                    why,
                    graceful,
                };
                s.metrics.record(&event)?;
            }
            MeshEvent::StateRequested(req) => {
                let s = lock(&self.shared);
                let tau = s.time.tau();
                let (x, x_tilde) = s.mirror.state_at(tau);
                if let Some(bad) = x.iter().position(|v| !v.is_finite()) {
                    req.refuse(&format!(
                        "rank {}'s parameters are not finite (value {bad} is {})",
                        s.rank, x[bad]
                    ));
                    return Ok(());
                }
                let meta = RejoinMeta {
                    counts: s.counts.counts().to_vec(),
                    wall: s.time.wall(),
                    eval_seconds: s.time.eval_seconds,
                    step_seconds: s.time.clock.step_seconds(),
                };
                let rank = s.rank;
                drop(s);
                let peer = req.peer;
                let piece = req.params();
                req.supply(
                    tau,
                    // x then x̃, in buffers of at most the mesh's snapshot length (shorter than
                    // the model when the snapshots are compressed).
                    std::iter::once(x)
                        .chain(x_tilde)
                        .flatten()
                        .collect::<Vec<f32>>()
                        .chunks(piece)
                        .map(<[f32]>::to_vec)
                        .collect(),
                    serde_json::to_string(&meta)?,
                );
                tracing::info!(
                    "rank {rank}: gave restarted neighbour {peer} this worker's state at clock \
                 {tau:.1}"
                );
            }
            MeshEvent::SnapshotRefused { by, seq, why } => {
                let mut s = lock(&self.shared);
                let n = s.refused_by.entry(by).or_default();
                *n += 1;
                if *n == 1 {
                    warn!(
                        "rank {}: neighbour {by} refused this worker's snapshot of exchange \
                         {seq}: {why}; this worker's parameters are probably diverging (lower \
                         --lr or add --warmup-steps)",
                        s.rank
                    );
                    let event = MetricEvent::SnapshotRefused {
                        at: s.at(),
                        by,
                        why,
                    };
                    s.metrics.record(&event)?;
                }
            }
            MeshEvent::PeerRejoined { peer } => {
                let mut s = lock(&self.shared);
                s.lost.retain(|&p| p != peer);
                tracing::info!("rank {}: neighbour {peer} is back", s.rank);
                let event = MetricEvent::PeerRejoined { at: s.at(), peer };
                s.metrics.record(&event)?;
            }
            MeshEvent::GraphSplit { components } => {
                warn!(
                    "rank {}: the live graph fell apart into {components:?}: the parts train apart \
                     until the end",
                    lock(&self.shared).rank
                );
            }
            MeshEvent::ShutdownRequested => lock(&self.shared).interrupted = true,
            MeshEvent::RunStopping { origin, reason } => {
                lock(&self.shared).stopped_elsewhere = Some((origin, reason));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp16_snapshots_take_half_the_slots_and_decode_to_the_rounded_values() {
        let x = [1.0f32, -2.5, 1.0 / 3.0, 1e-3, 0.1];
        let mut wire = vec![7.0]; // appended after what is there
        to_wire(&x, Compression::Fp16, &mut wire).unwrap();
        assert_eq!(wire.len(), 1 + 3);
        let back = from_wire(&wire[1..], x.len(), Compression::Fp16).unwrap();
        for (a, b) in x.iter().zip(&back) {
            assert_eq!(*b, half::f16::from_f32(*a).to_f32());
        }
        // Both peers average the rounded values: i moves by (r_j - r_i) / 2, j by (r_i - r_j) / 2.
        let y = [0.7f32, 2.0, -1.0, 5e-4, 0.3];
        let mut wy = Vec::new();
        to_wire(&y, Compression::Fp16, &mut wy).unwrap();
        let ry = from_wire(&wy, y.len(), Compression::Fp16).unwrap();
        for k in 0..x.len() {
            let (i, j) = (
                back[k] + (ry[k] - back[k]) / 2.0,
                ry[k] + (back[k] - ry[k]) / 2.0,
            );
            assert_eq!(i, j, "the pair meets at one value");
        }
        let plain = from_wire(&x, x.len(), Compression::None).unwrap();
        assert_eq!(plain, x);
        let e = to_wire(&[f32::NAN], Compression::Fp16, &mut Vec::new()).unwrap_err();
        assert!(
            e.to_string().contains("not finite") || e.to_string().contains("NaN"),
            "{e}"
        );
    }

    fn layout(shapes: &[&[usize]]) -> ParamLayout {
        let mut l = ParamLayout::new();
        for (i, s) in shapes.iter().enumerate() {
            l.push(format!("t{i}"), s);
        }
        l
    }

    /// (sent, received) as one side's averaging sees them.
    type Seen = (Vec<f32>, Vec<f32>);

    /// Both ends of an edge exchange once: what each side's averaging sees.
    fn edge_round(
        a: &mut LowRankExchanges,
        b: &mut LowRankExchanges,
        seq: u64,
        xa: &[f32],
        xb: &[f32],
    ) -> Option<(Seen, Seen)> {
        let ma = a.message(1, seq, xa.to_vec()).unwrap();
        let mb = b.message(0, seq, xb.to_vec()).unwrap();
        let ra = a.finish(1, seq, &ma, &mb).unwrap();
        let rb = b.finish(0, seq, &mb, &ma).unwrap();
        assert_eq!(ra.is_some(), rb.is_some(), "both ends decide alike");
        ra.zip(rb)
    }

    #[test]
    fn low_rank_exchanges_conserve_the_pair_and_are_exact_when_nothing_is_compressed() {
        let shapes: [&[usize]; 2] = [&[6, 5], &[6]];
        let xa: Vec<f32> = (0..36).map(|i| (i as f32 * 0.37).sin()).collect();
        let xb: Vec<f32> = (0..36).map(|i| (i as f32 * 0.91).cos()).collect();
        // Rank 2 of a 6×5 block: compressed. Each side moves by half its (received − sent).
        // Products on the CPU twins at both ends, on the GPU at one end, and at both.
        let l = layout(&shapes);
        let gpu = GpuContext::open("auto").expect("a GPU adapter (lavapipe in CI)");
        for (on_a, on_b) in [(false, false), (true, false), (true, true)] {
            let device = |on: bool| on.then(|| gpu.clone());
            let (mut a, mut b) = (
                LowRankExchanges::new(&l, 2, 0, 7, device(on_a)).unwrap(),
                LowRankExchanges::new(&l, 2, 1, 7, device(on_b)).unwrap(),
            );
            assert_eq!((a.on_device(), b.on_device()), (on_a, on_b));
            conserve_and_converge(&mut a, &mut b, &xa, &xb);
        }
        // Rank 5 ≥ min(6, 5): sent dense, so each side sees exactly the other's snapshot.
        let (mut a, mut b) = (
            LowRankExchanges::new(&l, 5, 0, 7, None).unwrap(),
            LowRankExchanges::new(&l, 5, 1, 7, Some(gpu)).unwrap(),
        );
        let ((_, ra), (_, rb)) = edge_round(&mut a, &mut b, 0, &xa, &xb).unwrap();
        for k in 0..36 {
            assert!((ra[k] - xb[k]).abs() < 1e-6 && (rb[k] - xa[k]).abs() < 1e-6);
        }
        // One end restarted (its edge is fresh, the other's has done a half-step): both drop the
        // exchange, then agree again.
        let mut fresh = LowRankExchanges::new(&l, 5, 1, 7, None).unwrap();
        assert!(edge_round(&mut a, &mut fresh, 1, &xa, &xb).is_none());
        assert!(edge_round(&mut a, &mut fresh, 2, &xa, &xb).is_some());
    }

    /// Six exchanges of one edge: each side moves by half its (received − sent); the pair's sum
    /// stays put and the ends come closer.
    fn conserve_and_converge(
        a: &mut LowRankExchanges,
        b: &mut LowRankExchanges,
        xa: &[f32],
        xb: &[f32],
    ) {
        let (mut ya, mut yb) = (xa.to_vec(), xb.to_vec());
        for seq in 0..6 {
            let ((sa, ra), (sb, rb)) = edge_round(a, b, seq, &ya, &yb).unwrap();
            for k in 0..36 {
                let da = (ra[k] - sa[k]) / 2.0;
                let db = (rb[k] - sb[k]) / 2.0;
                assert!(
                    (da + db).abs() <= 1e-5,
                    "the pair's sum moves at {k}: {da} {db}"
                );
                ya[k] += da;
                yb[k] += db;
            }
        }
        let gap = |u: &[f32], v: &[f32]| u.iter().zip(v).map(|(p, q)| (p - q).powi(2)).sum::<f32>();
        assert!(gap(&ya, &yb) < 0.5 * gap(xa, xb), "the ends came closer");
    }
}
