//! # a2cid-runtime — workers that train
//!
//! **Owns:** the worker process (the engine joined to the mesh: gradient steps, pairwise
//! exchanges, the final average), the single-worker loop, the local launcher (`a2cid run`: N
//! worker processes and one progress display), worker placement (explicit, rank-0 rendezvous,
//! SLURM), checkpoints, the worker clock, the decentralised gradient count and stop rule
//! ([`clock`], pure, time passed in), and building `summary.json` from the workers' results.
//!
//! **Must not touch:** command-line parsing (the binary resolves a [`RunConfig`] and hands it
//! over), plotting and reports, the simulator. It writes the records of `a2cid-schema`.
//!
//! [`RunConfig`]: a2cid_schema::RunConfig
pub mod checkpoint;
pub mod clock;
pub mod exchanges;
pub mod launch;
pub mod learner;
pub mod poisson;
pub mod readback;
pub mod shared;
pub mod single;
pub mod summary;
pub mod worker;

pub use launch::run_local;
pub use single::run_single;
pub use summary::gather;
pub use worker::{run_worker, Placement, WorkerOptions};
