//! Kernel throughput on the default adapter, with baselines measured in the same run:
//! - matmul at the MLP's training shapes (forward, dW = Xᵀ·dY, dX = dY·Wᵀ) in GFLOP/s, beside
//!   burn's own wgpu matmul on the same shapes;
//! - the fused SGD step over an 11.2 M-parameter arena (ResNet-18's size) in GB/s of effective
//!   traffic (reads x, g, m; writes x, m), beside a plain copy kernel (reads 1, writes 1): the
//!   bandwidth ceiling of the device;
//! - the three products of 2-D convolutions of the `cnn` and `resnet` models (forward, input
//!   gradient, weight gradient) in GFLOP/s, beside burn's conv2d, transposed conv2d and
//!   conv2d weight backward on the same operands' shapes.
use a2cid_bench::burn_ref::{BurnConv, BurnMatmul, ConvProduct};
use a2cid_bench::{bench_context, median_secs, random, time_dispatches};
use a2cid_engine::kernels::{self, MatRef};
use a2cid_engine::SgdConfig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn matmul(c: &mut Criterion) {
    let ctx = bench_context();
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    // (label, m, k, n, transpose A, transpose B): the MLP 784-256-128-10 at batch 128, and a square.
    let shapes = [
        ("fwd 128x784x256", 128, 784, 256, false, false),
        ("dW 784x128x256 (AT)", 784, 128, 256, true, false),
        ("dX 128x256x784 (BT)", 128, 256, 784, false, true),
        ("square 512", 512, 512, 512, false, false),
    ];
    let mut ratios = Vec::new();
    for (label, m, k, n, ta, tb) in shapes {
        let a = ctx.storage_buffer_from("a", &random(m * k, 1)).unwrap();
        let b = ctx.storage_buffer_from("b", &random(k * n, 2)).unwrap();
        let out = ctx.storage_buffer("c", m * n).unwrap();
        let mut ra = MatRef::new(&a, 0);
        ra.transposed = ta;
        let mut rb = MatRef::new(&b, 0);
        rb.transposed = tb;
        let d = kernels::matmul(&ctx, ra, rb, &out, 0, (m, k, n), false).unwrap();
        let flops = 2 * m * k * n;
        group.throughput(Throughput::Elements(flops as u64)); // elements = FLOP
        group.bench_function(BenchmarkId::new("a2cid", label), |bch| {
            bch.iter_custom(|iters| time_dispatches(&ctx, &[&d], iters))
        });
        let mut burn = BurnMatmul::new_on(&ctx, m, k, n, 3);
        group.bench_function(BenchmarkId::new("burn", label), |bch| {
            bch.iter_custom(|iters| burn.run(iters))
        });
        let ours = median_secs(5, 10, |i| time_dispatches(&ctx, &[&d], i));
        let theirs = median_secs(5, 10, |i| burn.run(i));
        ratios.push((
            label,
            flops as f64 / ours / 1e9,
            flops as f64 / theirs / 1e9,
        ));
    }
    group.finish();
    eprintln!(
        "\nmatmul on {} (our entry: {:?}; GFLOP/s, medians of the same run):",
        ctx.adapter.name,
        ctx.matmul_variant()
    );
    for (label, ours, theirs) in ratios {
        eprintln!(
            "  {label:<22} a2cid {ours:>8.2}  burn {theirs:>8.2}  ratio {:.2}",
            ours / theirs
        );
    }
}

fn conv(c: &mut Criterion) {
    let ctx = bench_context();
    let mut group = c.benchmark_group("conv");
    group.sample_size(10);
    // (label, (batch, c_in, h, w), c_out, k, stride, pad): cnn's second layer, a resnet 3×3 layer
    // of the second stage and its strided first layer, at batch 64.
    let layers = [
        ("cnn conv2 16->32 5x5 14x14", (64, 16, 14, 14), 32, 5, 1, 2),
        ("resnet 32->32 3x3 14x14", (64, 32, 14, 14), 32, 3, 1, 1),
        ("resnet 16->32 3x3/2 28x28", (64, 16, 28, 28), 32, 3, 2, 1),
    ];
    let mut ratios = Vec::new();
    for (label, (n, ci, h, w), co, k, stride, pad) in layers {
        let g = kernels::ConvGeometry::new(n, (ci, h, w), co, (k, k), stride, pad).unwrap();
        let x = ctx
            .storage_buffer_from("x", &random(n * g.input_len(), 1))
            .unwrap();
        let wt = ctx
            .storage_buffer_from("w", &random(g.weights(), 2))
            .unwrap();
        let dy = ctx
            .storage_buffer_from("dy", &random(n * g.output_len(), 3))
            .unwrap();
        let y = ctx.storage_buffer("y", n * g.output_len()).unwrap();
        let dx = ctx.storage_buffer("dx", n * g.input_len()).unwrap();
        let dw = ctx.storage_buffer("dw", g.weights()).unwrap();
        let scratch = ctx
            .storage_buffer("scratch", g.weight_grad_splits() * g.weights())
            .unwrap();
        let ours = [
            (
                ConvProduct::Forward,
                vec![kernels::conv_forward(&ctx, &g, (&x, 0), (&wt, 0), (&y, 0)).unwrap()],
            ),
            (
                ConvProduct::InputGrad,
                vec![
                    kernels::conv_input_grad(&ctx, &g, (&wt, 0), (&dy, 0), (&dx, 0), false)
                        .unwrap(),
                ],
            ),
            (
                ConvProduct::WeightGrad,
                kernels::conv_weight_grad(&ctx, &g, (&dy, 0), (&x, 0), (&dw, 0), &scratch).unwrap(),
            ),
        ];
        let mut burn = BurnConv::new_on(&ctx, (n, ci, h, w), co, k, (stride, pad));
        let flops = 2 * n * g.output_len() * g.taps();
        group.throughput(Throughput::Elements(flops as u64));
        for (which, ds) in &ours {
            let refs: Vec<&kernels::Dispatch> = ds.iter().collect();
            let id = format!("{label} {which:?}");
            group.bench_function(BenchmarkId::new("a2cid", &id), |b| {
                b.iter_custom(|iters| time_dispatches(&ctx, &refs, iters))
            });
            group.bench_function(BenchmarkId::new("burn", &id), |b| {
                b.iter_custom(|iters| burn.run(*which, iters))
            });
            let a = median_secs(3, 5, |i| time_dispatches(&ctx, &refs, i));
            let t = median_secs(3, 5, |i| burn.run(*which, i));
            ratios.push((id, flops as f64 / a / 1e9, flops as f64 / t / 1e9));
        }
    }
    group.finish();
    eprintln!(
        "\nconv on {} (our matmul entry: {:?}; GFLOP/s, medians of the same run):",
        ctx.adapter.name,
        ctx.matmul_variant()
    );
    for (label, ours, theirs) in ratios {
        eprintln!(
            "  {label:<42} a2cid {ours:>7.2}  burn {theirs:>7.2}  ratio {:.2}",
            ours / theirs
        );
    }
}

fn sgd_vs_copy(c: &mut Criterion) {
    let ctx = bench_context();
    let n = 11_200_000; // ResNet-18's parameter count
    let x = ctx.storage_buffer_from("x", &random(n, 4)).unwrap();
    let g = ctx.storage_buffer_from("g", &random(n, 5)).unwrap();
    let m = ctx.storage_buffer_from("m", &random(n, 6)).unwrap();
    let dst = ctx.storage_buffer("dst", n).unwrap();
    let cfg = SgdConfig {
        lr: 1e-6,
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
    };
    // Without x̃ the fused A²CiD² step is the plain SGD step.
    let params = kernels::AcidUniform::new(n).unwrap().with_sgd(&cfg);
    let sgd = kernels::mix_and_step(&ctx, &x, None, &m, &g, &params).unwrap();
    let copy = kernels::copy(&ctx, &g, 0, &dst, 0, n).unwrap();
    let mut group = c.benchmark_group("arena 11.2M f32");
    group.sample_size(10);
    let sgd_bytes = 5 * 4 * n as u64; // read x, g, m; write x, m
    let copy_bytes = 2 * 4 * n as u64; // read src, write dst
    group.throughput(Throughput::Bytes(sgd_bytes));
    group.bench_function("fused SGD step (mix_and_step without x̃)", |b| {
        b.iter_custom(|i| time_dispatches(&ctx, &[&sgd], i))
    });
    group.throughput(Throughput::Bytes(copy_bytes));
    group.bench_function("copy (bandwidth ceiling)", |b| {
        b.iter_custom(|i| time_dispatches(&ctx, &[&copy], i))
    });
    group.finish();
    let t_sgd = median_secs(5, 5, |i| time_dispatches(&ctx, &[&sgd], i));
    let t_copy = median_secs(5, 5, |i| time_dispatches(&ctx, &[&copy], i));
    let (bw_sgd, bw_copy) = (
        sgd_bytes as f64 / t_sgd / 1e9,
        copy_bytes as f64 / t_copy / 1e9,
    );
    eprintln!(
        "\nfused SGD on {}: {bw_sgd:.2} GB/s effective vs copy {bw_copy:.2} GB/s: {:.0}% of the ceiling",
        ctx.adapter.name,
        100.0 * bw_sgd / bw_copy
    );
}

criterion_group!(benches, matmul, conv, sgd_vs_copy);
criterion_main!(benches);
