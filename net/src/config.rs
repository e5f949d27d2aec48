//! [`MeshConfig`]: everything needed to join the mesh, with sensible defaults.
use std::time::Duration;

use crate::auth::Secret;
use crate::frame::Fingerprint;
use crate::rendezvous::Rendezvous;

/// Everything needed to join the mesh.
#[derive(Debug)]
pub struct MeshConfig {
    pub rank: usize,
    pub world: usize,
    pub rendezvous: Rendezvous,
    /// Interface to listen on when the port is not fixed by the rendezvous (`0.0.0.0` by default).
    pub bind_host: String,
    /// A listener bound by the caller (tests, launchers); overrides the address the rendezvous implies.
    pub listener: Option<std::net::TcpListener>,
    /// The communication graph: `(i, j, lambda_ij)`, rates per unit of the worker clock.
    pub edges: Vec<(usize, usize, f64)>,
    /// Seed of the Poisson clocks (the same on every worker).
    pub seed: u64,
    /// Clock value at which the Poisson processes start.
    pub clock_start: f64,
    pub run_id: String,
    pub fingerprint: Fingerprint,
    pub secret: Secret,
    /// Deadline for the whole start-up: rendezvous plus every link.
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Initial / min / max of the adaptive exchange timeout (agreement to both snapshots crossed).
    pub exchange_timeout: (Duration, Duration, Duration),
    /// Initial / min / max of the adaptive proposal timeout (propose to answer).
    pub proposal_timeout: (Duration, Duration, Duration),
    /// Consecutive unanswered proposals or timed-out exchanges (waiting on the peer) after which a
    /// connected but unresponsive peer is dropped, once they span `unresponsive_after`.
    pub max_exchange_failures: u32,
    /// The least time a connected peer's failures in a row must span before it is dropped: a
    /// worker starved of CPU (many processes sharing few cores) answers a second or two late, a
    /// frozen one never does.
    pub unresponsive_after: Duration,
    /// Floats per collective chunk (pipelining grain).
    pub chunk_floats: usize,
    /// Longest a collective waits for a neighbour before failing.
    pub collective_timeout: Duration,
}

impl MeshConfig {
    /// A configuration with sensible defaults for everything but the essentials.
    pub fn new(
        rank: usize,
        world: usize,
        rendezvous: Rendezvous,
        edges: Vec<(usize, usize, f64)>,
        run_id: impl Into<String>,
        fingerprint: Fingerprint,
        secret: Secret,
    ) -> MeshConfig {
        MeshConfig {
            rank,
            world,
            rendezvous,
            bind_host: "0.0.0.0".into(),
            listener: None,
            edges,
            seed: 0x5EED,
            clock_start: 0.0,
            run_id: run_id.into(),
            fingerprint,
            secret,
            connect_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            exchange_timeout: (
                Duration::from_secs(60),
                Duration::from_secs(2),
                Duration::from_secs(300),
            ),
            proposal_timeout: (
                Duration::from_secs(1),
                Duration::from_millis(200),
                Duration::from_secs(30),
            ),
            max_exchange_failures: 3,
            unresponsive_after: Duration::from_secs(10),
            chunk_floats: 1 << 18,
            collective_timeout: Duration::from_secs(600),
        }
    }
}
