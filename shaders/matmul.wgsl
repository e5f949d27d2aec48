// Tiled matrix product C[M,N] = op(A)[M,K] · op(B)[K,N], row-major, with optional accumulation
// into C. The transposed variants needed by backward passes are pipeline specialisations:
//   TRANS_A: A is stored as [K, M] (dW = Xᵀ·dY),   TRANS_B: B is stored as [N, K] (dX = dY·Wᵀ).
// Each workgroup computes a 64×64 block of C with 16×16 invocations of 4×4 outputs each, staging
// 64×16 tiles of A and 16×64 tiles of B in workgroup memory. Offsets are in f32 elements so that
// operands can be views into the flat parameter arena.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;

// BM and BN are `kernels::MATMUL_TILE` on the host, which sizes the grid (checked by the naga test).
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

var<workgroup> tile_a: array<f32, 1024>; // [BK][BM]
var<workgroup> tile_b: array<f32, 1024>; // [BK][BN]

// A(row, col) of op(A), zero outside the matrix.
fn load_a(row: u32, col: u32) -> f32 {
    if (row >= p.m || col >= p.k) { return 0.0; }
    if (TRANS_A) { return a[p.a_off + col * p.m + row]; }
    return a[p.a_off + row * p.k + col];
}

// B(row, col) of op(B), zero outside the matrix.
fn load_b(row: u32, col: u32) -> f32 {
    if (row >= p.k || col >= p.n) { return 0.0; }
    if (TRANS_B) { return b[p.b_off + col * p.k + row]; }
    return b[p.b_off + row * p.n + col];
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = lid.y * 16u + lid.x;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    // Four rows (lid.y + 16·i) × four columns (lid.x + 16·j) per invocation, held in vec4 registers
    // (no dynamically indexed local arrays, which some compilers spill to memory).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // Consecutive invocations read consecutive memory in the stored layout of each operand.
            var am: u32; var ak: u32;
            if (TRANS_A) { am = e % BM; ak = e / BM; } else { am = e / BK; ak = e % BK; }
            tile_a[ak * BM + am] = load_a(row0 + am, k0 + ak);
            var bk: u32; var bn: u32;
            if (TRANS_B) { bn = e / BK; bk = e % BK; } else { bk = e / BN; bn = e % BN; }
            tile_b[bk * BN + bn] = load_b(k0 + bk, col0 + bn);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ar = kk * BM + lid.y;
            let bc = kk * BN + lid.x;
            let bv = vec4<f32>(tile_b[bc], tile_b[bc + 16u], tile_b[bc + 32u], tile_b[bc + 48u]);
            acc0 = fma(vec4<f32>(tile_a[ar]), bv, acc0);
            acc1 = fma(vec4<f32>(tile_a[ar + 16u]), bv, acc1);
            acc2 = fma(vec4<f32>(tile_a[ar + 32u]), bv, acc2);
            acc3 = fma(vec4<f32>(tile_a[ar + 48u]), bv, acc3);
        }
        workgroupBarrier();
    }

    store_row(row0 + lid.y, col0 + lid.x, acc0);
    store_row(row0 + lid.y + 16u, col0 + lid.x, acc1);
    store_row(row0 + lid.y + 32u, col0 + lid.x, acc2);
    store_row(row0 + lid.y + 48u, col0 + lid.x, acc3);
}

// Writes (or adds) v to C[row, col + 16·j] for the j in range.
fn store_row(row: u32, col: u32, v: vec4<f32>) {
    if (row >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let c_col = col + j * 16u;
        if (c_col >= p.n) { continue; }
        let idx = p.c_off + row * p.n + c_col;
        if (p.accumulate != 0u) {
            c[idx] = c[idx] + v[j];
        } else {
            c[idx] = v[j];
        }
    }
}
