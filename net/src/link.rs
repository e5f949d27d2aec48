//! One link to a neighbour: a *reader* task that decodes whole frames and routes them (pairing
//! and snapshots to the driver, collective traffic to the collectives), and a *writer* task that owns
//! the write half and writes queued frames in order. Both stop when their link's token is cancelled;
//! neither ever decides anything about the peer.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, FrameReader, FrameWriter};
use crate::error::FrameError;
use crate::frame::{CollHeader, Frame, Kind, Limits, Msg, PairMsg};
use crate::pool::BufPool;

/// Collective chunks a link may hold queued or being written at once: enough to keep the socket
/// busy while the next chunk is reduced, few enough that the pairing frames queued behind them
/// are not delayed by more than a few MiB of data.
pub(crate) const CHUNK_WINDOW: usize = 4;

/// Queue room kept for the driver's frames on each link: a pairing exchange needs a handful, a
/// failure gossip one per rank. The driver never waits for room (`try_send`): finding the queue
/// full means the peer stopped reading, which counts as a failure of the peer.
pub(crate) fn control_room(world: usize) -> usize {
    64 + world
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Frame(Frame),
    /// A collective chunk, holding one of the link's [`CHUNK_WINDOW`] slots until it is written.
    Chunk {
        frame: Frame,
        _window: OwnedSemaphorePermit,
    },
    /// Write everything queued before this, then close the write direction.
    Close,
}

/// What a link tells the driver.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    Pair {
        from: usize,
        msg: PairMsg,
    },
    Snapshot {
        from: usize,
        seq: u64,
        data: Vec<f32>,
    },
    /// The writer finished writing a snapshot (or failed to): the buffer comes back.
    SnapshotSent {
        peer: usize,
        seq: u64,
        data: Vec<f32>,
        written: Result<(), String>,
    },
    /// The connection broke (end of stream, garbage, write error).
    Down {
        peer: usize,
        why: String,
    },
    Goodbye {
        peer: usize,
        reason: String,
    },
    /// The peer gossips that `rank` failed.
    PeerDown {
        rank: usize,
    },
    /// The peer passes on that `origin` stopped the run.
    Stop {
        origin: usize,
        reason: String,
    },
    /// The peer did not average this worker's snapshot of exchange `seq`.
    Refused {
        peer: usize,
        seq: u64,
        why: String,
    },
}

/// What a link tells the collectives (ring links only).
#[derive(Debug)]
pub(crate) enum RingIn {
    Chunk(CollHeader, Vec<f32>),
    Abort {
        op: u64,
        rank: usize,
        why: String,
    },
    /// The link is gone; no more chunks will come.
    Lost(String),
}

/// The driver's handle on one link.
#[derive(Debug)]
pub(crate) struct LinkHandle {
    outbox: mpsc::Sender<Outgoing>,
    /// Stops both tasks.
    stop: CancellationToken,
    /// Stops the reader only (a child of `stop`).
    stop_reading: CancellationToken,
    writer: JoinHandle<()>,
}

impl LinkHandle {
    /// Queue a frame without waiting; a full queue hands the frame back.
    pub(crate) fn try_send(&self, frame: Frame) -> Result<(), TrySendError<Outgoing>> {
        self.outbox.try_send(Outgoing::Frame(frame))
    }

    /// Frames queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.outbox.max_capacity() - self.outbox.capacity()
    }

    /// The peer is gone or leaving: stop reading, let the writer flush what is queued and close
    /// the connection cleanly (or stop it at once if even the close cannot be queued).
    pub(crate) fn hang_up(&self) {
        self.stop_reading.cancel();
        if self.outbox.try_send(Outgoing::Close).is_err() {
            self.stop.cancel();
        }
    }

    /// Stop both tasks now: the peer is frozen, nothing queued for it matters and its writer may be
    /// stuck on a full socket.
    pub(crate) fn cut(&self) {
        self.stop.cancel();
    }

    /// Queue a goodbye and the close behind it.
    pub(crate) fn say_goodbye(&self, reason: &str) {
        let bye = Outgoing::Frame(Frame::Msg(Msg::Goodbye {
            reason: reason.to_string(),
        }));
        if self.outbox.try_send(bye).is_err() || self.outbox.try_send(Outgoing::Close).is_err() {
            self.stop.cancel();
        }
    }

    /// Wait until `deadline` for the writer to flush and close, then stop everything.
    pub(crate) async fn finish(self, deadline: tokio::time::Instant) {
        let _ = tokio::time::timeout_at(deadline, self.writer).await;
        self.stop.cancel();
    }

    /// A handle on a queue the test reads itself (no socket, no tasks).
    #[cfg(test)]
    pub(crate) fn detached(outbox: mpsc::Sender<Outgoing>) -> LinkHandle {
        let stop = CancellationToken::new();
        LinkHandle {
            outbox,
            stop_reading: stop.child_token(),
            stop,
            writer: tokio::spawn(async {}),
        }
    }
}

/// The collectives' end of a ring link.
#[derive(Debug)]
pub(crate) struct RingPort {
    pub(crate) outbox: mpsc::Sender<Outgoing>,
    pub(crate) window: Arc<Semaphore>,
    pub(crate) inbox: mpsc::Receiver<RingIn>,
}

/// Queue sizes of the links of one mesh.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkCaps {
    /// Frames queued for the writer: the driver's room plus the chunk window.
    pub(crate) outbox: usize,
    /// Collective messages queued for the collectives, on ring links.
    pub(crate) ring: usize,
}

impl LinkCaps {
    pub(crate) fn new(world: usize, params: usize, chunk_floats: usize) -> LinkCaps {
        LinkCaps {
            outbox: control_room(world) + CHUNK_WINDOW,
            // A neighbour may run a whole model-sized all-reduce, or a broadcast and the next
            // collective, before this worker enters it (it only needs the others' data): room for
            // two model-sized collectives of chunks (each segment may round up to one more) and
            // the aborts. Past that the reader waits, which holds back this link's pairing frames
            // until the caller enters the collective.
            ring: 2 * (params.div_ceil(chunk_floats.max(1)) + world) + 8,
        }
    }
}

/// Start a link per authenticated connection; ring links also get a port for the collectives.
/// Every link task stops when `parent` is cancelled.
pub(crate) fn spawn_all(
    conns: BTreeMap<usize, Connection>,
    is_ring: impl Fn(usize) -> bool,
    limits: Limits,
    caps: LinkCaps,
    pool: &BufPool,
    to_driver: &mpsc::Sender<LinkEvent>,
    parent: &CancellationToken,
) -> (BTreeMap<usize, LinkHandle>, BTreeMap<usize, RingPort>) {
    let mut links = BTreeMap::new();
    let mut ports = BTreeMap::new();
    for (peer, conn) in conns {
        let ring = is_ring(peer).then_some(caps.ring);
        let (link, port) = spawn(
            peer,
            conn,
            limits,
            caps.outbox,
            ring,
            pool,
            to_driver,
            parent,
        );
        links.insert(peer, link);
        if let Some(port) = port {
            ports.insert(peer, port);
        }
    }
    (links, ports)
}

/// Start the reader and writer of the link to `peer` over an authenticated connection.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    peer: usize,
    mut conn: Connection,
    limits: Limits,
    outbox_cap: usize,
    ring_cap: Option<usize>,
    pool: &BufPool,
    to_driver: &mpsc::Sender<LinkEvent>,
    parent: &CancellationToken,
) -> (LinkHandle, Option<RingPort>) {
    conn.set_limits(limits);
    let (reader, writer) = conn.into_split();
    let stop = parent.child_token();
    let stop_reading = stop.child_token();
    let (outbox, outbox_rx) = mpsc::channel(outbox_cap);
    let (ring_tx, port) = match ring_cap {
        Some(cap) => {
            let (tx, rx) = mpsc::channel(cap);
            let port = RingPort {
                outbox: outbox.clone(),
                window: Arc::new(Semaphore::new(CHUNK_WINDOW)),
                inbox: rx,
            };
            (Some(tx), Some(port))
        }
        None => (None, None),
    };
    tokio::spawn(read_loop(
        peer,
        reader,
        to_driver.clone(),
        ring_tx,
        pool.clone(),
        stop_reading.clone(),
    ));
    let writer = tokio::spawn(write_loop(
        peer,
        writer,
        outbox_rx,
        to_driver.clone(),
        pool.clone(),
        stop.clone(),
    ));
    let handle = LinkHandle {
        outbox,
        stop,
        stop_reading,
        writer,
    };
    (handle, port)
}

/// Where a received frame goes.
#[derive(Debug)]
enum Route {
    Driver(LinkEvent),
    Ring(RingIn),
    /// The peer leaves: both sides are told, and the reader stops.
    Goodbye(String),
    Unexpected(Kind),
}

/// Pure: where a frame from `peer` goes.
fn route(peer: usize, frame: Frame) -> Route {
    match frame {
        Frame::Snapshot { seq, data } => Route::Driver(LinkEvent::Snapshot {
            from: peer,
            seq,
            data,
        }),
        Frame::Coll { hdr, data } => Route::Ring(RingIn::Chunk(hdr, data)),
        Frame::Msg(Msg::Pair(msg)) => Route::Driver(LinkEvent::Pair { from: peer, msg }),
        Frame::Msg(Msg::CollAbort { op, rank, why }) => Route::Ring(RingIn::Abort {
            op,
            rank: rank as usize,
            why,
        }),
        Frame::Msg(Msg::PeerDown { rank }) => Route::Driver(LinkEvent::PeerDown {
            rank: rank as usize,
        }),
        Frame::Msg(Msg::Stop { origin, reason }) => Route::Driver(LinkEvent::Stop {
            origin: origin as usize,
            reason,
        }),
        Frame::Msg(Msg::Refused { seq, why }) => {
            Route::Driver(LinkEvent::Refused { peer, seq, why })
        }
        Frame::Msg(Msg::Goodbye { reason }) => Route::Goodbye(reason),
        other => Route::Unexpected(other.kind()),
    }
}

/// Send, waiting for room (backpressure on the socket), unless the link is told to stop first.
/// `false` when the message could not be delivered.
async fn deliver<T>(tx: &mpsc::Sender<T>, msg: T, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        sent = tx.send(msg) => sent.is_ok(),
    }
}

/// To the collectives, if this is a ring link; chunks nobody will read go back to the pool.
async fn deliver_ring(
    tx: &Option<mpsc::Sender<RingIn>>,
    msg: RingIn,
    pool: &BufPool,
    stop: &CancellationToken,
) {
    match tx {
        Some(tx) => {
            deliver(tx, msg, stop).await;
        }
        None => {
            if let RingIn::Chunk(_, data) = msg {
                pool.give(data);
            }
        }
    }
}

async fn read_loop(
    peer: usize,
    mut reader: FrameReader<OwnedReadHalf>,
    to_driver: mpsc::Sender<LinkEvent>,
    to_ring: Option<mpsc::Sender<RingIn>>,
    pool: BufPool,
    stop: CancellationToken,
) {
    let why = loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return,
            frame = reader.read_frame() => frame,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(FrameError::Closed) => break "connection closed".to_string(),
            Err(e) => break e.to_string(),
        };
        match route(peer, frame) {
            Route::Driver(ev) => {
                if !deliver(&to_driver, ev, &stop).await {
                    return; // the driver is gone or the link stopped: shutting down
                }
            }
            Route::Ring(msg) => deliver_ring(&to_ring, msg, &pool, &stop).await,
            Route::Goodbye(reason) => {
                let lost = RingIn::Lost(format!("it left the mesh ({reason})"));
                deliver_ring(&to_ring, lost, &pool, &stop).await;
                deliver(&to_driver, LinkEvent::Goodbye { peer, reason }, &stop).await;
                return;
            }
            Route::Unexpected(kind) => {
                break format!("unexpected {} frame after the handshake", kind.name())
            }
        }
    };
    deliver_ring(&to_ring, RingIn::Lost(why.clone()), &pool, &stop).await;
    deliver(&to_driver, LinkEvent::Down { peer, why }, &stop).await;
}

async fn write_loop(
    peer: usize,
    mut writer: FrameWriter<OwnedWriteHalf>,
    mut outbox: mpsc::Receiver<Outgoing>,
    to_driver: mpsc::Sender<LinkEvent>,
    pool: BufPool,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = outbox.recv() => next,
        };
        let (frame, window) = match next {
            None => return,
            Some(Outgoing::Close) => {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = writer.shutdown() => {}
                }
                return;
            }
            Some(Outgoing::Frame(frame)) => (frame, None),
            Some(Outgoing::Chunk { frame, _window }) => (frame, Some(_window)),
        };
        let written = tokio::select! {
            _ = stop.cancelled() => return,
            written = writer.write_frame(&frame) => written,
        };
        drop(window); // the bytes are in the socket: the collective may queue the next chunk
        match frame {
            Frame::Snapshot { seq, data } => {
                let written = written.as_ref().map(|_| ()).map_err(|e| e.to_string());
                let sent = LinkEvent::SnapshotSent {
                    peer,
                    seq,
                    data,
                    written,
                };
                deliver(&to_driver, sent, &stop).await;
            }
            Frame::Coll { data, .. } => pool.give(data),
            Frame::Msg(_) => {}
        }
        if let Err(e) = written {
            let why = format!("write failed: {e}");
            deliver(&to_driver, LinkEvent::Down { peer, why }, &stop).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_routed_by_kind() {
        let pair = route(3, Frame::Msg(Msg::Pair(PairMsg::Busy { seq: 2 })));
        assert!(matches!(
            pair,
            Route::Driver(LinkEvent::Pair {
                from: 3,
                msg: PairMsg::Busy { seq: 2 }
            })
        ));
        let snap = route(
            3,
            Frame::Snapshot {
                seq: 5,
                data: vec![1.0],
            },
        );
        assert!(matches!(
            snap,
            Route::Driver(LinkEvent::Snapshot {
                from: 3,
                seq: 5,
                ..
            })
        ));
        let abort = route(
            3,
            Frame::Msg(Msg::CollAbort {
                op: 1,
                rank: 7,
                why: "x".into(),
            }),
        );
        assert!(matches!(abort, Route::Ring(RingIn::Abort { rank: 7, .. })));
        let gossip = route(3, Frame::Msg(Msg::PeerDown { rank: 1 }));
        assert!(matches!(
            gossip,
            Route::Driver(LinkEvent::PeerDown { rank: 1 })
        ));
        let bye = route(
            3,
            Frame::Msg(Msg::Goodbye {
                reason: "done".into(),
            }),
        );
        assert!(matches!(bye, Route::Goodbye(r) if r == "done"));
        let stray = route(3, Frame::Msg(Msg::Register { port: 1 }));
        assert!(matches!(stray, Route::Unexpected(Kind::Register)));
    }
}
