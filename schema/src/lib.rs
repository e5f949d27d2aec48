//! # a2cid-schema — the shared vocabulary of a run
//!
//! **Owns:** the training [`Method`] and the update-rule parameters it implies, the run
//! configuration ([`RunConfig`], saved as `config.toml`), the run directory's layout
//! ([`RunDir`]) with the atomic write every writer uses, and the typed records written there:
//! metric events ([`MetricEvent`], one schema for every writer), a worker's result, the averaged
//! model's evaluation, progress lines and `summary.json`.
//!
//! **Must not touch:** training, the network, plotting. The runtime and the simulator write these
//! types; the report reads them. It sits below all three so none of them imports another.
pub mod compression;
pub mod config;
pub mod method;
pub mod records;
pub mod run_dir;
pub mod sketch;
pub mod speeds;
pub mod targets;

pub use a2cid_engine::models::ModelKind;
pub use compression::Compression;
pub use config::{model_spec, RunConfig};
pub use method::Method;
pub use records::{
    At, AverageResult, ConsensusSummary, Constants, EdgeReport, GapStats, MetricEvent, MetricsLog,
    Progress, RateSummary, StopReason, Summary, TargetTime, WorkerResult, WorkerSummary,
};
pub use run_dir::{read_json, write_atomic, write_json_atomic, RunDir, RunLock};
pub use speeds::{Slowdown, SpeedError, SpeedSpec};
pub use targets::time_to_accuracy;
