// Low-rank compression of the difference between two neighbours' models (PowerGossip, Vogels et
// al. 2020; docs/engine.md "Compressed exchanges"). A parameter block is an m×n row-major matrix
// X at element `x_off` of the arena; the factors are row-major m×R (P) and n×R (Q) matrices with
// R ≤ MAX_RANK. Three kernels:
//   right_product:  out = X · basis     (m×R; basis is n×R)   — RIGHT_ROWS rows per workgroup
//   left_product:   out = Xᵀ · basis    (n×R; basis is m×R)   — LEFT_COLUMNS columns per workgroup
//   rank_update:    dst += coeff · left · rightᵀ              — one invocation per element
// The orthonormalisation of the R columns runs on the host (engine/src/compress.rs): the factors
// cross the host anyway (they are what goes on the wire) and R is at most MAX_RANK.

// The largest rank the kernels' registers and workgroup memory hold (`compress::MAX_RANK`).
const MAX_RANK: u32 = 8u;
// right_product: rows per workgroup, and invocations sharing one row (they split the columns).
const RIGHT_ROWS: u32 = 8u;
const RIGHT_LANES: u32 = 32u; // RIGHT_ROWS · RIGHT_LANES = WORKGROUP_1D
// left_product: columns per workgroup, and invocations sharing one column (they split the rows).
const LEFT_COLUMNS: u32 = 32u;
const LEFT_LANES: u32 = 8u; // LEFT_COLUMNS · LEFT_LANES = WORKGROUP_1D

struct Params {
    m: u32,
    n: u32,
    rank: u32,
    x_off: u32,
    // Products: the basis' offset. rank_update: the left factor's (m×R).
    f_off: u32,
    // Products: the output's offset. rank_update: the right factor's (n×R).
    g_off: u32,
    coeff: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> basis: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@group(0) @binding(5) var<storage, read> left: array<f32>;
@group(0) @binding(6) var<storage, read> right: array<f32>;

var<workgroup> partial: array<array<f32, MAX_RANK>, WORKGROUP_1D>;

// out[i, r] = Σ_j X[i, j] · basis[j, r]. Invocation (row, lane) of a workgroup owns row
// RIGHT_ROWS·group + row and the columns j ≡ lane (mod RIGHT_LANES): neighbouring invocations read
// neighbouring elements of a row (coalesced), and the lanes' partial sums meet in a tree
// reduction (log2 RIGHT_LANES barriers for RIGHT_ROWS rows).
@compute @workgroup_size(WORKGROUP_1D)
fn right_product(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lane = lid.x % RIGHT_LANES;
    let row = workgroup_index(wid, nwg) * RIGHT_ROWS + lid.x / RIGHT_LANES;
    var acc: array<f32, MAX_RANK>;
    if (row < p.m) {
        let base = p.x_off + row * p.n;
        for (var j = lane; j < p.n; j += RIGHT_LANES) {
            let v = x[base + j];
            let b = p.f_off + j * p.rank;
            for (var r = 0u; r < p.rank; r++) {
                acc[r] = fma(v, basis[b + r], acc[r]);
            }
        }
    }
    partial[lid.x] = acc;
    workgroupBarrier();
    for (var stride = RIGHT_LANES / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            for (var r = 0u; r < p.rank; r++) {
                partial[lid.x][r] += partial[lid.x + stride][r];
            }
        }
        workgroupBarrier();
    }
    if (lane < p.rank && row < p.m) {
        out[p.g_off + row * p.rank + lane] = partial[lid.x - lane][lane];
    }
}

// out[j, r] = Σ_i X[i, j] · basis[i, r]. Invocation (lane, c) of a workgroup owns column
// LEFT_COLUMNS·group + c and the rows i ≡ lane (mod LEFT_LANES): neighbouring invocations read
// neighbouring columns of a row (coalesced), and the lanes' partial sums are added at the end.
@compute @workgroup_size(WORKGROUP_1D)
fn left_product(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = lid.x % LEFT_COLUMNS;
    let lane = lid.x / LEFT_COLUMNS;
    let col = workgroup_index(wid, nwg) * LEFT_COLUMNS + c;
    var acc: array<f32, MAX_RANK>;
    if (col < p.n) {
        for (var i = lane; i < p.m; i += LEFT_LANES) {
            let v = x[p.x_off + i * p.n + col];
            let b = p.f_off + i * p.rank;
            for (var r = 0u; r < p.rank; r++) {
                acc[r] = fma(v, basis[b + r], acc[r]);
            }
        }
    }
    partial[lid.x] = acc;
    workgroupBarrier();
    for (var stride = LEFT_LANES / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            for (var r = 0u; r < p.rank; r++) {
                partial[lid.x][r] += partial[lid.x + stride * LEFT_COLUMNS][r];
            }
        }
        workgroupBarrier();
    }
    if (lane == 0u && col < p.n) {
        for (var r = 0u; r < p.rank; r++) {
            out[p.g_off + col * p.rank + r] = partial[c][r];
        }
    }
}

// dst[i, j] += coeff · Σ_r left[i, r] · right[j, r]: the rank-R update x ± c·P Qᵀ.
@compute @workgroup_size(WORKGROUP_1D)
fn rank_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let e = linear_index(gid, nwg);
    if (e >= p.m * p.n) { return; }
    let i = e / p.n;
    let j = e - i * p.n;
    var sum = 0.0;
    for (var r = 0u; r < p.rank; r++) {
        sum = fma(left[p.f_off + i * p.rank + r], right[p.g_off + j * p.rank + r], sum);
    }
    dst[p.x_off + e] = fma(p.coeff, sum, dst[p.x_off + e]);
}
