//! Ring collectives: all-reduce (mean), broadcast and barrier. They run in the caller's task, on
//! the links to the two ring neighbours (`rank - 1` is `left`, data arrives from it; `rank + 1` is
//! `right`, data goes to it), chunked so the ring is pipelined.
//!
//! Sending waits for room in the right link's chunk window, and while it waits it keeps taking
//! what the left neighbour sends (kept, in order, for the receives to come): every rank sends a
//! whole segment before it receives, so a ring of ranks that all only waited to send would never
//! move. A send fails only because of the right neighbour (its link closed, or no room for the
//! collective timeout), as when sends never waited.
//!
//! A lost member fails the collective at once with [`NetError::MemberLost`] naming it; the rank
//! that notices tells its other ring neighbour (`CollAbort`), so the failure travels round the ring.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use tracing::debug;

use crate::error::NetError;
use crate::frame::{CollHeader, Frame, Msg};
use crate::link::{Outgoing, RingIn, RingPort};
use crate::pool::BufPool;

/// Phases of collective frames.
const PH_REDUCE_SCATTER: u32 = 1;
const PH_ALL_GATHER: u32 = 2;
const PH_BROADCAST: u32 = 3;
const PH_BARRIER: u32 = 4;
const PH_RELAY: u32 = 5;

/// How long a broken link may still deliver what its peer sent before leaving (a relayed abort
/// names the real culprit).
const LAST_WORDS: Duration = Duration::from_secs(2);

/// Statistics of one collective.
#[derive(Clone, Copy, Debug)]
pub struct CollStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub elapsed: Duration,
}

/// One ring link as the collectives see it, with what was taken from it early.
#[derive(Debug)]
struct Port {
    link: RingPort,
    early: VecDeque<RingIn>,
}

impl Port {
    /// The next message, taken early or waited for; `None` once the link is gone.
    async fn next(&mut self) -> Option<RingIn> {
        match self.early.pop_front() {
            Some(m) => Some(m),
            None => self.link.inbox.recv().await,
        }
    }
}

/// What a message from the left means for the chunk awaited.
enum Outcome {
    Data(Vec<f32>),
    /// Left over from an earlier collective: skip it.
    Stale,
    Failed(NetError),
}

#[derive(Debug)]
pub(crate) struct Ring {
    rank: usize,
    world: usize,
    left: usize,
    right: usize,
    ports: BTreeMap<usize, Port>,
    /// Links re-opened by restarted ring neighbours: their ports replace the old ones before the
    /// next collective.
    replaced: mpsc::UnboundedReceiver<(usize, RingPort)>,
    pool: BufPool,
    op: u64,
    /// `op`, readable by the mesh (a restarted neighbour is told how many collectives were run).
    ops_started: Arc<AtomicU64>,
    chunk_floats: usize,
    timeout: Duration,
    /// Payload bytes every collective so far sent and received (all-reduces and broadcasts).
    pub(crate) totals: (u64, u64),
}

impl Ring {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rank: usize,
        world: usize,
        ports: BTreeMap<usize, RingPort>,
        replaced: mpsc::UnboundedReceiver<(usize, RingPort)>,
        ops_started: Arc<AtomicU64>,
        pool: BufPool,
        chunk_floats: usize,
        timeout: Duration,
    ) -> Ring {
        let (left, right) = a2cid_topology::ring_neighbours(rank, world);
        Ring {
            rank,
            world,
            left,
            right,
            ports: ports
                .into_iter()
                .map(|(p, link)| {
                    let early = VecDeque::new();
                    (p, Port { link, early })
                })
                .collect(),
            replaced,
            pool,
            op: ops_started.load(Ordering::Relaxed),
            ops_started,
            chunk_floats: chunk_floats.max(1),
            totals: (0, 0),
            timeout,
        }
    }

    fn next_op(&mut self) -> u64 {
        while let Ok((peer, link)) = self.replaced.try_recv() {
            self.ports.insert(
                peer,
                Port {
                    link,
                    early: VecDeque::new(),
                },
            );
        }
        self.op += 1;
        self.ops_started.store(self.op, Ordering::Relaxed);
        self.op
    }

    fn segment(&self, n: usize, i: usize) -> (usize, usize) {
        let p = self.world;
        (i * n / p, (i + 1) * n / p)
    }

    fn chunks(&self, (a, b): (usize, usize)) -> Vec<(usize, usize)> {
        let c = self.chunk_floats;
        (a..b).step_by(c).map(|s| (s, (s + c).min(b))).collect()
    }

    /// Ring all-reduce (reduce-scatter, then all-gather; chunked and pipelined) leaving the mean in
    /// `buf`, bit-identical on every rank.
    pub(crate) async fn allreduce_mean(&mut self, buf: &mut [f32]) -> Result<CollStats, NetError> {
        let t0 = Instant::now();
        let op = self.next_op();
        let p = self.world;
        let (mut sent, mut recvd) = (0u64, 0u64);
        if p == 1 {
            return Ok(CollStats {
                bytes_sent: 0,
                bytes_received: 0,
                elapsed: t0.elapsed(),
            });
        }
        let n = buf.len();
        let r = self.rank;
        let hdr = |phase, step: usize, chunk: usize| CollHeader {
            op,
            phase,
            step: step as u32,
            chunk: chunk as u32,
        };
        // Reduce-scatter step 0 sends our own segment r.
        for (c, (a, b)) in self.chunks(self.segment(n, r)).into_iter().enumerate() {
            self.send(hdr(PH_REDUCE_SCATTER, 0, c), &buf[a..b]).await?;
            sent += 4 * (b - a) as u64;
        }
        for k in 0..p - 1 {
            let seg = (r + 2 * p - k - 1) % p;
            for (c, (a, b)) in self.chunks(self.segment(n, seg)).into_iter().enumerate() {
                let data = self.recv(hdr(PH_REDUCE_SCATTER, k, c), b - a).await?;
                recvd += 4 * data.len() as u64;
                for (x, y) in buf[a..b].iter_mut().zip(&data) {
                    *x += *y;
                }
                self.pool.give(data);
                if k + 1 < p - 1 {
                    self.send(hdr(PH_REDUCE_SCATTER, k + 1, c), &buf[a..b])
                        .await?;
                } else {
                    // Segment r+1 is now fully reduced here: scale it once, so every rank ends with
                    // exactly these bits, and start the all-gather with it.
                    let inv = p as f32;
                    for x in &mut buf[a..b] {
                        *x /= inv;
                    }
                    self.send(hdr(PH_ALL_GATHER, 0, c), &buf[a..b]).await?;
                }
                sent += 4 * (b - a) as u64;
            }
        }
        for k in 0..p - 1 {
            let seg = (r + p - k) % p;
            for (c, (a, b)) in self.chunks(self.segment(n, seg)).into_iter().enumerate() {
                let data = self.recv(hdr(PH_ALL_GATHER, k, c), b - a).await?;
                recvd += 4 * data.len() as u64;
                buf[a..b].copy_from_slice(&data);
                self.pool.give(data);
                if k + 1 < p - 1 {
                    self.send(hdr(PH_ALL_GATHER, k + 1, c), &buf[a..b]).await?;
                    sent += 4 * (b - a) as u64;
                }
            }
        }
        self.totals.0 += sent;
        self.totals.1 += recvd;
        Ok(CollStats {
            bytes_sent: sent,
            bytes_received: recvd,
            elapsed: t0.elapsed(),
        })
    }

    /// Copy `root`'s `buf` into every rank's `buf`, pipelined along the ring.
    pub(crate) async fn broadcast(&mut self, root: usize, buf: &mut [f32]) -> Result<(), NetError> {
        if root >= self.world {
            return Err(NetError::Config(format!(
                "broadcast root {root} is outside world {}",
                self.world
            )));
        }
        let op = self.next_op();
        if self.world == 1 {
            return Ok(());
        }
        for (c, (a, b)) in self.chunks((0, buf.len())).into_iter().enumerate() {
            let h = CollHeader {
                op,
                phase: PH_BROADCAST,
                step: 0,
                chunk: c as u32,
            };
            if self.rank != root {
                let data = self.recv(h, b - a).await?;
                buf[a..b].copy_from_slice(&data);
                self.pool.give(data);
                self.totals.1 += 4 * (b - a) as u64;
            }
            if self.right != root {
                self.send(h, &buf[a..b]).await?;
                self.totals.0 += 4 * (b - a) as u64;
            }
        }
        Ok(())
    }

    /// Returns once every rank has entered the barrier (a token goes `world - 1` hops round the ring).
    pub(crate) async fn barrier(&mut self) -> Result<(), NetError> {
        let op = self.next_op();
        let p = self.world;
        if p == 1 {
            return Ok(());
        }
        let token = |step: usize| CollHeader {
            op,
            phase: PH_BARRIER,
            step: step as u32,
            chunk: 0,
        };
        self.send(token(0), &[]).await?;
        for k in 0..p - 1 {
            let d = self.recv(token(k), 0).await?;
            self.pool.give(d);
            if k + 1 < p - 1 {
                self.send(token(k + 1), &[]).await?;
            }
        }
        Ok(())
    }

    /// One relay round (RelaySum on a spanning tree): sends `outgoing[k]` to `peers[k]` and
    /// returns what each of them sent this round, `lens[k]` floats from `peers[k]`. Every worker
    /// of the run must take part (it is a collective: the same operation number everywhere); a
    /// lost peer fails it at once, naming the rank.
    pub(crate) async fn relay(
        &mut self,
        peers: &[usize],
        outgoing: &[Vec<f32>],
        lens: &[usize],
    ) -> Result<Vec<Vec<f32>>, NetError> {
        let op = self.next_op();
        for (&to, data) in peers.iter().zip(outgoing) {
            for (c, (a, b)) in self.chunks((0, data.len())).into_iter().enumerate() {
                let hdr = CollHeader {
                    op,
                    phase: PH_RELAY,
                    step: 0,
                    chunk: c as u32,
                };
                self.send_to(to, hdr, &data[a..b]).await?;
                self.totals.0 += 4 * (b - a) as u64;
            }
        }
        let mut received = Vec::with_capacity(peers.len());
        for (&from, &len) in peers.iter().zip(lens) {
            let mut buf = Vec::with_capacity(len);
            for (c, (a, b)) in self.chunks((0, len)).into_iter().enumerate() {
                let hdr = CollHeader {
                    op,
                    phase: PH_RELAY,
                    step: 0,
                    chunk: c as u32,
                };
                let data = self.recv_from(from, hdr, b - a).await?;
                buf.extend_from_slice(&data);
                self.pool.give(data);
                self.totals.1 += 4 * (b - a) as u64;
            }
            received.push(buf);
        }
        Ok(received)
    }

    /// Queue `data` for `to` (any linked peer), waiting for room in its chunk window. Nothing is
    /// read meanwhile: a relay message is a few chunks, which the peer's reader takes in whatever
    /// it is doing.
    async fn send_to(&mut self, to: usize, hdr: CollHeader, data: &[f32]) -> Result<(), NetError> {
        let Some(port) = self.ports.get(&to) else {
            return Err(self.explain_loss(to, hdr.op, "no link").await);
        };
        let (outbox, window) = (port.link.outbox.clone(), port.link.window.clone());
        let room = tokio::time::timeout(self.timeout, async {
            let held = window.acquire_owned().await;
            let slot = outbox.reserve().await;
            (held, slot)
        })
        .await;
        match room {
            Ok((Ok(held), Ok(slot))) => {
                let frame = Frame::Coll {
                    hdr,
                    data: self.pool.copy_of(data),
                };
                slot.send(Outgoing::Chunk {
                    frame,
                    _window: held,
                });
                Ok(())
            }
            Ok(_) => Err(self
                .explain_loss(to, hdr.op, "its connection is closed")
                .await),
            Err(_) => {
                let why = format!("it took no data for {:.0}s", self.timeout.as_secs_f64());
                self.abort_others(to, hdr.op, to, &why);
                Err(NetError::MemberLost { rank: to, why })
            }
        }
    }

    /// Queue `data` (copied once into a pooled buffer) for the right neighbour, waiting for room in
    /// its chunk window and, meanwhile, taking what the left neighbour sends.
    async fn send(&mut self, hdr: CollHeader, data: &[f32]) -> Result<(), NetError> {
        let (to, from) = (self.right, self.left);
        let Some(port) = self.ports.get(&to) else {
            return Err(self.explain_loss(to, hdr.op, "no link").await);
        };
        let (outbox, window) = (port.link.outbox.clone(), port.link.window.clone());
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut left_open = true;
        while let Some(left) = self.ports.get_mut(&from) {
            tokio::select! {
                room = async {
                    let held = window.clone().acquire_owned().await;
                    let slot = outbox.reserve().await;
                    (held, slot)
                } => {
                    let (Ok(held), Ok(slot)) = room else { break };
                    let frame = Frame::Coll { hdr, data: self.pool.copy_of(data) };
                    slot.send(Outgoing::Chunk { frame, _window: held });
                    return Ok(());
                }
                // Kept in order for `recv`, failures included: a left neighbour that has sent
                // everything and left (its `Lost` comes last) must not fail a send to the right.
                m = left.link.inbox.recv(), if left_open => match m {
                    Some(m) => left.early.push_back(m),
                    None => left_open = false,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let why = format!("it took no data for {:.0}s", self.timeout.as_secs_f64());
                    self.abort_others(to, hdr.op, to, &why);
                    return Err(NetError::MemberLost { rank: to, why });
                }
            }
        }
        Err(self
            .explain_loss(to, hdr.op, "its connection is closed")
            .await)
    }

    /// The chunk `want` (of `len` floats) from the left neighbour.
    async fn recv(&mut self, want: CollHeader, len: usize) -> Result<Vec<f32>, NetError> {
        self.recv_from(self.left, want, len).await
    }

    /// The chunk `want` (of `len` floats) from `from`.
    async fn recv_from(
        &mut self,
        from: usize,
        want: CollHeader,
        len: usize,
    ) -> Result<Vec<f32>, NetError> {
        loop {
            let port = self.ports.get_mut(&from).ok_or(NetError::MemberLost {
                rank: from,
                why: "no link".into(),
            })?;
            let got = match tokio::time::timeout(self.timeout, port.next()).await {
                Ok(got) => got,
                Err(_) => {
                    let why = format!("no data for {:.0}s", self.timeout.as_secs_f64());
                    self.abort_others(from, want.op, from, &why);
                    return Err(NetError::MemberLost { rank: from, why });
                }
            };
            match self.judge(from, want, got) {
                Outcome::Data(d) if d.len() == len => return Ok(d),
                Outcome::Data(d) => {
                    self.pool.give(d);
                    return Err(NetError::Collective {
                        rank: from,
                        why: "chunk of the wrong length".into(),
                    });
                }
                Outcome::Stale => {}
                Outcome::Failed(e) => return Err(e),
            }
        }
    }

    /// What `got` from `from` means for the chunk `want`.
    fn judge(&self, from: usize, want: CollHeader, got: Option<RingIn>) -> Outcome {
        match got {
            Some(RingIn::Chunk(h, data)) if h == want => Outcome::Data(data),
            Some(RingIn::Chunk(h, data)) => {
                self.pool.give(data);
                if h.op < want.op {
                    return Outcome::Stale;
                }
                Outcome::Failed(NetError::Collective {
                    rank: from,
                    why: format!(
                        "expected op {} phase {} step {} chunk {}, got op {} phase {} step {} chunk {}: \
                         every worker must call the same collectives in the same order with the same sizes",
                        want.op, want.phase, want.step, want.chunk, h.op, h.phase, h.step, h.chunk
                    ),
                })
            }
            other => match self.failure(from, want.op, other) {
                Some(e) => Outcome::Failed(e),
                None => Outcome::Stale,
            },
        }
    }

    /// A failure reported by `from` during collective `op`: relay it to the other ring neighbour
    /// and name the lost rank. `None` for an abort of an earlier collective (stale).
    fn failure(&self, from: usize, op: u64, got: Option<RingIn>) -> Option<NetError> {
        let (rank, why, relay) = match got {
            Some(RingIn::Abort { op: o, .. }) if o < op => return None,
            Some(RingIn::Abort { op: o, rank, why }) => {
                (rank, format!("reported by rank {from}: {why}"), (o, why))
            }
            Some(RingIn::Lost(why)) => (from, why.clone(), (op, why)),
            Some(RingIn::Chunk(_, data)) => {
                self.pool.give(data);
                return None;
            }
            None => {
                let why = "its connection was lost earlier".to_string();
                (from, why.clone(), (op, why))
            }
        };
        self.abort_others(from, relay.0, rank, &relay.1);
        Some(NetError::MemberLost { rank, why })
    }

    /// The link to `to` is gone. If `to` relayed the real cause before leaving (a collective abort
    /// naming the lost rank), report that; else report `to` itself. Tells the other ring neighbour.
    /// The link's reader may still hold frames the peer sent before closing: wait (briefly, bounded)
    /// until it has delivered everything.
    async fn explain_loss(&mut self, to: usize, op: u64, default_why: &str) -> NetError {
        let mut culprit = (to, default_why.to_string());
        let end = tokio::time::Instant::now() + LAST_WORDS;
        if let Some(port) = self.ports.get_mut(&to) {
            while let Ok(Some(m)) = tokio::time::timeout_at(end, port.next()).await {
                match m {
                    RingIn::Abort { op: o, rank, why } if o >= op => {
                        culprit = (rank, format!("reported by rank {to}: {why}"));
                        break;
                    }
                    RingIn::Chunk(_, d) => self.pool.give(d),
                    RingIn::Lost(_) => break,
                    RingIn::Abort { .. } => {}
                }
            }
        }
        self.abort_others(to, op, culprit.0, &culprit.1);
        NetError::MemberLost {
            rank: culprit.0,
            why: culprit.1,
        }
    }

    /// Tell the ring neighbours other than `except` that collective `op` lost `rank`. Best effort:
    /// a neighbour whose queue is full or closed finds out on its own.
    fn abort_others(&self, except: usize, op: u64, rank: usize, why: &str) {
        for (&p, port) in &self.ports {
            if p == except {
                continue;
            }
            let abort = Frame::Msg(Msg::CollAbort {
                op,
                rank: rank as u32,
                why: why.to_string(),
            });
            if port.link.outbox.try_send(Outgoing::Frame(abort)).is_err() {
                debug!(
                    "rank {}: could not relay the loss of rank {rank} to rank {p}",
                    self.rank
                );
            }
        }
    }
}
