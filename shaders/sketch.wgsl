// A random ±1 projection of the parameters to `k` numbers: out[j] = scale · Σ_i s(j, i) · x[i],
// with s(j, i) = ±1 from a hash of (seed, j, i) and scale = 1/sqrt(k), so E‖out‖² = ‖x‖² and the
// projection is linear: workers that use the same seed can estimate their consensus distance
// (1/n) Σ‖x_i − x̄‖² from their sketches alone (docs/algorithm.md §1). No matrix is stored: each
// sign is recomputed from the hash. One workgroup per output row.

struct Params {
    n: u32,
    k: u32,
    seed: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// PCG hash (Jarzynski & Olano 2020): a good 32-bit mix, the same on the host's twin.
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

var<workgroup> partial: array<f32, WORKGROUP_1D>;

@compute @workgroup_size(WORKGROUP_1D)
fn sketch(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = workgroup_index(wid, nwg);
    // `row` is uniform across the workgroup, so every invocation reaches the barriers below.
    let row_key = pcg_hash(p.seed ^ pcg_hash(row));
    var sum = 0.0;
    if (row < p.k) {
        for (var i = lid.x; i < p.n; i += WORKGROUP_1D) {
            let bit = pcg_hash(row_key ^ i) >> 31u;
            sum += select(x[i], -x[i], bit == 1u);
        }
    }
    partial[lid.x] = sum;
    workgroupBarrier();
    for (var stride = WORKGROUP_1D / 2u; stride > 0u; stride >>= 1u) {
        if (lid.x < stride) { partial[lid.x] += partial[lid.x + stride]; }
        workgroupBarrier();
    }
    if (lid.x == 0u && row < p.k) {
        out[row] = partial[0] * p.scale;
    }
}
