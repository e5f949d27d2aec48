//! DADAO (docs/algorithm.md §9.3): not yet built.
use a2cid_topology::Topology;

use crate::problem::Objective;

/// The DADAO workers of `objective` on `topology`.
pub fn workers<O: Objective + 'static>(
    _objective: O,
    _topology: &Topology,
) -> anyhow::Result<Box<dyn crate::Problem>> {
    anyhow::bail!("--method dadao is not built yet")
}
