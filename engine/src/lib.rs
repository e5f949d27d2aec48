//! # a2cid-engine
//!
//! GPU compute for a2cid on wgpu: the device context ([`device`]), the flat parameter arena
//! ([`arena`]), the WGSL kernels of `shaders/` with their Rust launch wrappers ([`kernels`]) and
//! CPU reference twins ([`cpu`]), models ([`mlp`]) and the optimizer ([`optim`]).
//!
//! It owns everything that touches the GPU and must not touch the network: exchanging parameters
//! with peers is the job of `a2cid-net`, and the root package joins the two.
pub mod acid;
pub mod arena;
pub mod cpu;
pub mod device;
pub mod error;
pub mod kernels;
pub mod mlp;
pub mod optim;

pub use arena::{ParamLayout, TensorView};
pub use device::{AdapterChoice, AdapterSummary, GpuContext};
pub use error::{EngineError, Result};
pub use mlp::{Mlp, MlpSpec};
pub use optim::{LrSchedule, Sgd, SgdConfig};
