// Prepended to every kernel family's WGSL by the engine (`kernels::wgsl_source!`), so what several
// families share is written once. Constants and pure functions only: no bindings, no entry points
// (the naga test validates this file alone and in front of each family).

// Invocations per workgroup of every 1-D kernel: `kernels::WORKGROUP_1D` on the host, which sizes
// the grids (the naga test checks the two agree).
const WORKGROUP_1D: u32 = 256u;

// Element index of a 1-D kernel's invocation. The host splits grids of more than 65,535 workgroups
// over the y dimension (`kernels::grid_1d`), so one row of the grid holds
// num_workgroups.x · WORKGROUP_1D invocations.
fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WORKGROUP_1D;
}

// Index of the workgroup in a grid from `kernels::grid_1d`, for kernels where one workgroup owns a
// row, a column or a block of elements.
fn workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
