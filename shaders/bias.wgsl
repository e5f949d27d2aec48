// Bias of a dense layer over a row-major [rows, cols] activation:
//   bias_add:      y[r, j] += bias[j]
//   bias_add_relu: y[r, j] = max(y[r, j] + bias[j], 0)   (the forward epilogue of a hidden layer)
//   bias_grad:     db[j] = sum_r dy[r, j]                 (one workgroup per column, tree reduction)

struct Params {
    rows: u32,
    cols: u32,
    y_off: u32,
    bias_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;

fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.rows * p.cols) { return; }
    y[p.y_off + i] = y[p.y_off + i] + bias[p.bias_off + i % p.cols];
}

@compute @workgroup_size(256)
fn bias_add_relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.rows * p.cols) { return; }
    y[p.y_off + i] = max(y[p.y_off + i] + bias[p.bias_off + i % p.cols], 0.0);
}

// bias_grad binds the gradient arena read_write at binding 1 (db) and dy read-only at binding 2,
// so here `y` is the destination and `bias` the upstream gradient.
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn bias_grad(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let col = wid.x + wid.y * nwg.x;
    // `col` is uniform across the workgroup, so every invocation reaches the barriers below.
    var sum = 0.0;
    if (col < p.cols) {
        for (var r = lid.x; r < p.rows; r += 256u) {
            sum += bias[p.bias_off + r * p.cols + col];
        }
    }
    partial[lid.x] = sum;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid.x < stride) { partial[lid.x] += partial[lid.x + stride]; }
        workgroupBarrier();
    }
    if (lid.x == 0u && col < p.cols) {
        y[p.y_off + col] = partial[0];
    }
}
