//! The fused A²CiD² kernels against the same updates written as separate kernels (fill/copy/axpy +
//! the SGD kernel), and against a plain copy kernel, on an 11.2 M-parameter arena (ResNet-18's
//! size), in GB/s of EFFECTIVE traffic: the bytes the update must move at minimum (each input read
//! once, each output written once), so the unfused chain shows how much its extra passes cost.
use a2cid_bench::{bench_context, median_secs, random, time_dispatches};
use a2cid_engine::kernels::{self, AcidUniform, Dispatch};
use a2cid_engine::SgdConfig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N: usize = 11_200_000;

fn acid(c: &mut Criterion) {
    let ctx = bench_context();
    let buf = |label: &str, seed| ctx.storage_buffer_from(label, &random(N, seed)).unwrap();
    let (x, xt, m, g) = (buf("x", 1), buf("xt", 2), buf("m", 3), buf("g", 4));
    let (s_i, s_j) = (buf("s_i", 5), buf("s_j", 6));
    let (tmp, tmp2) = (
        ctx.storage_buffer("tmp", N).unwrap(),
        ctx.storage_buffer("tmp2", N).unwrap(),
    );
    let partials = ctx
        .storage_buffer("partials", kernels::acid_partials_len(N))
        .unwrap();
    let sgd = SgdConfig {
        lr: 1e-6,
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
    };
    let (mix, alpha, alpha_tilde) = (1e-3f32, 0.5f32, 7.26f32);
    let mut u = AcidUniform::new(N).unwrap().with_sgd(&sgd);
    u.mix = mix;
    u.alpha = alpha;
    u.alpha_tilde = alpha_tilde;

    let fused_step = kernels::mix_and_step(&ctx, &x, Some(&xt), &m, &g, &u).unwrap();
    // Without x̃ and without mixing, the same kernel is the plain SGD step.
    let plain = AcidUniform::new(N).unwrap().with_sgd(&sgd);
    let fused_avg =
        kernels::mix_and_average(&ctx, &x, Some(&xt), &s_i, &s_j, &partials, &u).unwrap();
    let copy = kernels::copy(&ctx, &g, 0, &tmp, 0, N).unwrap();

    // The same updates as chains of single-purpose kernels.
    let k = |r: a2cid_engine::Result<Dispatch>| r.unwrap();
    let mix_chain = || {
        vec![
            k(kernels::copy(&ctx, &xt, 0, &tmp, 0, N)), // tmp = x̃
            k(kernels::axpy(&ctx, -1.0, &x, &tmp, N)),  // tmp = x̃ − x
            k(kernels::axpy(&ctx, mix, &tmp, &x, N)),   // x += c(x̃ − x)
            k(kernels::axpy(&ctx, -mix, &tmp, &xt, N)), // x̃ −= c(x̃ − x)
        ]
    };
    let mut unfused_step = mix_chain();
    unfused_step.extend([
        k(kernels::copy(&ctx, &x, 0, &tmp, 0, N)), // tmp = mixed x
        k(kernels::mix_and_step(&ctx, &x, None, &m, &g, &plain)), // x −= u (plain SGD)
        k(kernels::axpy(&ctx, -1.0, &x, &tmp, N)), // tmp = u
        k(kernels::axpy(&ctx, -1.0, &tmp, &xt, N)), // x̃ −= u
    ]);
    let mut unfused_avg = mix_chain();
    unfused_avg.extend([
        k(kernels::copy(&ctx, &s_j, 0, &tmp2, 0, N)), // tmp2 = s_j
        k(kernels::axpy(&ctx, -1.0, &s_i, &tmp2, N)), // tmp2 = s_j − s_i
        k(kernels::axpy(&ctx, alpha, &tmp2, &x, N)),  // x += α δ
        k(kernels::axpy(&ctx, alpha_tilde, &tmp2, &xt, N)), // x̃ += α̃ δ   (no distance: it would need one more pass)
    ]);
    let unfused_step: Vec<&Dispatch> = unfused_step.iter().collect();
    let unfused_avg: Vec<&Dispatch> = unfused_avg.iter().collect();

    let f = 4 * N as u64;
    let step_bytes = 7 * f; // read x, x̃, m, g; write x, x̃, m
    let avg_bytes = 6 * f; // read x, x̃, s_i, s_j; write x, x̃
    let copy_bytes = 2 * f;
    let mut group = c.benchmark_group("acid 11.2M f32");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(step_bytes));
    group.bench_function("mix_and_step fused", |b| {
        b.iter_custom(|i| time_dispatches(&ctx, &[&fused_step], i))
    });
    group.bench_function("mix_and_step separate kernels", |b| {
        b.iter_custom(|i| time_dispatches(&ctx, &unfused_step, i))
    });
    group.throughput(Throughput::Bytes(avg_bytes));
    group.bench_function("mix_and_average fused", |b| {
        b.iter_custom(|i| time_dispatches(&ctx, &[&fused_avg], i))
    });
    group.bench_function("mix_and_average separate kernels", |b| {
        b.iter_custom(|i| time_dispatches(&ctx, &unfused_avg, i))
    });
    group.throughput(Throughput::Bytes(copy_bytes));
    group.bench_function("copy (bandwidth ceiling)", |b| {
        b.iter_custom(|i| time_dispatches(&ctx, &[&copy], i))
    });
    group.finish();

    let gbs = |bytes: u64, d: &[&Dispatch]| {
        bytes as f64 / median_secs(5, 3, |i| time_dispatches(&ctx, d, i)) / 1e9
    };
    let ceiling = gbs(copy_bytes, &[&copy]);
    eprintln!("\nA²CiD² kernels on {} (GB/s of effective traffic, medians of the same run; copy = {ceiling:.2} GB/s):", ctx.adapter.name);
    for (label, bytes, d) in [
        ("mix_and_step fused", step_bytes, vec![&fused_step]),
        ("mix_and_step separate", step_bytes, unfused_step.clone()),
        ("mix_and_average fused", avg_bytes, vec![&fused_avg]),
        ("mix_and_average separate", avg_bytes, unfused_avg.clone()),
    ] {
        let bw = gbs(bytes, &d);
        eprintln!(
            "  {label:<26} {bw:>7.2} GB/s  {:>4.0}% of copy",
            100.0 * bw / ceiling
        );
    }
}

criterion_group!(benches, acid);
criterion_main!(benches);
