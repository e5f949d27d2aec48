// Small utilities over flat f32 buffers: fill, copy, axpy, sum of slices (1-D kernels, see
// prelude.wgsl).

struct Params {
    n: u32,
    dst_off: u32,
    src_off: u32,
    value: f32,
    count: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;

// dst[i] = value
@compute @workgroup_size(WORKGROUP_1D)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) { return; }
    dst[p.dst_off + i] = p.value;
}

// dst[i] = src[i]
@compute @workgroup_size(WORKGROUP_1D)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) { return; }
    dst[p.dst_off + i] = src[p.src_off + i];
}

// dst[i] += value * src[i]
@compute @workgroup_size(WORKGROUP_1D)
fn axpy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) { return; }
    dst[p.dst_off + i] = fma(p.value, src[p.src_off + i], dst[p.dst_off + i]);
}

// dst[i] = sum over s < count of src[s·n + i]   (the slices of a split-K product, in order)
@compute @workgroup_size(WORKGROUP_1D)
fn sum_slices(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) { return; }
    var sum = 0.0;
    for (var s = 0u; s < p.count; s++) {
        sum += src[p.src_off + s * p.n + i];
    }
    dst[p.dst_off + i] = sum;
}
