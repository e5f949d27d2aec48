//! `shaders/acid.wgsl`: the fused A²CiD² updates (docs/algorithm.md §3), each one pass over the
//! arena: mixing of (x, x̃) up to now, then the SGD step, the snapshot to send, or the pairwise
//! average with the peer's snapshot.
//!
//! The CPU twin is [`crate::acid`], the engine's one implementation of the A²CiD² math (the
//! simulator runs it too); `engine/tests/acid.rs` holds these kernels against it.
use super::{
    grid_1d, grid_over, u32_of, Binding, Dispatch, EntryPoint, Family, Uniform, WORKGROUP_1D,
};
use crate::device::GpuContext;
use crate::error::{EngineError, Result};
use crate::optim::SgdConfig;

uniform_params! {
    /// The uniform block of acid.wgsl: what changes per event, rewritten with
    /// [`Dispatch::set_params`].
    pub struct AcidUniform {
        pub n: u32,
        pub nesterov: u32,
        /// `(1 − e^(−2·eta·d))/2`, see `crate::acid::mix_factor`.
        pub mix: f32,
        pub lr: f32,
        pub momentum: f32,
        pub weight_decay: f32,
        pub alpha: f32,
        pub alpha_tilde: f32,
    }
}

impl AcidUniform {
    pub fn new(n: usize) -> Result<Self> {
        Ok(AcidUniform {
            n: u32_of("acid", "n", n)?,
            ..Default::default()
        })
    }
    pub fn with_sgd(mut self, cfg: &SgdConfig) -> Self {
        self.nesterov = cfg.nesterov as u32;
        self.lr = cfg.lr;
        self.momentum = cfg.momentum;
        self.weight_decay = cfg.weight_decay;
        self
    }
}

// `aux` and `other` mean what each entry point says below.
const P: Binding = Binding::uniform(0, "p");
const X: Binding = Binding::read_write(1, "x");
/// x̃. Bound even where `HAS_TILDE = false` (gossip) never touches it: the binding is in the
/// entry point's static interface.
const XT: Binding = Binding::read_write(2, "xt");
const AUX: Binding = Binding::read_write(3, "aux");
const OTHER: Binding = Binding::read(4, "other");
const PARTIALS: Binding = Binding::read_write(5, "partials");

/// `aux` = momentum, `other` = gradient.
pub const MIX_AND_STEP: EntryPoint = EntryPoint {
    name: "mix_and_step",
    bindings: &[P, X, XT, AUX, OTHER],
};
/// `aux` = the snapshot written.
pub const MIX_AND_SNAPSHOT: EntryPoint = EntryPoint {
    name: "mix_and_snapshot",
    bindings: &[P, X, XT, AUX],
};
/// `aux` = the snapshot we sent, `other` = the peer's.
pub const MIX_AND_AVERAGE: EntryPoint = EntryPoint {
    name: "mix_and_average",
    bindings: &[P, X, XT, AUX, OTHER, PARTIALS],
};

/// Elements handled by one invocation of `mix_and_average` (`AVG_PER_INVOCATION` in the WGSL).
const AVG_PER_INVOCATION: usize = 16;

pub const FAMILY: Family = Family {
    source: wgsl_source!("acid.wgsl"),
    uniform: AcidUniform::LAYOUT,
    overrides: &["HAS_TILDE"],
    shared_constants: &[("AVG_PER_INVOCATION", AVG_PER_INVOCATION as u32)],
    entry_points: &[MIX_AND_STEP, MIX_AND_SNAPSHOT, MIX_AND_AVERAGE],
};

/// Number of partial sums `mix_and_average` writes for `n` elements (one per workgroup).
pub fn acid_partials_len(n: usize) -> usize {
    let g = grid_1d(n.div_ceil(WORKGROUP_1D as usize * AVG_PER_INVOCATION) as u32);
    (g[0] * g[1]) as usize
}

/// A launch of `entry` over `params.n` elements, `per_group` per workgroup, specialised on whether
/// there is an x̃ (A²CiD²) or not (gossip).
fn launch(
    ctx: &GpuContext,
    entry: &'static EntryPoint,
    per_group: usize,
    x: &wgpu::Buffer,
    x_tilde: Option<&wgpu::Buffer>,
    params: &AcidUniform,
    rest: &[(&str, &wgpu::Buffer)],
) -> Result<Dispatch> {
    let has_tilde = x_tilde.is_some();
    let xt = x_tilde.unwrap_or(ctx.placeholder_buffer());
    let mut buffers = vec![("x", x), ("xt", xt)];
    buffers.extend_from_slice(rest);
    let groups = grid_over(entry.name, params.n as usize, per_group)?;
    let constants = [("HAS_TILDE", f64::from(has_tilde as u8))];
    Dispatch::new(ctx, &FAMILY, entry, &constants, params, &buffers, groups)
}

/// Mixing up to now, then the SGD step applied to x and x̃, in one pass. `params.mix`, the learning
/// rate and friends change per event: update them with [`Dispatch::set_params`].
pub fn mix_and_step(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    x_tilde: Option<&wgpu::Buffer>,
    momentum: &wgpu::Buffer,
    grad: &wgpu::Buffer,
    params: &AcidUniform,
) -> Result<Dispatch> {
    let rest = [("aux", momentum), ("other", grad)];
    let per_group = WORKGROUP_1D as usize;
    launch(ctx, &MIX_AND_STEP, per_group, x, x_tilde, params, &rest)
}

/// Mixing up to now, then `snapshot = x` (the snapshot to send to a peer).
pub fn mix_and_snapshot(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    x_tilde: Option<&wgpu::Buffer>,
    snapshot: &wgpu::Buffer,
    params: &AcidUniform,
) -> Result<Dispatch> {
    let rest = [("aux", snapshot)];
    let per_group = WORKGROUP_1D as usize;
    launch(ctx, &MIX_AND_SNAPSHOT, per_group, x, x_tilde, params, &rest)
}

/// Mixing up to now, then the pairwise update against the snapshot we sent (`sent`) with the
/// peer's (`received`), writing per-workgroup partial sums of ‖sent − received‖² to `partials`
/// (at least [`acid_partials_len`] elements).
#[allow(clippy::too_many_arguments)]
pub fn mix_and_average(
    ctx: &GpuContext,
    x: &wgpu::Buffer,
    x_tilde: Option<&wgpu::Buffer>,
    sent: &wgpu::Buffer,
    received: &wgpu::Buffer,
    partials: &wgpu::Buffer,
    params: &AcidUniform,
) -> Result<Dispatch> {
    if partials.size() < (acid_partials_len(params.n as usize) * 4) as u64 {
        return Err(EngineError::Shape {
            op: MIX_AND_AVERAGE.name,
            detail: format!("partials buffer too small for {} elements", params.n),
        });
    }
    let rest = [("aux", sent), ("other", received), ("partials", partials)];
    let per_group = WORKGROUP_1D as usize * AVG_PER_INVOCATION;
    launch(ctx, &MIX_AND_AVERAGE, per_group, x, x_tilde, params, &rest)
}
