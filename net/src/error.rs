//! One error per failure. Every message says what went wrong *and* what to do about it.

use std::io;

/// Why a single frame could not be decoded. Always local to one connection: the link that produced
/// it is closed, the worker goes on.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed by the peer")]
    Closed,
    #[error("connection closed in the middle of a frame (truncated frame): the peer died or was killed mid-send")]
    Truncated,
    #[error("i/o error on the connection: {0}")]
    Io(#[from] io::Error),
    #[error("unknown frame kind {0}: the peer speaks another protocol or sent garbage; check that every worker runs the same a2cid build")]
    UnknownKind(u8),
    #[error("oversized {kind} frame: {len} bytes announced, the cap for this model is {cap} bytes; the peer runs a different model or sent garbage")]
    Oversized {
        kind: &'static str,
        len: u64,
        cap: u64,
    },
    #[error("malformed {kind} frame: {why}; the peer runs an incompatible build or sent garbage")]
    Malformed { kind: &'static str, why: String },
    #[error("payload of {got} floats where the model has {want}: the peer runs a different model; use the same model on every worker")]
    WrongPayloadLen { got: u64, want: u64 },
}

impl FrameError {
    pub(crate) fn malformed(kind: &'static str, why: impl Into<String>) -> Self {
        FrameError::Malformed {
            kind,
            why: why.into(),
        }
    }
}

/// Why a handshake with a peer was refused. Raised on *both* sides: each side checks the other.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "{peer} is not an a2cid worker (bad magic bytes): check the rendezvous address and port"
    )]
    NotA2cid { peer: String },
    #[error("{peer} speaks mesh protocol version {theirs}, this worker speaks {ours}: run the same a2cid version on every worker")]
    Version {
        peer: String,
        ours: u32,
        theirs: u32,
    },
    #[error("{peer} presented a different cluster secret (HMAC challenge failed): set the same A2CID_SECRET (or --secret-file) on every worker")]
    Secret { peer: String },
    #[error("{peer} belongs to run '{theirs}', this worker to run '{ours}': a stale worker from another run is connecting; kill it or use the same run id")]
    RunId {
        peer: String,
        ours: String,
        theirs: String,
    },
    #[error("{peer} trains a different model (fingerprint {theirs}, ours {ours}): every worker must build the same model with the same layout")]
    Fingerprint {
        peer: String,
        ours: String,
        theirs: String,
    },
    #[error("{peer} thinks the world has {theirs} workers, this worker {ours}: launch every worker with the same world size")]
    World {
        peer: String,
        ours: u32,
        theirs: u32,
    },
    #[error("{peer} claims rank {rank}, which is not expected here ({why}): check the rank assignment of the launch")]
    UnexpectedRank {
        peer: String,
        rank: u32,
        why: String,
    },
    #[error("{peer} refused this worker: {reason}")]
    RefusedByPeer { peer: String, reason: String },
    #[error("handshake with {peer} timed out after {secs:.1}s: the peer is not an a2cid worker, is overloaded, or the network drops packets")]
    Timeout { peer: String, secs: f64 },
    #[error("handshake with {peer} failed: {source}")]
    Frame {
        peer: String,
        #[source]
        source: FrameError,
    },
}

/// Errors of the mesh as a whole.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("could not listen on {addr}: {source}; pick a free port (0 lets the OS choose) or another interface")]
    Bind {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("could not reach rank {rank} at {addr} within {secs:.0}s: {last}; is that worker started and is the port open?")]
    Connect {
        rank: usize,
        addr: String,
        secs: f64,
        last: String,
    },
    #[error("could not reach the rendezvous at {addr} within {secs:.0}s: {last}; start rank 0 first or fix the rendezvous address")]
    Rendezvous {
        addr: String,
        secs: f64,
        last: String,
    },
    #[error("rendezvous timed out after {secs:.0}s with {joined} of {world} workers registered: start all workers or fix the world size{refused}")]
    RendezvousIncomplete {
        secs: f64,
        joined: usize,
        world: usize,
        refused: String,
    },
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("bad mesh configuration: {0}")]
    Config(String),
    #[error(
        "bad SLURM environment: {0}; run inside an allocation (srun) or use an explicit rendezvous"
    )]
    Slurm(String),
    #[error("could not read the cluster secret: {0}")]
    Secret(String),
    #[error("collective operation lost rank {rank} ({why}): the collective cannot complete; restart the run without that worker")]
    MemberLost { rank: usize, why: String },
    #[error("collective protocol error with rank {rank}: {why}")]
    Collective { rank: usize, why: String },
    #[error("snapshot has {got} floats, the model has {want}: pass the flat parameter vector")]
    SnapshotLen { got: usize, want: usize },
    #[error("buffer has {got} floats, the mesh was built for {want}")]
    BufferLen { got: usize, want: usize },
    #[error("rank {0} is not a neighbour of this worker")]
    NotNeighbour(usize),
    #[error("the exchange with rank {peer} failed: {why}")]
    Exchange { peer: usize, why: String },
    #[error("the mesh has shut down")]
    ShutDown,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}
