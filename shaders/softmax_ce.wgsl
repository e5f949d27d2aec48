// Fused softmax + cross-entropy over row-major logits [rows, classes], one invocation per row.
// Per row: loss = logsumexp(z) - z[label]; prediction = first argmax; when write_grad != 0,
// dz = grad_scale * (softmax(z) - onehot(label)) (grad_scale = 1/batch for a mean loss).
// Each workgroup adds its summed loss and its count of correct predictions to stats[2·wg] and
// stats[2·wg + 1], so a training loop reads the statistics back only when it wants to log them.

struct Params {
    rows: u32,
    classes: u32,
    write_grad: u32,
    grad_scale: f32,
}

// Rows per workgroup: `kernels::SOFTMAX_ROWS_PER_GROUP` on the host (checked by the naga test).
const ROWS_PER_GROUP: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;

var<workgroup> loss_part: array<f32, ROWS_PER_GROUP>;
var<workgroup> correct_part: array<f32, ROWS_PER_GROUP>;

@compute @workgroup_size(ROWS_PER_GROUP)
fn softmax_ce(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let group = workgroup_index(wid, nwg);
    let row = group * ROWS_PER_GROUP + lid.x;
    var loss = 0.0;
    var correct = 0.0;
    if (row < p.rows) {
        let base = row * p.classes;
        let label = labels[row];
        var zmax = logits[base];
        var argmax = 0u;
        for (var j = 1u; j < p.classes; j++) {
            let z = logits[base + j];
            if (z > zmax) { zmax = z; argmax = j; }
        }
        var sum = 0.0;
        for (var j = 0u; j < p.classes; j++) {
            sum += exp(logits[base + j] - zmax);
        }
        loss = log(sum) + zmax - logits[base + label];
        if (argmax == label) { correct = 1.0; }
        if (p.write_grad != 0u) {
            let inv = 1.0 / sum;
            for (var j = 0u; j < p.classes; j++) {
                var g = exp(logits[base + j] - zmax) * inv;
                if (j == label) { g -= 1.0; }
                dlogits[base + j] = p.grad_scale * g;
            }
        }
    }
    loss_part[lid.x] = loss;
    correct_part[lid.x] = correct;
    workgroupBarrier();
    for (var stride = ROWS_PER_GROUP / 2u; stride > 0u; stride >>= 1u) {
        if (lid.x < stride) {
            loss_part[lid.x] += loss_part[lid.x + stride];
            correct_part[lid.x] += correct_part[lid.x + stride];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        stats[2u * group] += loss_part[0];
        stats[2u * group + 1u] += correct_part[0];
    }
}
