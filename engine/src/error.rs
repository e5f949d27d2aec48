//! Errors of the engine. Each names what failed and, where there is one, the fix.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(
        "no GPU adapter found: wgpu saw none on Vulkan, Metal or DX12 (WGPU_BACKEND selects others). \
         Install a GPU driver; on headless Linux `apt-get install mesa-vulkan-drivers` provides \
         lavapipe, a CPU Vulkan adapter. `a2cid devices` lists what wgpu sees"
    )]
    NoAdapter,

    #[error("no adapter matches --adapter {requested:?}; available adapters:\n{available}")]
    AdapterNotFound {
        requested: String,
        available: String,
    },

    #[error("could not open a device on adapter {adapter:?}: {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    #[error(
        "buffer {label:?} needs {bytes} bytes but the device allows at most {limit} bytes per \
         storage binding; use a smaller model or batch, or a GPU with larger limits"
    )]
    BufferTooLarge {
        label: String,
        bytes: u64,
        limit: u64,
    },

    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },

    /// A kernel launch was given buffers that do not match the bindings its entry point declares.
    #[error("kernel {kernel}: {problem}; its storage bindings are {expected}")]
    Binding {
        kernel: String,
        problem: String,
        expected: String,
    },

    #[error("reading back GPU buffer {label:?} failed: {detail}")]
    Readback { label: String, detail: String },

    #[error("the GPU device was lost or failed: {0}")]
    Device(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
