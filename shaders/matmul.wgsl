// Tiled matrix product C[M,N] = op(A)[M,K] · op(B)[K,N], row-major, with optional accumulation
// into C, batched over the grid's z dimension. One tiled loop serves plain matrices and the three
// products of a 2-D convolution (implicit GEMM: the im2col matrix is never stored, its elements
// are read from the NCHW tensor where the tile loads need them). MODE, a pipeline specialisation:
//   0  plain: A and B are stored matrices. TRANS_A: A is stored as [K, M] (dW = Xᵀ·dY);
//      TRANS_B: B is stored as [N, K] (dX = dY·Wᵀ). z: batch, operands at off + z·stride.
//   1  conv forward, image z:       Y_z[oc, p]  = Σ_q W[oc, q] · col(X_z)[q, p]
//   2  conv input gradient, one stride phase of one image (z = image·STRIDE² + phase):
//      dX_z[c, r] = Σ_(oc,a,b) W[oc, c, i, j] · dY_z[oc, oy, ox] over the input pixels r = (iy, ix)
//      of the phase. An input pixel receives gradient only from the taps i ≡ iy + pad (mod s):
//      grouping the pixels by (iy + pad mod s, ix + pad mod s) leaves ⌈KH/s⌉·⌈KW/s⌉ taps
//      (i, j) = (py + s·a, px + s·b) per output channel instead of KH·KW of which all but 1/s²
//      are zero, and each phase is a dense product over its ⌈H/s⌉ × ⌈W/s⌉ pixel grid.
//   3  conv weight gradient, split-K: dW_z[oc, q] = Σ_(n,p) in chunk z of dY[n, oc, p] · col(X_n)[q, p]
//      (each z sums one chunk of k_chunk of the N·OH·OW products into its own slice of C; the
//      caller sums the slices)
// with q = (c, i, j) over the C_in·KH·KW kernel taps, p = (oh, ow) over the output and r = (ih, iw)
// over the input; col(X)[(c,i,j), (oh,ow)] = X[c, oh·s − pad + i, ow·s − pad + j], 0 outside.
// The three kernels below (tiled, direct, wide) share the loaders, `begin` and the stores.
// In the conv modes TRANS_A / TRANS_B only choose the order in which the tile loads walk memory.
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
    // Per-z element offsets of A, B and C.
    a_stride: u32,
    b_stride: u32,
    c_stride: u32,
    // MODE 3: products per z (0: all K in one z).
    k_chunk: u32,
}

override MODE: u32 = 0u;
// Convolution geometry (MODE 1–3), specialised per layer so that the index arithmetic of the
// implicit im2col divides by constants: input channels, input height and width, kernel height and
// width, stride, padding, output height and width, output channels.
override C_IN: u32 = 1u;
override H: u32 = 1u;
override W: u32 = 1u;
override KH: u32 = 1u;
override KW: u32 = 1u;
override STRIDE: u32 = 1u;
override PAD: u32 = 0u;
override OH: u32 = 1u;
override OW: u32 = 1u;
override C_OUT: u32 = 1u;
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

// MODE 2: this slice's stride phase. Its input pixels are (first_y + s·t, first_x + s·u) for
// (t, u) over the phase grid, their taps (phase_y + s·a, phase_x + s·b), and pixel (t, u) meets
// tap (a, b) at output (top_y + t − a, top_x + u − b).
var<private> phase_y: u32;
var<private> phase_x: u32;
var<private> first_y: u32;
var<private> first_x: u32;
var<private> top_y: u32;
var<private> top_x: u32;

// Rows of the phase grid's pixel row and of its tap rows (MODE 2).
fn phase_w() -> u32 { return (W + STRIDE - 1u) / STRIDE; }
fn phase_kw() -> u32 { return (KW + STRIDE - 1u) / STRIDE; }
fn phase_kh() -> u32 { return (KH + STRIDE - 1u) / STRIDE; }

struct Bases {
    a: u32,
    b: u32,
    c: u32,
    // The products this slice sums, [k_lo, k_hi).
    k_lo: u32,
    k_hi: u32,
}

// The operands' offsets and product range of slice z; in MODE 2 also its stride phase.
fn begin(z: u32) -> Bases {
    var image = z;
    if (MODE == 2u) {
        let phases = STRIDE * STRIDE;
        image = z / phases;
        phase_y = (z % phases) / STRIDE;
        phase_x = z % STRIDE;
        first_y = (phase_y + STRIDE - PAD % STRIDE) % STRIDE;
        first_x = (phase_x + STRIDE - PAD % STRIDE) % STRIDE;
        top_y = (first_y + PAD - phase_y) / STRIDE;
        top_x = (first_x + PAD - phase_x) / STRIDE;
    }
    var k_lo = 0u;
    var k_hi = p.k;
    if (p.k_chunk != 0u) {
        // MODE 3: chunk z of the products.
        k_lo = z * p.k_chunk;
        k_hi = min(p.k, k_lo + p.k_chunk);
    }
    return Bases(
        p.a_off + image * p.a_stride,
        p.b_off + image * p.b_stride,
        p.c_off + image * p.c_stride,
        k_lo,
        k_hi,
    );
}

// The im2col element col[(ch, i, j), (oy, ox)] of the image starting at `base` of `b`.
fn im2col(base: u32, q: u32, pix: u32) -> f32 {
    let taps = KH * KW;
    let ch = q / taps;
    let ij = q % taps;
    let y = i32((pix / OW) * STRIDE + ij / KW) - i32(PAD);
    let x = i32((pix % OW) * STRIDE + ij % KW) - i32(PAD);
    if (y < 0 || x < 0 || y >= i32(H) || x >= i32(W)) { return 0.0; }
    return b[base + (ch * H + u32(y)) * W + u32(x)];
}

// A(row, col) of op(A) for this z (its offset `base`), zero outside [0, M) × [k_lo, k_hi).
fn load_a(base: u32, row: u32, col: u32, k_hi: u32) -> f32 {
    if (row >= p.m || col >= k_hi) { return 0.0; }
    return load_a_at(base, row, col);
}

// A(row, col) for a row and column inside the matrix.
fn load_a_at(base: u32, row: u32, col: u32) -> f32 {
    switch MODE {
        case 2u: {
            // A[c, (oc, a, b)] = W[oc, c, phase_y + s·a, phase_x + s·b], 0 past the filter; W is
            // [c_out, c_in, kh, kw].
            let taps = phase_kh() * phase_kw();
            let oc = col / taps;
            let ab = col % taps;
            let i = phase_y + STRIDE * (ab / phase_kw());
            let j = phase_x + STRIDE * (ab % phase_kw());
            if (i >= KH || j >= KW) { return 0.0; }
            return a[base + ((oc * C_IN + row) * KH + i) * KW + j];
        }
        case 3u: {
            // A[oc, (n, pix)] = dY[n, oc, pix].
            let plane = OH * OW;
            let img = col / plane;
            return a[base + (img * C_OUT + row) * plane + col % plane];
        }
        default: {
            if (TRANS_A) { return a[base + col * p.m + row]; }
            return a[base + row * p.k + col];
        }
    }
}

// B(row, col) of op(B) for this z (its offset `base`), zero outside [k_lo, k_hi) × [0, N).
fn load_b(base: u32, row: u32, col: u32, k_hi: u32) -> f32 {
    if (row >= k_hi || col >= p.n) { return 0.0; }
    return load_b_at(base, row, col);
}

// B(row, col) for a row and column inside the matrix.
fn load_b_at(base: u32, row: u32, col: u32) -> f32 {
    switch MODE {
        case 1u: {
            return im2col(base, row, col);
        }
        case 2u: {
            // B[(oc, a, b), (t, u)] = dY[oc, top_y + t − a, top_x + u − b], 0 outside the output.
            let taps = phase_kh() * phase_kw();
            let oc = row / taps;
            let ab = row % taps;
            let oy = i32(top_y + col / phase_w()) - i32(ab / phase_kw());
            let ox = i32(top_x + col % phase_w()) - i32(ab % phase_kw());
            if (oy < 0 || ox < 0 || oy >= i32(OH) || ox >= i32(OW)) { return 0.0; }
            return b[base + (oc * OH + u32(oy)) * OW + u32(ox)];
        }
        case 3u: {
            // B[(n, pix), q] = col(X_n)[q, pix].
            let plane = OH * OW;
            let img = row / plane;
            return im2col(base + img * C_IN * H * W, col, row % plane);
        }
        default: {
            if (TRANS_B) { return b[base + col * p.k + row]; }
            return b[base + row * p.n + col];
        }
    }
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = lid.y * 16u + lid.x;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let z = begin(wid.z);
    let a_base = z.a;
    let b_base = z.b;
    let c_base = z.c;
    let k_lo = z.k_lo;
    let k_hi = z.k_hi;
    // Four rows (lid.y + 16·i) × four columns (lid.x + 16·j) per invocation, held in vec4 registers
    // (no dynamically indexed local arrays, which some compilers spill to memory).
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = k_lo; k0 < k_hi; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // Consecutive invocations read consecutive memory in the stored layout of each operand.
            var am: u32; var ak: u32;
            if (TRANS_A) { am = e % BM; ak = e / BM; } else { am = e / BK; ak = e % BK; }
            tile_a[ak * BM + am] = load_a(a_base, row0 + am, k0 + ak, k_hi);
            var bk: u32; var bn: u32;
            if (TRANS_B) { bn = e / BK; bk = e % BK; } else { bk = e / BN; bn = e % BN; }
            tile_b[bk * BN + bn] = load_b(b_base, k0 + bk, col0 + bn, k_hi);
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

    store_row(c_base, row0 + lid.y, col0 + lid.x, acc0);
    store_row(c_base, row0 + lid.y + 16u, col0 + lid.x, acc1);
    store_row(c_base, row0 + lid.y + 32u, col0 + lid.x, acc2);
    store_row(c_base, row0 + lid.y + 48u, col0 + lid.x, acc3);
}

// The same product without workgroup memory: each invocation reads its operands straight from
// the buffers (through the same loaders) — for devices where caches make staging a waste. Rows and
// columns past the matrix read its last row or column instead of branching on every load: their
// results are never stored.
@compute @workgroup_size(16, 16)
fn matmul_direct(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * BM + lid.y;
    let col0 = wid.x * BN + lid.x;
    let z = begin(wid.z);
    let a_base = z.a;
    let b_base = z.b;
    let c_base = z.c;
    let k_lo = z.k_lo;
    let k_hi = z.k_hi;
    let r0 = min(row0, p.m - 1u);
    let r1 = min(row0 + 16u, p.m - 1u);
    let r2 = min(row0 + 32u, p.m - 1u);
    let r3 = min(row0 + 48u, p.m - 1u);
    let c0 = min(col0, p.n - 1u);
    let c1 = min(col0 + 16u, p.n - 1u);
    let c2 = min(col0 + 32u, p.n - 1u);
    let c3 = min(col0 + 48u, p.n - 1u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = k_lo; kk < k_hi; kk++) {
        let bv = vec4<f32>(
            load_b_at(b_base, kk, c0),
            load_b_at(b_base, kk, c1),
            load_b_at(b_base, kk, c2),
            load_b_at(b_base, kk, c3),
        );
        acc0 = fma(vec4<f32>(load_a_at(a_base, r0, kk)), bv, acc0);
        acc1 = fma(vec4<f32>(load_a_at(a_base, r1, kk)), bv, acc1);
        acc2 = fma(vec4<f32>(load_a_at(a_base, r2, kk)), bv, acc2);
        acc3 = fma(vec4<f32>(load_a_at(a_base, r3, kk)), bv, acc3);
    }
    store_row(c_base, row0, col0, acc0);
    store_row(c_base, row0 + 16u, col0, acc1);
    store_row(c_base, row0 + 32u, col0, acc2);
    store_row(c_base, row0 + 48u, col0, acc3);
}

// The same product for CPU adapters, with a larger block per invocation. On a CPU adapter an
// invocation is one SIMD lane and every buffer load is a bounds-checked scalar load per lane:
// loads, not arithmetic, set the pace, and the block each invocation computes sets the loads per
// product. Here an invocation computes 16 × 8 outputs of C (rows lid.y + 4·i, columns
// lid.x + 8·j of the workgroup's 64×64 block: the same grid as the other kernels), 24 loads per
// 128 multiply-adds against 8 per 16 in `matmul_direct` — about 2.5× its throughput on lavapipe.
// Written out by hand: the shader compiler keeps local arrays in memory (a loop over
// `array<f32, 128>` accumulators ran at the scalar kernel's speed), and 16 × 8 is where a larger
// block stops paying for its longer compile (32 × 8: +9% speed, 2× the pipeline compile time).
@compute @workgroup_size(8, 4)
fn matmul_wide(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * BM + lid.y;
    let col0 = wid.x * BN + lid.x;
    let z = begin(wid.z);
    let a_base = z.a;
    let b_base = z.b;
    let c_base = z.c;
    // Rows and columns past the matrix read its last row or column; their results are never
    // stored.
    let last_row = p.m - 1u;
    let last_col = p.n - 1u;
    let r0 = min(row0 + 0u, last_row);
    let r1 = min(row0 + 4u, last_row);
    let r2 = min(row0 + 8u, last_row);
    let r3 = min(row0 + 12u, last_row);
    let r4 = min(row0 + 16u, last_row);
    let r5 = min(row0 + 20u, last_row);
    let r6 = min(row0 + 24u, last_row);
    let r7 = min(row0 + 28u, last_row);
    let r8 = min(row0 + 32u, last_row);
    let r9 = min(row0 + 36u, last_row);
    let r10 = min(row0 + 40u, last_row);
    let r11 = min(row0 + 44u, last_row);
    let r12 = min(row0 + 48u, last_row);
    let r13 = min(row0 + 52u, last_row);
    let r14 = min(row0 + 56u, last_row);
    let r15 = min(row0 + 60u, last_row);
    let c0 = min(col0 + 0u, last_col);
    let c1 = min(col0 + 8u, last_col);
    let c2 = min(col0 + 16u, last_col);
    let c3 = min(col0 + 24u, last_col);
    let c4 = min(col0 + 32u, last_col);
    let c5 = min(col0 + 40u, last_col);
    let c6 = min(col0 + 48u, last_col);
    let c7 = min(col0 + 56u, last_col);
    // Row i of the block: columns 0–3 in acc_i_lo, 4–7 in acc_i_hi.
    var acc0_lo = vec4<f32>(0.0);
    var acc0_hi = vec4<f32>(0.0);
    var acc1_lo = vec4<f32>(0.0);
    var acc1_hi = vec4<f32>(0.0);
    var acc2_lo = vec4<f32>(0.0);
    var acc2_hi = vec4<f32>(0.0);
    var acc3_lo = vec4<f32>(0.0);
    var acc3_hi = vec4<f32>(0.0);
    var acc4_lo = vec4<f32>(0.0);
    var acc4_hi = vec4<f32>(0.0);
    var acc5_lo = vec4<f32>(0.0);
    var acc5_hi = vec4<f32>(0.0);
    var acc6_lo = vec4<f32>(0.0);
    var acc6_hi = vec4<f32>(0.0);
    var acc7_lo = vec4<f32>(0.0);
    var acc7_hi = vec4<f32>(0.0);
    var acc8_lo = vec4<f32>(0.0);
    var acc8_hi = vec4<f32>(0.0);
    var acc9_lo = vec4<f32>(0.0);
    var acc9_hi = vec4<f32>(0.0);
    var acc10_lo = vec4<f32>(0.0);
    var acc10_hi = vec4<f32>(0.0);
    var acc11_lo = vec4<f32>(0.0);
    var acc11_hi = vec4<f32>(0.0);
    var acc12_lo = vec4<f32>(0.0);
    var acc12_hi = vec4<f32>(0.0);
    var acc13_lo = vec4<f32>(0.0);
    var acc13_hi = vec4<f32>(0.0);
    var acc14_lo = vec4<f32>(0.0);
    var acc14_hi = vec4<f32>(0.0);
    var acc15_lo = vec4<f32>(0.0);
    var acc15_hi = vec4<f32>(0.0);
    for (var kk = z.k_lo; kk < z.k_hi; kk++) {
        let b_lo = vec4<f32>(load_b_at(b_base, kk, c0), load_b_at(b_base, kk, c1),
                             load_b_at(b_base, kk, c2), load_b_at(b_base, kk, c3));
        let b_hi = vec4<f32>(load_b_at(b_base, kk, c4), load_b_at(b_base, kk, c5),
                             load_b_at(b_base, kk, c6), load_b_at(b_base, kk, c7));
        let a0 = vec4<f32>(load_a_at(a_base, r0, kk));
        acc0_lo = fma(a0, b_lo, acc0_lo);
        acc0_hi = fma(a0, b_hi, acc0_hi);
        let a1 = vec4<f32>(load_a_at(a_base, r1, kk));
        acc1_lo = fma(a1, b_lo, acc1_lo);
        acc1_hi = fma(a1, b_hi, acc1_hi);
        let a2 = vec4<f32>(load_a_at(a_base, r2, kk));
        acc2_lo = fma(a2, b_lo, acc2_lo);
        acc2_hi = fma(a2, b_hi, acc2_hi);
        let a3 = vec4<f32>(load_a_at(a_base, r3, kk));
        acc3_lo = fma(a3, b_lo, acc3_lo);
        acc3_hi = fma(a3, b_hi, acc3_hi);
        let a4 = vec4<f32>(load_a_at(a_base, r4, kk));
        acc4_lo = fma(a4, b_lo, acc4_lo);
        acc4_hi = fma(a4, b_hi, acc4_hi);
        let a5 = vec4<f32>(load_a_at(a_base, r5, kk));
        acc5_lo = fma(a5, b_lo, acc5_lo);
        acc5_hi = fma(a5, b_hi, acc5_hi);
        let a6 = vec4<f32>(load_a_at(a_base, r6, kk));
        acc6_lo = fma(a6, b_lo, acc6_lo);
        acc6_hi = fma(a6, b_hi, acc6_hi);
        let a7 = vec4<f32>(load_a_at(a_base, r7, kk));
        acc7_lo = fma(a7, b_lo, acc7_lo);
        acc7_hi = fma(a7, b_hi, acc7_hi);
        let a8 = vec4<f32>(load_a_at(a_base, r8, kk));
        acc8_lo = fma(a8, b_lo, acc8_lo);
        acc8_hi = fma(a8, b_hi, acc8_hi);
        let a9 = vec4<f32>(load_a_at(a_base, r9, kk));
        acc9_lo = fma(a9, b_lo, acc9_lo);
        acc9_hi = fma(a9, b_hi, acc9_hi);
        let a10 = vec4<f32>(load_a_at(a_base, r10, kk));
        acc10_lo = fma(a10, b_lo, acc10_lo);
        acc10_hi = fma(a10, b_hi, acc10_hi);
        let a11 = vec4<f32>(load_a_at(a_base, r11, kk));
        acc11_lo = fma(a11, b_lo, acc11_lo);
        acc11_hi = fma(a11, b_hi, acc11_hi);
        let a12 = vec4<f32>(load_a_at(a_base, r12, kk));
        acc12_lo = fma(a12, b_lo, acc12_lo);
        acc12_hi = fma(a12, b_hi, acc12_hi);
        let a13 = vec4<f32>(load_a_at(a_base, r13, kk));
        acc13_lo = fma(a13, b_lo, acc13_lo);
        acc13_hi = fma(a13, b_hi, acc13_hi);
        let a14 = vec4<f32>(load_a_at(a_base, r14, kk));
        acc14_lo = fma(a14, b_lo, acc14_lo);
        acc14_hi = fma(a14, b_hi, acc14_hi);
        let a15 = vec4<f32>(load_a_at(a_base, r15, kk));
        acc15_lo = fma(a15, b_lo, acc15_lo);
        acc15_hi = fma(a15, b_hi, acc15_hi);
    }
    store_row8(c_base, row0 + 0u, col0, acc0_lo, acc0_hi);
    store_row8(c_base, row0 + 4u, col0, acc1_lo, acc1_hi);
    store_row8(c_base, row0 + 8u, col0, acc2_lo, acc2_hi);
    store_row8(c_base, row0 + 12u, col0, acc3_lo, acc3_hi);
    store_row8(c_base, row0 + 16u, col0, acc4_lo, acc4_hi);
    store_row8(c_base, row0 + 20u, col0, acc5_lo, acc5_hi);
    store_row8(c_base, row0 + 24u, col0, acc6_lo, acc6_hi);
    store_row8(c_base, row0 + 28u, col0, acc7_lo, acc7_hi);
    store_row8(c_base, row0 + 32u, col0, acc8_lo, acc8_hi);
    store_row8(c_base, row0 + 36u, col0, acc9_lo, acc9_hi);
    store_row8(c_base, row0 + 40u, col0, acc10_lo, acc10_hi);
    store_row8(c_base, row0 + 44u, col0, acc11_lo, acc11_hi);
    store_row8(c_base, row0 + 48u, col0, acc12_lo, acc12_hi);
    store_row8(c_base, row0 + 52u, col0, acc13_lo, acc13_hi);
    store_row8(c_base, row0 + 56u, col0, acc14_lo, acc14_hi);
    store_row8(c_base, row0 + 60u, col0, acc15_lo, acc15_hi);
}

// Writes (or adds) C[row, col + 8·j] = (lo, hi)[j] for the j inside the matrix.
fn store_row8(base: u32, row: u32, col: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (row >= p.m) { return; }
    for (var j = 0u; j < 8u; j++) {
        let c_col = col + 8u * j;
        if (c_col >= p.n) { continue; }
        var v = lo[j & 3u];
        if (j >= 4u) { v = hi[j & 3u]; }
        store(base, row, c_col, v);
    }
}

// Writes (or adds) v to C[row, col + 16·j] for the j in range.
fn store_row(base: u32, row: u32, col: u32, v: vec4<f32>) {
    if (row >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let c_col = col + j * 16u;
        if (c_col >= p.n) { continue; }
        store(base, row, c_col, v[j]);
    }
}

// Writes (or adds) v to C[row, col] of this slice (row and col inside the matrix). In MODE 2,
// col is a pixel (t, u) of the phase grid, stored at input pixel (first_y + s·t, first_x + s·u)
// of the image, if inside it.
fn store(base: u32, row: u32, col: u32, v: f32) {
    var idx = base + row * p.n + col;
    if (MODE == 2u) {
        let iy = first_y + STRIDE * (col / phase_w());
        let ix = first_x + STRIDE * (col % phase_w());
        if (iy >= H || ix >= W) { return; }
        idx = base + (row * H + iy) * W + ix;
    }
    if (p.accumulate != 0u) {
        c[idx] = c[idx] + v;
    } else {
        c[idx] = v;
    }
}
