//! The GPU device context: adapter discovery and choice, device creation with the adapter's real
//! limits, buffers, uploads and readbacks, the cache of compiled compute pipelines, and submitting
//! recorded work.
//!
//! Knows nothing of the kernels: it compiles any [`KernelSource`] and submits anything
//! [`Recordable`], so `kernels` builds on this module and never the other way round.
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wgpu::util::DeviceExt;

use crate::error::{EngineError, Result};

/// Which adapter to use: the best one, the N-th one listed by `a2cid devices`, or the first whose
/// name contains a string (case-insensitive).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AdapterChoice {
    #[default]
    Auto,
    Index(usize),
    Name(String),
}

impl FromStr for AdapterChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        Ok(if s.is_empty() || s.eq_ignore_ascii_case("auto") {
            AdapterChoice::Auto
        } else if let Ok(i) = s.parse::<usize>() {
            AdapterChoice::Index(i)
        } else {
            AdapterChoice::Name(s.to_string())
        })
    }
}

impl fmt::Display for AdapterChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterChoice::Auto => f.write_str("auto"),
            AdapterChoice::Index(i) => write!(f, "{i}"),
            AdapterChoice::Name(n) => f.write_str(n),
        }
    }
}

/// What `a2cid devices` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub is_cpu: bool,
}

/// The backends we look at: Vulkan, Metal, DX12 (wgpu's primary ones, with full compute support),
/// unless `WGPU_BACKEND` names others (e.g. `WGPU_BACKEND=gl`).
fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends();
    wgpu::Instance::new(desc)
}

fn summarize(index: usize, info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        is_cpu: info.device_type == wgpu::DeviceType::Cpu,
    }
}

/// Preference order when no adapter is named: discrete, integrated, virtual, other, CPU.
fn preference(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn enumerate(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(backends()))
}

/// Index (into `adapters`) of the adapter `choice` selects.
fn choose(adapters: &[wgpu::AdapterInfo], choice: &AdapterChoice) -> Result<usize> {
    if adapters.is_empty() {
        return Err(EngineError::NoAdapter);
    }
    let list = || {
        adapters
            .iter()
            .enumerate()
            .map(|(i, a)| format!("  [{i}] {} ({:?}, {:?})", a.name, a.backend, a.device_type))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match choice {
        AdapterChoice::Auto => (0..adapters.len())
            .min_by_key(|&i| (preference(adapters[i].device_type), i))
            .ok_or(EngineError::NoAdapter),
        AdapterChoice::Index(i) if *i < adapters.len() => Ok(*i),
        AdapterChoice::Name(name) => {
            let needle = name.to_lowercase();
            adapters
                .iter()
                .position(|a| a.name.to_lowercase().contains(&needle))
                .ok_or_else(|| EngineError::AdapterNotFound {
                    requested: name.clone(),
                    available: list(),
                })
        }
        AdapterChoice::Index(i) => Err(EngineError::AdapterNotFound {
            requested: i.to_string(),
            available: list(),
        }),
    }
}

/// Every adapter wgpu sees, and the index `choice` would pick (an error if it picks none).
pub fn list_adapters(choice: &AdapterChoice) -> (Vec<AdapterSummary>, Result<usize>) {
    let infos: Vec<_> = enumerate(&instance())
        .iter()
        .map(|a| a.get_info())
        .collect();
    let chosen = choose(&infos, choice);
    let list = infos
        .iter()
        .enumerate()
        .map(|(i, info)| summarize(i, info))
        .collect();
    (list, chosen)
}

/// A WGSL module the device compiles. `name` identifies it in the caches and in wgpu's labels, so
/// two different sources must not share a name (the engine's kernels use their file names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSource {
    pub name: &'static str,
    pub wgsl: &'static str,
}

/// Work that records itself into a compute pass (a kernel launch, `kernels::Dispatch`), so the
/// device can submit it without knowing what a kernel is.
pub trait Recordable {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>);
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    /// [`KernelSource::name`].
    source: &'static str,
    entry: &'static str,
    /// Pipeline-overridable constants, as (name, value bits), sorted.
    constants: Vec<(&'static str, u64)>,
}

/// Locks a cache. A panic while one was held cannot leave it half-updated (each holds compiled
/// objects inserted whole), so a poisoned lock is still good to use.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One open device and everything tied to it. Cheap to share (`Arc<GpuContext>`).
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub limits: wgpu::Limits,
    /// Compiled modules by [`KernelSource::name`].
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    placeholder: wgpu::Buffer,
    /// How matrix products read their operands ([`MatmulVariant`] as u8).
    matmul_variant: std::sync::atomic::AtomicU8,
}

/// How the tiled matrix product (and the convolutions built on it) reads its operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulVariant {
    /// Tiles staged in workgroup memory, shared by the workgroup (GPUs).
    Tiled,
    /// Each invocation reads straight from the buffers: on a CPU adapter the caches do the
    /// staging, and the workgroup barriers only cost (about 2× faster on lavapipe).
    Direct,
    /// Direct loads with a 16×8 block of C per invocation (`matmul_wide`): on a CPU adapter
    /// every load is a bounds-checked scalar load per SIMD lane, so fewer loads per product is
    /// what pays (the CPU default).
    Wide,
}

impl std::str::FromStr for MatmulVariant {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiled" => Ok(MatmulVariant::Tiled),
            "direct" => Ok(MatmulVariant::Direct),
            "wide" => Ok(MatmulVariant::Wide),
            _ => Err(format!("A2CID_MATMUL={s}: expected tiled, direct or wide")),
        }
    }
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.adapter)
            .finish()
    }
}

impl GpuContext {
    /// Opens the adapter an `--adapter` value names (an index, part of a name, or `auto`).
    pub fn open(adapter: &str) -> Result<Arc<Self>> {
        let choice: AdapterChoice = adapter.parse().unwrap_or_default();
        GpuContext::new(&choice)
    }

    /// Opens the adapter `choice` selects, with that adapter's own limits (so large storage
    /// buffers work). Falls back to a CPU adapter (lavapipe) with one log line when that is all
    /// there is.
    pub fn new(choice: &AdapterChoice) -> Result<Arc<Self>> {
        let instance = instance();
        let adapters = enumerate(&instance);
        let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
        let index = choose(&infos, choice)?;
        let adapter = &adapters[index];
        let info = &infos[index];
        let summary = summarize(index, info);
        if summary.is_cpu && *choice == AdapterChoice::Auto {
            tracing::warn!(
                "no hardware GPU adapter found; using the CPU adapter {:?} ({}): training will be slow",
                summary.name,
                summary.backend
            );
        } else {
            tracing::info!(
                "using adapter [{}] {:?} ({}, {})",
                index,
                summary.name,
                summary.backend,
                summary.device_type
            );
        }
        let limits = adapter.limits();
        // Our kernels need no optional feature. These are the ones burn/cubecl read from the
        // adapter to choose their kernels; enabling those the adapter has lets burn (the baseline
        // of the benchmarks and the oracle of the tests) run on this very device and queue.
        let mut interop = wgpu::Features::SHADER_INT64
            | wgpu::Features::SHADER_F16
            | wgpu::Features::SHADER_F64
            | wgpu::Features::SHADER_FLOAT32_ATOMIC;
        if info.device_type != wgpu::DeviceType::Cpu {
            interop |= wgpu::Features::SUBGROUP;
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("a2cid"),
            required_features: adapter.features().intersection(interop),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) =
            pollster::block_on(adapter.request_device(&desc)).map_err(|source| {
                EngineError::RequestDevice {
                    adapter: summary.name.clone(),
                    source,
                }
            })?;
        device.on_uncaptured_error(Arc::new(|e| {
            // Validation errors are bugs in the engine; device loss is reported on the next sync.
            tracing::error!("wgpu error: {e}");
        }));
        let placeholder = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("placeholder"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        // Wide direct blocks on CPU adapters, tiles elsewhere; A2CID_MATMUL=tiled|direct|wide
        // overrides.
        let variant = match std::env::var("A2CID_MATMUL") {
            Ok(v) => v.parse().unwrap_or_else(|e: String| {
                tracing::warn!("{e}; using the adapter's default");
                MatmulVariant::Tiled
            }),
            Err(_) if summary.is_cpu => MatmulVariant::Wide,
            Err(_) => MatmulVariant::Tiled,
        };
        Ok(Arc::new(GpuContext {
            matmul_variant: std::sync::atomic::AtomicU8::new(variant as u8),
            placeholder,
            device,
            queue,
            adapter: summary,
            limits,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
        }))
    }

    /// How matrix products built from now on read their operands.
    pub fn matmul_variant(&self) -> MatmulVariant {
        match self
            .matmul_variant
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            v if v == MatmulVariant::Direct as u8 => MatmulVariant::Direct,
            v if v == MatmulVariant::Wide as u8 => MatmulVariant::Wide,
            _ => MatmulVariant::Tiled,
        }
    }

    /// Chooses how matrix products built from now on read their operands (launches already built
    /// keep theirs).
    pub fn set_matmul_variant(&self, v: MatmulVariant) {
        self.matmul_variant
            .store(v as u8, std::sync::atomic::Ordering::Relaxed);
    }

    /// A tiny storage buffer bound where a kernel specialisation declares a binding it never uses.
    pub fn placeholder_buffer(&self) -> &wgpu::Buffer {
        &self.placeholder
    }

    /// The largest storage binding, in f32 elements.
    pub fn max_storage_elems(&self) -> usize {
        let bytes = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        (bytes / 4) as usize
    }

    /// A storage buffer of `len` f32 (or u32) elements, zero-initialised, usable as copy source and
    /// destination.
    pub fn storage_buffer(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let bytes = (len.max(1) * 4) as u64;
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(EngineError::BufferTooLarge {
                label: label.to_string(),
                bytes,
                limit,
            });
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data`.
    pub fn storage_buffer_from<T: bytemuck::Pod>(
        &self,
        label: &str,
        data: &[T],
    ) -> Result<wgpu::Buffer> {
        let buf = self.storage_buffer(label, std::mem::size_of_val(data) / 4)?;
        if !data.is_empty() {
            self.queue.write_buffer(&buf, 0, bytemuck::cast_slice(data));
        }
        Ok(buf)
    }

    /// A uniform buffer holding `value`.
    pub fn uniform_buffer<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// Writes `data` into `buf` starting at element `offset` (queued; ordered before later submits).
    pub fn write<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, offset: usize, data: &[T]) {
        if !data.is_empty() {
            self.queue.write_buffer(
                buf,
                (offset * std::mem::size_of::<T>()) as u64,
                bytemuck::cast_slice(data),
            );
        }
    }

    /// Copies `len` elements of `buf` from element `offset` back to the host. Waits for all work
    /// submitted before it.
    pub fn read<T: bytemuck::Pod>(
        &self,
        buf: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> Result<Vec<T>> {
        let elem = std::mem::size_of::<T>() as u64;
        let bytes = len as u64 * elem;
        if len == 0 {
            return Ok(Vec::new());
        }
        let label = format!("buffer of {} bytes", buf.size());
        if offset as u64 * elem + bytes > buf.size() {
            return Err(EngineError::Readback {
                label,
                detail: format!(
                    "range {offset}..{} is past the end ({} bytes)",
                    offset + len,
                    buf.size()
                ),
            });
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("a2cid readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buf, offset as u64 * elem, &staging, 0, bytes);
        self.queue.submit(Some(encoder.finish()));
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| EngineError::Device(e.to_string()))?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(EngineError::Readback {
                    label,
                    detail: e.to_string(),
                });
            }
            Err(_) => {
                return Err(EngineError::Readback {
                    label,
                    detail: "the map callback never ran".into(),
                })
            }
        }
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| EngineError::Readback {
                label,
                detail: e.to_string(),
            })?;
        let out = bytemuck::cast_slice::<u8, T>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Blocks until all submitted work has finished.
    pub fn sync(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| EngineError::Device(e.to_string()))
    }

    /// The compiled pipeline for `entry` of `source` with the given overridable constants; compiled
    /// once per device and cached by (source name, entry point, constants).
    pub fn pipeline(
        &self,
        source: KernelSource,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Arc<wgpu::ComputePipeline> {
        let mut sorted: Vec<_> = constants.iter().map(|&(k, v)| (k, v.to_bits())).collect();
        sorted.sort();
        let key = PipelineKey {
            source: source.name,
            entry,
            constants: sorted,
        };
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return p.clone();
        }
        let module = lock(&self.modules)
            .entry(source.name)
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(source.name),
                    source: wgpu::ShaderSource::Wgsl(source.wgsl.into()),
                };
                self.device.create_shader_module(desc)
            })
            .clone();
        let pipeline = Arc::new(self.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            },
        ));
        lock(&self.pipelines).insert(key, pipeline.clone());
        pipeline
    }

    /// Number of distinct pipelines compiled so far (the cache's size).
    pub fn cached_pipelines(&self) -> usize {
        lock(&self.pipelines).len()
    }

    /// Records `work` (e.g. kernel launches) into one compute pass, in order, and submits it.
    pub fn run<W: Recordable + ?Sized>(&self, work: &[&W]) {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for w in work {
                w.record(&mut pass);
            }
        }
        self.queue.submit(Some(encoder.finish()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, t: wgpu::DeviceType) -> wgpu::AdapterInfo {
        let mut info = wgpu::AdapterInfo::new(t, wgpu::Backend::Vulkan);
        info.name = name.into();
        info
    }

    #[test]
    fn auto_prefers_discrete_then_integrated_then_cpu() {
        let list = vec![
            info("llvmpipe", wgpu::DeviceType::Cpu),
            info("Intel UHD", wgpu::DeviceType::IntegratedGpu),
            info("NVIDIA A100", wgpu::DeviceType::DiscreteGpu),
        ];
        assert_eq!(choose(&list, &AdapterChoice::Auto).unwrap(), 2);
        assert_eq!(choose(&list[..2], &AdapterChoice::Auto).unwrap(), 1);
        assert_eq!(choose(&list[..1], &AdapterChoice::Auto).unwrap(), 0);
    }

    #[test]
    fn choice_by_index_and_name_and_errors() {
        let list = vec![
            info("llvmpipe (LLVM 15)", wgpu::DeviceType::Cpu),
            info("NVIDIA A100", wgpu::DeviceType::DiscreteGpu),
        ];
        assert_eq!(choose(&list, &"0".parse().unwrap()).unwrap(), 0);
        assert_eq!(choose(&list, &"a100".parse().unwrap()).unwrap(), 1);
        let err = choose(&list, &"radeon".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("radeon") && err.contains("[1] NVIDIA A100"),
            "{err}"
        );
        let err = choose(&list, &AdapterChoice::Index(7))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--adapter \"7\""), "{err}");
        let err = choose(&[], &AdapterChoice::Auto).unwrap_err().to_string();
        assert!(err.contains("apt-get install mesa-vulkan-drivers"), "{err}");
    }
}
