// One fused SGD step over the whole parameter arena (PyTorch semantics, no dampening):
//   m <- momentum·m + (g + wd·x)
//   u  = lr·m                              (or, Nesterov: lr·(g + wd·x + momentum·m))
//   x <- x - u
// One pass: reads x, g, m and writes x, m — the bandwidth floor of the update.

struct Params {
    n: u32,
    nesterov: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read> g: array<f32>;

@compute @workgroup_size(WORKGROUP_1D)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) { return; }
    let xi = x[i];
    let d = g[i] + p.weight_decay * xi;
    let mi = p.momentum * m[i] + d;
    m[i] = mi;
    var u = p.lr * mi;
    if (p.nesterov != 0u) {
        u = p.lr * (d + p.momentum * mi);
    }
    x[i] = xi - u;
}
