// Pooling over the planes of an NCHW tensor ([planes = batch·channels, h, w] → [planes, oh, ow]),
// any window, stride and zero padding (padding is never part of a window's values):
//   max_pool_forward:  y = the largest value of each window; idx = where it sits in its plane
//                      (the first of equal values)
//   max_pool_backward: dx[i] (+)= Σ of dy over the windows whose idx is i       (a gather: no races)
//   avg_pool_forward:  y = the mean of each window's values inside the input
//   avg_pool_backward: dx[i] (+)= Σ of dy / (values in the window) over the windows holding i
// A global average pool is the average pool whose window is the whole plane.

struct Params {
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    accumulate: u32,
    dst_off: u32,
    src_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> idx: array<u32>;

// The input rows (or columns) [lo, hi) of output row `o` along a dimension of size n.
fn window(o: u32, k: u32, n: u32) -> vec2<u32> {
    let start = i32(o * p.stride) - i32(p.pad);
    let lo = u32(max(start, 0));
    let hi = u32(min(start + i32(k), i32(n)));
    return vec2<u32>(lo, hi);
}

// The output rows [lo, hi) whose windows hold input row `i` along a dimension (kernel k, out n).
fn windows_holding(i: u32, k: u32, n_out: u32) -> vec2<u32> {
    let t = i32(i) + i32(p.pad);
    // oy·s ≤ t < oy·s + k  ⇔  (t − k)/s < oy ≤ t/s
    let first = max((t - i32(k)) / i32(p.stride) + 1, 0);
    var lo = u32(first);
    if (t - i32(k) < 0) { lo = 0u; }
    let hi = min(u32(t) / p.stride + 1u, n_out);
    return vec2<u32>(lo, max(lo, hi));
}

fn store(at: u32, v: f32) {
    if (p.accumulate != 0u) {
        dst[at] = dst[at] + v;
    } else {
        dst[at] = v;
    }
}

@compute @workgroup_size(WORKGROUP_1D)
fn max_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_index(gid, nwg);
    if (o >= p.planes * p.oh * p.ow) { return; }
    let plane = o / (p.oh * p.ow);
    let oy = (o / p.ow) % p.oh;
    let ox = o % p.ow;
    let ys = window(oy, p.kh, p.h);
    let xs = window(ox, p.kw, p.w);
    let base = p.src_off + plane * p.h * p.w;
    var best = -3.402823e38;
    var at = ys.x * p.w + xs.x;
    for (var y = ys.x; y < ys.y; y++) {
        for (var x = xs.x; x < xs.y; x++) {
            let v = src[base + y * p.w + x];
            if (v > best) {
                best = v;
                at = y * p.w + x;
            }
        }
    }
    dst[p.dst_off + o] = best;
    idx[o] = at;
}

@compute @workgroup_size(WORKGROUP_1D)
fn max_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.planes * p.h * p.w) { return; }
    let plane = i / (p.h * p.w);
    let pos = i % (p.h * p.w);
    let ys = windows_holding(pos / p.w, p.kh, p.oh);
    let xs = windows_holding(pos % p.w, p.kw, p.ow);
    var sum = 0.0;
    for (var oy = ys.x; oy < ys.y; oy++) {
        for (var ox = xs.x; ox < xs.y; ox++) {
            let o = (plane * p.oh + oy) * p.ow + ox;
            if (idx[o] == pos) { sum += src[p.src_off + o]; }
        }
    }
    store(p.dst_off + i, sum);
}

@compute @workgroup_size(WORKGROUP_1D)
fn avg_pool_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = linear_index(gid, nwg);
    if (o >= p.planes * p.oh * p.ow) { return; }
    let plane = o / (p.oh * p.ow);
    let ys = window((o / p.ow) % p.oh, p.kh, p.h);
    let xs = window(o % p.ow, p.kw, p.w);
    let base = p.src_off + plane * p.h * p.w;
    var sum = 0.0;
    for (var y = ys.x; y < ys.y; y++) {
        for (var x = xs.x; x < xs.y; x++) {
            sum += src[base + y * p.w + x];
        }
    }
    dst[p.dst_off + o] = sum / f32((ys.y - ys.x) * (xs.y - xs.x));
}

@compute @workgroup_size(WORKGROUP_1D)
fn avg_pool_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.planes * p.h * p.w) { return; }
    let plane = i / (p.h * p.w);
    let pos = i % (p.h * p.w);
    let ys = windows_holding(pos / p.w, p.kh, p.oh);
    let xs = windows_holding(pos % p.w, p.kw, p.ow);
    var sum = 0.0;
    for (var oy = ys.x; oy < ys.y; oy++) {
        let wy = window(oy, p.kh, p.h);
        for (var ox = xs.x; ox < xs.y; ox++) {
            let wx = window(ox, p.kw, p.w);
            let o = (plane * p.oh + oy) * p.ow + ox;
            sum += src[p.src_off + o] / f32((wy.y - wy.x) * (wx.y - wx.x));
        }
    }
    store(p.dst_off + i, sum);
}
