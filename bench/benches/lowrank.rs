//! Compressed exchanges: the low-rank kernels (`X·Q`, `Xᵀ·P`, the rank-R update) against a copy
//! kernel of the same block, in GB/s of effective traffic (each input read once, each output
//! written once), and the fp16 wire codec against the f32 bytes of the same values, with the
//! ratios measured in the same run. Also prints the bytes one side sends per exchange for our
//! models at R = 1, 2, 4 (exact counts, not timings).
use a2cid_bench::{bench_context, median_secs, random, time_dispatches};
use a2cid_engine::compress::{self, bytes_per_exchange};
use a2cid_engine::kernels::{self, lowrank, Dispatch};
use a2cid_engine::{InputShape, ModelKind, ModelSpec};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::SeedableRng;
use std::hint::black_box;
use std::time::Instant;

/// One large block (4 M parameters) and the MNIST MLP's first layer.
const BLOCKS: &[(usize, usize)] = &[(4096, 1024), (784, 256)];
const RANK: usize = 4;

fn kernels_vs_copy(c: &mut Criterion) {
    let ctx = bench_context();
    let mut summary = Vec::new();
    for &(m, n) in BLOCKS {
        let x = ctx.storage_buffer_from("x", &random(m * n, 1)).unwrap();
        let y = ctx.storage_buffer("y", m * n).unwrap();
        let p = ctx.storage_buffer_from("p", &random(m * RANK, 2)).unwrap();
        let q = ctx.storage_buffer_from("q", &random(n * RANK, 3)).unwrap();
        let out = ctx.storage_buffer("out", m.max(n) * RANK).unwrap();
        let right =
            lowrank::right_product(&ctx, (&x, 0), (m, n), RANK, (&q, 0), (&out, 0)).unwrap();
        let left = lowrank::left_product(&ctx, (&x, 0), (m, n), RANK, (&p, 0), (&out, 0)).unwrap();
        let update =
            lowrank::rank_update(&ctx, (&y, 0), (m, n), RANK, (&p, 0), (&q, 0), 1e-9).unwrap();
        let copy = kernels::copy(&ctx, &x, 0, &y, 0, m * n).unwrap();

        let f = 4 * (m * n) as u64;
        let factors = 4 * ((m + n) * RANK) as u64;
        let cases: [(&str, u64, &Dispatch); 4] = [
            ("right_product X·Q", f + factors, &right),
            ("left_product Xᵀ·P", f + factors, &left),
            ("rank_update X += c·P·Qᵀ", 2 * f + factors, &update),
            ("copy (same block)", 2 * f, &copy),
        ];
        let mut group = c.benchmark_group(format!("lowrank {m}x{n} R={RANK}"));
        group.sample_size(10);
        for (label, bytes, d) in cases {
            group.throughput(Throughput::Bytes(bytes));
            group.bench_function(label, |b| b.iter_custom(|i| time_dispatches(&ctx, &[d], i)));
        }
        group.finish();
        let secs = |d: &Dispatch| median_secs(5, 3, |i| time_dispatches(&ctx, &[d], i));
        let copy_s = secs(&copy);
        for (label, bytes, d) in cases {
            let s = secs(d);
            summary.push(format!(
                "  {m:>4}x{n:<4} {label:<26} {:>9.1} µs {:>7.2} GB/s  {:>5.2}× the copy's time",
                s * 1e6,
                bytes as f64 / s / 1e9,
                s / copy_s
            ));
        }
    }
    eprintln!(
        "\nLow-rank kernels on {} (R = {RANK}; medians of the same run; GB/s of effective traffic):",
        ctx.adapter.name
    );
    for line in summary {
        eprintln!("{line}");
    }
    orthonormalise_cost();
}

/// The host's share of a half-step: orthonormalising the MNIST MLP's bases (R = 4).
fn orthonormalise_cost() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let rows = [784usize, 256, 128];
    let mut bases: Vec<Vec<f32>> = rows.iter().map(|&r| random(r * RANK, r as u32)).collect();
    let s = median_secs(5, 20, |iters| {
        let start = Instant::now();
        for _ in 0..iters {
            for (b, &r) in bases.iter_mut().zip(&rows) {
                compress::orthonormalise(black_box(b), r, RANK, &mut rng);
            }
        }
        start.elapsed()
    });
    eprintln!(
        "  host: orthonormalising the MNIST MLP's P bases (rows 784, 256, 128; R = {RANK}): {:.1} µs",
        s * 1e6
    );
}

fn fp16_vs_f32(c: &mut Criterion) {
    const N: usize = 1 << 20;
    let values = random(N, 7);
    let bytes16 = compress::encode_f16(&values).unwrap();
    let f32_bytes = |v: &[f32]| -> Vec<u8> { bytemuck::cast_slice(v).to_vec() };
    let f32_back = |b: &[u8]| -> Vec<f32> { bytemuck::pod_collect_to_vec(b) };
    let mut group = c.benchmark_group("wire codec 1M values (CPU)");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("fp16 encode (checked)", |b| {
        b.iter(|| compress::encode_f16(black_box(&values)).unwrap())
    });
    group.bench_function("fp16 decode (checked)", |b| {
        b.iter(|| compress::decode_f16(black_box(&bytes16)).unwrap())
    });
    group.bench_function("f32 to bytes (copy)", |b| {
        b.iter(|| f32_bytes(black_box(&values)))
    });
    group.finish();

    let time = |f: &mut dyn FnMut()| {
        median_secs(5, 5, |iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed()
        })
    };
    let f32_b = f32_bytes(&values);
    let enc = time(&mut || drop(black_box(compress::encode_f16(&values).unwrap())));
    let dec = time(&mut || drop(black_box(compress::decode_f16(&bytes16).unwrap())));
    let cpy = time(&mut || drop(black_box(f32_bytes(&values))));
    let cpy_back = time(&mut || drop(black_box(f32_back(&f32_b))));
    eprintln!("\nWire codec on the CPU, 2^20 values (medians of the same run):");
    eprintln!(
        "  bytes: fp16 {} vs f32 {} ({:.2}×)",
        bytes16.len(),
        f32_b.len(),
        bytes16.len() as f64 / f32_b.len() as f64
    );
    eprintln!(
        "  fp16 encode {:.2} ms ({:.0} M values/s), f32 to bytes {:.2} ms: {:.1}× the time",
        enc * 1e3,
        N as f64 / enc / 1e6,
        cpy * 1e3,
        enc / cpy
    );
    eprintln!(
        "  fp16 decode {:.2} ms, f32 from bytes {:.2} ms: {:.1}× the time",
        dec * 1e3,
        cpy_back * 1e3,
        dec / cpy_back
    );
    bytes_table();
}

/// What one side sends per exchange for our models (exact counts).
fn bytes_table() {
    let models = [
        ("mlp digits (8×8)", ModelKind::Mlp, InputShape([1, 8, 8])),
        ("mlp mnist (28×28)", ModelKind::Mlp, InputShape([1, 28, 28])),
        ("cnn mnist (28×28)", ModelKind::Cnn, InputShape([1, 28, 28])),
    ];
    eprintln!(
        "\nBytes one side sends per exchange (low-rank: mean of a Right and a Left half-step):"
    );
    eprintln!(
        "  {:<20} {:>10} {:>10} {:>22} {:>22} {:>22}",
        "model", "f32", "fp16", "R=1", "R=2", "R=4"
    );
    for (name, kind, input) in models {
        let spec = ModelSpec::new(kind, &[256, 128], 16, input, 10).unwrap();
        let shapes: Vec<Vec<usize>> = spec
            .layout()
            .tensors()
            .iter()
            .map(|t| t.shape.clone())
            .collect();
        let full = bytes_per_exchange(&shapes, 1);
        let cell = |r: usize| {
            let b = bytes_per_exchange(&shapes, r);
            format!(
                "{:.0} ({:.1}%)",
                b.lowrank_mean(),
                100.0 * b.lowrank_mean() / b.f32_full as f64
            )
        };
        eprintln!(
            "  {name:<20} {:>10} {:>10} {:>22} {:>22} {:>22}",
            full.f32_full,
            full.fp16_full,
            cell(1),
            cell(2),
            cell(4)
        );
    }
}

criterion_group!(benches, kernels_vs_copy, fp16_vs_f32);
criterion_main!(benches);
