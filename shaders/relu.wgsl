// ReLU over a flat range.
//   relu_forward:  h[i] = max(h[i], 0)                  (in place)
//   relu_backward: dh[i] = h[i] > 0 ? dh[i] : 0         (in place on the upstream gradient,
//                  masked by the forward OUTPUT h, which is > 0 exactly where the input was)

struct Params {
    n: u32,
    grad_off: u32,
    act_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> act: array<f32>;

@compute @workgroup_size(WORKGROUP_1D)
// In place on the activations, which are bound as `dst` at offset act_off.
fn relu_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) { return; }
    dst[p.act_off + i] = max(dst[p.act_off + i], 0.0);
}

@compute @workgroup_size(WORKGROUP_1D)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_index(gid, nwg);
    if (i >= p.n) { return; }
    if (act[p.act_off + i] <= 0.0) {
        dst[p.grad_off + i] = 0.0;
    }
}
