//! Data: IDX files, the datasets, shards and background batching.
pub mod datasets;
pub mod idx;
pub mod loader;

pub use datasets::{load, DataError, Dataset, DatasetName, Split};
pub use loader::{shard_indices, Batch, BatchLoader};
