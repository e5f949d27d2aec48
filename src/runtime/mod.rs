//! The multi-worker runtime: the worker process (engine + mesh), the local launcher, the run's
//! summary and checkpoints. The pure pieces (clock, gradient counts, stop rule) are in `clock`.
pub mod checkpoint;
pub mod clock;
pub mod launch;
pub mod summary;
pub mod worker;

pub use launch::run_local;
pub use summary::gather;
pub use worker::{run_worker, WorkerArgs};
