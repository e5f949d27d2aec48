//! # a2cid-net — the TCP mesh between workers
//!
//! **Owns:** rendezvous (explicit list, rank-0 `HOST:PORT`, SLURM environment), the authenticated
//! handshake (protocol version, run id, rank, model fingerprint, HMAC-SHA256 challenge-response over
//! the cluster secret), the length-delimited typed wire format with a hard cap derived from the model
//! size, the master-less Poisson pairing protocol (a pure state machine, [`pairing::Pairing`]), the
//! full-duplex exchange of flat `f32` snapshots, ring all-reduce / broadcast / barrier, adaptive
//! timeouts, failure handling and graceful shutdown.
//!
//! **Must not touch:** GPUs, the engine crate, the optimizer maths. It moves `f32` buffers and knows
//! nothing about what they mean. The runtime (root package) joins it to the engine.
//!
//! ## How the runtime drives it
//!
//! ```no_run
//! # async fn demo(cfg: a2cid_net::MeshConfig, mut params: Vec<f32>) -> Result<(), a2cid_net::NetError> {
//! use a2cid_net::{Mesh, MeshEvent};
//! let mut mesh = Mesh::connect(cfg).await?;       // rendezvous + authenticated links
//! mesh.broadcast(0, &mut params).await?;           // identical initial parameters
//! mesh.shutdown_on_signals();
//! let mut tau = 0.0;                               // worker clock, in gradient steps
//! loop {
//!     // ... one gradient step on the engine ...
//!     tau += 1.0;
//!     mesh.advance_clock(tau);                     // edges this worker owns may now propose
//!     while let Some(ev) = mesh.try_next_event() {
//!         match ev {
//!             // Agreed with a peer: take the snapshot *now* (mix up to now, copy x) and hand it over.
//!             MeshEvent::Exchange(req) => req.supply(params.clone())?,
//!             // Both snapshots crossed: x += alpha (theirs - mine), etc. Buffers can be recycled.
//!             MeshEvent::Exchanged(x) => { /* apply; */ mesh.recycle(x.theirs); }
//!             MeshEvent::ShutdownRequested => break,
//!             _ => {}                                  // failures, lost peers: informational
//!         }
//!     }
//! #   break;
//! }
//! mesh.allreduce_mean(&mut params).await?;         // final average
//! mesh.shutdown("done").await
//! # }
//! ```
//!
//! The snapshot is supplied at the moment the exchange starts, not when it was proposed, and the
//! transfer runs in background tasks, so the caller may keep computing gradient steps while the
//! bytes are in flight (the A²CiD² update takes its delta against the snapshot it *sent*, which comes
//! back in [`Exchanged::mine`]). [`Mesh::exchange`] is the blocking-style shortcut: supply and wait.
//!
//! Links: every graph neighbour, plus the two ring neighbours `rank ± 1` that the collectives use.
//!
//! ## Layout
//!
//! Pure, no I/O: [`frame`] (typed frames and the codec), [`pairing`] (the Poisson pairing state
//! machine), [`health`] (decisions about peers: blame, failures, adaptive timeouts, graph splits),
//! [`timeouts`], the parsing half of [`rendezvous`]. With I/O: [`connection`] (one socket, whole
//! frames), [`auth`] (the handshake), `connect` (start-up), `link` (per-neighbour reader and writer
//! tasks), `driver` (the pairing task), `collectives` (ring all-reduce, broadcast, barrier) and
//! [`mesh`] (the handle).

mod address_book;
pub mod admission;
pub mod auth;
mod collectives;
pub mod config;
mod connect;
pub mod connection;
mod driver;
pub mod error;
pub mod events;
pub mod frame;
pub mod health;
mod link;
pub mod mesh;
pub mod pairing;
pub mod pool;
pub mod rendezvous;
pub mod timeouts;

pub use auth::{Identity, Secret, SECRET_ENV};
pub use collectives::CollStats;
pub use config::MeshConfig;
pub use connect::PeerState;
pub use error::{FrameError, HandshakeError, NetError};
pub use events::{
    ClockSegment, ExchangeRequest, ExchangeStats, Exchanged, MeshEvent, MeshStats, ShutdownHandle,
    StateRequest,
};
pub use frame::{Fingerprint, PairMsg, PROTOCOL_VERSION};
pub use mesh::{interrupt_signal, Mesh, MeshEvents};
pub use pairing::{EdgeCounters, Pairing};
pub use pool::BufPool;
pub use rendezvous::{expand_nodelist, slurm_from_env, Rendezvous, SlurmLaunch};
