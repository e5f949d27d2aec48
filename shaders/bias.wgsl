// Bias of a dense layer over a row-major [rows, cols] activation:
//   bias_add:      y[r, j] += bias[j]                     (dst = y, src = bias)
//   bias_add_relu: y[r, j] = max(y[r, j] + bias[j], 0)   (the forward epilogue of a hidden layer)
//   bias_grad:     db[j] = sum_r dy[r, j]                 (dst = db, src = dy; one workgroup per
//                                                          column, tree reduction)

struct Params {
    rows: u32,
    cols: u32,
    dst_off: u32,
    src_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;

@compute @workgroup_size(WORKGROUP_1D)
fn bias_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.rows * p.cols) { return; }
    dst[p.dst_off + i] = dst[p.dst_off + i] + src[p.src_off + i % p.cols];
}

@compute @workgroup_size(WORKGROUP_1D)
fn bias_add_relu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.rows * p.cols) { return; }
    dst[p.dst_off + i] = max(dst[p.dst_off + i] + src[p.src_off + i % p.cols], 0.0);
}

var<workgroup> partial: array<f32, WORKGROUP_1D>;

@compute @workgroup_size(WORKGROUP_1D)
fn bias_grad(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let col = workgroup_index(wid, nwg);
    // `col` is uniform across the workgroup, so every invocation reaches the barriers below.
    var sum = 0.0;
    if (col < p.cols) {
        for (var r = lid.x; r < p.rows; r += WORKGROUP_1D) {
            sum += src[p.src_off + r * p.cols + col];
        }
    }
    partial[lid.x] = sum;
    workgroupBarrier();
    for (var stride = WORKGROUP_1D / 2u; stride > 0u; stride >>= 1u) {
        if (lid.x < stride) { partial[lid.x] += partial[lid.x + stride]; }
        workgroupBarrier();
    }
    if (lid.x == 0u && col < p.cols) {
        dst[p.dst_off + col] = partial[0];
    }
}
