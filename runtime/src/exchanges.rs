//! The exchange task: answers the mesh while the compute loop trains, so a pairing never waits for
//! a step boundary (docs/algorithm.md §3.3, §6).
//!
//! An agreed exchange takes its snapshot from the host mirror at once (the device state at the
//! exchange's clock value, minus the gradient steps since the last read-back, which are kept as
//! steps that land while bytes are in flight); when the peer's snapshot arrives, the average gets
//! its clock value and its place in the order of events, is pushed onto the mirror (so the next
//! snapshot includes it) and queued for the compute loop, which submits it to the device before
//! its next step. ‖s_i − s_j‖² is computed on the host from the two snapshots. The task never
//! touches the device, so an exchange takes what the network takes.
use std::sync::{Arc, Mutex};

use a2cid_engine::compress::{decode_f16, encode_f16};
use a2cid_net::{MeshEvent, MeshEvents};
use a2cid_schema::{Compression, MetricEvent};
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
                    let mut buf = match self.wire {
                        Compression::None => x,
                        wire => {
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
                let w = self.wire.wire_len(d);
                // fp16: both sides average the rounded values (the own ones rounded as sent), so
                // the pair's sum is conserved.
                let decoded = match self.wire {
                    Compression::None => None,
                    wire => Some((
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
}
