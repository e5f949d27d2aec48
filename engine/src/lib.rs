//! # a2cid-engine — GPU compute on wgpu
//!
//! **Owns:** the device context ([`device`]), the flat parameter arena ([`arena`]), the WGSL
//! kernels of `shaders/` with their Rust launch wrappers and CPU reference twins ([`kernels`],
//! [`cpu`]), the models on the arena ([`models`]), the optimizer ([`optim`]), the A²CiD² math on
//! the CPU ([`acid`], docs/algorithm.md §3), the math of compressed exchanges (fp16 and low-rank
//! differences, [`compress`]) and a worker's training state with its fused dispatches
//! ([`train_state`]).
//!
//! **Must not touch:** the network, run directories, graphs. Exchanging parameters with peers is
//! the mesh's job (`a2cid-net`); the runtime joins the two.
pub mod acid;
pub mod arena;
pub mod compress;
pub mod cpu;
pub mod device;
pub mod error;
pub mod kernels;
pub mod lowrank_gpu;
pub mod models;
pub mod optim;
pub mod outer;
pub mod relay;
pub mod train_state;

pub use arena::{ParamLayout, TensorView};
pub use device::{AdapterChoice, AdapterSummary, GpuContext, MatmulVariant};
pub use error::{EngineError, Result};
pub use models::mlp::{Mlp, MlpSpec};
pub use models::{InputShape, Model, ModelKind, ModelSpec};
pub use optim::{LrSchedule, SgdConfig};
pub use train_state::TrainState;
