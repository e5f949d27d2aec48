//! The engine's WGSL kernels, one module per family (`shaders/<family>.wgsl` beside
//! `kernels/<family>.rs`), and what the families share: the registry ([`FAMILIES`]), the binding
//! layouts entry points declare, [`Dispatch`] (one ready-to-record launch) and the 1-D grid helpers.
//!
//! A family module holds its WGSL source (`shaders/prelude.wgsl` followed by its own file), its
//! uniform parameter block (declared with `uniform_params!`), the bindings of each entry point by
//! name, the constructors that return a [`Dispatch`], and its plain-Rust CPU twin (`<family>::cpu`,
//! also reachable as [`crate::cpu`]). `engine/tests/shaders.rs` holds every registered family
//! against its WGSL with naga: binding names, numbers, address spaces and access, the uniform's
//! size and field offsets, the overridable and shared constants.
//!
//! Adding a family: write `shaders/<family>.wgsl` and `kernels/<family>.rs` (with a
//! `pub const FAMILY: Family`), and add the family's name to the `kernel_families!` line below
//! (docs/engine.md walks through it).
//!
//! Dispatches are built once and recorded every step, so a training step allocates nothing.
use std::fmt;
use std::sync::Arc;

use bytemuck::Pod;

use crate::device::{GpuContext, KernelSource, Recordable};
use crate::error::{EngineError, Result};

/// Declares a family's uniform parameter block: a `#[repr(C)]` plain-data struct whose fields
/// mirror the WGSL struct member for member, and its [`Uniform`] layout (size and field offsets as
/// Rust lays them out), which the naga test holds against the WGSL struct's layout.
macro_rules! uniform_params {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty),*
        }

        impl $crate::kernels::Uniform for $name {
            const LAYOUT: $crate::kernels::UniformLayout = $crate::kernels::UniformLayout {
                rust_name: stringify!($name),
                size: std::mem::size_of::<$name>(),
                fields: &[$($crate::kernels::UniformField {
                    name: stringify!($field),
                    offset: std::mem::offset_of!($name, $field),
                    rust_type: stringify!($ty),
                }),*],
            };
        }
    };
}

/// The source of a family: the prelude, then `shaders/<file>`. (Paths are relative to the file
/// that invokes the macro, and every family module sits in this directory.)
macro_rules! wgsl_source {
    ($file:literal) => {
        $crate::device::KernelSource {
            name: $file,
            wgsl: concat!(
                include_str!("../../../shaders/prelude.wgsl"),
                include_str!(concat!("../../../shaders/", $file)),
            ),
        }
    };
}

/// Declares each family's module and registers its `FAMILY` in [`FAMILIES`], so the module list
/// and the registry cannot drift apart.
macro_rules! kernel_families {
    ($($family:ident),+ $(,)?) => {
        $(pub mod $family;)+

        /// Every kernel family of the engine. `engine/tests/shaders.rs` walks this list: each
        /// family's WGSL must validate and match what its module declares, and every file in
        /// `shaders/` but the prelude must be one of these families.
        pub const FAMILIES: &[&Family] = &[$(&$family::FAMILY),+];
    };
}

// One line per family: adding a family adds its name here.
kernel_families![util, matmul, bias, relu, softmax_ce, acid, sketch, channel, pool, lowrank];

// Convolution is implicit GEMM on the matmul family's tiled loop.
pub mod conv;

// The flat paths the rest of the workspace uses (`kernels::matmul(..)`, `kernels::AcidUniform`).
// New families need not add themselves here: `kernels::<family>::<item>` works.
pub use acid::{acid_partials_len, mix_and_average, mix_and_snapshot, mix_and_step, AcidUniform};
pub use bias::{bias_add, bias_grad, BiasParams};
pub use channel::{channel_bias_add, channel_dot, channel_sum, ChannelParams, GroupNorm, Nchw};
pub use conv::{conv_forward, conv_input_grad, conv_weight_grad, ConvGeometry};
pub use matmul::{matmul, MatRef, MatmulParams, MATMUL_TILE};
pub use pool::{PoolGeometry, PoolKind};
pub use relu::{relu_backward, relu_forward, ReluParams};
pub use sketch::{sketch, SketchParams};
pub use softmax_ce::{softmax_ce, softmax_stats_len, SoftmaxCeParams, SOFTMAX_ROWS_PER_GROUP};
pub use util::{axpy, copy, fill, sum_slices, UtilParams};

/// The WGSL every family's source starts with: shared constants and helpers.
pub const PRELUDE: &str = include_str!("../../../shaders/prelude.wgsl");

/// The prelude's constants the host relies on, with the values it assumes (checked by the naga
/// test).
pub const PRELUDE_CONSTANTS: &[(&str, u32)] = &[("WORKGROUP_1D", WORKGROUP_1D)];

// ---------------------------------------------------------------------------------------------
// What a family declares

/// How a binding is declared in WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    /// `var<uniform>`: the family's parameter block, which [`Dispatch`] creates and binds itself.
    Uniform,
    /// `var<storage, read>`.
    StorageRead,
    /// `var<storage, read_write>`.
    StorageReadWrite,
}

impl fmt::Display for BindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindingKind::Uniform => "uniform",
            BindingKind::StorageRead => "storage, read",
            BindingKind::StorageReadWrite => "storage, read_write",
        })
    }
}

/// One resource of bind group 0, as the WGSL declares it: `@group(0) @binding(binding) var<kind>
/// name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub binding: u32,
    pub name: &'static str,
    pub kind: BindingKind,
}

impl Binding {
    pub const fn uniform(binding: u32, name: &'static str) -> Self {
        Binding {
            binding,
            name,
            kind: BindingKind::Uniform,
        }
    }
    pub const fn read(binding: u32, name: &'static str) -> Self {
        Binding {
            binding,
            name,
            kind: BindingKind::StorageRead,
        }
    }
    pub const fn read_write(binding: u32, name: &'static str) -> Self {
        Binding {
            binding,
            name,
            kind: BindingKind::StorageReadWrite,
        }
    }
}

/// A compute entry point and the bindings it uses, in binding order. wgpu derives each pipeline's
/// layout from what its entry point statically uses, so this must be exactly that set: a binding
/// missing here is never bound, an extra one is rejected by wgpu. The naga test checks both.
#[derive(Clone, Copy, Debug)]
pub struct EntryPoint {
    pub name: &'static str,
    pub bindings: &'static [Binding],
}

/// A uniform parameter block as Rust lays it out: the struct's name, size in bytes and fields in
/// declaration order.
#[derive(Clone, Copy, Debug)]
pub struct UniformLayout {
    pub rust_name: &'static str,
    pub size: usize,
    pub fields: &'static [UniformField],
}

/// One field of a [`UniformLayout`]: its name, byte offset and Rust type as written (`u32`,
/// `[f32; 2]`).
#[derive(Clone, Copy, Debug)]
pub struct UniformField {
    pub name: &'static str,
    pub offset: usize,
    pub rust_type: &'static str,
}

/// Plain data uploaded as a family's uniform block. Implemented by `uniform_params!`, which
/// derives [`Uniform::LAYOUT`] from the struct itself.
pub trait Uniform: Pod {
    const LAYOUT: UniformLayout;
}

/// One WGSL file and everything the host assumes about it.
#[derive(Clone, Copy, Debug)]
pub struct Family {
    /// The prelude followed by `shaders/<source.name>`.
    pub source: KernelSource,
    /// The Rust mirror of the struct behind the family's uniform binding (one per family: the
    /// entry points of a file share its globals).
    pub uniform: UniformLayout,
    /// Pipeline-overridable constants the constructors set (the specialisations).
    pub overrides: &'static [&'static str],
    /// WGSL constants the host's grid arithmetic also uses, with the value the host assumes.
    pub shared_constants: &'static [(&'static str, u32)],
    pub entry_points: &'static [EntryPoint],
}

impl Family {
    pub fn entry_point(&self, name: &str) -> Option<&EntryPoint> {
        self.entry_points.iter().find(|e| e.name == name)
    }
}

/// How errors name a kernel: `copy (util.wgsl)`.
fn kernel_name(family: &Family, entry: &EntryPoint) -> String {
    format!("{} ({})", entry.name, family.source.name)
}

/// Pairs each binding `entry` declares with its resource: the uniform binding with `uniform`, every
/// storage binding with the buffer given under its name. Generic over the resource so the rules
/// are tested without a device.
fn bind_by_name<B: Copy>(
    family: &Family,
    entry: &EntryPoint,
    uniform: B,
    given: &[(&str, B)],
) -> Result<Vec<(u32, B)>> {
    let err = |problem: String| EngineError::Binding {
        kernel: kernel_name(family, entry),
        problem,
        expected: entry
            .bindings
            .iter()
            .filter(|b| b.kind != BindingKind::Uniform)
            .map(|b| format!("`{}` ({})", b.name, b.kind))
            .collect::<Vec<_>>()
            .join(", "),
    };
    for (i, &(name, _)) in given.iter().enumerate() {
        match entry.bindings.iter().find(|b| b.name == name) {
            None => return Err(err(format!("it has no binding `{name}`"))),
            Some(b) if b.kind == BindingKind::Uniform => {
                return Err(err(format!(
                    "`{name}` is its uniform parameter block, which the kernel binds itself"
                )))
            }
            Some(_) if given[..i].iter().any(|&(n, _)| n == name) => {
                return Err(err(format!("two buffers given for binding `{name}`")))
            }
            Some(_) => {}
        }
    }
    entry
        .bindings
        .iter()
        .map(|b| match b.kind {
            BindingKind::Uniform => Ok((b.binding, uniform)),
            _ => given
                .iter()
                .find(|&&(n, _)| n == b.name)
                .map(|&(_, buffer)| (b.binding, buffer))
                .ok_or_else(|| err(format!("no buffer given for binding `{}`", b.name))),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Launches

/// One recorded kernel launch: a cached pipeline, its bind group, its grid and its uniform block.
pub struct Dispatch {
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    uniform: wgpu::Buffer,
    /// The [`Uniform`] type the block holds, so [`Dispatch::set_params`] can refuse another.
    uniform_type: &'static str,
    label: &'static str,
}

impl Dispatch {
    /// A launch of `entry` of `family` over `groups` workgroups, specialised by `constants`, with
    /// `params` as its uniform block and each storage binding bound to the buffer given under its
    /// WGSL name. Unknown, missing or repeated names are an error naming the kernel.
    pub(crate) fn new<P: Uniform>(
        ctx: &GpuContext,
        family: &Family,
        entry: &'static EntryPoint,
        constants: &[(&'static str, f64)],
        params: &P,
        buffers: &[(&str, &wgpu::Buffer)],
        groups: [u32; 3],
    ) -> Result<Dispatch> {
        // The three checks below guard the family modules' own code, not anything a caller passes.
        assert!(
            family.entry_point(entry.name).is_some(),
            "{}: not an entry point of this family",
            kernel_name(family, entry)
        );
        assert_eq!(
            P::LAYOUT.rust_name,
            family.uniform.rust_name,
            "{}: wrong uniform type",
            kernel_name(family, entry)
        );
        assert!(
            constants.iter().all(|(k, _)| family.overrides.contains(k)),
            "{}: a constant of {constants:?} is not among the family's overrides {:?}",
            kernel_name(family, entry),
            family.overrides
        );
        // Uniform blocks are tiny; validating the names first would only save one on a bug path.
        let uniform = ctx.uniform_buffer(entry.name, params);
        let bound = bind_by_name(family, entry, &uniform, buffers)?;
        let pipeline = ctx.pipeline(family.source, entry.name, constants);
        let entries: Vec<_> = bound
            .iter()
            .map(|&(binding, buffer)| wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(entry.name),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Ok(Dispatch {
            pipeline,
            bind_group,
            groups,
            uniform,
            uniform_type: P::LAYOUT.rust_name,
            label: entry.name,
        })
    }

    /// Records this launch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }

    /// Replaces the uniform parameters (e.g. a new learning rate); takes effect at the next submit.
    ///
    /// # Panics
    /// If `P` is not the uniform type of this launch's family (a programming error).
    pub fn set_params<P: Uniform>(&self, ctx: &GpuContext, params: &P) {
        assert_eq!(
            P::LAYOUT.rust_name,
            self.uniform_type,
            "{}: set_params with the wrong uniform type",
            self.label
        );
        ctx.queue
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(params));
    }

    pub fn groups(&self) -> [u32; 3] {
        self.groups
    }

    pub fn label(&self) -> &'static str {
        self.label
    }

    /// Records `dispatches` into one compute pass, in order, and submits it (same as
    /// [`GpuContext::run`]).
    pub fn submit_all(ctx: &GpuContext, dispatches: &[&Dispatch]) {
        ctx.run(dispatches);
    }
}

impl Recordable for Dispatch {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        Dispatch::record(self, pass);
    }
}

// ---------------------------------------------------------------------------------------------
// Grids

/// Invocations per workgroup of every 1-D kernel (`WORKGROUP_1D` of `shaders/prelude.wgsl`).
pub const WORKGROUP_1D: u32 = 256;
/// WebGPU guarantees 65,535 workgroups per dimension; larger 1-D grids spill into y.
pub const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// Workgroup counts covering `n_groups` groups: x up to 65,535, the rest in y. Shaders rebuild the
/// linear index with the prelude's `linear_index` / `workgroup_index`.
pub fn grid_1d(n_groups: u32) -> [u32; 3] {
    let n = n_groups.max(1);
    if n <= MAX_GROUPS_PER_DIM {
        [n, 1, 1]
    } else {
        [MAX_GROUPS_PER_DIM, n.div_ceil(MAX_GROUPS_PER_DIM), 1]
    }
}

/// Number of workgroups of `per_group` elements covering `n` elements.
pub(crate) fn groups_for(op: &'static str, n: usize, per_group: usize) -> Result<u32> {
    u32::try_from(n.div_ceil(per_group)).map_err(|_| EngineError::Shape {
        op,
        detail: format!("{n} elements exceed what one dispatch can index"),
    })
}

/// The 1-D grid covering `n` elements, `per_group` per workgroup.
pub(crate) fn grid_over(op: &'static str, n: usize, per_group: usize) -> Result<[u32; 3]> {
    Ok(grid_1d(groups_for(op, n, per_group)?))
}

/// `v` as a uniform field, or an error naming the operation and the field.
pub(crate) fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| EngineError::Shape {
        op,
        detail: format!("{what} = {v} does not fit in 32 bits"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAMILY: Family = Family {
        source: KernelSource {
            name: "test.wgsl",
            wgsl: "",
        },
        uniform: UniformLayout {
            rust_name: "Params",
            size: 4,
            fields: &[UniformField {
                name: "n",
                offset: 0,
                rust_type: "u32",
            }],
        },
        overrides: &[],
        shared_constants: &[],
        entry_points: &[ENTRY],
    };
    const ENTRY: EntryPoint = EntryPoint {
        name: "axpy",
        bindings: &[
            Binding::uniform(0, "p"),
            Binding::read_write(1, "dst"),
            Binding::read(3, "src"),
        ],
    };

    fn bind(given: &[(&str, char)]) -> Result<Vec<(u32, char)>> {
        bind_by_name(&FAMILY, &ENTRY, 'u', given)
    }

    #[test]
    fn buffers_bind_by_name_at_the_declared_numbers_in_any_order() {
        let bound = bind(&[("src", 's'), ("dst", 'd')]).unwrap();
        assert_eq!(bound, vec![(0, 'u'), (1, 'd'), (3, 's')]);
    }

    #[test]
    fn a_missing_unknown_repeated_or_uniform_name_is_an_error_naming_kernel_and_binding() {
        let cases: [(&[(&str, char)], &str); 4] = [
            (&[("dst", 'd')], "no buffer given for binding `src`"),
            (&[("dst", 'd'), ("src", 's'), ("y", 'y')], "no binding `y`"),
            (&[("dst", 'd'), ("dst", 'e'), ("src", 's')], "two buffers"),
            (
                &[("p", 'p'), ("dst", 'd'), ("src", 's')],
                "uniform parameter block",
            ),
        ];
        for (given, want) in cases {
            let msg = bind(given).unwrap_err().to_string();
            assert!(
                msg.contains("axpy (test.wgsl)") && msg.contains(want),
                "{given:?}: {msg}"
            );
            assert!(
                msg.contains("`dst` (storage, read_write), `src` (storage, read)"),
                "{msg}"
            );
        }
    }

    #[test]
    fn grids_spill_into_y_past_65535_groups() {
        assert_eq!(grid_1d(0), [1, 1, 1]);
        assert_eq!(grid_1d(65_535), [65_535, 1, 1]);
        assert_eq!(grid_1d(65_536), [65_535, 2, 1]);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn sizes_past_32_bits_are_errors_naming_the_operation() {
        let err = u32_of("fill", "n", 1 << 33).unwrap_err().to_string();
        assert_eq!(err, "fill: n = 8589934592 does not fit in 32 bits");
        let err = groups_for("copy", 1 << 45, 256).unwrap_err().to_string();
        assert!(err.starts_with("copy: "), "{err}");
    }
}
