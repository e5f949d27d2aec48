// Per-channel operations over NCHW tensors [batch, channels, plane] (plane = height·width):
//   channel_bias_add:    dst[n, c, i] += param[c]                         (a convolution's bias)
//   channel_sum:         dst[c] = Σ_(n,i) src[n, c, i]                      (its gradient; GroupNorm's beta)
//   channel_dot:         dst[c] = Σ_(n,i) src[n, c, i] · saved[n, c, i]     (GroupNorm's gamma gradient)
//   group_norm_forward:  per sample n and group g of channels/groups consecutive channels,
//                        xhat = (x − mean) / sqrt(var + eps) over the group's values (biased
//                        variance), saved = xhat, dst = xhat · gamma[c] + beta[c],
//                        stats[n, g] = (mean, 1/sqrt(var + eps))
//   group_norm_backward: dst (+)= rstd · (dy·gamma − mean(dy·gamma) − xhat · mean(dy·gamma·xhat))
//                        over each group, dy = src
// The reductions run one workgroup per channel (channel_sum, channel_dot) or per (sample, group),
// with a tree reduction in workgroup memory. param holds gamma at p0_off and beta at p1_off (or
// the bias at p0_off): views into the parameter arena.

struct Params {
    batch: u32,
    channels: u32,
    plane: u32,
    groups: u32,
    eps: f32,
    accumulate: u32,
    dst_off: u32,
    src_off: u32,
    p0_off: u32,
    p1_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> saved: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

var<workgroup> partial: array<f32, WORKGROUP_1D>;
var<workgroup> partial2: array<f32, WORKGROUP_1D>;

@compute @workgroup_size(WORKGROUP_1D)
fn channel_bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.batch * p.channels * p.plane) { return; }
    let c = (i / p.plane) % p.channels;
    dst[p.dst_off + i] = dst[p.dst_off + i] + param[p.p0_off + c];
}

// Sums partial (and partial2) over the workgroup; the totals end in element 0.
fn reduce_two(lid: u32) {
    workgroupBarrier();
    for (var s = WORKGROUP_1D / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
            partial2[lid] += partial2[lid + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WORKGROUP_1D)
fn channel_sum(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = workgroup_index(wid, nwg);
    var sum = 0.0;
    if (c < p.channels) {
        let n_values = p.batch * p.plane;
        for (var e = lid.x; e < n_values; e += WORKGROUP_1D) {
            let n = e / p.plane;
            sum += src[p.src_off + (n * p.channels + c) * p.plane + e % p.plane];
        }
    }
    partial[lid.x] = sum;
    partial2[lid.x] = 0.0;
    reduce_two(lid.x);
    if (lid.x == 0u && c < p.channels) {
        dst[p.dst_off + c] = partial[0];
    }
}

@compute @workgroup_size(WORKGROUP_1D)
fn channel_dot(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = workgroup_index(wid, nwg);
    var sum = 0.0;
    if (c < p.channels) {
        let n_values = p.batch * p.plane;
        for (var e = lid.x; e < n_values; e += WORKGROUP_1D) {
            let n = e / p.plane;
            let at = (n * p.channels + c) * p.plane + e % p.plane;
            sum += src[p.src_off + at] * saved[at];
        }
    }
    partial[lid.x] = sum;
    partial2[lid.x] = 0.0;
    reduce_two(lid.x);
    if (lid.x == 0u && c < p.channels) {
        dst[p.dst_off + c] = partial[0];
    }
}

@compute @workgroup_size(WORKGROUP_1D)
fn group_norm_forward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ng = workgroup_index(wid, nwg); // n · groups + g
    let per_group = p.channels / p.groups;
    let m = per_group * p.plane;
    // A group's values are consecutive in NCHW: channels g·per_group .. (g+1)·per_group of n.
    let start = ng * m;
    let live = ng < p.batch * p.groups;
    var sum = 0.0;
    if (live) {
        for (var e = lid.x; e < m; e += WORKGROUP_1D) { sum += src[p.src_off + start + e]; }
    }
    partial[lid.x] = sum;
    partial2[lid.x] = 0.0;
    reduce_two(lid.x);
    let mean = partial[0] / f32(m);
    workgroupBarrier();
    var sq = 0.0;
    if (live) {
        for (var e = lid.x; e < m; e += WORKGROUP_1D) {
            let d = src[p.src_off + start + e] - mean;
            sq += d * d;
        }
    }
    partial[lid.x] = sq;
    partial2[lid.x] = 0.0;
    reduce_two(lid.x);
    let rstd = inverseSqrt(partial[0] / f32(m) + p.eps);
    if (!live) { return; }
    let g = ng % p.groups;
    for (var e = lid.x; e < m; e += WORKGROUP_1D) {
        let c = g * per_group + e / p.plane;
        let xhat = (src[p.src_off + start + e] - mean) * rstd;
        saved[start + e] = xhat;
        dst[p.dst_off + start + e] = fma(xhat, param[p.p0_off + c], param[p.p1_off + c]);
    }
    if (lid.x == 0u) {
        stats[2u * ng] = mean;
        stats[2u * ng + 1u] = rstd;
    }
}

@compute @workgroup_size(WORKGROUP_1D)
fn group_norm_backward(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let ng = workgroup_index(wid, nwg);
    let per_group = p.channels / p.groups;
    let m = per_group * p.plane;
    let start = ng * m;
    let live = ng < p.batch * p.groups;
    let g = ng % p.groups;
    var s1 = 0.0;
    var s2 = 0.0;
    if (live) {
        for (var e = lid.x; e < m; e += WORKGROUP_1D) {
            let c = g * per_group + e / p.plane;
            let dxhat = src[p.src_off + start + e] * param[p.p0_off + c];
            s1 += dxhat;
            s2 += dxhat * saved[start + e];
        }
    }
    partial[lid.x] = s1;
    partial2[lid.x] = s2;
    reduce_two(lid.x);
    if (!live) { return; }
    let mean1 = partial[0] / f32(m);
    let mean2 = partial2[0] / f32(m);
    let rstd = stats[2u * ng + 1u];
    for (var e = lid.x; e < m; e += WORKGROUP_1D) {
        let c = g * per_group + e / p.plane;
        let dxhat = src[p.src_off + start + e] * param[p.p0_off + c];
        var dx = rstd * (dxhat - mean1 - saved[start + e] * mean2);
        if (p.accumulate != 0u) { dx += dst[p.dst_off + start + e]; }
        dst[p.dst_off + start + e] = dx;
    }
}
