//! # a2cid-datasets — datasets, shards and batches
//!
//! **Owns:** reading IDX files (gzip detected by content) with errors that name the file and the
//! fault, the datasets (`digits` embedded through smartcore; `mnist` and `fashion-mnist` fetched by
//! `scripts/fetch-datasets.sh`), normalisation, the seeded per-rank shards and the background
//! batch thread.
//!
//! **Must not touch:** GPUs, the network, run directories. It hands out `f32` rows and `u32`
//! labels; what is done with them is the engine's and the runtime's business.
pub mod datasets;
pub mod idx;
pub mod loader;
pub mod partition;

pub use datasets::{load, DataError, Dataset, DatasetName, Split};
pub use loader::{Batch, BatchLoader};
pub use partition::{batches_in_shards, label_histogram, Partition, PartitionError};
