//! What passes between the caller and the pairing driver: the events the mesh hands out
//! ([`MeshEvent`], [`ExchangeRequest`], [`Exchanged`], [`ExchangeStats`]), the commands the caller's
//! side sends back, the worker clock ([`ClockSegment`]) and the statistics ([`MeshStats`]). Plain
//! vocabulary: it sits below the driver and the handle, which both speak it.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::error::NetError;
use crate::pairing::EdgeCounters;
use crate::pool::BufPool;

/// What the caller's side ([`crate::Mesh`], [`ExchangeRequest`], [`crate::ShutdownHandle`]) asks.
#[derive(Debug)]
pub(crate) enum Command {
    Supplied {
        peer: usize,
        seq: u64,
        data: Vec<f32>,
        at: Instant,
    },
    Declined {
        peer: usize,
        seq: u64,
    },
    /// This worker stops training: tell every worker (flooded along the links).
    AnnounceStop {
        reason: String,
    },
    /// Tell the neighbours goodbye and the caller [`MeshEvent::ShutdownRequested`].
    Interrupt {
        reason: String,
    },
    /// Tell `peer` its snapshot of exchange `seq` was not averaged in, and why.
    Refuse {
        peer: usize,
        seq: u64,
        why: String,
    },
    /// Say goodbye on every link, flush, stop.
    Shutdown {
        reason: String,
        done: oneshot::Sender<()>,
    },
}

/// Whether this worker takes part in pairing: state, not events, so it travels in a `watch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Participation {
    pub(crate) retired: bool,
    pub(crate) paused: bool,
}

/// The worker clock from one instant on: `tau` at `at`, then one unit every `seconds_per_unit`
/// (standing still when `None`). The runtime sets a new segment whenever its estimate of the step
/// time changes; the mesh extrapolates it to know when an edge event falls due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockSegment {
    pub tau: f64,
    pub at: tokio::time::Instant,
    pub seconds_per_unit: Option<f64>,
}

impl ClockSegment {
    /// A clock standing at `tau`.
    pub fn frozen(tau: f64) -> ClockSegment {
        ClockSegment {
            tau,
            at: tokio::time::Instant::now(),
            seconds_per_unit: None,
        }
    }

    /// A clock at `tau` at the std instant `at`, one unit every `seconds_per_unit`.
    pub fn running(tau: f64, at: std::time::Instant, seconds_per_unit: f64) -> ClockSegment {
        ClockSegment {
            tau,
            at: tokio::time::Instant::from_std(at),
            seconds_per_unit: Some(seconds_per_unit).filter(|s| s.is_finite() && *s > 0.0),
        }
    }

    /// The clock's value at `t` (never less than `tau`).
    pub fn tau_at(&self, t: tokio::time::Instant) -> f64 {
        match self.seconds_per_unit {
            Some(s) => self.tau + t.saturating_duration_since(self.at).as_secs_f64() / s,
            None => self.tau,
        }
    }

    /// When the clock reaches `tau`: `None` if it stands still below it (or `tau` is not finite).
    pub fn instant_of(&self, tau: f64) -> Option<tokio::time::Instant> {
        if !tau.is_finite() {
            return None;
        }
        if tau <= self.tau {
            return Some(self.at);
        }
        let s = self.seconds_per_unit?;
        Some(self.at + Duration::from_secs_f64(((tau - self.tau) * s).min(1e9)))
    }
}

/// Per-exchange statistics.
#[derive(Clone, Debug)]
pub struct ExchangeStats {
    pub peer: usize,
    pub seq: u64,
    /// This worker owned the edge and proposed.
    pub initiator: bool,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// From agreement to the caller supplying its snapshot.
    pub wait_for_snapshot: Duration,
    /// From agreement to both snapshots having crossed.
    pub total: Duration,
    /// Missed proposals (all edges, both directions) since the previous completed exchange.
    pub missed_since_previous: u64,
}

/// A completed exchange: the peer's snapshot, and the caller's own buffer handed back for reuse.
#[derive(Debug)]
pub struct Exchanged {
    pub peer: usize,
    pub seq: u64,
    /// The peer's parameters at the moment it supplied them.
    pub theirs: Vec<f32>,
    /// The snapshot this worker sent (the `s_i` of the update rule), returned for reuse.
    pub mine: Vec<f32>,
    pub stats: ExchangeStats,
    pub(crate) commands: mpsc::Sender<Command>,
}

impl Exchanged {
    /// This worker does not average the peer's snapshot in (it holds non-finite values, say):
    /// the peer is told why ([`MeshEvent::SnapshotRefused`] there), so it can log it.
    pub fn refuse(&self, why: &str) {
        let _ = self.commands.try_send(Command::Refuse {
            peer: self.peer,
            seq: self.seq,
            why: why.to_string(),
        });
    }
}

/// A restarted neighbour's request for this worker's current training state
/// ([`MeshEvent::StateRequested`]). The reply goes on a connection of its own, written in the
/// background, so supplying returns at once and never delays pairing.
pub struct StateRequest {
    pub peer: usize,
    conn: crate::connection::Connection,
    ring_op: u64,
    params: usize,
}

impl std::fmt::Debug for StateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateRequest")
            .field("peer", &self.peer)
            .field("ring_op", &self.ring_op)
            .finish()
    }
}

impl StateRequest {
    /// The largest buffer [`StateRequest::supply`] sends (the mesh's snapshot length).
    pub fn params(&self) -> usize {
        self.params
    }

    pub(crate) fn new(
        peer: usize,
        conn: crate::connection::Connection,
        ring_op: u64,
        params: usize,
    ) -> Self {
        StateRequest {
            peer,
            conn,
            ring_op,
            params,
        }
    }

    /// Send the state: this worker's clock, a description for the runtime (`meta`) and the
    /// buffers (each at most the model's parameter count; shorter ones travel zero-padded to it,
    /// as every payload frame carries exactly that many). Must be called within a Tokio runtime.
    /// A longer state goes as several buffers of [`StateRequest::params`] values.
    pub fn supply(self, clock: f64, mut buffers: Vec<Vec<f32>>, meta: String) {
        if let Some(long) = buffers.iter().find(|b| b.len() > self.params) {
            let why = format!(
                "a state buffer of {} values is longer than the model's {}",
                long.len(),
                self.params
            );
            warn!("{why}");
            return self.refuse(&why);
        }
        for b in &mut buffers {
            b.resize(self.params, 0.0);
        }
        let StateRequest {
            peer,
            mut conn,
            ring_op,
            ..
        } = self;
        tokio::spawn(async move {
            let header = crate::frame::Msg::State {
                clock,
                ring_op,
                buffers: buffers.len() as u32,
                meta,
            };
            let mut result = conn.write_msg(&header).await;
            for (i, data) in buffers.into_iter().enumerate() {
                if result.is_err() {
                    break;
                }
                let frame = crate::frame::Frame::Snapshot {
                    seq: i as u64,
                    data,
                };
                result = conn.write_frame(&frame).await;
            }
            match result {
                Ok(()) => {
                    let _ = conn.shutdown().await;
                }
                Err(e) => warn!("sending the training state to rank {peer} failed: {e}"),
            }
        });
    }

    /// Tell the neighbour why it gets no state (it will ask another).
    pub fn refuse(self, why: &str) {
        let mut conn = self.conn;
        let verdict = crate::frame::Msg::Verdict {
            ok: false,
            reason: why.to_string(),
        };
        tokio::spawn(async move {
            let _ = conn.write_msg(&verdict).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// "Exchange with `peer` now": hand over this worker's snapshot with [`ExchangeRequest::supply`].
/// Dropping it without supplying calls the exchange off (the peer is told at once).
#[derive(Debug)]
pub struct ExchangeRequest {
    pub peer: usize,
    pub seq: u64,
    pub initiator: bool,
    params: usize,
    commands: mpsc::Sender<Command>,
    pool: BufPool,
    done: bool,
}

impl ExchangeRequest {
    pub(crate) fn new(
        peer: usize,
        seq: u64,
        initiator: bool,
        params: usize,
        commands: mpsc::Sender<Command>,
        pool: BufPool,
    ) -> ExchangeRequest {
        ExchangeRequest {
            peer,
            seq,
            initiator,
            params,
            commands,
            pool,
            done: false,
        }
    }

    /// Drop it without telling the driver (the driver already called the exchange off).
    pub(crate) fn disarm(mut self) {
        self.done = true;
    }

    /// Send `snapshot` (exactly the model's parameter count) to the peer. Returns at once; the
    /// result arrives as [`MeshEvent::Exchanged`] or [`MeshEvent::ExchangeFailed`].
    pub fn supply(mut self, snapshot: Vec<f32>) -> Result<(), NetError> {
        self.check_len(snapshot.len())?;
        self.done = true;
        let supplied = Command::Supplied {
            peer: self.peer,
            seq: self.seq,
            data: snapshot,
            at: Instant::now(),
        };
        // Never waits: this is called from the compute loop. The queue holds one command per
        // request the caller took, so it is full only if the driver stopped.
        match self.commands.try_send(supplied) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(NetError::ShutDown),
            Err(TrySendError::Full(cmd)) => {
                if let Command::Supplied { data, .. } = cmd {
                    self.pool.give(data);
                }
                Err(NetError::Exchange {
                    peer: self.peer,
                    why: format!(
                        "the mesh's command queue is full ({} commands): its driver is not keeping up",
                        self.commands.max_capacity()
                    ),
                })
            }
        }
    }

    /// Like [`supply`](Self::supply) from a borrowed slice (one memcpy into a pooled buffer).
    pub fn supply_slice(self, snapshot: &[f32]) -> Result<(), NetError> {
        self.check_len(snapshot.len())?;
        let buf = self.pool.copy_of(snapshot);
        self.supply(buf)
    }

    fn check_len(&self, got: usize) -> Result<(), NetError> {
        if got == self.params {
            Ok(())
        } else {
            Err(NetError::SnapshotLen {
                got,
                want: self.params,
            })
        }
    }
}

impl Drop for ExchangeRequest {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: if it cannot be queued the exchange times out instead, which is not
            // held against the peer (this worker never supplied).
            let _ = self.commands.try_send(Command::Declined {
                peer: self.peer,
                seq: self.seq,
            });
        }
    }
}

/// What the mesh tells the runtime.
#[derive(Debug)]
pub enum MeshEvent {
    /// A pairing was agreed: supply this worker's snapshot now.
    Exchange(ExchangeRequest),
    /// Both snapshots crossed.
    Exchanged(Exchanged),
    /// The exchange was called off or failed; the parameters must not be updated.
    ExchangeFailed { peer: usize, seq: u64, why: String },
    /// A neighbour is gone: dropped from pairing. `graceful` when it said goodbye.
    PeerLost {
        peer: usize,
        why: String,
        graceful: bool,
    },
    /// The live graph fell apart into these components (warned once per change).
    GraphSplit { components: Vec<Vec<usize>> },
    /// A neighbour that had failed (or left) came back: its link is open again and pairing with
    /// it resumes.
    PeerRejoined { peer: usize },
    /// A restarted neighbour asks for this worker's training state: answer with
    /// [`StateRequest::supply`] (or [`StateRequest::refuse`]).
    StateRequested(StateRequest),
    /// Neighbour `by` did not average this worker's snapshot of exchange `seq` (see
    /// [`Exchanged::refuse`]).
    SnapshotRefused { by: usize, seq: u64, why: String },
    /// Ctrl-C or a [`ShutdownHandle`] asked to stop; neighbours have been told.
    ShutdownRequested,
    /// Another worker stopped training (it reached its stop rule), so the run ends: every worker
    /// stops at its next step.
    RunStopping { origin: usize, reason: String },
}

/// Cumulative statistics of the mesh.
#[derive(Clone, Debug, Default)]
pub struct MeshStats {
    pub edges: BTreeMap<usize, EdgeCounters>,
    pub exchanges: u64,
    /// Bytes of the pairwise exchanges (whole frames).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Payload bytes of the collectives (all-reduces, broadcasts) run from this worker.
    pub collective_bytes_sent: u64,
    pub collective_bytes_received: u64,
    pub lost_peers: Vec<usize>,
    pub exchange_timeout: Duration,
    pub proposal_timeout: Duration,
    pub typical_exchange: Option<Duration>,
}

/// Asks the mesh to shut down from anywhere (another task, a signal handler).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    pub(crate) commands: mpsc::Sender<Command>,
}

impl ShutdownHandle {
    pub fn shutdown(&self, reason: &str) {
        let interrupt = Command::Interrupt {
            reason: reason.to_string(),
        };
        if let Err(TrySendError::Full(_)) = self.commands.try_send(interrupt) {
            warn!("shutdown request '{reason}' not delivered: the mesh's command queue is full");
        }
    }
}
