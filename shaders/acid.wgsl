// The A²CiD² updates over the whole parameter arena, each in ONE pass (SPEC §3).
// `mix` = (1 − e^(−2·eta·d))/2 is computed on the host from the clock interval d since the last
// event, so the kernels are pure element-wise maps (plus one reduction).
//
//   mix_and_step:      mix (x, x̃) up to now, then the SGD step u (momentum, weight decay) applied
//                      to both: x ← x' − u, x̃ ← x̃' − u.
//   mix_and_snapshot:  mix up to now and copy x into the snapshot buffer s (what is sent).
//   mix_and_average:   mix up to now, then x ← x' + α(s_j − s_i), x̃ ← x̃' + α̃(s_j − s_i) with
//                      s_i the snapshot WE SENT, and per-workgroup partial sums of ‖s_i − s_j‖².
//
// HAS_TILDE = false is plain gossip (eta = 0, no x̃): the x̃ buffer is neither read nor written.

struct Params {
    n: u32,
    nesterov: u32,
    mix: f32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    alpha: f32,
    alpha_tilde: f32,
}

override HAS_TILDE: bool = true;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> xt: array<f32>;
// mix_and_step: momentum (rw) and gradient (read). mix_and_average: own snapshot s_i, peer's s_j,
// partial sums. mix_and_snapshot: the snapshot (rw).
@group(0) @binding(3) var<storage, read_write> aux: array<f32>;
@group(0) @binding(4) var<storage, read> other: array<f32>;
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;

// Mixed (x, x̃) of element i; with HAS_TILDE false, x is unchanged.
fn mixed(i: u32) -> vec2<f32> {
    let xi = x[i];
    if (!HAS_TILDE) {
        return vec2<f32>(xi, 0.0);
    }
    let ti = xt[i];
    let gap = p.mix * (ti - xi);
    return vec2<f32>(xi + gap, ti - gap);
}

@compute @workgroup_size(WORKGROUP_1D)
fn mix_and_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) { return; }
    let v = mixed(i);
    // SGD exactly as sgd.wgsl / optim::sgd_update, on the mixed x.
    let d = other[i] + p.weight_decay * v.x;
    let mi = p.momentum * aux[i] + d;
    aux[i] = mi;
    var u = p.lr * mi;
    if (p.nesterov != 0u) {
        u = p.lr * (d + p.momentum * mi);
    }
    x[i] = v.x - u;
    if (HAS_TILDE) {
        xt[i] = v.y - u;
    }
}

@compute @workgroup_size(WORKGROUP_1D)
fn mix_and_snapshot(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) { return; }
    let v = mixed(i);
    x[i] = v.x;
    if (HAS_TILDE) {
        xt[i] = v.y;
    }
    aux[i] = v.x;
}

var<workgroup> sq: array<f32, WORKGROUP_1D>;

// Elements per invocation of mix_and_average: the ‖s_i − s_j‖² reduction then costs one tree of
// barriers per 4,096 elements instead of per 256 (barriers are expensive on CPU adapters). The
// host sizes the grid and the partial sums with the same number (checked by the naga test).
const AVG_PER_INVOCATION: u32 = 16u;

@compute @workgroup_size(WORKGROUP_1D)
fn mix_and_average(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let group = workgroup_index(wid, nwg);
    let base = group * WORKGROUP_1D * AVG_PER_INVOCATION + lid.x;
    var dd = 0.0;
    for (var r = 0u; r < AVG_PER_INVOCATION; r++) {
        let i = base + r * WORKGROUP_1D; // consecutive invocations touch consecutive elements
        if (i < p.n) {
            let v = mixed(i);
            let delta = other[i] - aux[i]; // s_j − s_i, against the snapshot we sent
            x[i] = v.x + p.alpha * delta;
            if (HAS_TILDE) {
                xt[i] = v.y + p.alpha_tilde * delta;
            }
            dd = fma(delta, delta, dd);
        }
    }
    sq[lid.x] = dd;
    workgroupBarrier();
    for (var stride = WORKGROUP_1D / 2u; stride > 0u; stride >>= 1u) {
        if (lid.x < stride) { sq[lid.x] += sq[lid.x + stride]; }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        partials[group] = sq[0];
    }
}
